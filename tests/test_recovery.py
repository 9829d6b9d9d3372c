"""The send lifecycle's recovery rule: a send a dead process left in `sending` is settled,
never sent blindly.

Each test does what a killed process leaves behind: claim the issue, let the real provider
talk to the fake ESP on 127.0.0.1 (ids recorded through on_ids), then drop the ledger
without settling the row. A fresh Ledger then finds the stale row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from esp_server import FakeEsp
from spark_mail.clock import FakeClock
from spark_mail.config import Secret, Settings
from spark_mail.errors import AlreadySent, ProviderError, SendUncertain, SendUnconfirmed
from spark_mail.ledger import Ledger, SendState
from spark_mail.providers import get_provider
from spark_mail.providers.base import Provider
from spark_mail.render import RenderedEmail
from spark_mail.sending.lifecycle import Begun, SendLifecycle

NOW = dt.datetime(2025, 1, 20, 12, 0, tzinfo=dt.UTC)
SLUG = "2025-01-20-crash"


def make_email(text: str = "Hello, readers.") -> RenderedEmail:
    return RenderedEmail(
        slug=SLUG,
        subject="Issue 7",
        preheader="What we learned",
        from_address="Tiny Big Spark <hello@tinybigspark.com>",
        reply_to="editors@tinybigspark.com",
        html=f"<html><body><p>{text}</p></body></html>",
        text=text,
        headers={"List-Unsubscribe": "<https://tinybigspark.com/unsubscribe>"},
        sections=("article",),
    )


def make_provider(esp: FakeEsp, tmp_path: Path, name: str) -> Provider:
    """The provider on a FakeClock: Resend's two requests a second are kept, not waited
    out for real."""
    settings = Settings(
        root=tmp_path,
        provider=name,
        api_key=Secret(esp.api_key),
        api_url=esp.url(name),
        audience_id="seg-1",
        send_timeout=30.0,  # not a timeout test: a busy machine is slow
        send_attempts=2,
        send_backoff=0.01,
        send_retry_seconds=60.0,
    )
    return get_provider(settings, clock=FakeClock(NOW))


def claim(ledger: Ledger, content_hash: str, provider_name: str, **kw):
    """Lock and claim the issue, as the send lifecycle does."""
    assert ledger.locks.try_acquire(SLUG)
    mode = kw.pop("mode", "send")
    return ledger.claim(SLUG, content_hash, provider_name, mode, NOW, **kw)


def crash_mid_send(ledger_path: Path, provider: Provider, email: RenderedEmail) -> None:
    """Claim and send for real, then die before the answer is recorded."""
    dead = Ledger(ledger_path)
    claim(dead, email.content_hash, provider.name)
    with contextlib.suppress(ProviderError):  # the answer never reaches the ledger
        provider.send(email, on_ids=lambda ids: dead.record_ids(email.slug, ids, NOW))
    dead.close()  # releases the lock like a SIGKILL; the row stays `sending`


def crash_after_claim(ledger_path: Path, content_hash: str, provider_name: str) -> None:
    """Claim, then die before any request left (no ids recorded)."""
    with Ledger(ledger_path) as dead:
        claim(dead, content_hash, provider_name)


def next_run(
    ledger_path: Path, email: RenderedEmail, provider: Provider, now: dt.datetime = NOW
) -> Begun:
    """What the next process does: begin the send, settling the stale row first."""
    with (
        Ledger(ledger_path) as ledger,
        SendLifecycle(ledger, provider, email, FakeClock(now)) as life,
    ):
        return life.begin("send")


def row(ledger_path: Path):
    with Ledger(ledger_path) as ledger:
        return ledger.get(SLUG)


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


@pytest.mark.slow
def test_resend_broadcast_that_went_out_is_recorded_sent_not_resent(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """Resend says the broadcast was sent: the row becomes `sent`, nothing is sent again."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "resend")
    crash_mid_send(ledger_path, provider, email)
    assert "broadcast_id" in row(ledger_path).esp_ids
    assert next_run(ledger_path, email, provider).outcome == "sent-earlier"
    assert row(ledger_path).state == SendState.SENT
    with Ledger(ledger_path) as ledger:
        why = ledger.history(SLUG)[-1]
    assert why.state == "sent" and "resend says it went out" in (why.detail or "")
    assert len(esp.audience_sends) == 1
    assert esp.calls("GET", r"/broadcasts/.+"), "the ESP was asked"


@pytest.mark.slow
def test_resend_broadcast_left_as_draft_is_sent_again_once(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """Died before /send went through: Resend says draft, so a second run sends that same
    draft once (no second broadcast is created)."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "resend")
    esp.fail(500, times=2, path="/send")  # /send never succeeds this run
    crash_mid_send(ledger_path, provider, email)
    assert esp.audience_sends == []
    begun = next_run(ledger_path, email, provider)
    assert begun.outcome is None and begun.known_ids.get("broadcast_id")
    with Ledger(ledger_path) as ledger:
        result = provider.send(
            email, lambda ids: ledger.record_ids(SLUG, ids, NOW), begun.known_ids
        )
        ledger.mark_sent(SLUG, NOW, result.esp_ids)
        assert ledger.get(SLUG).attempts == 2  # type: ignore[union-attr]
    assert len(esp.audience_sends) == 1
    assert len(esp.calls("POST", "/broadcasts")) == 1


def test_buttondown_email_that_went_out_is_recorded_sent(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """Buttondown GET /v1/emails/{id} says sent: recorded, not sent twice."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "buttondown")
    crash_mid_send(ledger_path, provider, email)
    assert next_run(ledger_path, email, provider).outcome == "sent-earlier"
    assert row(ledger_path).state == SendState.SENT
    assert len(esp.audience_sends) == 1


def test_postmark_interrupted_send_is_uncertain_until_a_human_resends(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """No lookup, no idempotency key: `uncertain`, with the reason, refused until
    --resend-uncertain."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "postmark")
    crash_after_claim(ledger_path, email.content_hash, "postmark")
    with pytest.raises(SendUncertain) as caught:
        next_run(ledger_path, email, provider)
    assert "--resend-uncertain" in str(caught.value)
    left = row(ledger_path)
    assert left is not None and left.state == SendState.UNCERTAIN
    assert "postmark can neither be asked" in (left.last_error or "")
    with Ledger(ledger_path) as ledger:
        with pytest.raises(AlreadySent, match="uncertain"):
            claim(ledger, email.content_hash, "postmark")
        assert claim(ledger, email.content_hash, "postmark", allow_uncertain=True)
    assert esp.requests == []


def test_idempotent_provider_without_ids_retries_with_the_same_key(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """Died before the ESP gave any id: the retry with the same key is safe."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "resend")
    crash_after_claim(ledger_path, email.content_hash, "resend")
    assert next_run(ledger_path, email, provider).outcome is None
    assert "same idempotency key" in (row(ledger_path).last_error or "")


def test_changed_issue_after_a_crash_is_uncertain(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """The key comes from the content: edited since the crash, a retry is not safe."""
    provider = make_provider(esp, tmp_path, "resend")
    crash_after_claim(ledger_path, make_email().content_hash, "resend")
    edited = make_email("Hello, readers, with a fixed typo.")
    with pytest.raises(SendUncertain, match="issue changed"):
        next_run(ledger_path, edited, provider, NOW)


def test_idempotency_key_older_than_a_day_is_not_trusted(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """Found two days after the crash: the ESP may have forgotten the key -> uncertain."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "resend")
    crash_after_claim(ledger_path, email.content_hash, "resend")
    with pytest.raises(SendUncertain, match="forgotten the idempotency key"):
        next_run(ledger_path, email, provider, NOW + dt.timedelta(days=2))


def test_switched_provider_after_a_crash_is_uncertain(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """The new provider cannot know about the old one's send."""
    email = make_email()
    crash_after_claim(ledger_path, email.content_hash, "postmark")
    provider = make_provider(esp, tmp_path, "resend")
    with pytest.raises(SendUncertain, match="via postmark"):
        next_run(ledger_path, email, provider, NOW)


@pytest.mark.slow
def test_lookup_that_fails_leaves_it_unconfirmed_and_asks_again_next_run(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """The ESP cannot be asked (500s): nothing is sent and nothing decided; the row stays
    `sending` and the run after asks again, and settles it."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "resend")
    crash_mid_send(ledger_path, provider, email)
    esp.fail(500, times=2, method="GET")
    with pytest.raises(SendUnconfirmed, match="could not ask resend"):
        next_run(ledger_path, email, provider)
    assert row(ledger_path).state == SendState.SENDING
    assert next_run(ledger_path, email, provider).outcome == "sent-earlier"
    assert len(esp.audience_sends) == 1


@pytest.mark.slow
def test_interrupted_schedule_found_scheduled_is_recorded_scheduled(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """A `schedule` that died after Resend accepted it becomes `scheduled`, not `sent`."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "resend")
    at = NOW + dt.timedelta(days=1)
    with Ledger(ledger_path) as dead:
        claim(dead, email.content_hash, "resend", mode="schedule", scheduled_for=at)
        provider.schedule(email, at, on_ids=lambda ids: dead.record_ids(SLUG, ids, NOW))
    assert next_run(ledger_path, email, provider).outcome == "scheduled-earlier"
    left = row(ledger_path)
    assert left is not None and left.state == SendState.SCHEDULED
    assert left.scheduled_for == at.isoformat()
    assert dataclasses.replace(left).esp_ids.get("broadcast_id")
