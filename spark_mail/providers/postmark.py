"""Postmark (https://postmarkapp.com): delivery only; the subscriber list is your own.

- test sends: POST /email (one message, at most 50 `To` addresses);
- sends to readers: POST /email/batch, at most 500 messages per call, one message per
  reader (nobody sees another reader's address), on the `broadcast` message stream
  (Postmark's stream for newsletters);
- HTTP 200 does not mean delivered: each element of a batch answer carries its own
  `ErrorCode` (0 = accepted; 406 = inactive recipient, ...), checked one by one;
- auth `X-Postmark-Server-Token`; errors `{"ErrorCode": n, "Message": "..."}`;
- no idempotency keys: a batch that timed out is not repeated blindly (`maybe_sent`).

Own-list sending (`send_batch`) lets Postmark merge each reader's values by default
(`esp_merge`): the issue is stored once as a template (POST /templates; its alias carries
the content hash, so a rerun finds it with GET /templates/{alias}) and each batch is
POST /email/batchWithTemplates with only the reader's values (`TemplateModel`), already
escaped by spark-mail for where they go and placed with Mustachio's raw `{{{vN}}}` tags:
~1 KB per reader instead of a ~45 KB copy. `esp_merge = false` sends every copy in full
through POST /email/batch.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring as json_string
from typing import TYPE_CHECKING, Any

import httpx

from spark_mail.audience.addresses import canonical_address, deliverable_address
from spark_mail.errors import EspError
from spark_mail.providers.base import (
    BatchResult,
    Capability,
    DeliveryOnlyProvider,
    Outcome,
    SendResult,
    batch_tag,
)
from spark_mail.providers.http import HttpProvider, compact_json
from spark_mail.render import RenderedEmail

if TYPE_CHECKING:
    from spark_mail.audience import Reader
    from spark_mail.personalize import PersonalizedTemplate

MAX_BATCH = 500
MAX_TO = 50
STREAM = "broadcast"
ALIAS_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# Literal braces next to a merge tag, or a literal "{{", would read as Mustachio: they
# become tags whose values are the braces themselves.
BRACES = {"lb": "{{", "ob": "{", "cb": "}"}


@dataclass(frozen=True)
class StoredTemplate:
    alias: str
    braces: str  # JSON members for the brace tags the static text uses ("" for none)


class PostmarkProvider(DeliveryOnlyProvider, HttpProvider):
    name = "postmark"
    # readers: own list only; a batch that may have gone out is looked up by its key
    capabilities = frozenset({Capability.TEST, Capability.BATCH, Capability.BATCH_LOOKUP})
    batch_size = MAX_BATCH
    # Postmark documents no request rate, only batch limits: the four calls in flight
    # (DeliveryOnlyProvider) keep the connection busy without queueing hundreds of megabytes
    # of copies in memory.
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
        if request.method == "GET" and "/templates/" in request.url.path:
            return 404, {"ErrorCode": 1101, "Message": "The template was not found."}
        if request.url.path.endswith("/templates"):
            return 200, {"TemplateId": 1, "Alias": (body or {}).get("Alias"), "Active": True}
        if isinstance(body, dict) and isinstance(body.get("Messages"), list):
            return 200, [{**ok, "To": m.get("To", "")} for m in body["Messages"]]
        if isinstance(body, list):
            return 200, [{**ok, "To": m.get("To", "")} for m in body]
        return 200, {**ok, "To": (body or {}).get("To", "")}

    @staticmethod
    def sender_fields(email: RenderedEmail, batch: str = "") -> dict[str, Any]:
        """What every message of the issue shares: sender, stream, reply-to, tag and the
        metadata that finds it again (`batch`: the batch's key, for `lookup_batch`)."""
        fields: dict[str, Any] = {
            "From": email.from_address,
            "MessageStream": STREAM,
            "Metadata": {"issue": email.slug, **({"batch": batch_tag(batch)} if batch else {})},
        }
        if email.reply_to:
            fields["ReplyTo"] = email.reply_to
        if email.tags:
            fields["Tag"] = email.tags[0][:1000]
        return fields

    def message(self, email: RenderedEmail, to: str, batch: str = "") -> dict[str, Any]:
        return {
            "To": to,
            "Subject": email.subject,
            "HtmlBody": email.html,
            "TextBody": email.text,
            "Headers": [{"Name": k, "Value": v} for k, v in email.headers.items()],
            **self.sender_fields(email, batch),
        }

    def send_test(self, email: RenderedEmail, recipients: Sequence[str]) -> SendResult:
        self.limit_test_recipients(recipients, MAX_TO)
        before = self.requests_made
        response = self.request(
            "POST", "email", "test send", json_body=self.message(email, ", ".join(recipients))
        )
        answer = self.json(response, "test send")
        if answer.get("ErrorCode"):
            code, message = self.parse_error(answer)
            raise EspError(self.esp_text(f"postmark: {code} ({message}) [test send]"))
        return SendResult(
            esp_ids={"message_id": str(answer.get("MessageID", ""))},
            requests=self.requests_made - before,
            recipients=len(recipients),
        )

    def prepare_batches(self, template: PersonalizedTemplate) -> None:
        """With `esp_merge`, also the issue's stored template, before the first batch."""
        super().prepare_batches(template)
        if self.settings.esp_merge:
            self.stored_template(template)

    def batch_job(
        self, template: PersonalizedTemplate, readers: Sequence[Reader], key: str
    ) -> Callable[[], BatchResult]:
        """One batch call: Postmark merges each reader's values into the stored template
        (`esp_merge`), or each reader's full copy; HTTP 200 is checked per message."""
        if self.settings.esp_merge:
            stored = self.stored_template(template)
            common = compact_json(self.sender_fields(template.email, key))[1:-1]
            messages = ",".join(self._merged(template, stored, common, r) for r in readers)
            body = f'{{"Messages":[{messages}]}}'.encode()
            return functools.partial(
                self._post_batch, "email/batchWithTemplates", body, len(readers)
            )
        full = [
            self.message(template.copy(r).email(template.email), deliverable_address(r.email), key)
            for r in readers
        ]
        encoded = compact_json(full).encode()
        return functools.partial(self._post_batch, "email/batch", encoded, len(readers))

    def _post_batch(self, path: str, body: bytes, count: int) -> BatchResult:
        requests, sent_bytes = self.thread_tally()
        response = self.request("POST", path, "batch send", json_bytes=body)
        answers = self.json(response, "batch send", list)
        if len(answers) != count:
            raise EspError(
                "postmark: the batch answer does not match the batch sent", maybe_sent=True
            )
        after = self.thread_tally()
        outcomes = [self._masked(_outcome(answer)) for answer in answers]
        account = next((detail for state, detail in outcomes if state == "failed"), None)
        return BatchResult(
            outcomes,
            requests=after[0] - requests,
            bytes_sent=after[1] - sent_bytes,
            error=EspError(f"postmark: {account} [batch send]") if account else None,
        )

    def _masked(self, outcome: Outcome) -> Outcome:
        """A refused reader's reason is ESP text: masked and cut (a message id is kept)."""
        state, detail = outcome
        return outcome if state == "sent" else (state, self.esp_text(detail))

    def lookup_batch(self, key: str, reader_keys: list[str]) -> dict[str, str]:
        """Postmark's outbound message search by the batch's metadata tag: the readers it
        shows (as canonical addresses) with their message ids. A message counts only when
        its own Metadata names this batch (a search that ignored the filter proves nothing).
        Search can lag behind sending, so a reader it does not show is not proven unsent."""
        wanted, tag = set(reader_keys), batch_tag(key)
        found: dict[str, str] = {}
        offset = 0
        while True:
            page = self._search_page(tag, offset)
            messages = page.get("Messages")
            if not isinstance(messages, list) or not messages:
                return found
            for message in messages:
                if (
                    not isinstance(message, dict)
                    or (message.get("Metadata") or {}).get("batch") != tag
                ):
                    continue
                for recipient in message.get("Recipients") or []:
                    address = canonical_address(str(recipient))
                    if address in wanted:
                        found[address] = str(message.get("MessageID", ""))
            offset += len(messages)
            if offset >= int(page.get("TotalCount") or 0) or offset >= 10_000:
                return found

    def _search_page(self, tag: str, offset: int) -> dict[str, Any]:
        response = self.request(
            "GET",
            "messages/outbound",
            "search the batch's messages",
            params={
                "count": str(MAX_BATCH),
                "offset": str(offset),
                "messagestream": STREAM,
                "metadata_batch": tag,
            },
        )
        page: dict[str, Any] = self.json(response, "search the batch's messages")
        return page

    def stored_template(self, template: PersonalizedTemplate) -> StoredTemplate:
        """This issue's template at Postmark (found by its alias, or created once)."""
        email = template.email

        def store() -> StoredTemplate:
            used: set[str] = set()

            def static(text: str) -> str:
                text = text.replace("{{", "{{{lb}}}")
                if text.endswith("{") and not text.endswith("{{{lb}}}"):
                    text = text[:-1] + "{{{ob}}}"
                if text.startswith("}"):
                    text = "{{{cb}}}" + text[1:]
                used.update(name for name in BRACES if f"{{{{{{{name}}}}}}}" in text)
                return text

            html, text = template.merge_layout(lambda n: f"{{{{{{v{n}}}}}}}", static)
            subject = static(email.subject)
            alias = ALIAS_UNSAFE.sub("-", f"spark-mail-{email.slug}")[:60]
            alias = f"{alias}-{email.content_hash[:16]}"
            try:
                self._store(alias, email, subject, html, text)
            except EspError as exc:
                exc.maybe_sent = False  # a template reaches no reader: safe to try again
                raise
            braces = "".join(f",{json_string(n)}:{json_string(BRACES[n])}" for n in sorted(used))
            return StoredTemplate(alias, braces)

        return self.once_per_issue(email, store)

    def _store(self, alias: str, email: RenderedEmail, subject: str, html: str, text: str) -> None:
        """The issue's template at Postmark: found by its alias, or created."""
        try:
            self.request("GET", f"templates/{alias}", "find the issue's template")
        except EspError as exc:
            if exc.status != 404:
                raise
            self.request(
                "POST",
                "templates",
                "store the issue's template",
                json_body={
                    "Name": f"{email.slug} ({email.content_hash[:8]})"[:100],
                    "Alias": alias,
                    "Subject": subject,
                    "HtmlBody": html,
                    "TextBody": text,
                    "TemplateType": "Standard",
                },
            )

    @staticmethod
    def _merged(
        template: PersonalizedTemplate, stored: StoredTemplate, common: str, reader: Reader
    ) -> str:
        """One message of a batchWithTemplates call, as JSON text: only the reader's values
        and headers are encoded per reader (a batch is 500 of them)."""
        values = template.rendered_values(reader)
        model = ",".join(f'"v{n}":{json_string(v)}' for n, v in enumerate(values))
        headers = ",".join(
            f'{{"Name":{json_string(k)},"Value":{json_string(v)}}}'
            for k, v in template.headers_for(values).items()
        )
        return (
            f'{{"To":{json_string(deliverable_address(reader.email))},'
            f'"TemplateModel":{{{model}{stored.braces}}},"TemplateAlias":'
            f'{json_string(stored.alias)},"InlineCss":false,"Headers":[{headers}],{common}}}'
        )


# ErrorCodes about the reader, not the account: that reader is refused for good. Any other
# code in a batch answer (405 out of credits, 400/401 sender signature, 412 pending
# approval, ...) is about the account: the reader is not sent (`failed`, sent by a later
# run) and the run stops.
READER_ERRORS = {406, 300}


def _outcome(answer: Any) -> Outcome:
    if not isinstance(answer, dict):
        return "uncertain", "postmark: an answer element is not an object"
    code = answer.get("ErrorCode", 0)
    if code == 0:
        return "sent", str(answer.get("MessageID", ""))
    reason = f"ErrorCode {code}: {answer.get('Message', '')}"
    return ("refused" if code in READER_ERRORS else "failed"), reason
