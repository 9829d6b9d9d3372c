"""Amazon SES provider against a real local SES stand-in (moto_server on 127.0.0.1, behind
the fake ESP's SES front): raw MIME sends read back from moto, the account's sending rate,
the configuration set, boto3's credential chain, errors and faults."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import json
import sys
from pathlib import Path

import pytest
from test_bulk import reader_states, write_readers

from conftest import SAMPLE_SLUG
from esp_server import FakeEsp, moto_messages, settings_for
from provider_support import batches_of, sample_email, sample_readers, sample_template
from spark_mail.errors import ConfigError
from spark_mail.providers import get_provider
from spark_mail.providers.base import EspError
from spark_mail.providers.ses import SesProvider
from spark_mail.sending import send_issue

pytestmark = pytest.mark.slow  # a moto_server process


def provider_for(esp: FakeEsp, root: Path, **env: str) -> SesProvider:
    provider = get_provider(settings_for(esp, root, "ses", **env))
    assert isinstance(provider, SesProvider)
    return provider


def parsed(raw: str) -> email.message.EmailMessage:
    message = email.message_from_string(raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


def test_test_send_is_raw_mime_with_the_unsubscribe_headers_as_built(esp, newsletter, ses_moto):
    """SendEmail with Content.Raw: moto receives spark-mail's own MIME message (headers as
    built, text and HTML parts), signed with the key from the environment."""
    built = sample_email(newsletter)
    with provider_for(esp, newsletter, SPARK_MAIL_SES_CONFIGURATION_SET="news") as provider:
        result = provider.send_test(built, ["editor@example.com", "Ed <ed@bücher.de>"])
    (sent,) = moto_messages(ses_moto)
    assert sent["id"] == result.esp_ids["message_id"]
    assert sent["destinations"] == ["editor@example.com", "ed@xn--bcher-kva.de"]
    message = parsed(sent["raw_data"])
    assert message["List-Unsubscribe"] == built.headers["List-Unsubscribe"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Subject"] == built.subject
    assert {p.get_content_type() for p in message.walk()} >= {"text/plain", "text/html"}
    (call,) = esp.calls("POST", "/v2/email/outbound-emails")
    assert call.body["ConfigurationSetName"] == "news"
    assert {"Name": "issue", "Value": SAMPLE_SLUG} in call.body["EmailTags"]
    assert f"Credential={esp.ses.access_key}/" in call.header("Authorization")
    assert "/eu-west-1/ses/" in call.header("Authorization")


def test_own_list_send_gives_each_reader_their_own_raw_copy(esp, newsletter, ses_moto, monkeypatch):
    """12 readers through SES in batches cut at 5 (three batches: 5, 5 and 2; SES's own
    50 took 60 readers for two, and moto takes ~30 ms a message): moto holds one raw
    message per reader, addressed to that reader alone, with that reader's own
    List-Unsubscribe link; the issue is `sent`; the account is read once for all batches."""
    batches_of(monkeypatch, "ses", 5)
    write_readers(newsletter, 12)
    settings = settings_for(esp, newsletter, "ses", SPARK_MAIL_AUDIENCE="subscribers.csv")
    result = send_issue(SAMPLE_SLUG, settings, mode="send")
    messages = moto_messages(ses_moto)
    assert len(messages) == 12
    for sent in messages:
        (to,) = sent["destinations"]
        message = parsed(sent["raw_data"])
        assert message["To"] == to
        assert f"email={to.replace('@', '%40')}" in message["List-Unsubscribe"]
    assert len({m["destinations"][0] for m in messages}) == 12
    assert result.outcome == "sent" and reader_states(settings) == {"sent": 12}
    assert len(esp.calls("GET", "/v2/email/account")) == 1


def test_the_accounts_max_send_rate_paces_the_batches(esp, newsletter, ses_moto):
    """GetAccount's MaxSendRate becomes the rate limit (5/s: 0.2 s apart);
    SPARK_MAIL_SEND_RATE overrides it; a paused account is refused before any send."""
    template = sample_template(esp, newsletter, "ses")
    esp.ses.account["SendQuota"]["MaxSendRate"] = 5.0
    with provider_for(esp, newsletter) as provider:
        provider.prepare_batches(template)
        assert provider.limiter.interval == pytest.approx(0.2)
    with provider_for(esp, newsletter, SPARK_MAIL_SEND_RATE="50") as provider:
        provider.prepare_batches(template)
        assert provider.limiter.interval == pytest.approx(0.02)
    esp.ses.account["SendingEnabled"] = False
    with provider_for(esp, newsletter) as provider, pytest.raises(EspError, match="paused"):
        provider.prepare_batches(template)
    assert moto_messages(ses_moto) == []


def test_ses_refusals_are_one_line_and_not_repeated(esp, newsletter, ses_moto):
    """moto's MessageRejected for a sender SES has not verified: one line naming SES's
    error type, no retry, nothing sent; a bad key: 403 with the credentials hint."""
    built = sample_email(newsletter)
    provider = provider_for(esp, newsletter, SPARK_MAIL_FROM="x@unverified.example")
    with provider, pytest.raises(EspError) as caught:
        provider.send_test(
            dataclasses.replace(built, from_address="x@unverified.example"), ["a@example.com"]
        )
    assert str(caught.value).startswith("ses: 400 MessageRejected (Did not have authority")
    assert not caught.value.maybe_sent
    assert len(esp.calls("POST", "/v2/email/outbound-emails")) == 1
    esp.ses.access_key = "AKIDSOMEONEELSE"
    with provider_for(esp, newsletter) as provider, pytest.raises(EspError) as caught:
        provider.send_test(built, ["a@example.com"])
    assert caught.value.status == 403 and "UnrecognizedClientException" in str(caught.value)
    assert moto_messages(ses_moto) == []


def test_a_429_is_retried_and_a_502_after_ses_acted_is_not(esp, newsletter, ses_moto):
    """Throttled (429): waited out and sent once. A 502 after moto took the message: never
    repeated (botocore's own retries are off), the reader is uncertain, the batch stops."""
    template = sample_template(esp, newsletter, "ses")
    with provider_for(esp, newsletter) as provider:
        provider.prepare_batches(template)
        esp.fail(429, retry_after=0.01, path="/outbound-emails")
        first = provider.send_batch(template, sample_readers(1), "batch-1")
        esp.act_then(status=502, path="/outbound-emails")
        second = provider.send_batch(template, sample_readers(3)[1:], "batch-2")
    assert [s for s, _ in first.outcomes] == ["sent"]
    assert [s for s, _ in second.outcomes] == ["uncertain", "failed"]
    assert second.error is not None and second.error.maybe_sent
    assert [m["destinations"] for m in moto_messages(ses_moto)] == [
        ["r0@example.com"],
        ["r1@example.com"],
    ]
    assert len(esp.calls("POST", "/v2/email/outbound-emails")) == 3  # 429, sent, 502 once


def test_credentials_and_region_come_from_boto3s_chain_only(esp, newsletter, ses_moto, monkeypatch):
    """No credentials anywhere boto3 looks: one line saying where to put them; no region
    and an AWS endpoint: one line; an SES endpoint URL names its own region."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError, match="no AWS credentials") as caught:
        provider_for(esp, newsletter)
    assert "AWS_ACCESS_KEY_ID" in (caught.value.hint or "")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", esp.ses.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    settings = settings_for(esp, newsletter, "ses", SPARK_MAIL_API_URL="")
    with pytest.raises(ConfigError, match="no AWS region"):
        get_provider(settings)
    url = "https://email.ap-southeast-2.amazonaws.com"
    provider = get_provider(settings_for(esp, newsletter, "ses", SPARK_MAIL_API_URL=url))
    assert isinstance(provider, SesProvider) and provider.region == "ap-southeast-2"


def test_without_boto3_ses_says_how_to_install_it(esp, newsletter, ses_moto, monkeypatch):
    """boto3 missing: `pip install 'spark-mail[ses]'`, not an ImportError."""
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ConfigError, match=r"spark-mail\[ses\]"):
        provider_for(esp, newsletter)


def test_a_dry_run_needs_no_credentials_and_records_the_requests(
    esp, newsletter, ses_moto, monkeypatch
):
    """--dry-run through SES: the exact SendEmail requests are written, the signature
    masked, nothing reaches moto, no AWS credentials needed."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    write_readers(newsletter, 3)
    settings = settings_for(esp, newsletter, "ses", SPARK_MAIL_AUDIENCE="subscribers.csv")
    report = send_issue(SAMPLE_SLUG, settings, mode="dry-run")
    assert report.outcome == "dry-run"
    files = sorted(Path(report.folder or "").glob("*.json"))
    sends = [json.loads(f.read_text()) for f in files if f.name != "summary.json"]
    posts = [s for s in sends if s.get("method") == "POST"]
    assert len(posts) == 3
    assert all(p["headers"]["authorization"].endswith("********") for p in posts)
    assert moto_messages(ses_moto) == [] and esp.calls() == []
