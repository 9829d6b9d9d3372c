"""Postmark (https://postmarkapp.com): delivery only; the subscriber list is your own.

- test sends: POST /email (one message, at most 50 `To` addresses);
- sends to readers: POST /email/batch, at most 500 messages per call, one message per
  reader (nobody sees another reader's address), on the `broadcast` message stream
  (Postmark's stream for newsletters);
- HTTP 200 does not mean delivered: each element of a batch answer carries its own
  `ErrorCode` (0 = accepted; 406 = inactive recipient, ...), checked one by one;
- auth `X-Postmark-Server-Token`; errors `{"ErrorCode": n, "Message": "..."}`;
- no idempotency keys: a batch that timed out is not repeated blindly (`maybe_sent`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TYPE_CHECKING, Any

import httpx

from spark_mail.errors import ConfigError
from spark_mail.providers.base import (
    BatchResult,
    Capability,
    EspError,
    HttpProvider,
    OnIds,
    Outcome,
    SendResult,
)
from spark_mail.render import RenderedEmail

if TYPE_CHECKING:
    from spark_mail.audience import Reader
    from spark_mail.personalize import PersonalizedTemplate

MAX_BATCH = 500
MAX_TO = 50
STREAM = "broadcast"


def chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class PostmarkProvider(HttpProvider):
    name = "postmark"
    capabilities = frozenset({Capability.TEST, Capability.SEND, Capability.BATCH})
    idempotent = False
    owns_audience = False
    batch_size = MAX_BATCH
    # Postmark documents no request rate, only batch limits; four calls in flight keep the
    # connection busy without queueing hundreds of megabytes of copies in memory.
    batch_concurrency = 4
    default_base_url = "https://api.postmarkapp.com"

    def auth_headers(self) -> dict[str, str]:
        return {
            "X-Postmark-Server-Token": self.settings.api_key.reveal(),
            "Accept": "application/json",
        }

    def parse_error(self, body: Any) -> tuple[str, str]:
        if isinstance(body, dict) and "ErrorCode" in body:
            return f"ErrorCode {body.get('ErrorCode')}", str(body.get("Message") or "")
        return "", ""

    @property
    def audience(self) -> str:
        return "your subscriber list, through Postmark's broadcast stream"

    def dry_run_answer(self, request: httpx.Request, body: Any) -> tuple[int, Any]:
        ok = {"ErrorCode": 0, "Message": "OK", "MessageID": "dry-run", "SubmittedAt": ""}
        if isinstance(body, list):
            return 200, [{**ok, "To": m.get("To", "")} for m in body]
        return 200, {**ok, "To": (body or {}).get("To", "")}

    def message(self, email: RenderedEmail, to: str) -> dict[str, Any]:
        message: dict[str, Any] = {
            "From": email.from_address,
            "To": to,
            "Subject": email.subject,
            "HtmlBody": email.html,
            "TextBody": email.text,
            "MessageStream": STREAM,
            "Headers": [{"Name": k, "Value": v} for k, v in email.headers.items()],
            "Metadata": {"issue": email.slug},
        }
        if email.reply_to:
            message["ReplyTo"] = email.reply_to
        if email.tags:
            message["Tag"] = email.tags[0][:1000]
        return message

    def send_test(self, email: RenderedEmail, recipients: Sequence[str]) -> SendResult:
        if len(recipients) > MAX_TO:
            raise ConfigError(
                f"postmark: {len(recipients)} test recipients; a message takes at most {MAX_TO}",
                hint="send test copies to fewer editors",
            )
        before = self.requests_made
        response = self.request(
            "POST", "email", "test send", json_body=self.message(email, ", ".join(recipients))
        )
        answer = self.json(response, "test send")
        if answer.get("ErrorCode"):
            code, message = self.parse_error(answer)
            raise EspError(f"postmark: {code} ({message}) [test send]")
        return SendResult(
            esp_ids={"message_id": str(answer.get("MessageID", ""))},
            requests=self.requests_made - before,
            recipients=len(recipients),
        )

    def send_batch(
        self, template: PersonalizedTemplate, readers: Sequence[Reader], key: str
    ) -> BatchResult:
        """One POST /email/batch: each reader's own copy; HTTP 200 is checked per message."""
        base = template.email
        body = [self.message(template.copy(reader).email(base), reader.email) for reader in readers]
        before, sent_bytes = self.requests_made, self.bytes_sent
        response = self.request("POST", "email/batch", "batch send", json_body=body)
        answers = self.json(response, "batch send")
        if not isinstance(answers, list) or len(answers) != len(readers):
            raise EspError(
                "postmark: the batch answer does not match the batch sent", maybe_sent=True
            )
        return BatchResult(
            [_outcome(answer) for answer in answers],
            requests=self.requests_made - before,
            bytes_sent=self.bytes_sent - sent_bytes,
        )

    def send(
        self, email: RenderedEmail, on_ids: OnIds, recipients: Iterable[str] | None = None
    ) -> SendResult:
        """One message per reader, 500 per batch call; refused readers are reported."""
        if recipients is None:
            self.require_audience()
        assert recipients is not None
        before = self.requests_made
        sent = 0
        refused: dict[str, str] = {}
        first_id = ""
        for batch in chunks(recipients, MAX_BATCH):
            try:
                response = self.request(
                    "POST",
                    "email/batch",
                    "batch send",
                    json_body=[self.message(email, to) for to in batch],
                )
            except EspError as exc:
                if sent or refused:  # some readers already have it: say how far we got
                    exc.message += f" (after {sent} messages went out)"
                raise
            answers = self.json(response, "batch send")
            if not isinstance(answers, list) or len(answers) != len(batch):
                raise EspError("postmark: the batch answer does not match the batch sent")
            for to, answer in zip(batch, answers, strict=True):
                if answer.get("ErrorCode", 0) == 0:
                    sent += 1
                    first_id = first_id or str(answer.get("MessageID", ""))
                else:
                    refused[to] = (
                        f"ErrorCode {answer.get('ErrorCode')}: {answer.get('Message', '')}"
                    )
        if not sent and refused:
            reason = next(iter(refused.values()))
            raise EspError(f"postmark: every message was refused ({reason})")
        return SendResult(
            esp_ids={"first_message_id": first_id, "messages": str(sent)},
            requests=self.requests_made - before,
            recipients=sent,
            refused=refused,
        )


def _outcome(answer: Any) -> Outcome:
    if not isinstance(answer, dict):
        return "uncertain", "postmark: an answer element is not an object"
    if answer.get("ErrorCode", 0) == 0:
        return "sent", str(answer.get("MessageID", ""))
    return "refused", f"ErrorCode {answer.get('ErrorCode')}: {answer.get('Message', '')}"
