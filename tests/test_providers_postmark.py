"""Postmark provider against the fake ESP on 127.0.0.1 (tests/esp_server.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from esp_server import FakeEsp, settings_for
from provider_support import sample_email, sample_template
from spark_mail.audience import Reader
from spark_mail.errors import UnsupportedOperation
from spark_mail.personalize import PersonalizedTemplate
from spark_mail.providers import get_provider
from spark_mail.providers.base import Capability, EspError
from spark_mail.providers.postmark import PostmarkProvider
from spark_mail.render import RenderedEmail


@pytest.fixture
def email(newsletter: Path) -> RenderedEmail:
    return sample_email(newsletter)


@pytest.fixture
def template(esp: FakeEsp, newsletter: Path) -> PersonalizedTemplate:
    """The sample issue rendered once for per-reader copies."""
    return sample_template(esp, newsletter, "postmark")


def readers(count: int) -> list[Reader]:
    return [
        Reader(f"r{i}@example.com", {"email": f"r{i}@example.com"}, i + 2) for i in range(count)
    ]


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


def test_a_batch_is_one_call_with_one_message_per_reader(esp, newsletter, template):
    """A batch goes out as one batchWithTemplates call, one message per reader."""
    with provider_for(esp, newsletter) as provider:
        result = provider.send_batch(template, readers(3), "batch-1")
    (call,) = esp.calls("POST", "/email/batchWithTemplates")
    messages = call.body["Messages"]
    assert [m["To"] for m in messages] == [r.email for r in readers(3)]
    assert all(m["MessageStream"] == "broadcast" for m in messages)
    assert [state for state, _ in result.outcomes] == ["sent"] * 3
    assert esp.schema_errors == []


def test_per_message_error_codes_in_a_200_answer_are_reported(esp, newsletter, template):
    """HTTP 200 with ErrorCode 406 for one reader: only that reader is refused."""
    esp.postmark_inactive.add("r1@example.com")
    with provider_for(esp, newsletter) as provider:
        result = provider.send_batch(template, readers(3), "batch-1")
    states = [state for state, _ in result.outcomes]
    assert states == ["sent", "refused", "sent"]
    assert result.outcomes[1][1].startswith("ErrorCode 406")


def test_server_rejects_more_than_500_messages(esp, newsletter, email):
    """The fake enforces the 500-message batch limit with Postmark's 422 body."""
    messages = [{"From": "a@example.com", "To": f"r{i}@example.com"} for i in range(501)]
    with provider_for(esp, newsletter) as provider, pytest.raises(EspError) as caught:
        provider.request("POST", "email/batch", "batch send", json_body=messages)
    assert caught.value.status == 422
    assert str(caught.value).startswith("postmark: 422 ErrorCode 300")


@pytest.mark.slow
def test_timed_out_batch_is_not_repeated_and_may_have_been_sent(esp, newsletter, template):
    """No idempotency keys: a batch without an answer is not sent again; maybe_sent."""
    with provider_for(esp, newsletter) as provider:
        provider.prepare_batches(template)  # the stored template, before the held call
    esp.hold(2.0, path="/email/batchWithTemplates")
    provider = provider_for(esp, newsletter, SPARK_MAIL_SEND_TIMEOUT="0.5")
    with provider, pytest.raises(EspError) as caught:
        provider.send_batch(template, readers(1), "batch-1")
    assert caught.value.maybe_sent is True
    assert len(esp.calls("POST", "/email/batchWithTemplates")) == 1


@pytest.mark.slow
def test_429_is_retried_but_a_500_is_not_repeated(esp, newsletter, template):
    """A 429 is a refusal: waited out and retried. A 500 may come after Postmark processed
    the batch (no idempotency key): never repeated, the error says it may have gone out."""
    with provider_for(esp, newsletter) as provider:
        provider.prepare_batches(template)
        esp.fail(429, retry_after=0.05)
        result = provider.send_batch(template, readers(1), "batch-1")
        assert [state for state, _ in result.outcomes] == ["sent"]
        esp.act_then(status=500)
        with pytest.raises(EspError) as caught:
            provider.send_batch(template, readers(1), "batch-2")
    assert caught.value.maybe_sent
    assert len(esp.calls("POST", "/email/batchWithTemplates")) == 3  # 429, sent, 500 once
    assert len([d for d in esp.delivered if d.get("kind") != "test"]) == 2


def test_bad_token_is_one_line(esp, newsletter, email):
    """401 ErrorCode 10 -> `postmark: 401 ErrorCode 10 ... - check SPARK_MAIL_API_KEY`."""
    provider = provider_for(esp, newsletter, SPARK_MAIL_API_KEY="pm-wrong-token")
    with provider, pytest.raises(EspError) as caught:
        provider.send_test(email, ["a@example.com"])
    assert str(caught.value) == "postmark: 401 ErrorCode 10 [test send] - check SPARK_MAIL_API_KEY"


def test_no_audience_send_and_no_schedule(esp, newsletter, email):
    """Postmark keeps no list: an audience send points to the subscribers file setting."""
    with provider_for(esp, newsletter) as provider:
        with pytest.raises(UnsupportedOperation, match="audience"):
            provider.send(email, lambda ids: None)
        assert Capability.SCHEDULE not in provider.capabilities
        with pytest.raises(UnsupportedOperation, match="dispatch"):
            provider.unschedule({})
    assert esp.calls() == []
