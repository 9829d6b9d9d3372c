"""The ledger's SQLite file: connection, migrations, and every sqlite3 error as one line.

A ledger is only ever created where no file exists. An existing file that is empty (a
truncated copy, a full disk at the wrong moment) or is not a spark-mail ledger is an
error, never a fresh start: a fresh ledger forgets what was sent, and the next run would
send it again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from spark_mail.errors import LedgerError
from spark_mail.files import make_folder

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
    # 3: own-list sending: one row per reader of an issue (see ReaderState)
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
    # 4: who is sending (a live process that lost its lock file is still seen), since when an
    # idempotency key is in use, which path an issue took, the issue file's own hash (a
    # renamed file is the same issue); per batch: its provider, its key, when it first left
    """
    ALTER TABLE sends ADD COLUMN owner TEXT;
    ALTER TABLE sends ADD COLUMN key_since TEXT;
    ALTER TABLE sends ADD COLUMN path TEXT;
    ALTER TABLE sends ADD COLUMN source_hash TEXT;
    CREATE INDEX sends_source ON sends (source_hash);
    ALTER TABLE deliveries ADD COLUMN provider TEXT;
    ALTER TABLE deliveries ADD COLUMN batch_key TEXT;
    ALTER TABLE deliveries ADD COLUMN first_at TEXT;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)
LEDGER_SETTINGS = "the state_dir or ledger_path setting"  # where the ledger's folder comes from
TABLES = {"sends", "events", "deliveries"}


class Database:
    """One ledger file. Opened on first use, so reading a missing ledger creates nothing."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._db: sqlite3.Connection | None = None

    def exists(self) -> bool:
        return self._db is not None or self.path.exists()

    def open(self) -> None:
        if self._db is not None:
            return
        try:
            if not self.path.exists():
                self._create()
            self._refuse_unusable_file()
            self._db = self._connect(self.path)
            self._refuse_foreign_database()
            self._migrate()
        except sqlite3.Error as exc:
            self.close()
            raise self.error(exc) from None
        except OSError as exc:
            self.close()
            raise LedgerError(
                f"{self.path}: cannot open the ledger ({exc.strerror})",
                hint="check that its folder (state_dir) is a writable folder",
            ) from None
        except LedgerError:
            self.close()
            raise

    def _connect(self, path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=self.timeout, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")  # `sending` must survive a power cut
        return db

    def _create(self) -> None:
        """A new ledger appears complete or not at all: built under a temporary name, then
        linked into place (never over a file another process made meanwhile)."""
        make_folder(self.path.parent, LEDGER_SETTINGS)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.new")
        try:
            self._db = self._connect(temporary)
            self._migrate()
            self.close()
            with contextlib.suppress(FileExistsError):  # another process was first: use theirs
                os.link(temporary, self.path)
        finally:
            self.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{temporary}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def connection(self) -> sqlite3.Connection:
        self.open()
        assert self._db is not None
        return self._db

    def error(self, exc: sqlite3.Error) -> LedgerError:
        """One line for a sqlite3 error, saying what to do (nothing here knows whether a
        send went out: the send lifecycle adds that)."""
        text = str(exc)
        if "locked" in text or "busy" in text:
            return LedgerError(
                f"{self.path}: the ledger is locked by another process ({text})",
                hint="wait for the other spark-mail to finish, then run again",
            )
        if "full" in text or "disk" in text or "I/O" in text or "readonly" in text:
            return LedgerError(
                f"{self.path}: the ledger cannot be written ({text})",
                hint="free disk space (or make the file writable), then run again",
            )
        return LedgerError(
            f"{self.path}: the ledger is unreadable ({text})",
            hint="restore it from a backup; do not delete it: without it spark-mail "
            "forgets what was sent",
        )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE: takes the write lock at once, so read-then-write cannot race."""
        db = self.connection
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self.error(exc) from None
        try:
            yield db
        except sqlite3.Error as exc:
            _rollback(db)
            raise self.error(exc) from None
        except BaseException:
            _rollback(db)
            raise
        else:
            try:
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                _rollback(db)
                raise self.error(exc) from None

    def read(self, query: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Rows of a query, every sqlite3 error as a LedgerError."""
        try:
            return list(self.connection.execute(query, params).fetchall())
        except sqlite3.Error as exc:
            raise self.error(exc) from None

    def _refuse_unusable_file(self) -> None:
        try:
            size = self.path.stat().st_size
            with self.path.open("rb") as fh:
                head = fh.read(16)
        except IsADirectoryError:
            raise LedgerError(f"{self.path}: the ledger path is a folder, not a file") from None
        except OSError as exc:
            raise LedgerError(f"{self.path}: cannot read the ledger ({exc.strerror})") from None
        if size == 0:
            raise LedgerError(
                f"{self.path}: the ledger file is empty (0 bytes): it was truncated, so what "
                "was sent is unknown and nothing is sent",
                hint="restore the ledger from a backup; if nothing was ever sent with it, "
                "delete the empty file",
            )
        if head != b"SQLite format 3\x00":
            raise LedgerError(
                f"{self.path}: the ledger is unreadable (not a SQLite file); nothing is sent",
                hint="restore the ledger from a backup, or point `ledger_path` at the real one",
            )

    def _refuse_foreign_database(self) -> None:
        assert self._db is not None
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = {
            row[0]
            for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"{self.path}: ledger schema {version} is newer than this spark-mail knows",
                hint="upgrade spark-mail",
            )
        expected = set().union(*(_tables_of(m) for m in MIGRATIONS[: min(version, SCHEMA_VERSION)]))
        if version == 0 or not expected <= tables:
            raise LedgerError(
                f"{self.path}: is a SQLite database but not a spark-mail ledger (schema "
                f"{version}, tables: {', '.join(sorted(tables)) or 'none'}); nothing is sent",
                hint="restore the ledger from a backup, or point `ledger_path` at the real one",
            )

    def _migrate(self) -> None:
        with self.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"{self.path}: ledger schema {version} is newer than this spark-mail knows",
                    hint="upgrade spark-mail",
                )
            # A migration runs inside this one transaction: all of it or none of it.
            for number in range(version, SCHEMA_VERSION):
                for statement in filter(str.strip, MIGRATIONS[number].split(";")):
                    db.execute(statement)
                db.execute(f"PRAGMA user_version = {number + 1}")


def _tables_of(migration: str) -> set[str]:
    words = migration.split()
    return {
        words[i + 2] for i, w in enumerate(words[:-2]) if w == "CREATE" and words[i + 1] == "TABLE"
    }


def _rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):  # the original error is the one to report
            db.execute("ROLLBACK")
