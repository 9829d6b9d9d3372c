"""Postmark provider against the fake ESP on 127.0.0.1 (tests/esp_server.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from esp_server import FakeEsp, settings_for

from conftest import SAMPLE_ISSUE
from spark_mail.errors import ConfigError, UnsupportedOperation
from spark_mail.providers import get_provider
from spark_mail.providers.base import Capability, EspError
from spark_mail.providers.postmark import PostmarkProvider
from spark_mail.render import RenderedEmail, build


@pytest.fixture
def email(newsletter: Path) -> RenderedEmail:
    from spark_mail.config import load_settings

    return build(SAMPLE_ISSUE, load_settings(newsletter, env={}))


def provider_for(esp: FakeEsp, root: Path, **env: str) -> PostmarkProvider:
    provider = get_provider(settings_for(esp, root, "postmark", **env))
    assert isinstance(provider, PostmarkProvider)
    return provider


def test_test_send_is_one_email_on_the_broadcast_stream(esp, newsletter, email):
    """POST /email with the server token, the stream and the unsubscribe headers."""
    with provider_for(esp, newsletter) as provider:
        result = provider.send_test(email, ["a@example.com", "b@example.com"])
    (request,) = esp.calls()
    assert request.path == "/email"
    assert request.header("X-Postmark-Server-Token") == "test-key"
    assert request.body["To"] == "a@example.com, b@example.com"
    assert request.body["MessageStream"] == "broadcast"
    assert {"Name": "List-Unsubscribe-Post", "Value": "List-Unsubscribe=One-Click"} in (
        request.body["Headers"]
    )
    assert result.esp_ids["message_id"]
    assert esp.schema_errors == []


def test_readers_go_in_batches_of_at_most_500(esp, newsletter, email):
    """1,201 readers: three batch calls (500, 500, 201), one message per reader."""
    readers = [f"r{i}@example.com" for i in range(1201)]
    with provider_for(esp, newsletter) as provider:
        result = provider.send(email, lambda ids: None, readers)
    sizes = [len(r.body) for r in esp.calls("POST", "/email/batch")]
    assert sizes == [500, 500, 201]
    assert result.recipients == 1201 and result.refused == {}
    assert all("," not in m["To"] for r in esp.calls() for m in r.body)
    assert esp.schema_errors == []


def test_per_message_error_codes_in_a_200_answer_are_reported(esp, newsletter, email):
    """HTTP 200 with ErrorCode 406 for one reader: that reader is reported refused."""
    esp.postmark_inactive.add("gone@example.com")
    with provider_for(esp, newsletter) as provider:
        result = provider.send(
            email, lambda ids: None, ["a@example.com", "gone@example.com", "b@example.com"]
        )
    assert result.recipients == 2
    assert list(result.refused) == ["gone@example.com"]
    assert result.refused["gone@example.com"].startswith("ErrorCode 406")


def test_every_message_refused_is_an_error(esp, newsletter, email):
    """A batch where every message failed raises instead of reporting success."""
    esp.postmark_inactive.add("gone@example.com")
    with provider_for(esp, newsletter) as provider, pytest.raises(EspError, match="406"):
        provider.send(email, lambda ids: None, ["gone@example.com"])


def test_server_rejects_more_than_500_messages(esp, newsletter, email):
    """The fake enforces the 500-message batch limit with Postmark's 422 body."""
    messages = [{"From": "a@example.com", "To": f"r{i}@example.com"} for i in range(501)]
    with provider_for(esp, newsletter) as provider, pytest.raises(EspError) as caught:
        provider.request("POST", "email/batch", "batch send", json_body=messages)
    assert caught.value.status == 422
    assert str(caught.value).startswith("postmark: 422 ErrorCode 300")


def test_timed_out_batch_is_not_repeated_and_may_have_been_sent(esp, newsletter, email):
    """No idempotency keys: a batch without an answer is not sent again; maybe_sent."""
    esp.hold(2.0, path="/email/batch")
    provider = provider_for(esp, newsletter, SPARK_MAIL_SEND_TIMEOUT="0.5")
    with provider, pytest.raises(EspError) as caught:
        provider.send(email, lambda ids: None, ["a@example.com"])
    assert caught.value.maybe_sent is True
    assert len(esp.calls("POST", "/email/batch")) == 1


def test_429_and_500_are_retried(esp, newsletter, email):
    """A 429 and a 500 were refusals: retried, then the batch goes out once."""
    esp.fail(429, retry_after=0.05)
    esp.fail(500)
    with provider_for(esp, newsletter) as provider:
        result = provider.send(email, lambda ids: None, ["a@example.com"])
    assert len(esp.calls()) == 3
    assert result.recipients == 1
    assert len(esp.delivered) == 1


def test_bad_token_is_one_line(esp, newsletter, email):
    """401 ErrorCode 10 -> `postmark: 401 ErrorCode 10 ... - check SPARK_MAIL_API_KEY`."""
    provider = provider_for(esp, newsletter, SPARK_MAIL_API_KEY="pm-wrong-token")
    with provider, pytest.raises(EspError) as caught:
        provider.send_test(email, ["a@example.com"])
    assert str(caught.value) == "postmark: 401 ErrorCode 10 [test send] - check SPARK_MAIL_API_KEY"


def test_no_readers_and_no_schedule(esp, newsletter, email):
    """Postmark keeps no list: send without readers names the setting; no scheduling."""
    with provider_for(esp, newsletter) as provider:
        with pytest.raises(ConfigError, match="audience"):
            provider.send(email, lambda ids: None)
        assert Capability.SCHEDULE not in provider.capabilities
        with pytest.raises(UnsupportedOperation, match="dispatch"):
            provider.unschedule({})
    assert esp.calls() == []
