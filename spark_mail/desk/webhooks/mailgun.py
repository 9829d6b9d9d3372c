"""Mailgun's webhooks (the JSON ones): `{"signature": {"timestamp", "token", "signature"},
"event-data": {...}}`. The signature is hex HMAC-SHA256 of timestamp + token with the
domain's HTTP webhook signing key; a timestamp more than 5 minutes from now is refused, and
so is a token seen before (Mailgun signs every attempt with a fresh token: a token twice is
a replay). The event id is `event-data.id`.

    failed, severity permanent   hard bounce
    failed, severity temporary   soft bounce (Mailgun retries: one message counts once)
    complained                   complaint
    unsubscribed                 unsubscribed at Mailgun
    delivered                    delivered
The issue is the user variable spark-mail's Mailgun provider puts on every message
(`v:spark-mail-issue`; `v:issue` is read too, for messages sent otherwise).
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
    check_timestamp,
    forged,
    mapping,
    parse_json,
    parse_time,
    text,
)

KINDS = {
    ("failed", "permanent"): EventKind.HARD_BOUNCE,
    ("failed", "temporary"): EventKind.SOFT_BOUNCE,
    ("complained", ""): EventKind.COMPLAINT,
    ("unsubscribed", ""): EventKind.UNSUBSCRIBE,
    ("delivered", ""): EventKind.DELIVERED,
}


class MailgunReceiver(Receiver):
    name = "mailgun"
    setting = "SPARK_MAIL_MAILGUN_WEBHOOK_SIGNING_KEY"

    async def receive(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        payload = parse_json(body, dict)
        signed = mapping(payload.get("signature"))
        stamp, token = str(signed.get("timestamp", "")), text(signed.get("token"))
        signature = text(signed.get("signature"))
        if not stamp or not token or not signature:
            raise forged("the signature's timestamp, token and signature are needed")
        check_timestamp(stamp, self.clock.now().timestamp(), "the signature's timestamp")
        key = self.settings.mailgun_webhook_signing_key.reveal().encode()
        expected = hmac.new(key, (stamp + token).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.lower().encode(), expected.encode()):
            raise forged("the signature does not match SPARK_MAIL_MAILGUN_WEBHOOK_SIGNING_KEY")
        event = mailgun_event(mapping(payload.get("event-data")), self.clock.now())
        return Delivery([event] if event else [], token=("mailgun", token))


def tagged_issue(variables: Mapping[str, Any]) -> object:
    from spark_mail.providers.mailgun import ISSUE_VARIABLE  # loaded with the first event

    return variables.get(ISSUE_VARIABLE) or variables.get("issue", "")


def mailgun_event(data: Mapping[str, Any], now: dt.datetime) -> EspEvent | None:
    name = text(data.get("event"))
    severity = text(data.get("severity")) if name == "failed" else ""
    kind = KINDS.get((name, severity))
    event_id, address = text(data.get("id")), data.get("recipient")
    if kind is None or not event_id or not addressed(address):
        return None
    status = mapping(data.get("delivery-status"))
    headers = mapping(mapping(data.get("message")).get("headers"))
    return EspEvent(
        "mailgun",
        event_id,
        kind,
        address,
        parse_time(data.get("timestamp"), now),
        clean_issue(tagged_issue(mapping(data.get("user-variables")))),
        text(headers.get("message-id")),
        clean_detail(
            data.get("reason"),
            status.get("code"),
            status.get("description") or status.get("message"),
        ),
    )
