"""SendGrid's signed Event Webhook: a JSON array of events; the headers
`X-Twilio-Email-Event-Webhook-Signature` (base64 DER ECDSA P-256 signature) and
`X-Twilio-Email-Event-Webhook-Timestamp`; the signature covers timestamp + body and is
checked with the verification key SendGrid shows when signing is switched on (base64 DER,
public: it lives in `sendgrid_webhook_public_key`, PEM works too). Each event's
`sg_event_id` is its id, so a retried batch records nothing twice.

    bounce, type bounce      hard bounce
    bounce, type blocked     soft bounce
    spamreport               complaint
    unsubscribe, group_unsubscribe   unsubscribed at SendGrid
    delivered                delivered
The issue is the custom argument spark-mail's SendGrid provider puts on every message
(`spark_mail_issue`; `issue` is read too, for messages sent otherwise): SendGrid puts
custom_args at the event's top level.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from spark_mail.audience.events import EspEvent, EventKind, clean_detail, clean_issue
from spark_mail.config import Settings
from spark_mail.desk.webhooks.base import (
    Delivery,
    Receiver,
    addressed,
    b64,
    forged,
    parse_json,
    parse_time,
    text,
)
from spark_mail.errors import ConfigError

if TYPE_CHECKING:  # cryptography is loaded once a key is set (a desk starts without it)
    from cryptography.hazmat.primitives.asymmetric import ec

SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
KINDS = {
    "spamreport": EventKind.COMPLAINT,
    "unsubscribe": EventKind.UNSUBSCRIBE,
    "group_unsubscribe": EventKind.UNSUBSCRIBE,
    "delivered": EventKind.DELIVERED,
}


def public_key(settings: Settings) -> ec.EllipticCurvePublicKey | None:
    """The verification key of the settings (None when not set); ConfigError when it is
    not an elliptic-curve public key (found when the desk starts, not at the first event)."""
    written = settings.sendgrid_webhook_public_key.strip()
    if not written:
        return None
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        if written.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(written.encode())
        else:
            key = serialization.load_der_public_key(b64("".join(written.split())))
    except ValueError:
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ConfigError(
            "setting 'sendgrid_webhook_public_key' is not SendGrid's verification key",
            hint="copy the Verification Key from SendGrid's Signed Event Webhook settings",
        )
    return key


class SendgridReceiver(Receiver):
    name = "sendgrid"
    setting = "SPARK_MAIL_SENDGRID_WEBHOOK_PUBLIC_KEY"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key = public_key(self.settings)

    @property
    def configured(self) -> bool:
        return self.key is not None

    async def receive(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        assert self.key is not None
        signature, stamp = b64(headers.get(SIGNATURE, "").strip()), headers.get(TIMESTAMP, "")
        if not signature or not stamp:
            raise forged(f"the {SIGNATURE} and {TIMESTAMP} headers are needed")
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            self.key.verify(signature, stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise forged("the signature does not match sendgrid_webhook_public_key") from None
        now = self.clock.now()
        found = (sendgrid_event(e, now) for e in parse_json(body, list) if isinstance(e, dict))
        return Delivery([event for event in found if event is not None])


def sendgrid_event(event: Mapping[str, Any], now: dt.datetime) -> EspEvent | None:
    from spark_mail.providers.sendgrid import ISSUE_ARG  # loaded with the first event

    name = text(event.get("event"))
    if name == "bounce":
        blocked = text(event.get("type")) == "blocked"
        kind: EventKind | None = EventKind.SOFT_BOUNCE if blocked else EventKind.HARD_BOUNCE
    else:
        kind = KINDS.get(name)
    event_id, address = text(event.get("sg_event_id")), event.get("email")
    if kind is None or not event_id or not addressed(address):
        return None
    return EspEvent(
        "sendgrid",
        event_id,
        kind,
        address,
        parse_time(event.get("timestamp"), now),
        clean_issue(event.get(ISSUE_ARG) or event.get("issue", "")),
        text(event.get("sg_message_id")),
        clean_detail(
            event.get("type") if name == "bounce" else "", event.get("status"), event.get("reason")
        ),
    )
