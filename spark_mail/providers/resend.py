"""Resend (https://resend.com): the ESP keeps the audience (a segment); we send Broadcasts.

- test sends: POST /emails (at most 50 `to` addresses), `Idempotency-Key` honoured 24 h;
- audience send: POST /broadcasts (a draft; its id goes to the ledger first), then
  POST /broadcasts/{id}/send; `scheduled_at` there schedules it; DELETE cancels a schedule;
- lookup: GET /broadcasts/{id} -> status draft | scheduled | queued | sending | sent;
- auth `Authorization: Bearer KEY`; errors `{"statusCode", "name", "message"}`;
  default rate limit 2 requests/s, 429 with `retry-after`.

Idempotency of the audience send: Resend documents `Idempotency-Key` for /emails only, so the
key is sent on the broadcast calls too (harmless) but the guarantee comes from the broadcast
itself: its id is recorded before `/send`, a broadcast can be sent once, and if a retried
`/send` is refused we ask GET /broadcasts/{id} whether the first one went through.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx

from spark_mail.audience.addresses import deliverable_address
from spark_mail.errors import ConfigError, EspError
from spark_mail.providers.base import (
    BatchResult,
    Capability,
    DeliveryState,
    Known,
    OnIds,
    SendResult,
    iso_utc,
    key_for_test_send,
)
from spark_mail.providers.http import HttpProvider
from spark_mail.render import RenderedEmail

if TYPE_CHECKING:
    from spark_mail.audience import Reader
    from spark_mail.personalize import PersonalizedTemplate

MAX_TO = 50
MAX_BATCH = 100
TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
SENT_STATES = {"queued", "sending", "sent"}


class ResendProvider(HttpProvider):
    name = "resend"
    capabilities = frozenset(
        {
            Capability.TEST,
            Capability.SEND,
            Capability.SCHEDULE,
            Capability.LOOKUP,
            Capability.BATCH,
        }
    )
    idempotent = True
    owns_audience = True
    batch_size = MAX_BATCH
    batch_concurrency = 2  # the 2 requests/s limit is the bound; two calls overlap the waits
    default_base_url = "https://api.resend.com"
    idempotency_header = "Idempotency-Key"
    requests_per_second = 2.0

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_key.reveal()}"}

    def parse_error(self, body: Any) -> tuple[str, str]:
        if isinstance(body, dict):
            return str(body.get("name") or ""), str(body.get("message") or "")
        return "", ""

    @property
    def audience(self) -> str:
        return f"resend segment {self.settings.audience_id or '(not set)'}"

    def dry_run_answer(self, request: httpx.Request, body: Any) -> tuple[int, Any]:
        number = self.dry_run.count if self.dry_run else 0
        if request.url.path.endswith("/broadcasts"):
            return 201, {"id": f"dry-run-broadcast-{number}", "object": "broadcast"}
        if request.url.path.rstrip("/").endswith("/send"):
            return 200, {"id": request.url.path.split("/")[-2]}
        if request.url.path.endswith("/emails/batch") and isinstance(body, list):
            return 200, {"data": [{"id": f"dry-run-email-{number}-{i}"} for i in range(len(body))]}
        return 200, {"id": f"dry-run-email-{number}"}

    # -- messages ------------------------------------------------------------------------
    def _tags(self, email: RenderedEmail) -> list[dict[str, str]]:
        tags = [{"name": "issue", "value": TAG_UNSAFE.sub("_", email.slug)[:256]}]
        tags += [{"name": "tag", "value": TAG_UNSAFE.sub("_", t)[:256]} for t in email.tags[:5]]
        return tags

    def _message(
        self, email: RenderedEmail, to: list[str], html: str, text: str, headers: dict[str, str]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "from": email.from_address,
            "to": to,
            "subject": email.subject,
            "html": html,
            "text": text,
            "headers": dict(headers),
            "tags": self._tags(email),
        }
        if email.reply_to:
            body["reply_to"] = email.reply_to
        return body

    def send_batch(
        self, template: PersonalizedTemplate, readers: Sequence[Reader], key: str
    ) -> BatchResult:
        """One POST /emails/batch with the batch's Idempotency-Key: a repeat of the same
        batch (a retry, or the next run after a crash) cannot send twice."""
        email = template.email
        body = []
        for reader in readers:
            copy = template.copy(reader)
            to = [deliverable_address(copy.to)]
            body.append(self._message(email, to, copy.html, copy.text, copy.headers))
        before, sent_bytes = self.thread_tally()
        response = self.request(
            "POST", "emails/batch", "batch send", json_body=body, idempotency_key=key
        )
        data = self.json(response, "batch send").get("data")
        if not isinstance(data, list) or len(data) != len(readers):
            raise EspError(
                "resend: the batch answer does not match the batch sent", maybe_sent=True
            )
        return BatchResult(
            [("sent", str(item.get("id", "")) if isinstance(item, dict) else "") for item in data],
            requests=self.thread_tally()[0] - before,
            bytes_sent=self.thread_tally()[1] - sent_bytes,
        )

    def send_test(self, email: RenderedEmail, recipients: Sequence[str]) -> SendResult:
        self.limit_test_recipients(recipients, MAX_TO)
        body = self._message(email, list(recipients), email.html, email.text, email.headers)
        before = self.requests_made
        response = self.request(
            "POST",
            "emails",
            "test send",
            json_body=body,
            idempotency_key=key_for_test_send(email, recipients),
        )
        answer = self.json(response, "test send")
        return SendResult(
            esp_ids={"email_id": str(answer.get("id", ""))},
            requests=self.requests_made - before,
            recipients=len(recipients),
        )

    # -- broadcasts ----------------------------------------------------------------------
    def _segment(self) -> str:
        if not self.settings.audience_id:
            raise ConfigError(
                "resend: no audience to send to",
                hint="set SPARK_MAIL_AUDIENCE_ID to the Resend segment id (Audience > Segments)",
            )
        return self.settings.audience_id

    def _create_broadcast(
        self, email: RenderedEmail, on_ids: OnIds, at: str | None, known: dict[str, str]
    ) -> str:
        """The broadcast to send: the draft an interrupted attempt made when the issue is
        unchanged, else a new one (an outdated draft is deleted, never sent)."""
        earlier = known.get("broadcast_id")
        if earlier and known.get("content") == email.content_hash[:16]:
            return earlier
        if earlier:
            self._delete_draft(earlier)
        body: dict[str, Any] = {
            "segment_id": self._segment(),
            "name": email.slug,
            "from": email.from_address,
            "subject": email.subject,
            "preview_text": email.preheader,
            "html": email.html,
            "text": email.text,
        }
        if email.reply_to:
            body["reply_to"] = [email.reply_to]
        response = self.request(
            "POST",
            "broadcasts",
            "create broadcast",
            json_body=body,
            idempotency_key=f"{email.idempotency_key}:create:{at or 'now'}",
        )
        broadcast_id = str(self.json(response, "create broadcast").get("id") or "")
        if not broadcast_id:
            raise EspError("resend: the broadcast was created without an id", maybe_sent=True)
        on_ids({"broadcast_id": broadcast_id})
        return broadcast_id

    def _delete_draft(self, broadcast_id: str) -> None:
        try:
            self.request("DELETE", f"broadcasts/{broadcast_id}", "delete outdated draft")
        except EspError as exc:
            if exc.status != 404:
                raise

    def _send_broadcast(self, email: RenderedEmail, broadcast_id: str, at: str | None) -> None:
        body = {"scheduled_at": at} if at else {}
        try:
            self.request(
                "POST",
                f"broadcasts/{broadcast_id}/send",
                "send broadcast",
                json_body=body,
                idempotency_key=f"{email.idempotency_key}:send:{broadcast_id}:{at or 'now'}",
            )
        except EspError as exc:
            # A repeated /send is refused once the first one went through: ask.
            if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 403):
                try:
                    state = self.lookup({"broadcast_id": broadcast_id})
                except EspError:
                    raise exc from None  # not found out: the refusal keeps its `maybe_sent`
                if state in (DeliveryState.SENT, DeliveryState.SCHEDULED):
                    return
            raise

    def send(self, email: RenderedEmail, on_ids: OnIds, known: Known | None = None) -> SendResult:
        before = self.requests_made
        broadcast_id = self._create_broadcast(email, on_ids, None, known or {})
        self._send_broadcast(email, broadcast_id, None)
        return SendResult(
            esp_ids={"broadcast_id": broadcast_id}, requests=self.requests_made - before
        )

    def schedule(
        self, email: RenderedEmail, at: dt.datetime, on_ids: OnIds, known: Known | None = None
    ) -> SendResult:
        before = self.requests_made
        when = iso_utc(at)
        broadcast_id = self._create_broadcast(email, on_ids, when, known or {})
        self._send_broadcast(email, broadcast_id, when)
        return SendResult(
            esp_ids={"broadcast_id": broadcast_id}, requests=self.requests_made - before
        )

    def unschedule(self, esp_ids: dict[str, str]) -> None:
        broadcast_id = _broadcast_id(esp_ids)
        self.request("DELETE", f"broadcasts/{broadcast_id}", "cancel scheduled broadcast")

    def lookup(self, esp_ids: dict[str, str]) -> DeliveryState:
        broadcast_id = esp_ids.get("broadcast_id")
        if not broadcast_id:
            return DeliveryState.UNKNOWN
        return self.lookup_status(
            f"broadcasts/{broadcast_id}", "look up broadcast", SENT_STATES, {"draft"}
        )


def _broadcast_id(esp_ids: dict[str, str]) -> str:
    broadcast_id = esp_ids.get("broadcast_id")
    if not broadcast_id:
        raise ConfigError("resend: no broadcast id recorded for this issue")
    return broadcast_id
