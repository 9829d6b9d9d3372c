"""Buttondown provider against the fake ESP on 127.0.0.1 (tests/esp_server.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from conftest import SAMPLE_ISSUE
from esp_server import FakeEsp, settings_for
from spark_mail.providers import get_provider
from spark_mail.providers.base import DeliveryState, EspError
from spark_mail.providers.buttondown import ButtondownProvider
from spark_mail.render import RenderedEmail, build


@pytest.fixture
def email(newsletter: Path) -> RenderedEmail:
    from spark_mail.config import load_settings

    return build(SAMPLE_ISSUE, load_settings(newsletter, env={}))


def provider_for(esp: FakeEsp, root: Path, **env: str) -> ButtondownProvider:
    provider = get_provider(settings_for(esp, root, "buttondown", **env))
    assert isinstance(provider, ButtondownProvider)
    return provider


def test_every_email_is_created_as_a_draft(esp, newsletter, email):
    """Creating with the default status would send: every create says status=draft."""
    with provider_for(esp, newsletter) as provider:
        provider.send_test(email, ["editor@example.com"])
        provider.send(email, lambda ids: None)
    creates = esp.calls("POST", "/v1/emails")
    assert len(creates) == 2
    assert all(r.body["status"] == "draft" for r in creates)
    assert esp.schema_errors == []


def test_test_send_uses_send_draft_and_never_publishes(esp, newsletter, email):
    """A test copy: draft + send-draft to the editors; nothing published."""
    with provider_for(esp, newsletter) as provider:
        provider.send_test(email, ["a@example.com", "b@example.com"])
    paths = [r.path for r in esp.calls()]
    assert paths[0] == "/v1/emails" and paths[1].endswith("/send-draft")
    assert esp.calls()[1].body == {"recipients": ["a@example.com", "b@example.com"]}
    assert esp.audience_sends == []
    assert not [r for r in esp.calls() if r.path.endswith("/publish")]


def test_send_records_draft_id_before_publishing(esp, newsletter, email):
    """on_ids gets the draft id while only the create has left; publish sends once."""
    seen = []
    with provider_for(esp, newsletter) as provider:
        result = provider.send(email, lambda ids: seen.append((ids, len(esp.calls()))))
    assert seen == [({"email_id": result.esp_ids["email_id"]}, 1)]
    publish = esp.calls("POST", r"/v1/emails/.*/publish")[0]
    assert publish.body == {"status": "about_to_send"}
    assert publish.header("X-Buttondown-Live-Dangerously") == "true"
    assert publish.header("X-Idempotency-Key").startswith(f"{email.idempotency_key}:publish")
    assert publish.header("Authorization") == "Token test-key"
    assert len(esp.audience_sends) == 1


def test_dropped_publish_is_retried_with_the_same_key_and_sends_once(esp, newsletter, email):
    """Connection lost after publish: the retry carries the same key; one send."""
    esp.drop(path="/publish")
    with provider_for(esp, newsletter) as provider:
        provider.send(email, lambda ids: None)
    publishes = esp.calls("POST", r"/v1/emails/.*/publish")
    assert len(publishes) == 2
    assert publishes[0].header("X-Idempotency-Key") == publishes[1].header("X-Idempotency-Key")
    assert len(esp.audience_sends) == 1


def test_validation_error_is_one_line_and_not_retried(esp, newsletter, email):
    """A 422 from Buttondown: one request, its detail in one line."""
    with provider_for(esp, newsletter) as provider, pytest.raises(EspError) as caught:
        provider.request("POST", "emails", "create draft", json_body={"subject": 5})
    assert caught.value.status == 422
    assert len(esp.calls()) == 1
    assert "\n" not in str(caught.value)


def test_wrong_token_names_the_setting(esp, newsletter, email):
    """401 Invalid token -> `buttondown: 401 ... - check SPARK_MAIL_API_KEY`."""
    provider = provider_for(esp, newsletter, SPARK_MAIL_API_KEY="bd-secret-wrong")
    with provider, pytest.raises(EspError) as caught:
        provider.send(email, lambda ids: None)
    assert str(caught.value).startswith("buttondown: 401 ")
    assert str(caught.value).endswith("check SPARK_MAIL_API_KEY")
    assert "bd-secret-wrong" not in str(caught.value)


def test_schedule_unschedule_and_lookup(esp, newsletter, email):
    """publish_date schedules; PATCH back to draft unschedules; GET tells the state."""
    at = dt.datetime(2030, 5, 1, 7, tzinfo=dt.UTC)
    with provider_for(esp, newsletter) as provider:
        ids = provider.schedule(email, at, lambda ids: None).esp_ids
        assert esp.calls("POST", r"/v1/emails/.*/publish")[0].body == {
            "status": "scheduled",
            "publish_date": "2030-05-01T07:00:00Z",
        }
        assert provider.lookup(ids) == DeliveryState.SCHEDULED
        provider.unschedule(ids)
        assert provider.lookup(ids) == DeliveryState.NOT_SENT
        sent = provider.send(email, lambda ids: None).esp_ids
        assert provider.lookup(sent) == DeliveryState.SENT
        assert provider.lookup({"email_id": "missing"}) == DeliveryState.NOT_SENT
    assert esp.schema_errors == []
