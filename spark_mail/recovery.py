"""What to do with a send a dead process left in `sending` (the ledger's StaleSend).

The process that wrote `sending` died somewhere between "the request may have left" and
"the ESP's answer was recorded". Sending again blindly could reach every reader twice, so,
in order of preference:

1. ask the ESP, when it can be asked and we recorded an id before the sending request left
   (Buttondown `GET /v1/emails/{id}`, Resend `GET /broadcasts/{id}`): record its answer;
2. else, when the ESP honours an idempotency key on the send, send again with the SAME key:
   the ESP drops the repeat if the first one arrived. The key is made from the content hash,
   so this only holds while the issue is unchanged and the ESP still remembers the key
   (24 hours at Resend; we assume no longer anywhere);
3. else the send is `uncertain`: a human checks the ESP and runs
   `spark-mail send ISSUE --resend-uncertain` if it did not go out.

The caller holds the issue's lock (claim() keeps it on StaleSend) the whole time.

Own-list sending settles reader by reader instead (`settle_in_flight_readers`): readers
whose batch had been written as `sending` when the process died are sent again in the same
batch under the same idempotency key where the ESP honours one (Resend), otherwise they
become `uncertain` and the rest of the list goes out as usual.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Literal

from spark_mail.errors import ProviderError, SparkMailError
from spark_mail.ledger import Ledger, ReaderState, SendRecord, SendState

if TYPE_CHECKING:
    from spark_mail.providers.base import Provider
    from spark_mail.render import RenderedEmail

# How long an ESP is trusted to remember an idempotency key (Resend documents 24 h).
IDEMPOTENCY_WINDOW = dt.timedelta(hours=24)

Action = Literal["sent", "scheduled", "resend"]


class SendUncertain(SparkMailError):
    """An interrupted send may or may not have reached the readers; a human must decide."""

    def __init__(self, slug: str, reason: str) -> None:
        super().__init__(
            f"{slug}: uncertain - {reason}",
            hint="check in the ESP whether it went out; if it did not, run "
            f"`spark-mail send {slug} --resend-uncertain`",
        )
        self.slug = slug
        self.reason = reason


def reconcile(
    ledger: Ledger,
    record: SendRecord,
    provider: Provider,
    email: RenderedEmail,
    *,
    now: dt.datetime | None = None,
) -> Action:
    """Settle a stale `sending` row: "sent" / "scheduled" (recorded, stop) or "resend".

    Raises SendUncertain after marking the row `uncertain` when neither the ESP nor an
    idempotency key can rule out a double send.
    """
    from spark_mail.providers.base import Capability, DeliveryState

    slug = record.slug
    now = now or dt.datetime.now(dt.UTC)
    ids = ", ".join(f"{k}={v}" for k, v in sorted(record.esp_ids.items())) or "no ids"

    if record.provider != provider.name:
        return _uncertain(
            ledger,
            record,
            f"an interrupted send via {record.provider} ({ids}), but the provider is now "
            f"{provider.name}, which cannot know about it",
            now,
        )

    asked = ""
    if Capability.LOOKUP in provider.capabilities and record.esp_ids:
        try:
            state = provider.lookup(record.esp_ids)
        except ProviderError as exc:
            state, asked = DeliveryState.UNKNOWN, f" (lookup failed: {exc.message})"
        if state == DeliveryState.SCHEDULED and record.mode == "schedule":
            ledger.mark_scheduled(slug, record.scheduled_for or "", {}, now=now)
            return "scheduled"
        if state in (DeliveryState.SENT, DeliveryState.SCHEDULED):
            # Queued at the ESP counts as sent: sending again would reach readers twice.
            ledger.mark_sent(
                slug, now=now, note=f"interrupted; {provider.name} says it went out ({ids})"
            )
            return "sent"
        if state == DeliveryState.NOT_SENT:
            ledger.retry_stale(
                slug,
                email.content_hash,
                f"interrupted; {provider.name} says it was not sent ({ids}): sending again",
                now=now,
            )
            return "resend"
        asked = asked or f" ({provider.name} could not say: {state})"

    if provider.idempotent:
        if record.content_hash != email.content_hash:
            return _uncertain(
                ledger,
                record,
                f"interrupted mid-send ({ids}){asked}, and the issue changed since, so a retry "
                "would carry a new idempotency key",
                now,
            )
        started = _last_claim(ledger, record)
        if started is not None and now - started > IDEMPOTENCY_WINDOW:
            return _uncertain(
                ledger,
                record,
                f"interrupted mid-send ({ids}){asked} more than "
                f"{IDEMPOTENCY_WINDOW.total_seconds() / 3600:.0f} h ago: the ESP may have "
                "forgotten the idempotency key",
                now,
            )
        ledger.retry_stale(
            slug,
            email.content_hash,
            f"interrupted ({ids}){asked}: retried with the same idempotency key",
            now=now,
        )
        return "resend"

    return _uncertain(
        ledger,
        record,
        f"interrupted mid-send ({ids}); {provider.name} can neither be asked whether it went "
        "out nor drop a repeated send",
        now,
    )


def _uncertain(ledger: Ledger, record: SendRecord, reason: str, now: dt.datetime) -> Action:
    ledger.mark_uncertain(record.slug, reason, now=now)
    raise SendUncertain(record.slug, reason)


def _last_claim(ledger: Ledger, record: SendRecord) -> dt.datetime | None:
    """When the interrupted attempt started: its idempotency key is at most this old."""
    claims = [e.at for e in ledger.history(record.slug) if e.state == SendState.SENDING]
    stamp = claims[-1] if claims else record.updated_at
    try:
        when = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def settle_in_flight_readers(
    ledger: Ledger,
    before: SendRecord | None,
    provider: Provider,
    content_hash: str,
    *,
    now: dt.datetime | None = None,
) -> dict[int, int]:
    """Readers an earlier run left `sending`: the batches (number -> readers) to send again
    under their own idempotency key; the others' readers are marked `uncertain`.

    `before` is the issue's row as it was before this run claimed it.
    """
    if before is None:
        return {}
    in_flight = ledger.in_flight(before.slug)
    if not in_flight:
        return {}
    now = now or dt.datetime.now(dt.UTC)
    reason = ""
    if before.provider != provider.name:
        reason = f"sent via {before.provider}, and the provider is now {provider.name}"
    elif not provider.idempotent:
        reason = f"{provider.name} can neither be asked about a batch nor drop a repeated one"
    elif before.content_hash != content_hash:
        reason = "the issue changed since, so a repeat would not be the same request"
    else:
        since = ledger.in_flight_since(before.slug)
        try:
            when = dt.datetime.fromisoformat(since) if since else None
        except ValueError:
            when = None
        if when is not None and now - when.astimezone(dt.UTC) > IDEMPOTENCY_WINDOW:
            reason = "more than 24 h ago: the ESP may have forgotten the idempotency key"
    if reason:
        ledger.settle_in_flight(
            before.slug,
            ReaderState.UNCERTAIN,
            f"in flight when a send was interrupted; {reason}",
            now=now,
        )
        return {}
    return in_flight
