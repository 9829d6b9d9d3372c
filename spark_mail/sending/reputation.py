"""The guard before each own-list send: did the last one come back clean enough?

Gmail and Yahoo throttle or refuse bulk senders whose spam-complaint rate passes 0.3%, and
ESPs suspend senders who keep mailing dead addresses (2% hard bounces is the usual warning
line). So before an own-list send, the LAST own-list send is looked at: how many readers it
went to (the ledger's `deliveries`), and how many of them complained or hard-bounced (what
the ESPs reported to the reader desk's webhooks). Over either line the send is refused with
the figures and what to do, unless `--force`. A send resumed after `--limit` (a canary) or
a crash is its own last send: a canary that draws complaints stops the rest.

Only readers the ledger has for that send count: an event naming the issue counts for a
reader the send may have reached (sent, or in doubt), never for an address it did not go
to (the editor whose test copy bounced). An ESP that did not echo the issue in its event
still counts for that send when the event came in after the send started and is about a
reader the ledger says it went to.
"""

from __future__ import annotations

from dataclasses import dataclass

from spark_mail.audience.events import issue_events
from spark_mail.audience.suppressions import SuppressionStore
from spark_mail.config import Settings
from spark_mail.errors import ReputationAtRisk
from spark_mail.ledger import Ledger, ReaderState, open_ledger

MAX_COMPLAINT_RATE = 0.003  # over this share of readers complaining: refuse
MAX_HARD_BOUNCE_RATE = 0.02  # over this share hard-bouncing: refuse
# Readers an issue may have reached: an event naming the issue counts for them.
REACHED = {ReaderState.SENT, ReaderState.SENDING, ReaderState.UNCERTAIN}


@dataclass(frozen=True)
class SendHealth:
    """What came back from one own-list send."""

    slug: str
    sent: int  # readers the ledger records as sent
    complaints: int  # readers who marked it as spam
    hard_bounces: int  # readers whose address bounced for good

    @property
    def complaint_rate(self) -> float:
        return self.complaints / self.sent if self.sent else 0.0

    @property
    def hard_bounce_rate(self) -> float:
        return self.hard_bounces / self.sent if self.sent else 0.0

    @property
    def too_many_complaints(self) -> bool:
        return self.complaint_rate > MAX_COMPLAINT_RATE

    @property
    def too_many_bounces(self) -> bool:
        return self.hard_bounce_rate > MAX_HARD_BOUNCE_RATE

    def figures(self) -> str:
        return (
            f"{self.complaints:,} spam complaints ({self.complaint_rate:.2%}; the limit is "
            f"{MAX_COMPLAINT_RATE:.1%}) and {self.hard_bounces:,} hard bounces "
            f"({self.hard_bounce_rate:.2%}; the limit is {MAX_HARD_BOUNCE_RATE:.0%})"
        )


def last_send(ledger: Ledger) -> tuple[str, int, str] | None:
    """(slug, readers sent, when it started) of the latest own-list send, if any."""
    for record in sorted(ledger.all(), key=lambda r: r.updated_at, reverse=True):
        sent = ledger.reader_counts(record.slug).get(ReaderState.SENT, 0)
        if sent:
            return record.slug, sent, record.created_at
    return None


def last_send_health(settings: Settings) -> SendHealth | None:
    """The figures of the latest own-list send (None: there was none)."""
    with open_ledger(settings) as ledger:
        found = last_send(ledger)
        if found is None:
            return None
        slug, sent, started = found
        with SuppressionStore.for_settings(settings) as store:
            events = issue_events(store, slug, started)
        addresses = sorted({e.address for e in events})
        states = {k: s for k, (s, _) in ledger.reader_states(slug, addresses).items()}
    counted = [
        e
        for e in events
        if states.get(e.address) == ReaderState.SENT
        or (e.issue == slug and states.get(e.address) in REACHED)
    ]
    complaints = {e.address for e in counted if e.kind == "complaint"}
    bounces = {e.address for e in counted if e.kind == "hard-bounce"}
    return SendHealth(slug, sent, len(complaints), len(bounces))


def check_reputation(settings: Settings, slug: str) -> None:
    """Refuse (ReputationAtRisk) an own-list send of `slug` while the last send's complaint
    or hard-bounce rate is over the line."""
    health = last_send_health(settings)
    if health is None or not (health.too_many_complaints or health.too_many_bounces):
        return
    fixes = []
    if health.too_many_complaints:
        fixes.append(
            "make the unsubscribe link easy to find and remind readers why they get this "
            "newsletter; remove readers who never confirmed or have not opened in months"
        )
    if health.too_many_bounces:
        fixes.append("remove old and unconfirmed addresses (the list has gone stale)")
    raise ReputationAtRisk(
        f"{slug}: not sent - the last own-list send ({health.slug}, {health.sent:,} readers) "
        f"had {health.figures()}; mailing on now risks the ESP suspending you and Gmail and "
        "Yahoo filtering the newsletter",
        hint=f"those readers are suppressed already (`spark-mail audience suppressions`); "
        f"{'; '.join(fixes)}; then send with `spark-mail send {slug} --force` (dispatch "
        "never overrides this: cron users run that once by hand, and the next dispatch "
        "finds the issue sent)",
    )
