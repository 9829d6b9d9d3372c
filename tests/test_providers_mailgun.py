"""Mailgun provider against the fake ESP on 127.0.0.1 (tests/esp_server.py): test sends,
own-list batches with recipient variables, the 16 KB options limit, errors, the events
lookup after a batch that may have gone out, and scheduling with o:deliverytime."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils as email_utils
from pathlib import Path

import pytest
from test_bulk import issue_state, reader_states, write_readers

from conftest import SAMPLE_ISSUE, SAMPLE_SLUG
from esp_server import FakeEsp, parse_form, settings_for
from provider_support import sample_email, sample_template
from spark_mail.audience import Reader
from spark_mail.clock import FakeClock
from spark_mail.errors import ConfigError, UnsupportedOperation
from spark_mail.ledger import SendState
from spark_mail.personalize import PersonalizedTemplate, prepare
from spark_mail.providers import get_provider
from spark_mail.providers.base import EspError
from spark_mail.providers.mailgun import MailgunProvider
from spark_mail.render import RenderedEmail
from spark_mail.sending import send_issue


@pytest.fixture
def email(newsletter: Path) -> RenderedEmail:
    return sample_email(newsletter)


@pytest.fixture
def template(esp: FakeEsp, newsletter: Path) -> PersonalizedTemplate:
    return sample_template(esp, newsletter, "mailgun")


def readers(count: int) -> list[Reader]:
    return [
        Reader(
            f"r{i}@example.com", {"email": f"r{i}@example.com", "first_name": f"Reader {i}"}, i + 2
        )
        for i in range(count)
    ]


def provider_for(esp: FakeEsp, root: Path, **env: str) -> MailgunProvider:
    provider = get_provider(settings_for(esp, root, "mailgun", **env))
    assert isinstance(provider, MailgunProvider)
    return provider


def test_test_send_is_one_form_post_with_basic_auth_and_the_unsubscribe_headers(
    esp, newsletter, email
):
    """POST /v3/{domain}/messages as multipart/form-data, `api:KEY` basic auth, the editors
    in `to`, the one-click unsubscribe headers as h: fields; the form fits Mailgun's schema."""
    with provider_for(esp, newsletter) as provider:
        result = provider.send_test(email, ["a@example.com", "b@example.com"])
    (call,) = esp.calls()
    assert call.path == "/v3/mg.example.com/messages"
    assert call.header("Content-Type").startswith("multipart/form-data; boundary=")
    assert call.header("Authorization") == "Basic YXBpOnRlc3Qta2V5"  # api:test-key
    (message,) = esp.delivered
    assert message["to"] == ["a@example.com", "b@example.com"]
    assert message["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["html"] == email.html and message["subject"] == email.subject
    assert result.esp_ids["message_id"].endswith("@mg.example.com>")
    assert esp.schema_errors == []


def test_a_batch_is_one_call_and_each_reader_gets_their_own_copy(esp, newsletter, template):
    """Three readers, one call with recipient-variables: Mailgun sends three messages, each
    to one reader with that reader's own signed unsubscribe link (header and body)."""
    with provider_for(esp, newsletter) as provider:
        result = provider.send_batch(template, readers(3), "batch-1")
    assert len(esp.calls("POST", "/v3/mg.example.com/messages")) == 1
    assert [state for state, _ in result.outcomes] == ["sent"] * 3
    assert [m["to"] for m in esp.delivered] == [[r.email] for r in readers(3)]
    for message, reader in zip(esp.delivered, readers(3), strict=True):
        quoted = reader.email.replace("@", "%40")
        assert f"email={quoted}" in message["headers"]["List-Unsubscribe"]
        assert f"email={quoted}" in message["html"] and f"email={quoted}" in message["text"]
        assert "%recipient." not in message["html"] + message["text"]
        assert message["variables"]["spark-mail-issue"] == SAMPLE_SLUG
    assert esp.schema_errors == []


def test_text_that_looks_like_a_merge_tag_stays_as_written(esp, newsletter):
    """An issue that quotes `%recipient.spk...v0%` and `%recipient.email%` reaches readers
    with those words unchanged: spark-mail's tags are named after a nonce the issue lacks."""
    issue = newsletter / "issues" / SAMPLE_ISSUE.name
    text = issue.read_text()
    issue.write_text(text + "\nMerge tags look like %recipient.email% and %recipient.v0%.\n")
    settings = settings_for(esp, newsletter, "mailgun")
    template = prepare(issue, settings)
    with provider_for(esp, newsletter) as provider:
        provider.send_batch(template, readers(1), "batch-1")
    (message,) = esp.delivered
    assert "%recipient.email% and %recipient.v0%" in message["text"]


def test_send_options_over_16_kb_are_refused_before_anything_is_sent(esp, newsletter, template):
    """Headers, tag and variables are the same in every call: over Mailgun's 16 KB the
    issue is refused before the first batch (not maybe sent)."""
    huge = dataclasses.replace(
        template.email, headers={**template.email.headers, "X-Big": "x" * 17_000}
    )
    big = PersonalizedTemplate(huge, list(template.slots), None, template.markers)
    with provider_for(esp, newsletter) as provider, pytest.raises(EspError) as caught:
        provider.prepare_batches(big)
    assert "16,384" in str(caught.value) and not caught.value.maybe_sent
    assert esp.calls() == []


def test_429_is_retried_but_a_502_after_mailgun_acted_is_not_repeated(esp, newsletter, template):
    """No idempotency key: a 429 (refused before acting) is waited out; a 502 may hide a
    batch Mailgun queued, so it is never repeated and says it may have gone out."""
    with provider_for(esp, newsletter) as provider:
        esp.fail(429, retry_after=0.01)
        result = provider.send_batch(template, readers(2), "batch-1")
        assert [state for state, _ in result.outcomes] == ["sent", "sent"]
        esp.act_then(status=502)
        with pytest.raises(EspError) as caught:
            provider.send_batch(template, readers(2), "batch-2")
    assert caught.value.maybe_sent
    assert len(esp.calls("POST", "/v3/mg.example.com/messages")) == 3  # 429, sent, 502 once
    assert len(esp.delivered) == 4


def test_the_events_api_finds_the_readers_of_a_batch_that_may_have_gone_out(
    esp, newsletter, template
):
    """After an act-then-502, lookup_batch reads the batch's `accepted` events (filtered by
    its user variable) and names each reader with the message id; with the events not in
    yet it names nobody."""
    keys = [r.email for r in readers(3)]
    with provider_for(esp, newsletter) as provider:
        provider.send_batch(template, readers(2), "other-batch")
        esp.act_then(status=502)
        with pytest.raises(EspError):
            provider.send_batch(template, readers(3), "batch-7")
        esp.mailgun.events_lag = True
        assert provider.lookup_batch("batch-7", keys) == {}
        esp.mailgun.events_lag = False
        found = provider.lookup_batch("batch-7", keys)
    assert set(found) == set(keys)
    assert all(found.values())
    (search, *_) = esp.calls("GET", "/v3/mg.example.com/events")
    assert "event=accepted" in search.query and "user-variables" in search.query


def test_the_events_lookup_follows_pages_only_on_the_api_host(esp, newsletter, template):
    """Paging follows `paging.next` on the API's own host; a next URL elsewhere is not
    followed (the API key would go with it)."""
    with provider_for(esp, newsletter) as provider:
        assert (
            provider._next_page({"paging": {"next": "https://evil.example/v3/x/events/y"}}) is None
        )
        page = {"paging": {"next": f"{esp.url('mailgun')}/v3/mg.example.com/events/abc"}}
        assert provider._next_page(page) == "v3/mg.example.com/events/abc"


def test_a_bad_key_and_an_unknown_domain_are_one_line(esp, newsletter, email):
    """401 Forbidden -> `mailgun: 401 ... - check SPARK_MAIL_API_KEY`; a domain Mailgun does
    not know -> 404 with its message; no domain at all -> a ConfigError naming the setting;
    a 400 says Mailgun's message and is not retried."""
    provider = provider_for(esp, newsletter, SPARK_MAIL_API_KEY="wrong")
    with provider, pytest.raises(EspError) as caught:
        provider.send_test(email, ["a@example.com"])
    assert str(caught.value) == "mailgun: 401 unauthorized [test send] - check SPARK_MAIL_API_KEY"
    provider = provider_for(esp, newsletter, SPARK_MAIL_MAILGUN_DOMAIN="other.example.com")
    with provider, pytest.raises(EspError, match=r"404 .*Domain not found: other\.example"):
        provider.send_test(email, ["a@example.com"])
    with pytest.raises(ConfigError, match="mailgun_domain"):
        provider_for(esp, newsletter, SPARK_MAIL_MAILGUN_DOMAIN="")
    esp.fail(400)
    with provider_for(esp, newsletter) as provider, pytest.raises(EspError) as caught:
        provider.send_test(email, ["a@example.com"])
    assert caught.value.status == 400 and not caught.value.maybe_sent
    assert str(caught.value) == "mailgun: 400 bad_request (injected 400) [test send]"


@pytest.mark.slow
def test_own_list_send_through_mailgun_sends_each_reader_once(esp, newsletter):
    """1,100 readers: batches of at most 1,000 (Mailgun's limit: 1,000 and 100), everyone
    once, the issue `sent`."""
    write_readers(newsletter, 1100)
    settings = settings_for(esp, newsletter, "mailgun", SPARK_MAIL_AUDIENCE="subscribers.csv")
    result = send_issue(SAMPLE_SLUG, settings, mode="send")
    calls = esp.calls("POST", "/v3/mg.example.com/messages")
    sizes = sorted(sum(name == "to" for name, _ in parse_form(call)) for call in calls)
    assert sizes == [100, 1000]
    assert result.outcome == "sent" and reader_states(settings) == {"sent": 1100}
    counted = [a for d in esp.delivered for a in d["to"]]
    assert len(counted) == len(set(counted)) == 1100
    assert issue_state(settings) == SendState.SENT
    assert esp.schema_errors == []


def test_batches_carry_the_delivery_time_within_the_plans_window(esp, newsletter, template):
    """schedule_batches: every call carries o:deliverytime (RFC 2822); more than
    mailgun_schedule_days ahead is refused; unschedule says why it cannot."""
    now = dt.datetime(2025, 1, 20, 12, 0, tzinfo=dt.UTC)
    settings = settings_for(esp, newsletter, "mailgun")
    provider = MailgunProvider(settings, clock=FakeClock(now))
    with provider:
        with pytest.raises(ConfigError, match="3 days ahead"):
            provider.schedule_batches(now + dt.timedelta(days=4), lambda ids: None, {})
        at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=2)
        provider.clock = FakeClock(at - dt.timedelta(hours=2))
        provider.schedule_batches(at, lambda ids: None, {})
        provider.send_batch(template, readers(2), "batch-1")
        with pytest.raises(UnsupportedOperation, match="ALL scheduled"):
            provider.unschedule({})
    assert {email_utils.parsedate_to_datetime(m["deliverytime"]) for m in esp.delivered} == {at}
