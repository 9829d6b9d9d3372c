"""The SQLite send ledger: states, the per-issue lock, history, migrations, bad files."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from pathlib import Path

import pytest

from spark_mail.errors import AlreadySent, LedgerError
from spark_mail.ledger import MIGRATIONS, SCHEMA_VERSION, Ledger, SendState

NOW = dt.datetime(2025, 1, 20, 12, 0, tzinfo=dt.UTC)
HASH = "c0ffee" * 10


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / ".spark-mail" / "ledger.sqlite3"


def claimed(ledger: Ledger, slug: str = "issue-1", provider: str = "resend", **kw):
    """Lock and claim, as the send lifecycle does."""
    assert ledger.locks.try_acquire(slug)
    return ledger.claim(slug, HASH, provider, kw.pop("mode", "send"), NOW, **kw)


def test_claim_then_mark_sent_records_state_and_history(ledger_path: Path) -> None:
    """A claimed send is `sending`, then `sent` with the ESP's ids, and the history says so."""
    with Ledger(ledger_path) as ledger:
        record = claimed(ledger).record
        assert record.state == SendState.SENDING and record.attempts == 1
        ledger.record_ids("issue-1", {"broadcast": "b-1"}, NOW)
        sent = ledger.mark_sent("issue-1", NOW, {"message": "m-1"})
    assert sent.state == SendState.SENT
    assert sent.esp_ids == {"broadcast": "b-1", "message": "m-1"}
    assert sent.sent_at == NOW.isoformat(timespec="seconds")
    with Ledger(ledger_path) as again:
        states = [e.state for e in again.history("issue-1")]
    assert states == ["sending", "ids", "sent"]


def test_send_twice_is_refused_after_sent(ledger_path: Path) -> None:
    """A sent issue cannot be claimed again, by this or any later process."""
    with Ledger(ledger_path) as ledger:
        claimed(ledger)
        ledger.mark_sent("issue-1", NOW)
    with Ledger(ledger_path) as later, pytest.raises(AlreadySent, match="already sent"):
        claimed(later)


def test_second_process_cannot_take_the_issue_lock_while_the_first_holds_it(
    ledger_path: Path,
) -> None:
    """While one holder is sending, another is turned away at once (no waiting)."""
    with Ledger(ledger_path) as first, Ledger(ledger_path) as second:
        claimed(first)
        started = time.monotonic()
        assert not second.locks.try_acquire("issue-1")
        assert time.monotonic() - started < 1.0  # no waiting, no polling
        assert second.locks.held_elsewhere("issue-1")
        first.mark_sent("issue-1", NOW)
        assert second.locks.held_elsewhere("issue-1")  # settling does not release: explicit
        first.locks.release("issue-1")
        assert not second.locks.held_elsewhere("issue-1")
        with pytest.raises(AlreadySent):
            claimed(second)


def test_sending_row_left_by_a_dead_holder_comes_back_stale_with_its_ids(
    ledger_path: Path,
) -> None:
    """A `sending` row nobody holds is handed back as stale (with the ids), unchanged."""
    dead = Ledger(ledger_path).open()
    claimed(dead, provider="buttondown")
    dead.record_ids("issue-1", {"email": "em_1"}, NOW)
    dead.close()  # the lock goes, the row stays `sending`: what a SIGKILL leaves
    with Ledger(ledger_path) as ledger:
        claim = claimed(ledger, provider="buttondown")
        assert claim.stale is not None and claim.stale.esp_ids == {"email": "em_1"}
        assert ledger.locks.holds("issue-1")  # ours, to settle the row
        ledger.resume("issue-1", HASH, "retried with the same idempotency key", NOW, keep_ids=True)
        assert ledger.get("issue-1").attempts == 2  # type: ignore[union-attr]


def test_uncertain_send_is_refused_unless_resend_uncertain(ledger_path: Path) -> None:
    """An `uncertain` send waits for a human: only allow_uncertain claims it again."""
    with Ledger(ledger_path) as ledger:
        claimed(ledger, provider="postmark")
        ledger.mark_uncertain("issue-1", "killed mid-request", NOW)
        with pytest.raises(AlreadySent, match="--resend-uncertain"):
            claimed(ledger, provider="postmark")
        record = claimed(ledger, provider="postmark", allow_uncertain=True).record
    assert record.state == SendState.SENDING and record.attempts == 2


def test_failed_send_can_be_claimed_again_and_counts_attempts(ledger_path: Path) -> None:
    """`failed` means the ESP said no: the next run may try again, attempts go up."""
    with Ledger(ledger_path) as ledger:
        claimed(ledger)
        failed = ledger.mark_failed("issue-1", "resend: 422 validation_error", NOW)
        assert failed.last_error == "resend: 422 validation_error"
        again = claimed(ledger).record
    assert again.attempts == 2 and again.last_error is None


def test_unconfirmed_send_stays_sending_with_the_reason(ledger_path: Path) -> None:
    """The ESP may have acted: the row stays `sending` for the next run to settle."""
    with Ledger(ledger_path) as ledger:
        claimed(ledger)
        record = ledger.mark_unconfirmed("issue-1", "resend: no answer", NOW)
        assert record.state == SendState.SENDING and record.last_error == "resend: no answer"
        assert [e.state for e in ledger.history("issue-1")] == ["sending", "unconfirmed"]


def test_scheduled_issue_is_not_sent_and_forget_takes_it_back(ledger_path: Path) -> None:
    """A row handed to the ESP's scheduler refuses a send; forget() drops it, history stays."""
    at = dt.datetime(2025, 2, 1, 7, 0, tzinfo=dt.UTC)
    with Ledger(ledger_path) as ledger:
        claimed(ledger, mode="schedule", scheduled_for=at)
        ledger.mark_scheduled("issue-1", at, {"broadcast": "b-9"}, NOW)
        with pytest.raises(AlreadySent, match="unschedule"):
            claimed(ledger)
        ledger.forget("issue-1", "unscheduled", NOW)
        assert ledger.get("issue-1") is None
        assert [e.state for e in ledger.history("issue-1")][-2:] == ["scheduled", "removed"]
        assert claimed(ledger).record.state == SendState.SENDING


def test_reading_a_missing_ledger_creates_nothing(tmp_path: Path) -> None:
    """status / list on a newsletter that never sent must not create files."""
    path = tmp_path / "state" / "ledger.sqlite3"
    with Ledger(path) as ledger:
        assert ledger.get("x") is None and ledger.all() == [] and ledger.history("x") == []
    assert not path.parent.exists()


def test_version_1_ledger_is_migrated_keeping_its_rows(ledger_path: Path) -> None:
    """A ledger written by schema 1 gains the events table; its rows survive."""
    ledger_path.parent.mkdir(parents=True)
    db = sqlite3.connect(ledger_path)
    db.executescript(MIGRATIONS[0])
    db.execute(
        "INSERT INTO sends (slug, content_hash, provider, mode, state, created_at, updated_at) "
        "VALUES ('old', 'h', 'resend', 'send', 'sent', 'then', 'then')"
    )
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with Ledger(ledger_path) as ledger:
        assert ledger.get("old").state == SendState.SENT  # type: ignore[union-attr]
        version = ledger.database.read("PRAGMA user_version")[0][0]
        claimed(ledger, "new")
        assert [e.state for e in ledger.history("new")] == ["sending"]
    assert version == SCHEMA_VERSION == 4


def test_ledger_from_a_newer_spark_mail_is_refused(ledger_path: Path) -> None:
    """A schema this version does not know is refused, not half-read."""
    ledger_path.parent.mkdir(parents=True)
    db = sqlite3.connect(ledger_path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(LedgerError, match="newer than this spark-mail"):
        Ledger(ledger_path).open()


def test_corrupt_ledger_file_gives_one_clear_error(ledger_path: Path) -> None:
    """Garbage bytes in the ledger: LedgerError naming the file; the lock is not kept."""
    ledger_path.parent.mkdir(parents=True)
    ledger_path.write_bytes(b"\x00garbage, not sqlite\xff" * 200)
    ledger = Ledger(ledger_path)
    with pytest.raises(LedgerError) as caught:
        ledger.get("issue-1")
    message = str(caught.value)
    assert str(ledger_path) in message and "not a SQLite file" in message
    assert "\n" not in message


@pytest.mark.slow
def test_locked_ledger_gives_a_clear_error_after_the_timeout(ledger_path: Path) -> None:
    """Another writer holding the database: LedgerError ("locked") after `timeout`, no row."""
    with Ledger(ledger_path) as setup:
        setup.open()
    other = sqlite3.connect(ledger_path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        ledger = Ledger(ledger_path, timeout=0.2)
        started = time.monotonic()
        with pytest.raises(LedgerError, match="locked by another process"):
            claimed(ledger)
        assert time.monotonic() - started < 2.0
    finally:
        other.execute("ROLLBACK")
        other.close()
    with Ledger(ledger_path) as after:
        assert after.get("issue-1") is None
