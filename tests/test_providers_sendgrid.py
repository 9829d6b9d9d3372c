"""SendGrid provider against the fake ESP on 127.0.0.1 (tests/esp_server.py): test sends,
own-list batches of personalizations with substitutions, the answers that are not a plain
202, errors, and scheduling with a batch id that `unschedule` cancels."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from test_bulk import reader_states, write_readers

from conftest import SAMPLE_SLUG, write_issue
from esp_server import FakeEsp, settings_for
from provider_support import sample_email, sample_template
from spark_mail.audience import Reader
from spark_mail.clock import FakeClock
from spark_mail.errors import ConfigError
from spark_mail.personalize import PersonalizedTemplate, prepare
from spark_mail.providers import get_provider
from spark_mail.providers.base import EspError
from spark_mail.providers.sendgrid import SendgridProvider
from spark_mail.render import RenderedEmail
from spark_mail.sending import send_issue


@pytest.fixture
def email(newsletter: Path) -> RenderedEmail:
    return sample_email(newsletter)


@pytest.fixture
def template(esp: FakeEsp, newsletter: Path) -> PersonalizedTemplate:
    return sample_template(esp, newsletter, "sendgrid")


def readers(count: int, name: str = "Reader") -> list[Reader]:
    return [
        Reader(f"r{i}@example.com", {"email": f"r{i}@example.com", "first_name": name}, i + 2)
        for i in range(count)
    ]


def provider_for(esp: FakeEsp, root: Path, **env: str) -> SendgridProvider:
    provider = get_provider(settings_for(esp, root, "sendgrid", **env))
    assert isinstance(provider, SendgridProvider)
    return provider


def test_test_send_is_one_personalization_and_a_202_with_the_message_id(esp, newsletter, email):
    """POST /v3/mail/send with a bearer key, the editors in one personalization, text before
    HTML, the unsubscribe headers; 202 with an empty body; the body fits SendGrid's schema."""
    with provider_for(esp, newsletter) as provider:
        result = provider.send_test(email, ["a@example.com", "b@example.com"])
    (call,) = esp.calls()
    assert call.path == "/v3/mail/send" and call.header("Authorization") == "Bearer test-key"
    assert [c["type"] for c in call.body["content"]] == ["text/plain", "text/html"]
    (message,) = esp.delivered
    assert message["to"] == ["a@example.com", "b@example.com"]
    assert message["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert result.esp_ids["message_id"] == message["id"]
    assert esp.schema_errors == []


def test_a_batch_is_one_call_and_each_reader_gets_their_own_copy(esp, newsletter, template):
    """One personalization per reader: their address alone in To, their own unsubscribe
    link in the header and the body, the batch named in custom_args."""
    with provider_for(esp, newsletter) as provider:
        result = provider.send_batch(template, readers(3), "batch-1")
    (call,) = esp.calls("POST", "/v3/mail/send")
    assert len(call.body["personalizations"]) == 3
    assert [state for state, _ in result.outcomes] == ["sent"] * 3
    for message, reader in zip(esp.delivered, readers(3), strict=True):
        quoted = reader.email.replace("@", "%40")
        assert message["to"] == [reader.email]
        assert f"email={quoted}" in message["headers"]["List-Unsubscribe"]
        assert f"email={quoted}" in message["html"] and f"email={quoted}" in message["text"]
        assert "[spk" not in message["html"] + message["text"]
        assert message["custom_args"]["spark_mail_issue"] == SAMPLE_SLUG
    assert esp.schema_errors == []


def test_a_reader_over_the_substitution_limit_is_refused_and_the_rest_go(esp, newsletter):
    """A reader whose values exceed SendGrid's 10,000 bytes per personalization is refused
    with the reason; the others in the batch are sent."""
    from test_personalize import GREETING, make_layout

    make_layout(newsletter, "greet", GREETING)
    issue = write_issue(newsletter, "greet", "title: Hello\ndate: 2025-02-03\nlayout: greet")
    template = prepare(issue, settings_for(esp, newsletter, "sendgrid"))
    big = Reader("big@example.com", {"email": "big@example.com", "first_name": "x" * 11_000}, 9)
    people = [*readers(2), big]
    with provider_for(esp, newsletter) as provider:
        result = provider.send_batch(template, people, "batch-1")
    states = [state for state, _ in result.outcomes]
    assert states == ["sent", "sent", "refused"]
    assert "10,000" in result.outcomes[2][1]
    assert [m["to"] for m in esp.delivered] == [["r0@example.com"], ["r1@example.com"]]


@pytest.mark.parametrize(
    "fault", [{"status": 502}, {"shape": {"message": "ok"}}, {"raw": "<html>ok</html>"}]
)
def test_an_answer_other_than_an_empty_202_may_have_been_sent(esp, newsletter, template, fault):
    """After SendGrid acted: a 502, a 202 with a body, an HTML 200 are never repeated and
    say the batch may have gone out."""
    esp.act_then(**fault)
    with provider_for(esp, newsletter) as provider, pytest.raises(EspError) as caught:
        provider.send_batch(template, readers(2), "batch-1")
    assert caught.value.maybe_sent
    assert len(esp.calls("POST", "/v3/mail/send")) == 1


def test_a_bad_key_and_a_validation_error_are_one_line(esp, newsletter, email):
    """401 -> `sendgrid: 401 ... - check SPARK_MAIL_API_KEY`; a 400 names SendGrid's message
    and is never retried; a 429 is waited out and the message goes once."""
    provider = provider_for(esp, newsletter, SPARK_MAIL_API_KEY="wrong")
    with provider, pytest.raises(EspError) as caught:
        provider.send_test(email, ["a@example.com"])
    assert str(caught.value) == "sendgrid: 401 unauthorized [test send] - check SPARK_MAIL_API_KEY"
    esp.fail(400)
    with provider_for(esp, newsletter) as provider, pytest.raises(EspError) as caught:
        provider.send_test(email, ["a@example.com"])
    assert caught.value.status == 400 and not caught.value.maybe_sent
    assert "injected 400" in str(caught.value)
    esp.fail(429, retry_after=0.01)
    with provider_for(esp, newsletter) as provider:
        provider.send_test(email, ["a@example.com"])  # waited out, then sent once
    assert len(esp.calls("POST", "/v3/mail/send")) == 4 and len(esp.delivered) == 1


@pytest.mark.slow
def test_own_list_send_through_sendgrid_sends_each_reader_once(esp, newsletter):
    """1,100 readers: two calls (1,000 + 100 personalizations: SendGrid's limit is 1,000),
    everyone once."""
    write_readers(newsletter, 1100)
    settings = settings_for(esp, newsletter, "sendgrid", SPARK_MAIL_AUDIENCE="subscribers.csv")
    result = send_issue(SAMPLE_SLUG, settings, mode="send")
    sizes = sorted(len(c.body["personalizations"]) for c in esp.calls("POST", "/v3/mail/send"))
    assert sizes == [100, 1000]
    counted = [a for d in esp.delivered for a in d["to"]]
    assert len(counted) == len(set(counted)) == 1100
    assert result.outcome == "sent" and reader_states(settings) == {"sent": 1100}
    assert esp.schema_errors == []


def test_scheduled_batches_share_one_batch_id_that_unschedule_cancels(esp, newsletter, template):
    """schedule_batches makes one batch id (recorded first) and every call carries it and
    send_at; 73 hours ahead is refused; unschedule cancels the batch id, but not within
    10 minutes of the send time."""
    at = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(hours=1)
    clock = FakeClock(at - dt.timedelta(hours=1))
    provider = SendgridProvider(settings_for(esp, newsletter, "sendgrid"), clock=clock)
    recorded: list[dict[str, str]] = []
    with provider:
        with pytest.raises(ConfigError, match="72 hours"):
            provider.schedule_batches(at + dt.timedelta(hours=72), recorded.append, {})
        provider.schedule_batches(at, recorded.append, {})
        provider.send_batch(template, readers(2), "batch-1")
        provider.send_batch(template, readers(3)[2:], "batch-2")
        ids = recorded[-1]
        clock.advance(55 * 60)
        with pytest.raises(ConfigError, match="10 minutes"):
            provider.unschedule(ids)
        clock.advance(-50 * 60)
        provider.unschedule(ids)
    assert ids["batch_id"] in esp.sendgrid.batches
    sends = esp.calls("POST", "/v3/mail/send")
    assert {c.body["batch_id"] for c in sends} == {ids["batch_id"]}
    assert {c.body["send_at"] for c in sends} == {int(at.timestamp())}
    assert esp.sendgrid.scheduled_sends == {ids["batch_id"]: "cancel"}
    assert {d["kind"] for d in esp.delivered} == {"cancelled"}
