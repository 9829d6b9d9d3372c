"""recovery.reconcile: a send a dead process left in `sending` is settled, never sent blindly.

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
from spark_mail.config import Secret, Settings
from spark_mail.errors import AlreadySent, ProviderError
from spark_mail.ledger import Ledger, SendState, StaleSend
from spark_mail.providers import get_provider
from spark_mail.providers.base import Provider
from spark_mail.recovery import SendUncertain, reconcile
from spark_mail.render import RenderedEmail

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
    settings = Settings(
        root=tmp_path,
        provider=name,
        api_key=Secret(esp.api_key),
        api_url=esp.url(name),
        audience_id="seg-1",
        send_timeout=2.0,
        send_attempts=2,
        send_backoff=0.01,
        send_retry_seconds=2.0,
    )
    return get_provider(settings)


def crash_mid_send(ledger_path: Path, provider: Provider, email: RenderedEmail) -> None:
    """Claim and send for real, then die before the answer is recorded."""
    dead = Ledger(ledger_path)
    dead.claim(email.slug, email.content_hash, provider.name, now=NOW)
    with contextlib.suppress(ProviderError):  # the answer never reaches the ledger
        provider.send(email, on_ids=lambda ids: dead.record_ids(email.slug, ids, now=NOW))
    dead.close()  # releases the lock like a SIGKILL; the row stays `sending`


def crash_after_claim(ledger_path: Path, content_hash: str, provider_name: str) -> None:
    """Claim, then die before any request left (no ids recorded)."""
    with Ledger(ledger_path) as dead:
        dead.claim(SLUG, content_hash, provider_name, now=NOW)


def stale(ledger: Ledger, email: RenderedEmail, provider: Provider):
    with pytest.raises(StaleSend) as caught:
        ledger.claim(email.slug, email.content_hash, provider.name, now=NOW)
    return caught.value.record


def next_run_reconciles(
    ledger_path: Path, email: RenderedEmail, provider: Provider, now: dt.datetime = NOW
) -> str:
    """What the next process does: claim, find the stale row, reconcile it."""
    with Ledger(ledger_path) as ledger:
        return reconcile(ledger, stale(ledger, email, provider), provider, email, now=now)


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


def test_resend_broadcast_that_went_out_is_recorded_sent_not_resent(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """Resend says the broadcast was sent: the row becomes `sent`, nothing is sent again."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "resend")
    crash_mid_send(ledger_path, provider, email)
    with Ledger(ledger_path) as ledger:
        record = stale(ledger, email, provider)
        assert "broadcast_id" in record.esp_ids
        assert reconcile(ledger, record, provider, email, now=NOW) == "sent"
        assert ledger.get(SLUG).state == SendState.SENT  # type: ignore[union-attr]
        why = ledger.history(SLUG)[-1]
    assert why.state == "sent" and "resend says it went out" in (why.detail or "")
    assert len(esp.audience_sends) == 1
    assert esp.calls("GET", r"/broadcasts/.+"), "the ESP was asked"


def test_resend_broadcast_left_as_draft_is_sent_again_once(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """Died before /send went through: Resend says draft, so a second run sends it once."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "resend")
    esp.fail(500, times=2, path="/send")  # /send never succeeds this run
    crash_mid_send(ledger_path, provider, email)
    assert esp.audience_sends == []
    with Ledger(ledger_path) as ledger:
        record = stale(ledger, email, provider)
        assert reconcile(ledger, record, provider, email, now=NOW) == "resend"
        result = provider.send(email, on_ids=lambda ids: ledger.record_ids(SLUG, ids))
        ledger.mark_sent(SLUG, result.esp_ids)
        assert ledger.get(SLUG).attempts == 2  # type: ignore[union-attr]
    assert len(esp.audience_sends) == 1


def test_buttondown_email_that_went_out_is_recorded_sent(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """Buttondown GET /v1/emails/{id} says sent: recorded, not sent twice."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "buttondown")
    crash_mid_send(ledger_path, provider, email)
    with Ledger(ledger_path) as ledger:
        record = stale(ledger, email, provider)
        assert reconcile(ledger, record, provider, email, now=NOW) == "sent"
        assert ledger.get(SLUG).state == SendState.SENT  # type: ignore[union-attr]
    assert len(esp.audience_sends) == 1


def test_postmark_interrupted_send_is_uncertain_until_a_human_resends(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """No lookup, no idempotency key: `uncertain`, with the reason, refused until
    --resend-uncertain."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "postmark")
    crash_after_claim(ledger_path, email.content_hash, "postmark")
    with Ledger(ledger_path) as ledger:
        record = stale(ledger, email, provider)
        with pytest.raises(SendUncertain) as caught:
            reconcile(ledger, record, provider, email, now=NOW)
        assert "--resend-uncertain" in str(caught.value)
        row = ledger.get(SLUG)
        assert row is not None and row.state == SendState.UNCERTAIN
        assert "postmark can neither be asked" in (row.last_error or "")
        with pytest.raises(AlreadySent, match="uncertain"):
            ledger.claim(SLUG, email.content_hash, "postmark")
        assert ledger.claim(SLUG, email.content_hash, "postmark", allow_uncertain=True)
    assert esp.requests == []


def test_idempotent_provider_without_ids_retries_with_the_same_key(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """Died before the ESP gave any id: the retry with the same key is safe ("resend")."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "resend")
    crash_after_claim(ledger_path, email.content_hash, "resend")
    with Ledger(ledger_path) as ledger:
        record = stale(ledger, email, provider)
        assert reconcile(ledger, record, provider, email, now=NOW) == "resend"
        assert "same idempotency key" in (ledger.get(SLUG).last_error or "")  # type: ignore[union-attr]


def test_changed_issue_after_a_crash_is_uncertain(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """The key comes from the content: edited since the crash, a retry is not safe."""
    provider = make_provider(esp, tmp_path, "resend")
    crash_after_claim(ledger_path, make_email().content_hash, "resend")
    edited = make_email("Hello, readers, with a fixed typo.")
    with pytest.raises(SendUncertain, match="issue changed"):
        next_run_reconciles(ledger_path, edited, provider, NOW)


def test_idempotency_key_older_than_a_day_is_not_trusted(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """Found two days after the crash: the ESP may have forgotten the key -> uncertain."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "resend")
    crash_after_claim(ledger_path, email.content_hash, "resend")
    with pytest.raises(SendUncertain, match="forgotten the idempotency key"):
        next_run_reconciles(ledger_path, email, provider, NOW + dt.timedelta(days=2))


def test_switched_provider_after_a_crash_is_uncertain(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """The new provider cannot know about the old one's send."""
    email = make_email()
    crash_after_claim(ledger_path, email.content_hash, "postmark")
    provider = make_provider(esp, tmp_path, "resend")
    with pytest.raises(SendUncertain, match="via postmark"):
        next_run_reconciles(ledger_path, email, provider, NOW)


def test_failed_lookup_falls_back_to_the_idempotency_key(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """The ESP cannot be asked (500s): an idempotent provider still retries with its key."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "resend")
    crash_mid_send(ledger_path, provider, email)
    esp.fail(500, times=5, method="GET")
    with Ledger(ledger_path) as ledger:
        record = stale(ledger, email, provider)
        assert reconcile(ledger, record, provider, email, now=NOW) == "resend"
        assert "lookup failed" in (ledger.get(SLUG).last_error or "")  # type: ignore[union-attr]


def test_interrupted_schedule_found_scheduled_is_recorded_scheduled(
    esp: FakeEsp, tmp_path: Path, ledger_path: Path
) -> None:
    """A `schedule` that died after Resend accepted it becomes `scheduled`, not `sent`."""
    email = make_email()
    provider = make_provider(esp, tmp_path, "resend")
    at = NOW + dt.timedelta(days=1)
    with Ledger(ledger_path) as dead:
        dead.claim(SLUG, email.content_hash, "resend", mode="schedule", scheduled_for=at)
        provider.schedule(email, at, on_ids=lambda ids: dead.record_ids(SLUG, ids))
    with Ledger(ledger_path) as ledger:
        record = stale(ledger, email, provider)
        assert reconcile(ledger, record, provider, email, now=NOW) == "scheduled"
        row = ledger.get(SLUG)
    assert row is not None and row.state == SendState.SCHEDULED
    assert row.scheduled_for == at.isoformat()
    assert dataclasses.replace(row).esp_ids.get("broadcast_id")
