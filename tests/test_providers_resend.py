"""Resend provider against the fake ESP on 127.0.0.1 (tests/esp_server.py)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from conftest import SAMPLE_ISSUE
from esp_server import FakeEsp, settings_for
from spark_mail.errors import ConfigError, UnsupportedOperation
from spark_mail.providers import get_provider
from spark_mail.providers.base import Capability, DeliveryState, EspError
from spark_mail.providers.resend import ResendProvider
from spark_mail.render import RenderedEmail, build


@pytest.fixture
def email(newsletter: Path) -> RenderedEmail:
    from spark_mail.config import load_settings

    return build(SAMPLE_ISSUE, load_settings(newsletter, env={}))


def provider_for(esp: FakeEsp, root: Path, **env: str) -> ResendProvider:
    provider = get_provider(settings_for(esp, root, "resend", **env))
    assert isinstance(provider, ResendProvider)
    provider.limiter.interval = 0  # the 2 req/s limit has its own test
    return provider


def test_send_creates_broadcast_and_records_its_id_before_sending(esp, newsletter, email):
    """The broadcast id reaches on_ids while only the create request has left."""
    seen: list[tuple[dict[str, str], int]] = []
    with provider_for(esp, newsletter) as provider:
        result = provider.send(email, lambda ids: seen.append((ids, len(esp.calls()))))
    assert seen == [({"broadcast_id": result.esp_ids["broadcast_id"]}, 1)]
    assert [r.path for r in esp.calls()] == [
        "/broadcasts",
        f"/broadcasts/{result.esp_ids['broadcast_id']}/send",
    ]
    assert len(esp.audience_sends) == 1
    assert esp.schema_errors == []


def test_requests_carry_auth_idempotency_key_and_valid_bodies(esp, newsletter, email):
    """Bodies validate against the copied Resend schemas; key + bearer auth on each call."""
    with provider_for(esp, newsletter) as provider:
        provider.send_test(email, ["editor@example.com"])
        provider.send(email, lambda ids: None)
    assert esp.schema_errors == []
    for request in esp.calls():
        assert request.header("Authorization") == "Bearer test-key"
        assert request.header("Idempotency-Key")
    create = esp.calls("POST", "/broadcasts")[0].body
    assert create["segment_id"] == "seg_test"
    assert create["html"] == email.html and create["text"] == email.text
    assert create["preview_text"] == email.preheader


def test_test_send_goes_to_emails_never_to_broadcasts(esp, newsletter, email):
    """A test copy is one POST /emails to the editors; no broadcast is created."""
    with provider_for(esp, newsletter) as provider:
        result = provider.send_test(email, ["a@example.com", "b@example.com"])
    (request,) = esp.calls()
    assert request.path == "/emails"
    assert request.body["to"] == ["a@example.com", "b@example.com"]
    assert result.recipients == 2
    assert esp.audience_sends == []


def test_repeated_test_send_goes_out_again(esp, newsletter, email):
    """Two test sends of the same content both arrive (different idempotency keys)."""
    with provider_for(esp, newsletter) as provider:
        provider.send_test(email, ["a@example.com"])
        provider.send_test(email, ["a@example.com"])
    keys = {r.header("Idempotency-Key") for r in esp.calls()}
    assert len(keys) == 2
    assert len([d for d in esp.delivered if d["kind"] == "message"]) == 2


def test_more_than_50_test_recipients_is_refused_before_sending(esp, newsletter, email):
    """51 addresses: a clear error, no request."""
    with provider_for(esp, newsletter) as provider, pytest.raises(ConfigError, match="at most 50"):
        provider.send_test(email, [f"e{i}@example.com" for i in range(51)])
    assert esp.calls() == []


def test_server_rejects_51_to_addresses_with_resend_422(esp, newsletter, email):
    """The fake enforces Resend's limit like the API: 422 validation_error, not retried."""
    body = {"from": "a@example.com", "to": [f"e{i}@example.com" for i in range(51)], "subject": "x"}
    with provider_for(esp, newsletter) as provider, pytest.raises(EspError) as caught:
        provider.request("POST", "emails", "test send", json_body=body)
    assert caught.value.status == 422
    assert str(caught.value).startswith("resend: 422 validation_error")
    assert len(esp.calls()) == 1


def test_wrong_key_is_one_line_naming_the_setting(esp, newsletter, email):
    """A bad key: `resend: 403 invalid_api_key - check SPARK_MAIL_API_KEY`, no retry, no key."""
    settings = settings_for(esp, newsletter, "resend", SPARK_MAIL_API_KEY="re_wrong_secret")
    with ResendProvider(settings) as provider, pytest.raises(EspError) as caught:
        provider.send_test(email, ["a@example.com"])
    message = str(caught.value)
    assert message == "resend: 403 invalid_api_key [test send] - check SPARK_MAIL_API_KEY"
    assert "re_wrong_secret" not in message and "\n" not in message
    assert caught.value.maybe_sent is False
    assert len(esp.calls()) == 1


@pytest.mark.slow
def test_429_waits_for_retry_after_then_succeeds(esp, newsletter, email):
    """A 429 with retry-after: 0.4 is retried after at least 0.4 s."""
    esp.fail(429, retry_after=0.4, path="/broadcasts")
    start = time.monotonic()
    with provider_for(esp, newsletter) as provider:
        provider.send(email, lambda ids: None)
    assert time.monotonic() - start >= 0.4
    assert len(esp.calls("POST", "/broadcasts")) == 2
    assert len(esp.audience_sends) == 1


def test_500_then_success_sends_once(esp, newsletter, email):
    """A 500 on /send is retried; the broadcast goes out once."""
    esp.fail(500, path="/send")
    with provider_for(esp, newsletter) as provider:
        provider.send(email, lambda ids: None)
    assert len(esp.calls("POST", r"/broadcasts/.*/send")) == 2
    assert len(esp.audience_sends) == 1


def test_retries_are_bounded_and_say_so(esp, newsletter, email):
    """Endless 500s: send_attempts (3) requests (the idempotency key makes repeating
    safe), then one error line that says it may have gone out."""
    esp.fail(500, times=10)
    with provider_for(esp, newsletter) as provider, pytest.raises(EspError) as caught:
        provider.send_test(email, ["a@example.com"])
    assert len(esp.calls()) == 3
    assert "gave up after 3 attempts" in str(caught.value)
    assert caught.value.maybe_sent is True


def test_timeout_on_send_does_not_send_twice(esp, newsletter, email):
    """/send answered too late: the retry is refused, lookup says sent, one broadcast."""
    esp.hold(2.0, path="/send")
    with provider_for(esp, newsletter, SPARK_MAIL_SEND_TIMEOUT="0.5") as provider:
        result = provider.send(email, lambda ids: None)
    assert len(esp.audience_sends) == 1
    assert esp.calls("GET", r"/broadcasts/.*")
    assert result.esp_ids["broadcast_id"] == esp.audience_sends[0]["id"]


def test_missing_audience_id_names_the_setting(esp, newsletter, email):
    """No SPARK_MAIL_AUDIENCE_ID: a clear error before any request."""
    with (
        provider_for(esp, newsletter, SPARK_MAIL_AUDIENCE_ID="") as provider,
        pytest.raises(ConfigError, match="SPARK_MAIL_AUDIENCE_ID"),
    ):
        provider.send(email, lambda ids: None)
    assert esp.calls() == []


def test_lookup_reports_draft_scheduled_sent_and_unknown_ids(esp, newsletter, email):
    """GET /broadcasts/{id} maps to NOT_SENT / SCHEDULED / SENT; a 404 is NOT_SENT."""
    with provider_for(esp, newsletter) as provider:
        draft = provider._create_broadcast(email, lambda ids: None, None, {})
        assert provider.lookup({"broadcast_id": draft}) == DeliveryState.NOT_SENT
        at = dt.datetime(2030, 1, 1, 7, tzinfo=dt.UTC)
        scheduled = provider.schedule(email, at, lambda ids: None).esp_ids
        assert provider.lookup(scheduled) == DeliveryState.SCHEDULED
        sent = provider.send(email, lambda ids: None).esp_ids
        assert provider.lookup(sent) == DeliveryState.SENT
        assert provider.lookup({"broadcast_id": "nope"}) == DeliveryState.NOT_SENT
        assert provider.lookup({}) == DeliveryState.UNKNOWN


def test_schedule_passes_scheduled_at_and_unschedule_deletes(esp, newsletter, email):
    """scheduled_at in UTC on /send; unschedule removes the scheduled broadcast."""
    at = dt.datetime(2030, 1, 1, 8, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    with provider_for(esp, newsletter) as provider:
        ids = provider.schedule(email, at, lambda ids: None).esp_ids
        assert esp.calls("POST", r"/broadcasts/.*/send")[0].body == {
            "scheduled_at": "2030-01-01T07:00:00Z"
        }
        assert esp.audience_sends == []
        provider.unschedule(ids)
    assert esp.broadcasts == {}


@pytest.mark.slow
def test_rate_limit_spaces_requests(esp, newsletter, email):
    """At 2 requests/s, three test sends take at least a second."""
    with get_provider(settings_for(esp, newsletter, "resend")) as provider:
        start = time.monotonic()
        for _ in range(3):
            provider.send_test(email, ["a@example.com"])
    assert time.monotonic() - start >= 0.95


def test_capabilities_and_unsupported_operation(esp, newsletter):
    """Resend can do all four; the outbox cannot schedule, with a pointer to dispatch."""
    from spark_mail.config import load_settings

    with provider_for(esp, newsletter) as provider:
        assert provider.capabilities == frozenset(Capability) - {Capability.BATCH_LOOKUP}
        assert provider.idempotent
    outbox = get_provider(load_settings(newsletter, env={}))
    with pytest.raises(UnsupportedOperation, match="dispatch"):
        outbox.schedule(None, dt.datetime.now(dt.UTC), lambda ids: None)  # type: ignore[arg-type]
