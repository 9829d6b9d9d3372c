"""The send ledger: one SQLite file (WAL) that remembers what was sent, so nothing goes twice.

    db.py          the file: connection, migrations, every sqlite3 error as one line;
                   an empty or foreign file is refused, never taken as a new ledger
    locks.py       the per-issue OS lock (flock): one live process per issue
    sends.py       one row per issue send and its history (SendState, transitions)
    deliveries.py  own-list sending: one row per reader (ReaderState)

Two guards keep an issue from going out twice: the send lifecycle
(spark_mail/sending/lifecycle.py) takes the issue's OS lock, then claims the row inside
one `BEGIN IMMEDIATE` transaction. Reading never creates the file.
"""

from __future__ import annotations

from pathlib import Path

from spark_mail.config import Settings
from spark_mail.files import refuse_file_in_the_way
from spark_mail.ledger.db import LEDGER_SETTINGS, MIGRATIONS, SCHEMA_VERSION, Database
from spark_mail.ledger.deliveries import SETTLED_READERS, DeliveriesTable, ReaderState
from spark_mail.ledger.locks import IssueLocks
from spark_mail.ledger.sends import Claim, LedgerEvent, SendRecord, SendsTable, SendState

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SETTLED_READERS",
    "Claim",
    "Ledger",
    "LedgerEvent",
    "ReaderState",
    "SendRecord",
    "SendState",
    "open_ledger",
]

BUSY_TIMEOUT_SECONDS = 10.0  # how long to wait for another writer before "locked"


class Ledger(SendsTable, DeliveriesTable):
    """The ledger file, its rows and the issues' locks. Opened on first use."""

    def __init__(self, path: Path, *, timeout: float = BUSY_TIMEOUT_SECONDS) -> None:
        self.path = path
        self.database = Database(path, timeout)
        self.locks = IssueLocks(path)

    def open(self) -> Ledger:
        self.database.open()
        return self

    def exists(self) -> bool:
        return self.database.exists()

    def close(self) -> None:
        self.locks.release_all()
        self.database.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def providers_used(self, slug: str) -> set[str]:
        """Every provider that ever took the issue: each claim's "MODE via PROVIDER" in its
        history and each reader row's batch provider ("" where an older ledger kept none)."""
        if not self.database.exists():
            return set()
        claims = self.database.read(
            "SELECT detail FROM events WHERE slug = ? AND state = 'sending'", (slug,)
        )
        readers = self.database.read(
            "SELECT DISTINCT coalesce(provider, '') FROM deliveries WHERE slug = ?", (slug,)
        )
        used = {str(row[0]).rpartition(" via ")[2] for row in claims if " via " in str(row[0])}
        return used | {str(row[0]) for row in readers}


def open_ledger(settings: Settings) -> Ledger:
    """The newsletter's ledger, waiting `ledger_timeout` seconds for another writer. A file
    where its folder should be is an error at once, not "nothing recorded yet"."""
    path = settings.ledger_file
    refuse_file_in_the_way(path.parent, LEDGER_SETTINGS)
    return Ledger(path, timeout=settings.ledger_timeout)
