"""The `sends` table: one row per issue (the audience send), and its `events` history.

    pending -> sending -> sent
                      \\-> failed      (the ESP clearly refused: safe to try again)
                      \\-> uncertain   (may have gone out and nobody can tell: a human
                                        decides, `send --resend-uncertain`)
    scheduled           (handed to the ESP's own scheduler)

A row stays `sending` while a process sends it, and after a run that could not confirm the
send (the ESP may have acted) or died: the next claim finds it `sending` with nobody
holding the issue's lock and hands it back as `stale`, for the send lifecycle to settle
before anything is sent again. Each transition is one method and one transaction, and
appends to `events`; none of them touches the issue's lock.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from spark_mail.errors import AlreadySent, LedgerError
from spark_mail.ledger.db import Database


class SendState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    SCHEDULED = "scheduled"


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
    owner: str | None = None  # the process that wrote `sending` (see locks.process_id)
    key_since: str | None = None  # when this content's idempotency keys were first used
    path: str | None = None  # "esp": the ESP's list; "own": your own list
    source_hash: str | None = None  # the issue file's text: a renamed file is the same issue


@dataclass(frozen=True)
class LedgerEvent:
    slug: str
    at: str
    state: str
    detail: str | None = None


@dataclass(frozen=True)
class Claim:
    """The row this run claimed (`sending`), and the row as an interrupted run left it
    (`stale`: also `sending`) when there is one to settle first."""

    record: SendRecord
    stale: SendRecord | None = None


def stamp(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="seconds")


class SendsTable:
    """Reads and transitions of the `sends` rows (mixed into Ledger)."""

    database: Database

    # -- reading ---------------------------------------------------------------------------
    def _record(self, row: sqlite3.Row) -> SendRecord:
        data: dict[str, Any] = dict(row)
        slug = data.get("slug", "?")
        try:
            ids = json.loads(data["esp_ids"] or "{}")
            state = SendState(data["state"])
        except (ValueError, TypeError):
            ids, state = None, None
        if not isinstance(ids, dict) or state is None:
            raise LedgerError(
                f"{self.database.path}: the row of {slug!r} is damaged (state "
                f"{data.get('state')!r}, ids {str(data.get('esp_ids'))[:60]!r})",
                hint="restore the ledger from a backup; nothing is sent while a row is unreadable",
            )
        data["esp_ids"] = {str(k): str(v) for k, v in ids.items()}
        data["state"] = state
        return SendRecord(**data)

    def get(self, slug: str) -> SendRecord | None:
        if not self.database.exists():
            return None
        rows = self.database.read("SELECT * FROM sends WHERE slug = ?", (slug,))
        return self._record(rows[0]) if rows else None

    def all(self) -> list[SendRecord]:
        if not self.database.exists():
            return []
        rows = self.database.read("SELECT * FROM sends ORDER BY created_at, slug")
        return [self._record(r) for r in rows]

    def history(self, slug: str) -> list[LedgerEvent]:
        """Every state change of one issue's send, oldest first."""
        if not self.database.exists():
            return []
        rows = self.database.read(
            "SELECT slug, at, state, detail FROM events WHERE slug = ? ORDER BY id", (slug,)
        )
        return [LedgerEvent(**dict(r)) for r in rows]

    def _required(self, slug: str) -> SendRecord:
        record = self.get(slug)
        if record is None:
            raise LedgerError(f"{self.database.path}: no send recorded for {slug!r}")
        return record

    @staticmethod
    def _event(db: sqlite3.Connection, slug: str, at: str, state: str, detail: str | None) -> None:
        db.execute(
            "INSERT INTO events (slug, at, state, detail) VALUES (?, ?, ?, ?)",
            (slug, at, state, detail),
        )

    # -- claiming --------------------------------------------------------------------------
    def claim(
        self,
        slug: str,
        content_hash: str,
        provider: str,
        mode: str,
        at: dt.datetime,
        *,
        allow_uncertain: bool = False,
        scheduled_for: dt.datetime | None = None,
        path: str = "esp",
        owner: str = "",
        source_hash: str = "",
    ) -> Claim:
        """Mark the issue `sending` for this run (the caller holds the issue's lock), or
        refuse with AlreadySent: sent, scheduled, uncertain without `allow_uncertain`, or the
        same issue file already sent under another name. A row left `sending` is returned
        unchanged as `stale`, to be settled first."""
        now = stamp(at)
        when = scheduled_for.isoformat() if scheduled_for else None
        with self.database.transaction() as db:
            row = db.execute("SELECT * FROM sends WHERE slug = ?", (slug,)).fetchone()
            current = self._record(row) if row is not None else None
            if current is not None and current.state == SendState.SENDING:
                return Claim(current, stale=current)
            if current is not None:
                _refuse(current, allow_uncertain)
                since = current.key_since if current.content_hash == content_hash else None
                db.execute(
                    "UPDATE sends SET content_hash = ?, provider = ?, mode = ?, state = ?, "
                    "attempts = attempts + 1, updated_at = ?, last_error = NULL, "
                    "scheduled_for = ?, owner = ?, key_since = ?, path = ?, "
                    "source_hash = ? WHERE slug = ?",
                    (content_hash, provider, mode, SendState.SENDING, now, when, owner,
                     since or now, path, source_hash or current.source_hash, slug),
                )  # fmt: skip
            else:
                self._refuse_renamed(db, slug, source_hash)
                db.execute(
                    "INSERT INTO sends (slug, content_hash, provider, mode, state, attempts, "
                    "created_at, updated_at, scheduled_for, owner, key_since, path, source_hash) "
                    "VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?)",
                    (slug, content_hash, provider, mode, SendState.SENDING, now, now, when,
                     owner, now, path, source_hash or None),
                )  # fmt: skip
            self._event(db, slug, now, SendState.SENDING, f"{mode} via {provider}")
        return Claim(self._required(slug))

    def _refuse_renamed(self, db: sqlite3.Connection, slug: str, source_hash: str) -> None:
        """A file renamed after its send is the same issue: never a second send."""
        if not source_hash:
            return
        other = db.execute(
            "SELECT * FROM sends WHERE source_hash = ? AND slug != ? AND state IN (?, ?, ?)",
            (source_hash, slug, SendState.SENT, SendState.SCHEDULED, SendState.SENDING),
        ).fetchone()
        if other is not None:
            earlier = self._record(other)
            raise AlreadySent(
                f"{slug}: this issue file's text was already {earlier.state} as "
                f"{earlier.slug!r} ({earlier.sent_at or earlier.updated_at}): a renamed file is "
                "the same issue",
                hint="an issue is sent once; change its text to make it a new issue",
                slug=slug,
            )

    def resume(
        self,
        slug: str,
        content_hash: str,
        reason: str,
        at: dt.datetime,
        *,
        keep_ids: bool,
        provider: str | None = None,
        owner: str = "",
    ) -> SendRecord:
        """A stale `sending` row goes out again in this run (`provider`, from process
        `owner`): count the attempt, say why. Without `keep_ids` the ids of the earlier
        attempt are dropped (a fresh send). The idempotency keys' age restarts only with new
        content."""
        now = stamp(at)
        ids = "" if keep_ids else ", esp_ids = '{}'"
        with self.database.transaction() as db:
            db.execute(
                "UPDATE sends SET key_since = CASE WHEN content_hash = ? THEN "
                "coalesce(key_since, ?) ELSE ? END WHERE slug = ?",
                (content_hash, now, now, slug),
            )
            db.execute(
                f"UPDATE sends SET content_hash = ?, attempts = attempts + 1, updated_at = ?, "
                f"last_error = ?, owner = ?, provider = coalesce(?, provider){ids} WHERE slug = ?",
                (content_hash, now, reason, owner, provider, slug),
            )
            self._event(db, slug, now, SendState.SENDING, reason)
        return self._required(slug)

    # -- transitions -----------------------------------------------------------------------
    def _update(
        self, slug: str, at: dt.datetime, event: str | None = None, **values: Any
    ) -> SendRecord:
        """Change one row (and log `event` for a state change) in one transaction."""
        if "esp_ids" in values:
            values["esp_ids"] = json.dumps(values["esp_ids"], sort_keys=True)
        now = values["updated_at"] = stamp(at)
        columns = ", ".join(f"{k} = ?" for k in values)
        with self.database.transaction() as db:
            cursor = db.execute(
                f"UPDATE sends SET {columns} WHERE slug = ?", (*values.values(), slug)
            )
            if cursor.rowcount != 1:
                raise LedgerError(f"{self.database.path}: no send recorded for {slug!r}")
            if "state" in values:
                self._event(db, slug, now, values["state"], event)
            elif event is not None:  # "kind: detail", e.g. "ids: {...}", "unconfirmed: why"
                kind, _, detail = event.partition(": ")
                self._event(db, slug, now, kind, detail)
        return self._required(slug)

    def _merged_ids(self, slug: str, esp_ids: dict[str, str] | None) -> dict[str, str]:
        current = self.get(slug)
        return {**(current.esp_ids if current else {}), **(esp_ids or {})}

    def record_ids(self, slug: str, esp_ids: dict[str, str], at: dt.datetime) -> SendRecord:
        """Remember ids the ESP gave (draft, broadcast) before the request that sends leaves."""
        merged = self._merged_ids(slug, esp_ids)
        return self._update(slug, at, f"ids: {json.dumps(merged, sort_keys=True)}", esp_ids=merged)

    def mark_sent(
        self,
        slug: str,
        at: dt.datetime,
        esp_ids: dict[str, str] | None = None,
        *,
        note: str | None = None,
    ) -> SendRecord:
        """`note` says how we know, when it is not the ESP's answer to our own request."""
        merged = self._merged_ids(slug, esp_ids)
        return self._update(slug, at, note, state=SendState.SENT, esp_ids=merged, sent_at=stamp(at))

    def mark_failed(self, slug: str, error: str, at: dt.datetime) -> SendRecord:
        return self._update(slug, at, error, state=SendState.FAILED, last_error=error)

    def mark_uncertain(self, slug: str, reason: str, at: dt.datetime) -> SendRecord:
        return self._update(slug, at, reason, state=SendState.UNCERTAIN, last_error=reason)

    def mark_unconfirmed(self, slug: str, reason: str, at: dt.datetime) -> SendRecord:
        """The ESP may have acted: the row stays `sending` for the next run to settle."""
        return self._update(slug, at, f"unconfirmed: {reason}", last_error=reason)

    def mark_scheduled(
        self, slug: str, when: dt.datetime | str, esp_ids: dict[str, str], at: dt.datetime
    ) -> SendRecord:
        scheduled = when if isinstance(when, str) else when.isoformat()
        merged = self._merged_ids(slug, esp_ids)
        return self._update(
            slug,
            at,
            f"for {scheduled}",
            state=SendState.SCHEDULED,
            esp_ids=merged,
            scheduled_for=scheduled,
        )

    def mark_partial(self, slug: str, note: str, at: dt.datetime) -> SendRecord:
        """Some readers have their copy, the rest wait for a later run (`--limit`)."""
        return self._update(slug, at, note, state=SendState.PENDING, last_error=None)

    def forget(self, slug: str, reason: str, at: dt.datetime) -> None:
        """Drop a row and its reader rows (unschedule; a send only to the outbox); its
        history stays."""
        with self.database.transaction() as db:
            db.execute("DELETE FROM deliveries WHERE slug = ?", (slug,))
            db.execute("DELETE FROM sends WHERE slug = ?", (slug,))
            self._event(db, slug, stamp(at), "removed", reason)


def _refuse(current: SendRecord, allow_uncertain: bool) -> None:
    slug = current.slug
    if current.state == SendState.SENT:
        raise AlreadySent(
            f"{slug}: already sent on {current.sent_at} via {current.provider}",
            hint="an issue is sent once; see `spark-mail status`",
            slug=slug,
        )
    if current.state == SendState.SCHEDULED:
        raise AlreadySent(
            f"{slug}: scheduled with {current.provider} for {current.scheduled_for}",
            hint=f"the ESP sends it; `spark-mail unschedule {slug}` to take it back",
            slug=slug,
        )
    if current.state == SendState.UNCERTAIN and not allow_uncertain:
        raise AlreadySent(
            f"{slug}: an earlier send may have gone out (state: uncertain)",
            hint=f"check with your ESP, then `spark-mail send {slug} --resend-uncertain` if it "
            "did not",
            slug=slug,
        )
