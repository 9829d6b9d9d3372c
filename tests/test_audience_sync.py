"""`spark-mail audience sync`: each ESP's suppression list, read from a stand-in on
127.0.0.1 that pages and authenticates like the ESP (tests/suppression_server.py), lands in
the reader desk's store with its reason; it only ever adds."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import run_cli
from spark_mail.audience.suppressions import SuppressionStore, store_path
from spark_mail.audience.sync import sync_suppressions
from spark_mail.config import Settings, load_settings
from spark_mail.errors import ConfigError, EspError
from suppression_server import SuppressionServer

KEY = "sync-api-key-0123456789"


@pytest.fixture
def esp() -> Iterator[SuppressionServer]:
    with SuppressionServer(api_key=KEY).running() as server:
        yield server


def esp_settings(root: Path, esp: SuppressionServer, provider: str, **env: str) -> Settings:
    values = {
        "SPARK_MAIL_PROVIDER": provider,
        "SPARK_MAIL_API_KEY": KEY,
        "SPARK_MAIL_API_URL": esp.url,
        "SPARK_MAIL_MAILGUN_DOMAIN": esp.domain,
        "SPARK_MAIL_SEND_BACKOFF": "0",
        **env,
    }
    return load_settings(root, env=values)


def reasons(settings: Settings) -> dict[str, tuple[str, str, str]]:
    with SuppressionStore(store_path(settings)) as store:
        return {s.address: (s.how, s.provider, s.detail) for s in store.suppressions()}


def test_postmark_sync_adds_its_suppressions_once(newsletter: Path, esp: SuppressionServer):
    """Postmark's broadcast-stream dump: hard bounce, complaint and unsubscribe become
    suppressions here; an address already suppressed stays as it was; a rerun adds none."""
    esp.postmark = [
        {"EmailAddress": "Hard@Example.com", "SuppressionReason": "HardBounce",
         "Origin": "Recipient", "CreatedAt": "2025-01-10T10:00:00-05:00"},
        {"EmailAddress": "spam@example.com", "SuppressionReason": "SpamComplaint",
         "Origin": "Recipient", "CreatedAt": "2025-01-11T10:00:00Z"},
        {"EmailAddress": "left@example.com", "SuppressionReason": "ManualSuppression",
         "Origin": "Recipient", "CreatedAt": "2025-01-12T10:00:00Z"},
    ]  # fmt: skip
    settings = esp_settings(newsletter, esp, "postmark")
    with SuppressionStore(store_path(settings)) as store:
        store.unsubscribe(
            "left@example.com", how="one-click", issue="x", at=dt.datetime.now(dt.UTC)
        )
    report = sync_suppressions(settings)
    assert report.to_json() == {
        "provider": "postmark", "listed": 3, "added": 2,
        "added_by": {"bounce": 1, "complaint": 1}, "already": 1,
    }  # fmt: skip
    found = reasons(settings)
    assert found["hard@example.com"] == ("bounce", "postmark", "HardBounce (Recipient)")
    assert found["spam@example.com"][0] == "complaint"
    assert found["left@example.com"] == ("one-click", "", "")  # the first record is kept
    with SuppressionStore(store_path(settings)) as store:
        assert {s.address: s.at for s in store.suppressions()}["hard@example.com"] == (
            "2025-01-10T15:00:00+00:00"
        )
    assert sync_suppressions(settings).to_json()["added"] == 0


@pytest.mark.slow
def test_mailgun_sync_follows_the_pages_of_every_list(newsletter: Path, esp: SuppressionServer):
    """2,500 bounces (three pages of 1,000 and Mailgun's empty last page), complaints and
    unsubscribes of the configured domain."""
    esp.mailgun["bounces"] = [
        {"address": f"b{n:04}@example.com", "code": "550", "error": "No such mailbox",
         "created_at": "Thu, 11 Dec 2025 01:49:40 UTC"}
        for n in range(2500)
    ]  # fmt: skip
    esp.mailgun["complaints"] = [
        {"address": "c@example.com", "created_at": "Thu, 11 Dec 2025 01:49:40 UTC"}
    ]
    esp.mailgun["unsubscribes"] = [{"address": "u@example.com", "tags": ["*"], "created_at": ""}]
    settings = esp_settings(newsletter, esp, "mailgun")
    report = sync_suppressions(settings)
    assert report.to_json()["added_by"] == {"bounce": 2500, "complaint": 1, "esp-unsubscribe": 1}
    bounce_pages = [p for _, p in esp.requests if "/bounces" in p]
    assert len(bounce_pages) == 4  # 1,000 + 1,000 + 500 + the empty page
    assert reasons(settings)["b0042@example.com"] == ("bounce", "mailgun", "550 No such mailbox")


@pytest.mark.slow
def test_sendgrid_sync_pages_by_offset(newsletter: Path, esp: SuppressionServer):
    """1,200 bounces in pages of 500, spam reports and global unsubscribes."""
    esp.sendgrid["bounces"] = [
        {"created": 1737374700, "email": f"b{n}@example.com", "reason": "550 unknown user",
         "status": "5.1.1"}
        for n in range(1200)
    ]  # fmt: skip
    esp.sendgrid["spam_reports"] = [
        {"created": 1737374700, "email": "s@example.com", "ip": "10.0.0.1"}
    ]
    esp.sendgrid["unsubscribes"] = [{"created": 1737374700, "email": "u@example.com"}]
    settings = esp_settings(newsletter, esp, "sendgrid")
    report = sync_suppressions(settings)
    assert report.to_json()["added_by"] == {"bounce": 1200, "complaint": 1, "esp-unsubscribe": 1}
    assert reasons(settings)["b7@example.com"] == ("bounce", "sendgrid", "550 unknown user")
    assert [p for _, p in esp.requests if "/bounces" in p][-1].endswith("offset=1000")


@pytest.mark.slow
def test_ses_sync_reads_the_account_suppression_list_through_boto3(
    newsletter: Path, esp: SuppressionServer, monkeypatch: pytest.MonkeyPatch
):
    """ListSuppressedDestinations, two pages, through boto3 pointed at the stand-in."""
    pytest.importorskip("boto3")
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    esp.ses = [
        {"EmailAddress": f"ses{n}@example.com", "Reason": "BOUNCE" if n % 2 else "COMPLAINT",
         "LastUpdateTime": 1737374700.0}
        for n in range(1500)
    ]  # fmt: skip
    settings = esp_settings(newsletter, esp, "ses")
    report = sync_suppressions(settings)
    assert report.to_json()["added_by"] == {"bounce": 750, "complaint": 750}
    assert len([p for _, p in esp.requests if p.startswith("/v2/")]) == 2
    assert reasons(settings)["ses1@example.com"] == ("bounce", "ses", "BOUNCE")


@pytest.mark.slow
def test_ses_sync_without_a_region_says_so(
    newsletter: Path, esp: SuppressionServer, monkeypatch: pytest.MonkeyPatch
):
    """No AWS region anywhere: one line saying how to set one."""
    pytest.importorskip("boto3")
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(ConfigError, match="no AWS region"):
        sync_suppressions(esp_settings(newsletter, esp, "ses"))


def test_sync_retries_a_429_and_reports_a_refused_key(newsletter: Path, esp: SuppressionServer):
    """A 429 is waited out (Retry-After); a wrong key is one line naming the setting."""
    esp.postmark = [{"EmailAddress": "a@example.com", "SuppressionReason": "HardBounce",
                     "Origin": "Recipient", "CreatedAt": "2025-01-10T10:00:00Z"}]  # fmt: skip
    esp.fail(429, times=2, retry_after=0)
    assert sync_suppressions(esp_settings(newsletter, esp, "postmark")).listed == 1
    wrong = esp_settings(newsletter, esp, "postmark", SPARK_MAIL_API_KEY="wrong-key-0123456789")
    with pytest.raises(EspError) as refused:
        sync_suppressions(wrong)
    assert "postmark: 401" in str(refused.value) and "SPARK_MAIL_API_KEY" in str(refused.value)
    assert "wrong-key-0123456789" not in str(refused.value)


@pytest.mark.parametrize("provider", ["outbox", "resend", "smtp"])
def test_providers_without_a_readable_list_are_refused(
    newsletter: Path, esp: SuppressionServer, provider: str
):
    """An ESP whose suppression list spark-mail cannot read: one line, nothing written."""
    settings = esp_settings(newsletter, esp, provider)
    with pytest.raises(ConfigError, match="keeps no suppression list"):
        sync_suppressions(settings)
    assert not store_path(settings).exists()


def test_mailgun_needs_its_domain(newsletter: Path, esp: SuppressionServer):
    """Mailgun's lists are per sending domain: without mailgun_domain, say where to set it."""
    settings = esp_settings(newsletter, esp, "mailgun", SPARK_MAIL_MAILGUN_DOMAIN="")
    with pytest.raises(ConfigError, match="mailgun_domain"):
        sync_suppressions(settings)


@pytest.mark.slow
def test_audience_sync_command_and_suppressions_show_the_reason(
    newsletter: Path, esp: SuppressionServer
):
    """The real commands: `audience sync` (text and --json), `audience suppressions` shows
    each reason; a wrong key exits 1 with one line and never prints the key."""
    esp.sendgrid["bounces"] = [{"created": 1737374700, "email": "gone@example.com",
                                "reason": "550 5.1.1 unknown user", "status": "5.1.1"}]  # fmt: skip
    env = {
        "SPARK_MAIL_PROVIDER": "sendgrid",
        "SPARK_MAIL_API_KEY": KEY,
        "SPARK_MAIL_API_URL": esp.url,
    }
    synced = run_cli("audience", "sync", cwd=newsletter, env=env)
    assert synced.returncode == 0, synced.stderr
    assert (
        "sendgrid: 1 addresses on its suppression list; 1 newly suppressed here (1 bounce)"
        in synced.stdout
    )
    again = run_cli("audience", "sync", "--json", cwd=newsletter, env=env)
    assert json.loads(again.stdout)["already"] == 1
    listed = run_cli("audience", "suppressions", cwd=newsletter, env={"COLUMNS": "200"})
    assert "bounce (sendgrid: 550 5.1.1 unknown user)" in listed.stdout
    bad = run_cli(
        "audience", "sync", cwd=newsletter, env={**env, "SPARK_MAIL_API_KEY": "bad-key-0123456789"}
    )
    assert bad.returncode == 1 and "sendgrid: 401" in bad.stderr
    assert "bad-key-0123456789" not in bad.stderr + bad.stdout and "Traceback" not in bad.stderr
    none = run_cli("audience", "sync", cwd=newsletter, env={"SPARK_MAIL_PROVIDER": "resend"})
    assert none.returncode == 2 and "keeps no suppression list" in none.stderr
