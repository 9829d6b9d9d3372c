"""Postmark's webhooks: Bounce, SpamComplaint, SubscriptionChange and Delivery, each a JSON
object, behind HTTP basic auth (Postmark has no signatures: the webhook URL carries the
user and password, `https://user:password@news.example.com/webhooks/postmark`).

    RecordType Bounce, Type HardBounce / BadEmailAddress      hard bounce
    RecordType Bounce, Type SoftBounce / Transient / DnsError soft bounce
    RecordType Bounce, Type Unsubscribe                       unsubscribe (a reply asked)
    RecordType SpamComplaint (or Bounce, Type SpamComplaint)  complaint
    RecordType SubscriptionChange, SuppressSending true       Postmark suppressed it:
                                                              its SuppressionReason says why
    RecordType Delivery                                       delivered
The bounce's `ID` is the event id; the issue is the `issue` of the message's Metadata,
which spark-mail's Postmark provider sets.
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping
from typing import Any

from spark_mail.audience.events import EspEvent, EventKind, clean_detail, clean_issue
from spark_mail.desk.webhooks.base import (
    Delivery,
    Receiver,
    addressed,
    b64,
    forged,
    mapping,
    parse_json,
    parse_time,
    text,
)

BOUNCE_KINDS = {
    "HardBounce": EventKind.HARD_BOUNCE,
    "BadEmailAddress": EventKind.HARD_BOUNCE,
    "SoftBounce": EventKind.SOFT_BOUNCE,
    "Transient": EventKind.SOFT_BOUNCE,
    "DnsError": EventKind.SOFT_BOUNCE,
    "Unsubscribe": EventKind.UNSUBSCRIBE,
    "SpamComplaint": EventKind.COMPLAINT,
}
SUPPRESSION_KINDS = {
    "HardBounce": EventKind.HARD_BOUNCE,
    "SpamComplaint": EventKind.COMPLAINT,
    "ManualSuppression": EventKind.UNSUBSCRIBE,
}


class PostmarkReceiver(Receiver):
    name = "postmark"
    setting = "SPARK_MAIL_POSTMARK_WEBHOOK_AUTH"

    @property
    def configured(self) -> bool:
        return ":" in self.settings.postmark_webhook_auth.reveal()

    async def receive(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        scheme, _, value = headers.get("authorization", "").strip().partition(" ")
        given = b64(value.strip()) if scheme.lower() == "basic" else b""
        expected = self.settings.postmark_webhook_auth.reveal().encode()
        if not given or not hmac.compare_digest(given, expected):
            raise forged("the user and password do not match SPARK_MAIL_POSTMARK_WEBHOOK_AUTH")
        record = parse_json(body, dict)
        event = postmark_event(record, self.clock.now())
        return Delivery([event] if event else [])


def postmark_event(record: Mapping[str, Any], now: dt.datetime) -> EspEvent | None:
    """The EspEvent of one Postmark webhook record (None: nothing spark-mail acts on)."""
    kind_of_record = text(record.get("RecordType"))
    message_id = text(record.get("MessageID"))
    issue = clean_issue(mapping(record.get("Metadata")).get("issue", ""))
    if kind_of_record in ("Bounce", "SpamComplaint"):
        kind = (
            EventKind.COMPLAINT
            if kind_of_record == "SpamComplaint"
            else BOUNCE_KINDS.get(text(record.get("Type")))
        )
        address, event_id = record.get("Email"), str(record.get("ID", ""))
        at = parse_time(record.get("BouncedAt"), now)
        detail = clean_detail(record.get("Type"), record.get("Description"), record.get("Details"))
    elif kind_of_record == "SubscriptionChange":
        reason = text(record.get("SuppressionReason"))
        kind = SUPPRESSION_KINDS.get(reason) if record.get("SuppressSending") is True else None
        address, at = record.get("Recipient"), parse_time(record.get("ChangedAt"), now)
        event_id = f"subscription-change:{message_id}:{record.get('ChangedAt', '')}"
        detail = clean_detail(reason, record.get("Origin"))
    elif kind_of_record == "Delivery":
        kind, address = EventKind.DELIVERED, record.get("Recipient")
        at, event_id = parse_time(record.get("DeliveredAt"), now), f"delivery:{message_id}"
        detail = ""
    else:
        return None
    if kind is None or not addressed(address) or not event_id.strip(":"):
        return None
    return EspEvent("postmark", event_id, kind, address, at, issue, message_id, detail)
