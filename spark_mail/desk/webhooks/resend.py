"""Resend's webhooks, delivered by Svix: `svix-id`, `svix-timestamp` and `svix-signature`
headers; the signature is base64 HMAC-SHA256 of "<id>.<timestamp>.<body>" with the secret
shown in Resend (`whsec_<base64 key>`), as `v1,<signature>` (several, space-separated,
while a secret is being rotated). A timestamp more than 5 minutes from now is refused, and
the `svix-id` is the event id (Svix keeps it when it retries), so a replay records nothing.

    email.bounced     bounce.type Permanent: hard bounce; Transient / Undetermined: soft
    email.complained  complaint
    email.delivered   delivered
    contact.updated   with `unsubscribed: true`: unsubscribed at Resend
The issue is the `issue` tag spark-mail's Resend provider puts on every email.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from spark_mail.audience.events import EspEvent, EventKind, clean_detail, clean_issue
from spark_mail.desk.webhooks.base import (
    Delivery,
    Receiver,
    addressed,
    b64,
    check_timestamp,
    forged,
    mapping,
    parse_json,
    parse_time,
    text,
)

SECRET_PREFIX = "whsec_"
SOFT_TYPES = ("Transient", "Undetermined")  # other bounces are hard (Resend: "permanent")


def svix_key(secret: str) -> bytes:
    """The HMAC key of a Svix secret (`whsec_` + base64)."""
    return b64(secret.strip().removeprefix(SECRET_PREFIX))


def svix_signature_ok(key: bytes, headers: Mapping[str, str], body: bytes, now: float) -> str:
    """The `svix-id` of a delivery whose signature checks out; WebhookRefused otherwise."""
    event_id = headers.get("svix-id", "")
    stamp = headers.get("svix-timestamp", "")
    signatures = headers.get("svix-signature", "")
    if not event_id or not stamp or not signatures:
        raise forged("the svix-id, svix-timestamp and svix-signature headers are needed")
    check_timestamp(stamp, now, "svix-timestamp")
    expected = hmac.new(key, f"{event_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    for candidate in signatures.split():
        version, _, signature = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(b64(signature), expected):
            return event_id
    raise forged("the svix-signature does not match SPARK_MAIL_RESEND_WEBHOOK_SECRET")


class ResendReceiver(Receiver):
    name = "resend"
    setting = "SPARK_MAIL_RESEND_WEBHOOK_SECRET"

    @property
    def configured(self) -> bool:
        return bool(svix_key(self.settings.resend_webhook_secret.reveal()))

    async def receive(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        key = svix_key(self.settings.resend_webhook_secret.reveal())
        event_id = svix_signature_ok(key, headers, body, self.clock.now().timestamp())
        return Delivery(resend_events(event_id, parse_json(body, dict), self.clock.now()))


def resend_events(event_id: str, payload: Mapping[str, Any], now: dt.datetime) -> list[EspEvent]:
    kind_of_event = text(payload.get("type"))
    data = mapping(payload.get("data"))
    at = parse_time(data.get("created_at") or payload.get("created_at"), now)
    if kind_of_event == "contact.updated":
        if data.get("unsubscribed") is not True or not addressed(data.get("email")):
            return []
        return [EspEvent("resend", event_id, EventKind.UNSUBSCRIBE, data["email"], at)]
    bounce = mapping(data.get("bounce"))
    kinds = {
        "email.bounced": EventKind.SOFT_BOUNCE
        if text(bounce.get("type")) in SOFT_TYPES
        else EventKind.HARD_BOUNCE,
        "email.complained": EventKind.COMPLAINT,
        "email.delivered": EventKind.DELIVERED,
    }
    kind = kinds.get(kind_of_event)
    if kind is None:
        return []
    issue = clean_issue(tag_value(data.get("tags"), "issue"))
    detail = clean_detail(bounce.get("type"), bounce.get("subType"), bounce.get("message"))
    message_id = text(data.get("email_id"))
    recipients = data.get("to")
    addresses = recipients if isinstance(recipients, list) else [recipients]
    return [
        EspEvent("resend", event_id, kind, address, at, issue, message_id, detail)
        for address in addresses
        if addressed(address)
    ]


def tag_value(tags: object, name: str) -> str:
    """A tag's value: Resend's webhooks give tags as {"name": "value"}, its API as a list of
    {"name", "value"}."""
    if isinstance(tags, Mapping):
        return text(tags.get(name))
    if isinstance(tags, list):
        for tag in tags:
            if isinstance(tag, Mapping) and tag.get("name") == name:
                return text(tag.get("value"))
    return ""
