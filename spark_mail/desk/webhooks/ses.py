"""Amazon SES's bounce, complaint and delivery notifications, through an SNS topic
subscribed to the desk over HTTPS.

Every SNS message is checked before it is read: its `TopicArn` must be one of
`ses_sns_topic_arns` (anyone can create an SNS topic and point it here: a valid SNS
signature alone proves nothing about whose topic it is); its `SigningCertURL` must be an
https URL on an SNS host of amazonaws.com (`sns.<region>.amazonaws.com`, the region a
region's name, not any label: S3 answers for a bucket named `sns` too); the certificate
fetched from there (kept in memory) must verify the RSA signature over SNS's canonical
string of the message: SHA1 for SignatureVersion 1, SHA256 for 2. A
`SubscriptionConfirmation` is confirmed by fetching its `SubscribeURL` (held to the same
host rule). SNS's `MessageId` is the event id; SNS keeps it when it retries.

    notificationType / eventType Bounce, bounceType Permanent       hard bounce
    Bounce, bounceType Transient or Undetermined                    soft bounce
    Complaint (unless its feedback type is not-spam)                complaint
    Delivery                                                        delivered
The issue is the message's `issue` tag (`mail.tags`, SES event publishing) or, when the
original headers are included, the `issue=` of its List-Unsubscribe link.

`SnsPolicy` says where certificates and subscription URLs may come from; tests, whose
stand-ins for SNS run on 127.0.0.1, pass their own to `create_app`; `serve` never does.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from spark_mail.audience.events import EspEvent, EventKind, clean_detail, clean_issue
from spark_mail.desk.webhooks.base import (
    Delivery,
    Receiver,
    addressed,
    b64,
    forged,
    issue_in_link,
    mapping,
    parse_json,
    parse_time,
    text,
)
from spark_mail.errors import WebhookRefused

if TYPE_CHECKING:  # httpx and cryptography load with the first SNS message
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa

# sns.<region>.amazonaws.com(.cn): the label must be a region (us-east-1, us-gov-west-1,
# cn-north-1), not just any label: an S3 bucket named `sns` answers at sns.s3.amazonaws.com
# (and sns.s3-us-west-2..., sns.s3-accelerate...), and whoever holds it could serve a
# certificate of their own.
SNS_HOST = re.compile(r"sns\.[a-z]{2}(?:-[a-z]+)+-[0-9]+\.amazonaws\.com(?:\.cn)?")
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
SIGNED_FIELDS["UnsubscribeConfirmation"] = SIGNED_FIELDS["SubscriptionConfirmation"]
SIGNATURE_HASHES = {"1": "SHA1", "2": "SHA256"}  # SignatureVersion -> cryptography's hash
FETCH_SECONDS = 10.0
CACHED_CERTIFICATES = 32
BOUNCE_KINDS = {"Permanent": EventKind.HARD_BOUNCE}  # Transient, Undetermined: soft


@dataclass(frozen=True)
class SnsPolicy:
    """Where SNS signing certificates and subscription URLs may be fetched from."""

    hosts: re.Pattern[str] = SNS_HOST
    schemes: frozenset[str] = field(default_factory=lambda: frozenset({"https"}))

    def allows(self, url: str) -> bool:
        try:
            parts = urlsplit(url)
        except ValueError:
            return False
        host = parts.hostname or ""
        return (
            parts.scheme in self.schemes
            and bool(self.hosts.fullmatch(host))
            and not parts.username
            and not parts.password
        )


class SesReceiver(Receiver):
    name = "ses"
    setting = "SPARK_MAIL_SES_SNS_TOPIC_ARNS"

    def __init__(self, *args: Any, policy: SnsPolicy | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.policy = policy or SnsPolicy()
        self.certificates: dict[str, rsa.RSAPublicKey] = {}

    async def receive(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        message = parse_json(body, dict)
        kind = text(message.get("Type"))
        if kind not in SIGNED_FIELDS:
            raise forged("not an SNS message (raw message delivery must be off)")
        if text(message.get("TopicArn")) not in self.settings.ses_sns_topic_arns:
            raise forged("the SNS topic is not one of SPARK_MAIL_SES_SNS_TOPIC_ARNS")
        await self.check_signature(message, kind)
        if kind == "SubscriptionConfirmation":
            url = text(message.get("SubscribeURL"))
            if not self.policy.allows(url):
                raise forged("the SubscribeURL is not on an SNS host of amazonaws.com")
            return Delivery(confirm_url=url)
        if kind == "UnsubscribeConfirmation":
            return Delivery()
        try:
            notification = json.loads(text(message.get("Message")))
        except (ValueError, RecursionError):
            notification = None
        event_id = text(message.get("MessageId"))
        now = self.clock.now()
        return Delivery(ses_events(event_id, mapping(notification), now))

    async def check_signature(self, message: Mapping[str, Any], kind: str) -> None:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        version = text(message.get("SignatureVersion"))
        name = SIGNATURE_HASHES.get(version)
        algorithm: type[hashes.HashAlgorithm] | None = getattr(hashes, name) if name else None
        signature = b64(text(message.get("Signature")))
        url = text(message.get("SigningCertURL"))
        if algorithm is None or not signature:
            raise forged("the SNS signature is missing or of an unknown SignatureVersion")
        if not self.policy.allows(url):
            raise forged("the SigningCertURL is not an https URL on an SNS host of amazonaws.com")
        key = await self.certificate(url)
        try:
            key.verify(signature, signed_string(message, kind), padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise forged("the SNS signature does not check out") from None

    async def certificate(self, url: str) -> rsa.RSAPublicKey:
        """The public key of SNS's signing certificate at `url`, fetched once."""
        from cryptography import x509
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = self.certificates.get(url)
        if key is not None:
            return key
        content = await fetch(url, "the SNS signing certificate cannot be fetched")
        try:
            found = x509.load_pem_x509_certificate(content).public_key()
        except ValueError:
            found = None
        if not isinstance(found, rsa.RSAPublicKey):
            raise forged("the SigningCertURL does not hold an RSA certificate")
        if len(self.certificates) >= CACHED_CERTIFICATES:
            self.certificates.clear()
        self.certificates[url] = found
        return found

    async def confirm(self, url: str) -> None:
        """Confirm a subscription (SubscriptionConfirmation): GET its SubscribeURL."""
        await fetch(url, "the SNS subscription cannot be confirmed")


async def fetch(url: str, failure: str) -> bytes:
    """The body of a 200 answer to GET `url` (a URL the policy allowed); 502 otherwise:
    SNS retries a delivery that failed with a 5xx, so the event is not lost."""
    import httpx

    from spark_mail.tls import https_context

    try:
        async with httpx.AsyncClient(
            timeout=FETCH_SECONDS, follow_redirects=False, verify=https_context()
        ) as client:
            answer = await client.get(url)
    except httpx.HTTPError:
        answer = None
    if answer is None or answer.status_code != 200:
        raise WebhookRefused(502, "Unavailable", failure)
    return answer.content


def signed_string(message: Mapping[str, Any], kind: str) -> bytes:
    """SNS's canonical string of a message: "Name\\nvalue\\n" for each signed field there."""
    lines = []
    for name in SIGNED_FIELDS[kind]:
        value = message.get(name)
        if isinstance(value, str):
            lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode()


def ses_events(event_id: str, note: Mapping[str, Any], now: dt.datetime) -> list[EspEvent]:
    """The events of one SES notification (several recipients can share one)."""
    name = text(note.get("notificationType") or note.get("eventType"))
    mail = mapping(note.get("mail"))
    issue, message_id = ses_issue(mail), text(mail.get("messageId"))
    why: tuple[object, ...]
    if name == "Bounce":
        bounce = mapping(note.get("bounce"))
        kind = BOUNCE_KINDS.get(text(bounce.get("bounceType")), EventKind.SOFT_BOUNCE)
        at = parse_time(bounce.get("timestamp"), now)
        people = [(r.get("emailAddress"), r) for r in recipients(bounce, "bouncedRecipients")]
        why = (bounce.get("bounceType"), bounce.get("bounceSubType"))
    elif name == "Complaint":
        complaint = mapping(note.get("complaint"))
        if text(complaint.get("complaintFeedbackType")) == "not-spam":
            return []
        kind, at = EventKind.COMPLAINT, parse_time(complaint.get("timestamp"), now)
        people = [(r.get("emailAddress"), r) for r in recipients(complaint, "complainedRecipients")]
        why = (complaint.get("complaintFeedbackType"),)
    elif name == "Delivery":
        delivery = mapping(note.get("delivery"))
        kind, at, why = EventKind.DELIVERED, parse_time(delivery.get("timestamp"), now), ()
        listed = delivery.get("recipients")
        people = [(r, {}) for r in listed] if isinstance(listed, list) else []
    else:
        return []
    return [
        EspEvent(
            "ses",
            event_id,
            kind,
            address,
            at,
            issue,
            message_id,
            clean_detail(*why, details.get("status"), details.get("diagnosticCode")),
        )
        for address, details in people
        if addressed(address)
    ]


def recipients(part: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    listed = part.get(name)
    return [r for r in listed if isinstance(r, Mapping)] if isinstance(listed, list) else []


def ses_issue(mail: Mapping[str, Any]) -> str:
    """The issue of an SES message: its `issue` tag, else its List-Unsubscribe link."""
    tagged = clean_issue(mapping(mail.get("tags")).get("issue", ""))
    if tagged:
        return tagged
    headers = mail.get("headers")
    for header in headers if isinstance(headers, list) else []:
        if isinstance(header, Mapping) and text(header.get("name")).lower() == "list-unsubscribe":
            return clean_issue(issue_in_link(text(header.get("value"))))
    return ""
