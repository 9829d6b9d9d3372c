"""The send ledger: one SQLite file (WAL) that remembers what was sent, so nothing goes twice.

One row per issue send (the audience send; test sends are not recorded here):

    pending -> sending -> sent
                      \\-> failed      (the ESP said no: safe to try again)
                      \\-> uncertain   (we crashed or lost the answer mid-request:
                                        a human decides, `send --resend-uncertain`)
    scheduled           (handed to the ESP's own scheduler)

Two guards keep an issue from going out twice:
- `claim()` first takes an OS lock on `<ledger>.locks/<slug>.lock` (flock, non-blocking) and
  holds it until the send is settled; a second process gets SendInProgress at once, no waiting.
  The OS drops the lock when its holder dies, even by SIGKILL.
- then, inside one `BEGIN IMMEDIATE` transaction, it moves the row to `sending`. A row found in
  `sending` while we hold the lock was left by a process that died mid-send: StaleSend, and
  the caller must find out from the ESP what happened (spark_mail/recovery.py), not send blindly.

Own-list sending (schema 3) adds one `deliveries` row per reader of an issue, written one
transaction per ESP batch (a batch's start shares it with the answers that came back since):
`sending` with its batch number before the batch leaves, then
`sent` (with the ESP's message id), `refused` (the ESP refused that one reader: not retried),
`failed` (the whole batch failed for sure: retried by the next run) or `uncertain` (the batch
may have gone out: only `--resend-uncertain` sends it again). The issue's row in `sends`
reaches `sent` only when no reader is left to send.

Every state change also appends a row to `events` (schema 2) in the same transaction, so
`spark-mail status ISSUE` can say why a send ended where it did. Reading never creates the
file: `get`/`all`/`history` on a newsletter that never sent anything return nothing.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from spark_mail.config import Settings
from spark_mail.errors import AlreadySent, LedgerError, SparkMailError

BUSY_TIMEOUT_SECONDS = 10.0  # how long to wait for another writer before "locked"


class SendState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    SCHEDULED = "scheduled"


class ReaderState(StrEnum):
    """One reader's copy of an issue (own-list sending), in the `deliveries` table."""

    SENDING = "sending"  # its batch left or is about to: in flight
    SENT = "sent"
    REFUSED = "refused"  # the ESP refused this reader (inactive, invalid): not retried
    FAILED = "failed"  # the whole batch failed for sure: the next run sends it again
    UNCERTAIN = "uncertain"  # its batch may have gone out: only --resend-uncertain sends


SETTLED_READERS = (ReaderState.SENT, ReaderState.REFUSED)


class SendInProgress(SparkMailError):
    """Another live process is sending this issue right now."""

    exit_code = 0


class StaleSend(SparkMailError):
    """A process died while sending this issue: the row says `sending` and nobody holds it."""

    def __init__(self, record: SendRecord) -> None:
        super().__init__(
            f"{record.slug}: an earlier send was interrupted (ids: {record.esp_ids or 'none'})",
            hint="spark-mail asks the ESP what happened before sending again",
        )
        self.record = record


@dataclass(frozen=True)
class SendRecord:
    slug: str
    content_hash: str
    provider: str
    mode: str
    state: SendState
    esp_ids: dict[str, str] = field(default_factory=dict)
    attempts: int = 0
    created_at: str = ""
    updated_at: str = ""
    sent_at: str | None = None
    scheduled_for: str | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class LedgerEvent:
    slug: str
    at: str
    state: str
    detail: str | None = None


MIGRATIONS: list[str] = [
    # 1: the send table
    """
    CREATE TABLE sends (
        slug TEXT PRIMARY KEY,
        content_hash TEXT NOT NULL,
        provider TEXT NOT NULL,
        mode TEXT NOT NULL,
        state TEXT NOT NULL,
        esp_ids TEXT NOT NULL DEFAULT '{}',
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        sent_at TEXT,
        scheduled_for TEXT,
        last_error TEXT
    );
    """,
    # 2: the history of every state change, for `status ISSUE`
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        slug TEXT NOT NULL,
        at TEXT NOT NULL,
        state TEXT NOT NULL,
        detail TEXT
    );
    CREATE INDEX events_slug ON events (slug, id);
    """,
    # 3: own-list sending: one row per reader of an issue (see DeliveryState)
    """
    CREATE TABLE deliveries (
        slug TEXT NOT NULL,
        reader TEXT NOT NULL,
        address TEXT NOT NULL,
        state TEXT NOT NULL,
        batch INTEGER,
        esp_id TEXT,
        error TEXT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (slug, reader)
    ) WITHOUT ROWID;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


def _now(now: dt.datetime | None) -> str:
    return (now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds")


class Ledger:
    def __init__(self, path: Path, *, timeout: float = BUSY_TIMEOUT_SECONDS) -> None:
        self.path = path
        self.timeout = timeout
        self._db: sqlite3.Connection | None = None
        self._locks: dict[str, int] = {}  # slug -> fd of the held lock file

    # -- connection ------------------------------------------------------------
    def open(self) -> Ledger:
        db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            db.row_factory = sqlite3.Row
            db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")  # `sending` must survive a power cut
            self._db = db
            self._migrate()
        except sqlite3.Error as exc:
            self._db = None
            if db is not None:
                db.close()
            raise self._error(exc) from None
        except OSError as exc:
            raise LedgerError(f"{self.path}: cannot open the ledger ({exc.strerror})") from None
        return self

    def exists(self) -> bool:
        return self._db is not None or self.path.exists()

    def close(self) -> None:
        for slug in list(self._locks):
            self.release(slug)
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> Ledger:
        return self  # opened on first use, so reading a missing ledger creates nothing

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _error(self, exc: sqlite3.Error) -> LedgerError:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return LedgerError(
                f"{self.path}: the ledger is locked by another process ({text})",
                hint="wait for the other spark-mail to finish, then run again",
            )
        return LedgerError(
            f"{self.path}: the ledger is unreadable ({text})",
            hint="restore it from a backup or move it aside; nothing was sent",
        )

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        assert self._db is not None
        return self._db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: takes the write lock at once, so read-then-write cannot race."""
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        try:
            yield db
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        else:
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def _migrate(self) -> None:
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise LedgerError(
                    f"{self.path}: ledger schema {version} is newer than this spark-mail knows",
                    hint="upgrade spark-mail",
                )
            # A migration runs inside this one transaction: all of it or none of it.
            for number in range(version, len(MIGRATIONS)):
                for statement in filter(str.strip, MIGRATIONS[number].split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number + 1}")

    # -- reading ---------------------------------------------------------------
    @staticmethod
    def _record(row: sqlite3.Row) -> SendRecord:
        data: dict[str, Any] = dict(row)
        data["esp_ids"] = json.loads(data["esp_ids"] or "{}")
        data["state"] = SendState(data["state"])
        return SendRecord(**data)

    def get(self, slug: str) -> SendRecord | None:
        if not self.exists():
            return None
        try:
            row = self.db.execute("SELECT * FROM sends WHERE slug = ?", (slug,)).fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return None if row is None else self._record(row)

    def all(self) -> list[SendRecord]:
        if not self.exists():
            return []
        try:
            rows = self.db.execute("SELECT * FROM sends ORDER BY created_at, slug").fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return [self._record(r) for r in rows]

    def history(self, slug: str) -> list[LedgerEvent]:
        """Every state change of one issue's send, oldest first."""
        if not self.exists():
            return []
        try:
            rows = self.db.execute(
                "SELECT slug, at, state, detail FROM events WHERE slug = ? ORDER BY id", (slug,)
            ).fetchall()
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return [LedgerEvent(**dict(r)) for r in rows]

    @staticmethod
    def _event(db: sqlite3.Connection, slug: str, stamp: str, state: str, detail: str | None):
        db.execute(
            "INSERT INTO events (slug, at, state, detail) VALUES (?, ?, ?, ?)",
            (slug, stamp, state, detail),
        )

    # -- the per-issue OS lock -------------------------------------------------------
    def lock_path(self, slug: str) -> Path:
        return self.path.with_name(self.path.name + ".locks") / f"{slug}.lock"

    def acquire(self, slug: str) -> None:
        """Take the issue's lock without waiting; SendInProgress if a live process holds it."""
        if slug in self._locks:
            return
        path = self.lock_path(slug)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SendInProgress(f"{slug}: is being sent by another spark-mail process") from None
        self._locks[slug] = fd

    def held_elsewhere(self, slug: str) -> bool:
        """True while another live process holds the issue's lock (it is sending right now).

        The probe takes the lock for an instant; a claim racing with it gets SendInProgress
        and the next run sends. Only `status` asks, and only for rows already `sending`.
        """
        if slug in self._locks:
            return False
        path = self.lock_path(slug)
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a lock we may have taken
        return False

    def release(self, slug: str) -> None:
        fd = self._locks.pop(slug, None)
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- state changes -----------------------------------------------------------
    def claim(
        self,
        slug: str,
        content_hash: str,
        provider: str,
        mode: str = "send",
        *,
        now: dt.datetime | None = None,
        allow_uncertain: bool = False,
        scheduled_for: dt.datetime | None = None,
    ) -> SendRecord:
        """Mark the issue `sending` for this process, or refuse: sent / being sent / uncertain.

        The issue's lock stays held until `release(slug)` (or close / process exit).
        Raises StaleSend for a row a dead process left in `sending`; the lock is then held
        by this process, so the caller can settle it (`resolve_stale`).
        """
        stamp = _now(now)
        when = scheduled_for.isoformat() if scheduled_for else None
        self.acquire(slug)
        try:
            return self._claim_locked(
                slug, content_hash, provider, mode, stamp, allow_uncertain, when
            )
        except BaseException as exc:
            if not isinstance(exc, StaleSend):
                self.release(slug)
            raise

    def _claim_locked(
        self,
        slug: str,
        content_hash: str,
        provider: str,
        mode: str,
        stamp: str,
        allow_uncertain: bool,
        scheduled_for: str | None,
    ) -> SendRecord:
        with self.transaction() as db:
            row = db.execute("SELECT * FROM sends WHERE slug = ?", (slug,)).fetchone()
            if row is not None:
                current = self._record(row)
                if current.state == SendState.SENT:
                    raise AlreadySent(
                        f"{slug}: already sent on {current.sent_at} via {current.provider}",
                        hint="an issue is sent once; see `spark-mail status`",
                    )
                if current.state == SendState.SCHEDULED:
                    raise AlreadySent(
                        f"{slug}: scheduled with {current.provider} for {current.scheduled_for}",
                        hint=f"the ESP sends it; `spark-mail unschedule {slug}` to take it back",
                    )
                if current.state == SendState.SENDING:
                    # We hold the lock, so whoever wrote `sending` is gone.
                    raise StaleSend(current)
                if current.state == SendState.UNCERTAIN and not allow_uncertain:
                    raise AlreadySent(
                        f"{slug}: an earlier send may have gone out (state: uncertain)",
                        hint="check with your ESP, then `spark-mail send "
                        f"{slug} --resend-uncertain` if it did not",
                    )
                db.execute(
                    "UPDATE sends SET content_hash = ?, provider = ?, mode = ?, state = ?, "
                    "attempts = attempts + 1, updated_at = ?, last_error = NULL, "
                    "scheduled_for = ? WHERE slug = ?",
                    (content_hash, provider, mode, SendState.SENDING, stamp, scheduled_for, slug),
                )
            else:
                db.execute(
                    "INSERT INTO sends (slug, content_hash, provider, mode, state, attempts, "
                    "created_at, updated_at, scheduled_for) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?)",
                    (
                        slug, content_hash, provider, mode, SendState.SENDING, stamp, stamp,
                        scheduled_for,
                    ),
                )  # fmt: skip
            self._event(db, slug, stamp, SendState.SENDING, f"{mode} via {provider}")
        record = self.get(slug)
        assert record is not None
        return record

    def _update(
        self, slug: str, now: dt.datetime | None, event: str | None = None, **values: Any
    ) -> SendRecord:
        """Change one row (and log `event` for a state change) in one transaction."""
        if "esp_ids" in values:
            values["esp_ids"] = json.dumps(values["esp_ids"], sort_keys=True)
        stamp = values["updated_at"] = _now(now)
        columns = ", ".join(f"{k} = ?" for k in values)
        with self.transaction() as db:
            cursor = db.execute(
                f"UPDATE sends SET {columns} WHERE slug = ?", (*values.values(), slug)
            )
            if cursor.rowcount != 1:
                raise LedgerError(f"{self.path}: no send recorded for {slug!r}")
            if "state" in values:
                self._event(db, slug, stamp, values["state"], event)
            elif "esp_ids" in values:
                self._event(db, slug, stamp, "ids", values["esp_ids"])
        record = self.get(slug)
        assert record is not None
        if record.state != SendState.SENDING:
            self.release(slug)  # settled: the next process may look at it
        return record

    def record_ids(
        self, slug: str, esp_ids: dict[str, str], *, now: dt.datetime | None = None
    ) -> SendRecord:
        """Remember ids the ESP gave (draft, broadcast) before the request that sends leaves."""
        current = self.get(slug)
        merged = {**(current.esp_ids if current else {}), **esp_ids}
        return self._update(slug, now, esp_ids=merged)

    def mark_sent(
        self,
        slug: str,
        esp_ids: dict[str, str] | None = None,
        *,
        now: dt.datetime | None = None,
        note: str | None = None,
    ) -> SendRecord:
        """`note` says how we know, when it is not the ESP's answer to our own request."""
        current = self.get(slug)
        merged = {**(current.esp_ids if current else {}), **(esp_ids or {})}
        return self._update(
            slug, now, note, state=SendState.SENT, esp_ids=merged, sent_at=_now(now)
        )

    def mark_failed(self, slug: str, error: str, *, now: dt.datetime | None = None) -> SendRecord:
        return self._update(slug, now, error, state=SendState.FAILED, last_error=error)

    def mark_uncertain(
        self, slug: str, reason: str, *, now: dt.datetime | None = None
    ) -> SendRecord:
        return self._update(slug, now, reason, state=SendState.UNCERTAIN, last_error=reason)

    def mark_scheduled(
        self,
        slug: str,
        at: dt.datetime | str,
        esp_ids: dict[str, str],
        *,
        now: dt.datetime | None = None,
    ) -> SendRecord:
        when = at if isinstance(at, str) else at.isoformat()
        current = self.get(slug)
        merged = {**(current.esp_ids if current else {}), **esp_ids}
        return self._update(
            slug, now, f"for {when}", state=SendState.SCHEDULED, esp_ids=merged, scheduled_for=when
        )

    def retry_stale(
        self, slug: str, content_hash: str, reason: str, *, now: dt.datetime | None = None
    ) -> SendRecord:
        """A stale `sending` row we hold the lock for goes out again: count the attempt."""
        stamp = _now(now)
        with self.transaction() as db:
            db.execute(
                "UPDATE sends SET content_hash = ?, attempts = attempts + 1, updated_at = ?, "
                "last_error = ? WHERE slug = ?",
                (content_hash, stamp, reason, slug),
            )
            self._event(db, slug, stamp, SendState.SENDING, reason)
        record = self.get(slug)
        assert record is not None
        return record

    def mark_partial(self, slug: str, note: str, *, now: dt.datetime | None = None) -> SendRecord:
        """Some readers have their copy, the rest wait for a later run (`--limit`)."""
        return self._update(slug, now, note, state=SendState.PENDING, last_error=None)

    # -- per-reader deliveries (own-list sending) ----------------------------------------
    def reader_states(self, slug: str, readers: list[str]) -> dict[str, tuple[str, int | None]]:
        """reader key -> (state, batch) for those of `readers` the ledger knows."""
        if not readers or not self.exists():
            return {}
        found: dict[str, tuple[str, int | None]] = {}
        try:
            for start in range(0, len(readers), 500):  # stay under SQLite's variable limit
                part = readers[start : start + 500]
                marks = ",".join("?" * len(part))
                for row in self.db.execute(
                    f"SELECT reader, state, batch FROM deliveries WHERE slug = ? "
                    f"AND reader IN ({marks})",
                    (slug, *part),
                ):
                    found[row[0]] = (row[1], row[2])
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        return found

    def write_batches(
        self,
        slug: str,
        batch: int,
        readers: list[tuple[str, str]],
        answers: list[tuple[str, ReaderState, str | None, str | None]],
        *,
        now: dt.datetime | None = None,
    ) -> None:
        """In one transaction: the answers of batches that came back (reader key, state, ESP
        message id, error), and the (reader key, address) pairs of `batch` as `sending`,
        before it leaves."""
        stamp = _now(now)
        with self.transaction() as db:
            db.executemany(
                "UPDATE deliveries SET state = ?, esp_id = ?, error = ?, updated_at = ? "
                "WHERE slug = ? AND reader = ?",
                [(state, esp_id, error, stamp, slug, key) for key, state, esp_id, error in answers],
            )
            db.executemany(
                "INSERT INTO deliveries (slug, reader, address, state, batch, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (slug, reader) DO UPDATE "
                "SET state = excluded.state, batch = excluded.batch, error = NULL, "
                "updated_at = excluded.updated_at",
                [(slug, key, a, ReaderState.SENDING, batch, stamp, stamp) for key, a in readers],
            )

    def in_flight(self, slug: str) -> dict[int, int]:
        """batch number -> readers still `sending` (what a crashed run left in flight)."""
        if not self.exists():
            return {}
        rows = self.db.execute(
            "SELECT batch, count(*) FROM deliveries WHERE slug = ? AND state = ? GROUP BY batch",
            (slug, ReaderState.SENDING),
        )
        return {int(batch): int(count) for batch, count in rows}

    def settle_in_flight(
        self,
        slug: str,
        state: ReaderState,
        reason: str,
        *,
        batches: list[int] | None = None,
        now: dt.datetime | None = None,
    ) -> int:
        """Readers left `sending` (in `batches`, or all) become `state` (uncertain)."""
        stamp = _now(now)
        query = (
            "UPDATE deliveries SET state = ?, error = ?, updated_at = ? "
            "WHERE slug = ? AND state = ?"
        )
        params: list[Any] = [state, reason, stamp, slug, ReaderState.SENDING]
        if batches is not None:
            query += f" AND batch IN ({','.join('?' * len(batches))})"
            params += batches
        with self.transaction() as db:
            return int(db.execute(query, params).rowcount)

    def in_flight_since(self, slug: str) -> str | None:
        """When the oldest reader still `sending` was handed to a batch."""
        row = self.db.execute(
            "SELECT min(updated_at) FROM deliveries WHERE slug = ? AND state = ?",
            (slug, ReaderState.SENDING),
        ).fetchone()
        return row[0] if row else None

    def next_batch(self, slug: str) -> int:
        """The first batch number no earlier run used (keys stay unique across runs)."""
        if not self.exists():
            return 1
        row = self.db.execute(
            "SELECT max(batch) FROM deliveries WHERE slug = ?", (slug,)
        ).fetchone()
        return int(row[0] or 0) + 1

    def reader_counts(self, slug: str) -> dict[str, int]:
        """state -> readers, for one issue."""
        if not self.exists():
            return {}
        rows = self.db.execute(
            "SELECT state, count(*) FROM deliveries WHERE slug = ? GROUP BY state", (slug,)
        )
        return {str(state): int(count) for state, count in rows}

    def readers_in(self, slug: str, state: ReaderState, limit: int = 20) -> list[tuple[str, str]]:
        """(address, error) of the first `limit` readers in `state`, for reports."""
        if not self.exists():
            return []
        rows = self.db.execute(
            "SELECT address, coalesce(error, '') FROM deliveries WHERE slug = ? AND state = ? "
            "ORDER BY batch, reader LIMIT ?",
            (slug, state, limit),
        )
        return [(str(a), str(e)) for a, e in rows]

    def forget(self, slug: str, reason: str = "forgotten") -> None:
        """Drop a row (unschedule); its history stays. Releases the issue's lock."""
        stamp = _now(None)
        with self.transaction() as db:
            db.execute("DELETE FROM sends WHERE slug = ?", (slug,))
            self._event(db, slug, stamp, "removed", reason)
        self.release(slug)


def open_ledger(settings: Settings) -> Ledger:
    """The newsletter's ledger, waiting `ledger_timeout` seconds for another writer."""
    return Ledger(settings.ledger_file, timeout=settings.ledger_timeout)
