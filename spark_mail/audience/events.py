"""What the ESPs report about the mail that went out: bounces, complaints, unsubscribes.

The reader desk's webhooks (spark_mail/desk/webhooks/) turn each ESP's events into
EspEvents; `record_events` stores them in the desk's store (`esp_events`, see
spark_mail/audience/suppressions.py) once per (provider, event id, address), so a replayed
event changes nothing, and suppresses whoever must not get mail any more:

    hard bounce          suppressed at once ("bounce")
    complaint            suppressed at once ("complaint")
    unsubscribe at ESP   suppressed at once ("esp-unsubscribe")
    soft bounce          suppressed at the third in a row ("soft-bounces"): three different
                         messages soft-bounced with no delivery reported after them (an ESP
                         that retries reports one message several times: counted once)
    delivered            ends a run of soft bounces; not stored (a row per copy would grow
                         the store with every send), only the latest delivery per address

`issue_events` gives the guard before each own-list send (spark_mail/sending/reputation.py)
the complaints and hard bounces reported for one issue.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from spark_mail.audience.addresses import canonical_address
from spark_mail.audience.suppressions import (
    READER_HOW,
    Operation,
    SuppressionStore,
    add_suppression,
    iso,
)

SOFT_BOUNCES = 3  # soft bounces in a row that suppress an address
DETAIL_CHARS = 300  # of an ESP's reason kept
TOKEN_SECONDS = 24 * 3600  # used webhook tokens remembered (longer than any timestamp window)
SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class EventKind(StrEnum):
    HARD_BOUNCE = "hard-bounce"
    SOFT_BOUNCE = "soft-bounce"
    COMPLAINT = "complaint"
    UNSUBSCRIBE = "unsubscribe"  # the reader unsubscribed at the ESP (its own link or list)
    DELIVERED = "delivered"


# What each kind of event suppresses as (`how` in the store); soft bounces: see above.
SUPPRESSES = {
    EventKind.HARD_BOUNCE: "bounce",
    EventKind.COMPLAINT: "complaint",
    EventKind.UNSUBSCRIBE: "esp-unsubscribe",
}
KIND_OF_HOW = {how: kind for kind, how in SUPPRESSES.items()}


@dataclass(frozen=True)
class EspEvent:
    """One ESP event about one address, as every webhook reads it."""

    provider: str
    event_id: str  # the ESP's id of the event: a replay carries the same
    kind: EventKind
    address: str
    at: dt.datetime  # when the ESP says it happened
    issue: str = ""  # the issue's slug, when the ESP echoes it (tags, metadata, headers)
    message_id: str = ""  # the ESP's id of the message (soft bounces count per message)
    detail: str = ""  # the ESP's reason ("550 5.1.1 user unknown")


@dataclass
class Recorded:
    """What one webhook delivery changed."""

    recorded: int = 0  # new events stored
    replayed: int = 0  # events already stored: nothing done
    delivered: int = 0  # deliveries (end runs of soft bounces)
    suppressed: list[str] | None = None  # addresses suppressed by these events
    token_reused: bool = False  # a signing token seen before: NOTHING was recorded

    def to_json(self) -> dict[str, object]:
        return {
            "recorded": self.recorded,
            "replayed": self.replayed,
            "delivered": self.delivered,
            "suppressed": len(self.suppressed or []),
        }


def clean_issue(value: object) -> str:
    """An issue slug out of an ESP's echo of it ("" when there is none)."""
    text = value[0] if isinstance(value, list) and value else value
    return SLUG_UNSAFE.sub("", str(text))[:200] if isinstance(text, str | int) else ""


def clean_detail(*parts: object) -> str:
    text = " ".join(str(p) for p in parts if p not in (None, "", [], {}))
    flat = " ".join(text.split())
    return flat if len(flat) <= DETAIL_CHARS else flat[: DETAIL_CHARS - 3] + "..."


def record_events(
    events: Sequence[EspEvent],
    received: dt.datetime,
    *,
    token: tuple[str, str] | None = None,
) -> Operation[Recorded]:
    """The operation that records one webhook delivery's events (see the module docstring).
    `token`: (provider, token) a signature may use only once (Mailgun): seen before, the
    operation records nothing and says `token_reused`. It never raises for bad data: it runs
    inside a group commit shared with other requests."""
    when = iso(received)

    def operation(db: sqlite3.Connection) -> Recorded:
        result = Recorded(suppressed=[])
        if token is not None and not remember_token(db, *token, received.timestamp()):
            result.token_reused = True
            return result
        for event in events:
            record_one(db, event, when, result)
        return result

    return operation


def remember_token(db: sqlite3.Connection, provider: str, token: str, now: float) -> bool:
    """Note a signing token as used; False when it was used before."""
    db.execute("DELETE FROM webhook_tokens WHERE at < ?", (now - TOKEN_SECONDS,))
    return bool(
        db.execute(
            "INSERT OR IGNORE INTO webhook_tokens (provider, token, at) VALUES (?, ?, ?)",
            (provider, token, now),
        ).rowcount
    )


def storable(text: str, limit: int = DETAIL_CHARS) -> str:
    """Text SQLite can take: JSON may carry lone surrogates ("\\udcff"), which it refuses
    (and a failing operation would fail its whole group commit); ids are short."""
    return text.encode("utf-8", "replace").decode("utf-8")[:limit]


def record_one(db: sqlite3.Connection, event: EspEvent, received: str, result: Recorded) -> None:
    event = EspEvent(
        event.provider,
        storable(event.event_id),
        event.kind,
        event.address,
        event.at,
        storable(event.issue),
        storable(event.message_id),
        storable(event.detail),
    )
    key, at = storable(canonical_address(event.address), 1000), iso(event.at)
    if event.kind == EventKind.DELIVERED:
        db.execute(
            "INSERT INTO delivered_since (address, at) VALUES (?, ?) "
            "ON CONFLICT (address) DO UPDATE SET at = max(at, excluded.at)",
            (key, at),
        )
        result.delivered += 1
        return
    stored = db.execute(
        "INSERT OR IGNORE INTO esp_events (provider, event_id, address, kind, at, received, "
        "issue, message_id, detail) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            event.provider,
            event.event_id,
            key,
            event.kind,
            at,
            received,
            event.issue,
            event.message_id,
            event.detail,
        ),
    ).rowcount
    if not stored:
        result.replayed += 1
        return
    result.recorded += 1
    how, detail = SUPPRESSES.get(event.kind), event.detail
    if how is None and event.kind == EventKind.SOFT_BOUNCE:
        in_a_row = soft_bounces_detail(db, key, event.detail)
        if in_a_row is not None:
            how, detail = "soft-bounces", in_a_row
    if how is not None and add_suppression(
        db, key, at, how, event.issue, event.provider, event.event_id, detail
    ):
        assert result.suppressed is not None
        result.suppressed.append(key)


def suppress_listed(
    address: str, how: str, at: dt.datetime, provider: str, detail: str = ""
) -> Operation[bool]:
    """The operation that suppresses an address on an ESP's own suppression list (`audience
    sync`; `how`: one of SUPPRESSES' values); True when it was not suppressed yet. When the
    reader's own unsubscribe holds it, the listing is kept as an event (received "": no
    report about a send, so the guard before a send never counts it), so that lifting the
    reader's row (restore_esp_suppression) does not lift what the ESP listed too."""
    key, when = canonical_address(address), iso(at)
    kind = KIND_OF_HOW.get(how)

    def operation(db: sqlite3.Connection) -> bool:
        if add_suppression(db, key, when, how, "", provider, "", detail):
            return True
        row = db.execute("SELECT how FROM suppressions WHERE address = ?", (key,)).fetchone()
        if kind is not None and row is not None and row[0] in READER_HOW:
            db.execute(
                "INSERT OR IGNORE INTO esp_events (provider, event_id, address, kind, at, "
                "received, detail) VALUES (?, ?, ?, ?, ?, '', ?)",
                (provider, f"sync:{how}", key, kind, when, storable(detail)),
            )
        return False

    return operation


def restore_esp_suppression(db: sqlite3.Connection, key: str) -> None:
    """After the reader's own unsubscribe of `key` is lifted: suppress it again as the ESP's
    reports would have (the earliest hard bounce, complaint or unsubscribe at the ESP, else
    soft bounces in a row). While the reader's row stood, a later report was not recorded
    as a suppression (the first record is kept): lifting the reader's row must not lift
    what the ESP reported too (mailing a dead address again hurts every later send)."""
    kinds = tuple(SUPPRESSES)
    marks = ",".join("?" * len(kinds))
    row = db.execute(
        "SELECT kind, at, issue, provider, event_id, detail FROM esp_events "
        f"WHERE address = ? AND kind IN ({marks}) ORDER BY at, id LIMIT 1",
        (key, *kinds),
    ).fetchone()
    if row is not None:
        kind, at, issue, provider, event_id, detail = row
        add_suppression(db, key, at, SUPPRESSES[EventKind(kind)], issue, provider, event_id, detail)
        return
    last = db.execute(
        "SELECT at, issue, provider, event_id, detail FROM esp_events "
        "WHERE address = ? AND kind = 'soft-bounce' ORDER BY at DESC, id DESC LIMIT 1",
        (key,),
    ).fetchone()
    if last is not None:
        at, issue, provider, event_id, detail = last
        detail = soft_bounces_detail(db, key, detail)
        if detail is not None:
            add_suppression(db, key, at, "soft-bounces", issue, provider, event_id, detail)


def soft_bounces_detail(db: sqlite3.Connection, key: str, detail: str) -> str | None:
    """The suppression's detail when `key` has soft-bounced SOFT_BOUNCES times in a row
    (`detail`: the last bounce's reason), else None."""
    in_a_row = soft_bounces_in_a_row(db, key)
    return clean_detail(f"{in_a_row} in a row;", detail) if in_a_row >= SOFT_BOUNCES else None


def soft_bounces_in_a_row(db: sqlite3.Connection, key: str) -> int:
    """Messages to `key` that soft-bounced after its last reported delivery."""
    row = db.execute(
        "SELECT count(DISTINCT CASE WHEN message_id != '' THEN message_id ELSE event_id END) "
        "FROM esp_events WHERE address = ? AND kind = 'soft-bounce' AND at > coalesce("
        "(SELECT at FROM delivered_since WHERE address = ?), '')",
        (key, key),
    ).fetchone()
    return int(row[0])


@dataclass(frozen=True)
class IssueEvent:
    address: str
    kind: str
    issue: str  # "" when the ESP did not say


def issue_events(store: SuppressionStore, slug: str, since: str) -> list[IssueEvent]:
    """Complaints and hard bounces reported for issue `slug`, and those of unknown issue
    recorded since `since` (ISO, UTC: when its send started), for the caller to attribute."""
    rows = store.read(
        "SELECT DISTINCT address, kind, issue FROM esp_events "
        "WHERE kind IN ('complaint', 'hard-bounce') AND (issue = ? OR (issue = '' AND "
        "received >= ?))",
        (slug, since),
    )
    return [IssueEvent(str(a), str(k), str(i)) for a, k, i in rows]
