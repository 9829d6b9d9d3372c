"""Signing ESP webhooks the way each ESP does, with keys made here, and a stand-in for SNS.

postmark_auth(user_password)             the Authorization header (basic auth)
resend_headers(secret, body, ...)        Svix headers, signed by Svix's own reference
                                         signer (standardwebhooks)
mailgun_body(key, event_data, ...)       the JSON body with its HMAC signature
SendgridKeys().headers(body)             an ECDSA P-256 key pair and the signed headers
SnsStandIn()                             an HTTP server on 127.0.0.1 serving a
                                         self-signed certificate and the SubscribeURL,
                                         and signing SNS messages with its key
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import json
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from standardwebhooks.webhooks import Webhook

from conftest import SAMPLE_SLUG
from suppression_server import LocalServer, reply

POSTMARK_AUTH = "postmark-hooks:pm-webhook-pass-0123456789"
RESEND_SECRET = "whsec_" + base64.b64encode(b"resend-webhook-key-0123456789abc").decode()
MAILGUN_KEY = "key-mailgun-webhook-signing-0123456789"
TOPIC = "arn:aws:sns:us-east-1:123456789012:spark-mail-ses"


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


# -- Postmark -------------------------------------------------------------------------------
def postmark_auth(user_password: str = POSTMARK_AUTH) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(user_password.encode()).decode()}


def postmark_bounce(
    address: str, bounce_id: int = 4323372036854775807, kind: str = "HardBounce", **extra: Any
) -> dict[str, Any]:
    """A Postmark Bounce webhook body (fields as Postmark documents them)."""
    return {
        "RecordType": "Bounce",
        "ID": bounce_id,
        "Type": kind,
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "",
        "MessageID": f"msg-{bounce_id}",
        "Metadata": {"issue": SAMPLE_SLUG},
        "ServerID": 23,
        "MessageStream": "broadcast",
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": address,
        "From": "hello@tinybigspark.com",
        "BouncedAt": "2025-01-20T12:05:00Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Engineering leadership",
        **extra,
    }


# -- Resend (Svix) ----------------------------------------------------------------------------
def resend_headers(
    body: bytes, *, secret: str = RESEND_SECRET, event_id: str = "", at: float | None = None
) -> dict[str, str]:
    """Svix's headers for `body`, signed with Svix's reference implementation."""
    event_id = event_id or f"msg_{uuid.uuid4().hex}"
    moment = dt.datetime.fromtimestamp(time.time() if at is None else at, dt.UTC)
    signature = Webhook(secret).sign(event_id, moment, body.decode())
    return {
        "svix-id": event_id,
        "svix-timestamp": str(int(moment.timestamp())),
        "svix-signature": signature,
        "content-type": "application/json",
    }


def resend_event(kind: str, address: str, **data: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "created_at": "2025-01-20T12:05:00.000Z",
        "data": {
            "created_at": "2025-01-20T12:04:00.000Z",
            "email_id": "56761188-7520-42d8-8898-ff6fc54ce618",
            "from": "Tiny Big Spark <hello@tinybigspark.com>",
            "to": [address],
            "subject": "Engineering leadership",
            "tags": {"issue": SAMPLE_SLUG},
            **data,
        },
    }


# -- Mailgun ----------------------------------------------------------------------------------
def mailgun_body(
    event_data: dict[str, Any], *, key: str = MAILGUN_KEY, token: str = "", at: float | None = None
) -> bytes:
    stamp = str(int(time.time() if at is None else at))
    token = token or uuid.uuid4().hex * 2
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return dumps(
        {
            "signature": {"timestamp": stamp, "token": token, "signature": signature},
            "event-data": event_data,
        }
    )


def mailgun_event(event: str, address: str, event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "event": event,
        "id": event_id,
        "timestamp": 1737374700.5,
        "recipient": address,
        "message": {"headers": {"message-id": f"{event_id}@mg.tinybigspark.com"}},
        "user-variables": {"issue": SAMPLE_SLUG},
        **extra,
    }


# -- SendGrid ---------------------------------------------------------------------------------
class SendgridKeys:
    """A P-256 key pair like the one SendGrid signs its Event Webhook with."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())

    @property
    def public_base64(self) -> str:
        """The verification key as SendGrid shows it: base64 DER SubjectPublicKeyInfo."""
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def headers(self, body: bytes, at: float | None = None) -> dict[str, str]:
        stamp = str(int(time.time() if at is None else at))
        signature = self.private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "x-twilio-email-event-webhook-signature": base64.b64encode(signature).decode(),
            "x-twilio-email-event-webhook-timestamp": stamp,
            "content-type": "application/json",
        }


def sendgrid_event(event: str, address: str, event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "email": address,
        "timestamp": 1737374700,
        "event": event,
        "sg_event_id": event_id,
        "sg_message_id": f"{event_id}.filter0001.16648.5515E0B88.0",
        "issue": SAMPLE_SLUG,
        **extra,
    }


# -- SNS (SES) --------------------------------------------------------------------------------
@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    """The RSA key called `name`, made once per process (~80 ms of CPU each): a different
    name is a different key."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def self_signed(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


SIGNED = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        *("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    ),
}


class SnsStandIn(LocalServer):
    """SNS's side of a subscription, on 127.0.0.1: the signing certificate (GET /cert.pem),
    the SubscribeURL (GET /confirm?Token=...: each hit is kept in `confirmed`), and
    messages signed with the certificate's key the way SNS signs them."""

    def __init__(self) -> None:
        self.key = rsa_key("sns")
        self.pem = self_signed(self.key)
        self.confirmed: list[str] = []
        self.certificate_fetches = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                if self.path == "/cert.pem":
                    stand_in.certificate_fetches += 1
                    self.answer(200, stand_in.pem)
                elif self.path.startswith("/confirm?"):
                    stand_in.confirmed.append(self.path)
                    self.answer(200, b"<ConfirmSubscriptionResponse/>")
                else:
                    self.answer(404, b"")

            def answer(self, status: int, body: bytes) -> None:
                reply(self, status, body)

        super().__init__(Handler)

    def message(
        self,
        kind: str,
        payload: str,
        *,
        version: str = "1",
        message_id: str = "",
        topic: str = TOPIC,
        key: rsa.RSAPrivateKey | None = None,
        certificate_url: str = "",
    ) -> dict[str, Any]:
        """An SNS message of `kind` carrying `payload`, signed (SignatureVersion 1: SHA1,
        2: SHA256) with the stand-in's key, or `key`."""
        message: dict[str, Any] = {
            "Type": kind,
            "MessageId": message_id or str(uuid.uuid4()),
            "TopicArn": topic,
            "Message": payload,
            "Timestamp": "2025-01-20T12:05:00.000Z",
            "SignatureVersion": version,
            "SigningCertURL": certificate_url or f"{self.url}/cert.pem",
        }
        if kind == "Notification":
            message["Subject"] = "Amazon SES Email Event Notification"
            message["UnsubscribeURL"] = f"{self.url}/unsubscribe"
        else:
            message["Token"] = uuid.uuid4().hex
            message["SubscribeURL"] = f"{self.url}/confirm?Token={message['Token']}"
        text = "".join(f"{n}\n{message[n]}\n" for n in SIGNED[kind] if n in message)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = (key or self.key).sign(text.encode(), padding.PKCS1v15(), algorithm)
        message["Signature"] = base64.b64encode(signature).decode()
        return message


def ses_bounce(address: str, bounce_type: str = "Permanent", **mail: Any) -> str:
    """An SES bounce notification (the SNS message's `Message`)."""
    return json.dumps(
        {
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": bounce_type,
                "bounceSubType": "General",
                "bouncedRecipients": [
                    {"emailAddress": address, "action": "failed", "status": "5.1.1",
                     "diagnosticCode": "smtp; 550 5.1.1 user unknown"}
                ],
                "timestamp": "2025-01-20T12:05:00.000Z",
                "feedbackId": "0100017c-feedback",
            },
            "mail": {
                "messageId": "0100017c-message",
                "timestamp": "2025-01-20T12:04:00.000Z",
                "source": "hello@tinybigspark.com",
                "destination": [address],
                **mail,
            },
        }
    )  # fmt: skip


def ses_complaint(address: str, **mail: Any) -> str:
    return json.dumps(
        {
            "notificationType": "Complaint",
            "complaint": {
                "complainedRecipients": [{"emailAddress": address}],
                "timestamp": "2025-01-20T12:06:00.000Z",
                "feedbackId": "0100017c-complaint",
                "complaintFeedbackType": "abuse",
            },
            "mail": {"messageId": "0100017c-message-2", "destination": [address], **mail},
        }
    )
