"""The reader desk's store: who unsubscribed (and re-subscribed), and the poll votes.

One SQLite file in the state folder, `<state_dir>/readers.sqlite3`, apart from the send
ledger: a click on the desk never waits for a send holding the ledger, and a send never
waits for clicks. WAL mode, so readers (`audience check`, a send checking each batch,
`poll results`) never block the desk's writers, and `BEGIN IMMEDIATE` for every write, so
several `serve` workers cannot race on a read-then-write. Writers take turns on an flock of
`readers.sqlite3-writer` first (store_files.WriterTurns: no sleeping in SQLite's busy handler).

Every row is keyed by `canonical_address` (spark_mail.audience.addresses), the spelling the
subscribers file is compared in, so `Anna@Example.COM` unsubscribing suppresses the row
`anna@example.com`.

    suppressions          address -> when, how (HOW), from which issue; for what an ESP
                          reported: the provider, its event id and its reason (`detail`)
    suppression_events    every unsubscribe and re-subscribe, oldest first (the audit trail)
    votes                 one row per (issue, voter): the counted answer, the last click
    poll_counts           votes per (issue, option), kept in step with `votes`
    esp_events            bounces and complaints the ESPs reported (spark_mail/audience/
    delivered_since       events.py), once per (provider, event id, address); the last
    webhook_tokens        delivery per address; Mailgun tokens already used

Unsubscribes are committed with `synchronous = FULL` (they must survive a power cut: the
law says honour them); votes with NORMAL (a power cut may lose the last few clicks, never
the file). Reading never creates the file: a newsletter whose desk never ran has no
suppressions. Every sqlite3 error becomes a StoreError with one line saying what to do.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from spark_mail.audience.addresses import canonical_address
from spark_mail.audience.store_files import WriterTurns, file_identity, quietly, store_error
from spark_mail.config import Settings
from spark_mail.errors import StoreError

T = TypeVar("T")
Operation = Callable[[sqlite3.Connection], T]  # one write, run inside a transaction

STORE_NAME = "readers.sqlite3"
BUSY_TIMEOUT_SECONDS = 10.0
IN_CHUNK = 500  # addresses per `IN (...)` query (SQLite allows 32,766 parameters; stay modest)
# How an address came to be suppressed: the reader on the desk (one-click, form), or an ESP
# (a hard bounce, a complaint, three soft bounces in a row, an unsubscribe at the ESP).
# Re-subscribes are "re-subscribe" in the audit trail.
HOW = ("one-click", "form", "bounce", "complaint", "soft-bounces", "esp-unsubscribe")
# What the reader did on the desk, and may undo there (Re-subscribe); what an ESP reported
# (a bounce, a complaint) is not the reader's to lift from a link.
READER_HOW = ("one-click", "form")

MIGRATIONS = (
    """
    CREATE TABLE suppressions (
        address TEXT PRIMARY KEY,
        at TEXT NOT NULL,
        how TEXT NOT NULL,
        issue TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID;
    CREATE TABLE suppression_events (
        id INTEGER PRIMARY KEY,
        address TEXT NOT NULL,
        at TEXT NOT NULL,
        action TEXT NOT NULL,
        how TEXT NOT NULL,
        issue TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX suppression_events_address ON suppression_events (address);
    CREATE TABLE votes (
        issue TEXT NOT NULL,
        voter TEXT NOT NULL,
        option INTEGER,
        last_option INTEGER NOT NULL,
        last_click REAL NOT NULL,
        voted_at TEXT NOT NULL,
        comment TEXT NOT NULL DEFAULT '',
        commented_at TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (issue, voter)
    ) WITHOUT ROWID;
    CREATE TABLE poll_counts (
        issue TEXT NOT NULL,
        option INTEGER NOT NULL,
        votes INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (issue, option)
    ) WITHOUT ROWID
    """,
    """
    ALTER TABLE suppressions ADD COLUMN provider TEXT NOT NULL DEFAULT '';
    ALTER TABLE suppressions ADD COLUMN event_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE suppressions ADD COLUMN detail TEXT NOT NULL DEFAULT '';
    ALTER TABLE suppression_events ADD COLUMN provider TEXT NOT NULL DEFAULT '';
    ALTER TABLE suppression_events ADD COLUMN event_id TEXT NOT NULL DEFAULT '';
    CREATE TABLE esp_events (
        id INTEGER PRIMARY KEY,
        provider TEXT NOT NULL,
        event_id TEXT NOT NULL,
        address TEXT NOT NULL,
        kind TEXT NOT NULL,
        at TEXT NOT NULL,
        received TEXT NOT NULL,
        issue TEXT NOT NULL DEFAULT '',
        message_id TEXT NOT NULL DEFAULT '',
        detail TEXT NOT NULL DEFAULT '',
        UNIQUE (provider, event_id, address)
    );
    CREATE INDEX esp_events_address ON esp_events (address, kind, at);
    CREATE INDEX esp_events_issue ON esp_events (issue, kind);
    CREATE TABLE delivered_since (
        address TEXT PRIMARY KEY,
        at TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE webhook_tokens (
        provider TEXT NOT NULL,
        token TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY (provider, token)
    ) WITHOUT ROWID
    """,
)


def store_path(settings: Settings) -> Path:
    """Where the desk keeps its store: `<state_dir>/readers.sqlite3`."""
    return settings.state_path / STORE_NAME


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Suppression:
    """One address the desk suppresses."""

    address: str  # canonical
    at: str  # ISO 8601, UTC
    how: str  # one of HOW
    issue: str  # the slug of the email it concerns ("" when not known)
    provider: str = ""  # the ESP that reported it (bounces, complaints, sync)
    event_id: str = ""  # the ESP's id of the event ("" for a synced list entry)
    detail: str = ""  # the ESP's reason, e.g. "550 5.1.1 user unknown"

    @property
    def reason(self) -> str:
        """`how`, and where it came from: "bounce (postmark, event 42, issue x: 550 ...)"."""
        parts = [self.provider] if self.provider else []
        parts += [f"event {self.event_id}"] if self.event_id else []
        parts += [f"issue {self.issue}"] if self.issue else []
        said = f": {self.detail}" if self.detail else ""
        return f"{self.how} ({', '.join(parts)}{said})" if parts or said else self.how

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "reason": self.reason}


class SuppressionStore:
    """The store (see the module docstring). Open it once per process and reuse it; every
    method is safe to call from several threads (one at a time goes to SQLite).

    `suppressed(addresses)` is the cheap per-batch check of own-list sending: it answers
    which of up to a batch's canonical addresses are suppressed now.
    """

    def __init__(self, path: Path, *, timeout: float = BUSY_TIMEOUT_SECONDS) -> None:
        self.path = path
        self.timeout = timeout
        self._db: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._lock = threading.RLock()
        self._writers = WriterTurns(path)

    @classmethod
    def for_settings(cls, settings: Settings) -> SuppressionStore:
        return cls(store_path(settings))

    # -- connection ------------------------------------------------------------
    def _error(self, exc: sqlite3.Error | OSError) -> StoreError:
        return store_error(self.path, exc)

    def exists(self) -> bool:
        return self._db is not None or self.path.exists()

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self._open()
        assert self._db is not None
        return self._db

    def _open(self) -> None:
        db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
            self._identity = file_identity(self.path)
            db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            self._db = db
            self._migrate()
        except (sqlite3.Error, OSError, StoreError) as exc:
            self._db = None  # never left open unmigrated ("no such table": "restore a backup")
            if db is not None:
                db.close()
            if isinstance(exc, StoreError):
                raise
            raise self._error(exc) from None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
            self._writers.close()

    def __enter__(self) -> SuppressionStore:
        return self  # opened on first use: reading a missing store creates nothing

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE). `durable`: fsync at commit (FULL)."""
        with self._lock:
            db = self.db
            with self._writer_turn():
                self._same_file()  # never into a file that is gone (or its successor's WAL)
                try:
                    if durable:
                        db.execute("PRAGMA synchronous = FULL")
                    db.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    raise self._error(exc) from None
                try:
                    yield db
                    db.execute("COMMIT")
                except sqlite3.Error as exc:
                    quietly(db, "ROLLBACK")
                    raise self._error(exc) from None
                except BaseException:
                    quietly(db, "ROLLBACK")
                    raise
                finally:
                    if durable:
                        quietly(db, "PRAGMA synchronous = NORMAL")
                self._same_file()

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        try:
            turn = self._writers.acquire(self.timeout)
        except OSError as exc:  # the lock file, not the store: say which
            raise store_error(self._writers.path, exc) from None
        if not turn:
            raise StoreError(
                f"{self.path}: the reader store is locked by another process (no turn to "
                f"write in {self.timeout:g} s)",
                hint="try again; if it stays locked, look for a stuck or stopped "
                "spark-mail process (kill -CONT it, or restart it)",
            )
        try:
            yield
        finally:
            self._writers.release()

    def check(self) -> None:
        """Open (creating and migrating) the store and read it: StoreError when it cannot,
        or when the file is no longer the one this connection has open."""
        with self._lock:
            try:
                self.db.execute("SELECT 1 FROM suppressions LIMIT 1").fetchone()
            except sqlite3.Error as exc:
                raise self._error(exc) from None
            self._same_file()

    def _same_file(self) -> None:
        """StoreError when the store's file was deleted or replaced while this connection
        had it open: what it writes then goes to a file nobody else reads (and that is
        gone at the next start), so no write may be reported as done."""
        if self._db is not None and file_identity(self.path) != self._identity:
            raise StoreError(
                f"{self.path}: the reader store was deleted or replaced while in use; "
                "what is written now would be lost",
                hint="restart spark-mail serve (restore a backup only while it is stopped)",
            )

    def read(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one query ([] when the store does not exist yet)."""
        if not self.exists():
            return []
        with self._lock:
            try:
                return self.db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def _migrate(self) -> None:
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path}: store schema {version} is newer than this spark-mail knows",
                    hint="upgrade spark-mail",
                )
            for number in range(version, len(MIGRATIONS)):
                for statement in filter(str.strip, MIGRATIONS[number].split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number + 1}")

    def run(self, operations: Sequence[Operation[T]], *, durable: bool = False) -> list[T]:
        """Run several operations in ONE transaction (a group commit: one fsync for all)."""
        with self.transaction(durable=durable) as db:
            return [operation(db) for operation in operations]

    # -- suppressions ------------------------------------------------------------
    def unsubscribe(self, address: str, *, how: str, issue: str, at: dt.datetime) -> bool:
        """Suppress `address`; False when it already was (the first record is kept)."""
        return self.run([suppress(address, how=how, issue=issue, at=at)], durable=True)[0]

    def resubscribe(self, address: str, *, issue: str, at: dt.datetime) -> bool:
        """Lift the reader's own unsubscribe of `address`; False when there was none."""
        return self.run([lift(address, issue=issue, at=at)], durable=True)[0]

    def is_suppressed(self, address: str) -> bool:
        return bool(self.suppressed([canonical_address(address)]))

    def suppression(self, address: str) -> Suppression | None:
        """The record that suppresses `address` now, or None."""
        rows = self.read(
            "SELECT address, at, how, issue, provider, event_id, detail FROM suppressions "
            "WHERE address = ?",
            (canonical_address(address),),
        )
        return Suppression(*rows[0]) if rows else None

    def suppressed(self, canonical_addresses: list[str]) -> set[str]:
        """Which of these canonical addresses the desk suppresses now (one query per 500)."""
        found: set[str] = set()
        for start in range(0, len(canonical_addresses), IN_CHUNK):
            chunk = canonical_addresses[start : start + IN_CHUNK]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT address FROM suppressions WHERE address IN ({marks})"
            found.update(row[0] for row in self.read(sql, chunk))
        return found

    def addresses(self) -> list[str]:
        """Every suppressed canonical address."""
        return [row[0] for row in self.read("SELECT address FROM suppressions")]

    def suppressions(self) -> list[Suppression]:
        rows = self.read(
            "SELECT address, at, how, issue, provider, event_id, detail FROM suppressions "
            "ORDER BY at, address"
        )
        return [Suppression(*row) for row in rows]

    def export_csv(self, path: Path) -> int:
        """Write the suppressions as CSV (an `email` column, so it works as a suppression
        file); returns how many. Written to a temporary file and renamed: never half."""
        from spark_mail.files import write_atomic

        rows = self.suppressions()
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(
            ["email", "unsubscribed_at", "how", "issue", "provider", "event_id", "detail"]
        )
        writer.writerows(
            [r.address, r.at, r.how, r.issue, r.provider, r.event_id, r.detail] for r in rows
        )
        try:
            write_atomic(path, text.getvalue())
        except OSError as exc:
            raise StoreError(f"{path}: cannot write the export ({exc.strerror})") from None
        return len(rows)


def suppress(
    address: str,
    *,
    how: str,
    issue: str,
    at: dt.datetime,
    provider: str = "",
    event_id: str = "",
    detail: str = "",
) -> Operation[bool]:
    """The operation that suppresses `address` (True when it was not yet)."""
    key, when = canonical_address(address), iso(at)

    def operation(db: sqlite3.Connection) -> bool:
        return add_suppression(db, key, when, how, issue, provider, event_id, detail)

    return operation


def add_suppression(
    db: sqlite3.Connection,
    key: str,
    when: str,
    how: str,
    issue: str,
    provider: str = "",
    event_id: str = "",
    detail: str = "",
) -> bool:
    """Suppress canonical `key` inside a transaction (the first record is kept); True when
    it was not suppressed yet."""
    added = db.execute(
        "INSERT OR IGNORE INTO suppressions (address, at, how, issue, provider, event_id, detail) "
        "VALUES (?,?,?,?,?,?,?)",
        (key, when, how, issue, provider, event_id, detail),
    ).rowcount
    if added:
        db.execute(
            "INSERT INTO suppression_events (address, at, action, how, issue, provider, event_id) "
            "VALUES (?, ?, 'unsubscribe', ?, ?, ?, ?)",
            (key, when, how, issue, provider, event_id),
        )
    return bool(added)


def lift(address: str, *, issue: str, at: dt.datetime, since: str | None = None) -> Operation[bool]:
    """The operation that lifts the reader's own unsubscribe of `address` (READER_HOW; what
    an ESP reported stays), and with `since` only the unsubscribe recorded at that time.
    True when it lifted one."""
    key, when = canonical_address(address), iso(at)
    marks = ",".join("?" * len(READER_HOW))
    sql = f"DELETE FROM suppressions WHERE address = ? AND how IN ({marks})"
    params: tuple[str, ...] = (key, *READER_HOW)
    if since is not None:
        sql, params = sql + " AND at = ?", (*params, since)

    def operation(db: sqlite3.Connection) -> bool:
        from spark_mail.audience.events import restore_esp_suppression  # it imports this module

        removed = db.execute(sql, params).rowcount
        if removed:
            db.execute(
                "INSERT INTO suppression_events (address, at, action, how, issue) "
                "VALUES (?, ?, 'resubscribe', 're-subscribe', ?)",
                (key, when, issue),
            )
            restore_esp_suppression(db, key)
        return bool(removed)

    return operation
