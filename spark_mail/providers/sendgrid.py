"""SendGrid (https://sendgrid.com): delivery only; the subscriber list is your own.

- every send is POST /v3/mail/send (auth `Authorization: Bearer KEY`); success is 202 with
  an empty body and the message id in `X-Message-Id`; errors
  `{"errors": [{"message", "field", "help"}]}`; EU subusers use
  SPARK_MAIL_API_URL=https://api.eu.sendgrid.com;
- test sends: one personalization, the editors in `to`;
- own-list batches: up to 1,000 personalizations per call, one per reader (only their address
  in `To`). The issue goes once per call with substitution tags where each reader's values
  go (spark_mail/providers/merge.py) and each personalization carries that reader's values
  (`substitutions`, at most 10,000 bytes per reader: a reader over it is refused with the
  reason) and headers (their own `List-Unsubscribe`), plus `custom_args` naming the issue
  and the batch, which SendGrid's event webhook echoes;
- scheduling: a `batch_id` (POST /v3/mail/batch, recorded before any batch leaves) and
  `send_at` on every call, at most 72 hours ahead; `unschedule` cancels the batch id
  (POST /v3/user/scheduled_sends), which SendGrid guarantees only 10 minutes or more before
  the send time, so later than that it refuses;
- no idempotency key and no cheap way to ask about a message (the Email Activity API is a
  paid add-on): a call without a clear answer is never repeated (`maybe_sent`), and a batch
  in flight at a crash is `uncertain`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import email.utils as email_utils
import functools
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from spark_mail.audience.addresses import deliverable_address
from spark_mail.errors import ConfigError, EspError
from spark_mail.providers.base import (
    BatchResult,
    Capability,
    DeliveryOnlyProvider,
    OnIds,
    Outcome,
    SendResult,
    bare_address,
    batch_tag,
    iso_utc,
)
from spark_mail.providers.http import HttpProvider, compact_json
from spark_mail.providers.merge import MergedIssue, merged_issue
from spark_mail.render import RenderedEmail

if TYPE_CHECKING:
    from spark_mail.audience import Reader
    from spark_mail.personalize import PersonalizedTemplate

MAX_BATCH = 1000
MAX_TO = 1000
SUBSTITUTIONS_LIMIT = 10_000  # bytes of substitutions per personalization
SCHEDULE_LIMIT = dt.timedelta(hours=72)
CANCEL_NOTICE = dt.timedelta(minutes=10)
CATEGORY_UNSAFE = re.compile(r"[^\x20-\x7e]+")


class SendgridProvider(DeliveryOnlyProvider, HttpProvider):
    name = "sendgrid"
    capabilities = frozenset({Capability.TEST, Capability.BATCH, Capability.SCHEDULE})
    batch_size = MAX_BATCH
    default_base_url = "https://api.sendgrid.com"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deliver_at: dt.datetime | None = None
        self.batch_id = ""

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_key.reveal()}"}

    def parse_error(self, body: Any) -> tuple[str, str]:
        errors = body.get("errors") if isinstance(body, dict) else None
        if not isinstance(errors, list) or not errors:
            return "", ""
        first = errors[0] if isinstance(errors[0], dict) else {}
        messages = [str(e.get("message") or "") for e in errors if isinstance(e, dict)]
        return str(first.get("field") or ""), "; ".join(m for m in messages if m)

    @property
    def audience(self) -> str:
        return "your subscriber list, through SendGrid"

    def dry_run_answer(self, request: httpx.Request, body: Any) -> tuple[int, Any]:
        if request.url.path.endswith("/mail/batch"):
            return 201, {"batch_id": "dry-run-batch"}
        if request.url.path.endswith("/scheduled_sends"):
            return 201, body
        return 202, None

    # -- what every call shares ----------------------------------------------------------
    def common(self, email: RenderedEmail, subject: str, html: str, text: str) -> dict[str, Any]:
        name, address = email_utils.parseaddr(email.from_address)
        body: dict[str, Any] = {
            "from": {"email": address, **({"name": name} if name else {})},
            "subject": subject,
            "content": [
                {"type": "text/plain", "value": text},
                {"type": "text/html", "value": html},
            ],
            "categories": [CATEGORY_UNSAFE.sub("-", f"spark-mail-{email.slug}")[:255]],
        }
        if email.reply_to:
            reply_name, reply = email_utils.parseaddr(email.reply_to)
            body["reply_to"] = {"email": reply, **({"name": reply_name} if reply_name else {})}
        if self.deliver_at is not None:
            body["send_at"] = int(self.deliver_at.timestamp())
            if self.batch_id:
                body["batch_id"] = self.batch_id
        return body

    def send_test(self, email: RenderedEmail, recipients: Sequence[str]) -> SendResult:
        self.limit_test_recipients(recipients, MAX_TO)
        body = self.common(email, email.subject, email.html, email.text)
        body["personalizations"] = [
            {
                "to": [{"email": bare_address(r)} for r in recipients],
                "headers": dict(email.headers),
                "custom_args": {"spark_mail_issue": email.slug, "spark_mail_test": "yes"},
            }
        ]
        before = self.requests_made
        message_id = self._post(compact_json(body).encode(), "test send")
        return SendResult(
            esp_ids={"message_id": message_id},
            requests=self.requests_made - before,
            recipients=len(recipients),
        )

    def _post(self, body: bytes, what: str) -> str:
        """POST /v3/mail/send: the message id of a 202 with an empty body. Any other 2xx
        is not SendGrid's documented answer: the call may have been acted on."""
        response = self.request("POST", "v3/mail/send", what, json_bytes=body)
        if response.status_code != 202 or response.content.strip():
            raise EspError(
                f"sendgrid: the {response.status_code} answer to {what} is not SendGrid's "
                "(202 with an empty body)",
                hint="check SPARK_MAIL_API_URL points at the API",
                status=response.status_code,
                maybe_sent=True,
            )
        return response.headers.get("x-message-id", "")

    # -- own list ------------------------------------------------------------------------
    def merged(self, template: PersonalizedTemplate) -> MergedIssue:
        return self.once_per_issue(
            template.email, lambda: merged_issue(template, lambda name: f"[{name}]")
        )

    def batch_job(
        self, template: PersonalizedTemplate, readers: Sequence[Reader], key: str
    ) -> Callable[[], BatchResult]:
        """One personalization per reader, encoded here; the call in the worker. A reader
        whose values exceed SendGrid's substitution limit is refused, not sent."""
        merged = self.merged(template)
        email = template.email
        args = {"spark_mail_issue": email.slug, "spark_mail_batch": batch_tag(key)}
        personalizations: list[str] = []
        outcomes: list[Outcome | None] = []
        for reader in readers:
            values = merged.values(template, reader)
            substitutions = {f"[{name}]": value for name, value in values.items()}
            size = sum(len(k.encode()) + len(v.encode()) for k, v in substitutions.items())
            if size > SUBSTITUTIONS_LIMIT:
                outcomes.append(
                    (
                        "refused",
                        f"sendgrid: the reader's values take {size:,} "
                        f"bytes; SendGrid takes at most {SUBSTITUTIONS_LIMIT:,}",
                    )
                )
                continue
            headers = template.headers_for(list(values.values()))
            personalization = {
                "to": [{"email": deliverable_address(reader.email)}],
                "substitutions": substitutions,
                "headers": headers,
                "custom_args": args,
            }
            personalizations.append(compact_json(personalization))
            outcomes.append(None)
        common = compact_json(self.common(email, merged.subject, merged.html, merged.text))[1:-1]
        body = f'{{"personalizations":[{",".join(personalizations)}],{common}}}'.encode()
        return functools.partial(self._post_batch, body, outcomes)

    def _post_batch(self, body: bytes, outcomes: list[Outcome | None]) -> BatchResult:
        requests, sent_bytes = self.thread_tally()
        if any(outcome is None for outcome in outcomes):
            message_id = self._post(body, "batch send")
            outcomes = [outcome or ("sent", message_id) for outcome in outcomes]
        after = self.thread_tally()
        return BatchResult(
            [outcome for outcome in outcomes if outcome is not None],
            requests=after[0] - requests,
            bytes_sent=after[1] - sent_bytes,
        )

    # -- scheduling ----------------------------------------------------------------------
    def check_batch_schedule(self, at: dt.datetime) -> None:
        if at - self.clock.now() > SCHEDULE_LIMIT:
            raise ConfigError(
                f"sendgrid: {at.isoformat()} is more than 72 hours ahead; SendGrid schedules "
                "at most 72 hours ahead",
                hint="schedule it later (dispatch sends it on time from cron)",
            )

    def schedule_batches(self, at: dt.datetime, on_ids: OnIds, known: dict[str, str]) -> None:
        """Every batch from now on carries `send_at` and one batch id (made once, recorded
        before any batch leaves; an interrupted schedule goes on with the same one)."""
        self.check_batch_schedule(at)
        self.batch_id = known.get("batch_id", "")
        if not self.batch_id:
            response = self.request("POST", "v3/mail/batch", "create a batch id")
            self.batch_id = str(self.json(response, "create a batch id").get("batch_id") or "")
            if not self.batch_id:
                raise EspError("sendgrid: the answer to `create a batch id` has no batch_id")
        self.deliver_at = at.astimezone(dt.UTC)
        on_ids({"batch_id": self.batch_id, "send_at": iso_utc(at)})

    def unschedule(self, esp_ids: dict[str, str]) -> None:
        """Cancel every message of the schedule's batch id."""
        batch_id = esp_ids.get("batch_id")
        if not batch_id:
            raise ConfigError("sendgrid: no batch id recorded for this issue")
        send_at = esp_ids.get("send_at", "")
        with contextlib.suppress(ValueError):
            at = dt.datetime.fromisoformat(send_at.replace("Z", "+00:00"))
            if at - self.clock.now() < CANCEL_NOTICE:
                raise ConfigError(
                    "sendgrid: too late to take it back: SendGrid cancels reliably only 10 "
                    f"minutes or more before the send time ({send_at})",
                    hint="it goes out as scheduled",
                )
        self.request(
            "POST",
            "v3/user/scheduled_sends",
            "cancel the scheduled send",
            json_body={"batch_id": batch_id, "status": "cancel"},
        )
