"""The `deliveries` table: own-list sending, one row per reader of an issue.

Written one transaction per ESP batch (a batch's start shares it with the answers that came
back since): `sending` with its batch number BEFORE the batch leaves, then `sent` (with the
ESP's message id), `refused` (the ESP refused that one reader: not retried), `failed` (the
whole batch was clearly refused: the next run sends it again) or `uncertain` (it may have
gone out and nobody can tell: only `--resend-uncertain` sends it again). Readers still
`sending` after a run are in flight: the next run settles them (the send lifecycle's
recovery rule) before sending anyone else. Rows are keyed by the canonical address.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from spark_mail.ledger.db import Database
from spark_mail.ledger.sends import stamp


class ReaderState(StrEnum):
    """One reader's copy of an issue, in the `deliveries` table."""

    SENDING = "sending"  # its batch left or is about to: in flight
    SENT = "sent"
    REFUSED = "refused"  # the ESP refused this reader (inactive, invalid): not retried
    FAILED = "failed"  # the whole batch was clearly refused: the next run sends it again
    UNCERTAIN = "uncertain"  # may have gone out: only --resend-uncertain sends it again


SETTLED_READERS = (ReaderState.SENT, ReaderState.REFUSED)
# (reader key, state, ESP message id, error) of an answered reader
Answer = tuple[str, ReaderState, str | None, str | None]
CHUNK = 500  # stay under SQLite's limit of variables in one statement


@dataclass
class InFlight:
    """A batch an interrupted run left `sending`: its readers (keys), the provider it went
    through, its idempotency key and when it first left under that key."""

    readers: list[str]
    provider: str | None
    key: str | None
    first_at: str | None


class DeliveriesTable:
    """Reads and writes of the `deliveries` rows (mixed into Ledger)."""

    database: Database

    def reader_states(self, slug: str, readers: list[str]) -> dict[str, tuple[str, int | None]]:
        """reader key -> (state, batch) for those of `readers` the ledger knows."""
        if not readers or not self.database.exists():
            return {}
        found: dict[str, tuple[str, int | None]] = {}
        for start in range(0, len(readers), CHUNK):
            part = readers[start : start + CHUNK]
            marks = ",".join("?" * len(part))
            for row in self.database.read(
                f"SELECT reader, state, batch FROM deliveries WHERE slug = ? "
                f"AND reader IN ({marks})",
                (slug, *part),
            ):
                found[row[0]] = (row[1], row[2])
        return found

    def write_batches(
        self,
        slug: str,
        batch: int,
        readers: list[tuple[str, str]],
        answers: Sequence[Answer],
        at: dt.datetime,
        *,
        provider: str | None = None,
        key: str | None = None,
    ) -> None:
        """In one transaction: the answers of batches that came back, and the (reader key,
        address) pairs of `batch` as `sending`, before it leaves, with the provider and the
        idempotency key it leaves through. A batch repeated under the same key keeps the
        time it first left (how old its key is)."""
        now = stamp(at)
        with self.database.transaction() as db:
            db.executemany(
                "UPDATE deliveries SET state = ?, esp_id = ?, error = ?, updated_at = ? "
                "WHERE slug = ? AND reader = ?",
                [(state, esp_id, error, now, slug, k) for k, state, esp_id, error in answers],
            )
            db.executemany(
                "INSERT INTO deliveries (slug, reader, address, state, batch, created_at, "
                "updated_at, provider, batch_key, first_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (slug, reader) DO UPDATE SET state = excluded.state, "
                "batch = excluded.batch, error = NULL, updated_at = excluded.updated_at, "
                "provider = excluded.provider, first_at = CASE WHEN batch_key IS "
                "excluded.batch_key THEN coalesce(first_at, excluded.first_at) ELSE "
                "excluded.first_at END, batch_key = excluded.batch_key",
                [
                    (slug, k, a, ReaderState.SENDING, batch, now, now, provider, key, now)
                    for k, a in readers
                ],
            )

    def in_flight(self, slug: str) -> dict[int, InFlight]:
        """batch number -> what an interrupted run left `sending` in that batch."""
        if not self.database.exists():
            return {}
        batches: dict[int, InFlight] = {}
        for batch, reader, provider, key, first in self.database.read(
            "SELECT batch, reader, provider, batch_key, first_at FROM deliveries "
            "WHERE slug = ? AND state = ? ORDER BY batch, reader",
            (slug, ReaderState.SENDING),
        ):
            number = int(batch or 0)
            if number not in batches:
                batches[number] = InFlight([], provider, key, first)
            batches[number].readers.append(str(reader))
        return batches

    def settle_in_flight(
        self,
        slug: str,
        state: ReaderState,
        reason: str,
        at: dt.datetime,
        *,
        batches: list[int] | None = None,
    ) -> int:
        """Readers left `sending` (in `batches`, or all) become `state` (uncertain)."""
        query = (
            "UPDATE deliveries SET state = ?, error = ?, updated_at = ? "
            "WHERE slug = ? AND state = ?"
        )
        params: list[Any] = [state, reason, stamp(at), slug, ReaderState.SENDING]
        if batches is not None:
            query += f" AND batch IN ({','.join('?' * len(batches))})"
            params += batches
        with self.database.transaction() as db:
            return int(db.execute(query, params).rowcount)

    def in_flight_since(self, slug: str) -> str | None:
        """When the oldest reader still `sending` was handed to a batch."""
        rows = self.database.read(
            "SELECT min(updated_at) FROM deliveries WHERE slug = ? AND state = ?",
            (slug, ReaderState.SENDING),
        )
        return rows[0][0] if rows else None

    def next_batch(self, slug: str) -> int:
        """The first batch number no earlier run used."""
        if not self.database.exists():
            return 1
        rows = self.database.read("SELECT max(batch) FROM deliveries WHERE slug = ?", (slug,))
        return int(rows[0][0] or 0) + 1

    def reader_counts(self, slug: str) -> dict[str, int]:
        """state -> readers, for one issue."""
        if not self.database.exists():
            return {}
        rows = self.database.read(
            "SELECT state, count(*) FROM deliveries WHERE slug = ? GROUP BY state", (slug,)
        )
        return {str(state): int(count) for state, count in rows}

    def readers_in(self, slug: str, state: ReaderState, limit: int = 20) -> list[tuple[str, str]]:
        """(address, error) of the first `limit` readers in `state`, for reports."""
        if not self.database.exists():
            return []
        rows = self.database.read(
            "SELECT address, coalesce(error, '') FROM deliveries WHERE slug = ? AND state = ? "
            "ORDER BY batch, reader LIMIT ?",
            (slug, state, limit),
        )
        return [(str(a), str(e)) for a, e in rows]
