"""Mailgun (https://www.mailgun.com): delivery only; the subscriber list is your own.

- every send is POST /v3/{domain}/messages, multipart/form-data (`mailgun_domain`); auth
  HTTP Basic `api:KEY`; errors `{"message": "..."}`; the EU region is
  SPARK_MAIL_API_URL=https://api.eu.mailgun.net;
- test sends: one message, the editors in `to`;
- own-list batches: up to 1,000 readers in one call with `recipient-variables`, so Mailgun
  sends each reader a message of their own (only their address in `To`). The issue goes
  once per call with `%recipient.NAME%` where each reader's values go (body and the
  per-reader `List-Unsubscribe` header), values already escaped by spark-mail for their
  place (spark_mail/providers/merge.py). The send options (`o:`, `h:`, `v:`, `t:` fields)
  are at most 16 KB per call: they are the same for every reader, so they are checked once
  before the first batch, and an issue over the limit is refused before anything leaves;
- scheduling: `o:deliverytime` on every batch, at most `mailgun_schedule_days` ahead (3 days,
  7 on some plans). Mailgun cannot cancel one scheduled message (only ALL of a domain's
  queued mail), so `unschedule` refuses;
- no idempotency key: a call without a clear answer is never repeated (`maybe_sent`). Each
  message carries the batch's tag as the user variable `spark-mail-batch`, and the next run
  asks the events API for the batch's `accepted` events (`lookup_batch`). Where that ends:
  events show up after a delay and are kept for a few days, the API description lists no
  filter on user variables (the filter is sent, and each event is checked here too), and at
  most 10,000 events are read: a reader it does not show stays `uncertain`.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils as email_utils
import functools
import json
import re
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx

from spark_mail.audience.addresses import canonical_address, deliverable_address
from spark_mail.errors import ConfigError, EspError, UnsupportedOperation
from spark_mail.providers.base import (
    BatchResult,
    Capability,
    DeliveryOnlyProvider,
    OnIds,
    SendResult,
    bare_address,
    batch_tag,
)
from spark_mail.providers.http import HttpProvider
from spark_mail.providers.merge import MergedIssue, merged_issue
from spark_mail.render import RenderedEmail

if TYPE_CHECKING:
    from spark_mail.audience import Reader
    from spark_mail.personalize import PersonalizedTemplate

MAX_BATCH = 1000
MAX_TO = 1000
OPTIONS_LIMIT = 16 * 1024  # o:, h:, v: and t: fields together, per call
EVENTS_PAGE = 300
EVENTS_READ = 10_000
TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
BATCH_VARIABLE = "spark-mail-batch"
Form = list[tuple[str, str]]


class MailgunProvider(DeliveryOnlyProvider, HttpProvider):
    name = "mailgun"
    capabilities = frozenset(
        {Capability.TEST, Capability.BATCH, Capability.BATCH_LOOKUP, Capability.SCHEDULE}
    )
    batch_size = MAX_BATCH
    default_base_url = "https://api.mailgun.net"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        domain = self.settings.mailgun_domain.strip()
        if not domain or "/" in domain or any(c.isspace() for c in domain):
            raise ConfigError(
                f"mailgun: {'no sending domain' if not domain else repr(domain)} is not a domain",
                hint='set mailgun_domain = "mg.example.com" in spark-mail.toml '
                "(or SPARK_MAIL_MAILGUN_DOMAIN): the domain Mailgun sends from",
            )
        self.domain = domain
        self.messages_path = f"v3/{quote(domain, safe='')}/messages"
        self.deliver_at: dt.datetime | None = None

    def auth_headers(self) -> dict[str, str]:
        token = base64.b64encode(f"api:{self.settings.api_key.reveal()}".encode()).decode()
        return {"Authorization": f"Basic {token}", "Accept": "application/json"}

    def parse_error(self, body: Any) -> tuple[str, str]:
        if isinstance(body, dict):
            return "", str(body.get("message") or "")
        if isinstance(body, str):
            return "", body
        return "", ""

    @property
    def audience(self) -> str:
        return f"your subscriber list, through Mailgun ({self.domain})"

    def dry_run_answer(self, request: httpx.Request, body: Any) -> tuple[int, Any]:
        if request.method == "GET":
            return 200, {"items": [], "paging": {}}
        number = self.dry_run.count if self.dry_run else 0
        return 200, {"id": f"<dry-run-{number}@{self.domain}>", "message": "Queued. Thank you."}

    # -- the form every call shares ------------------------------------------------------
    def common(self, email: RenderedEmail, subject: str, headers: dict[str, str]) -> Form:
        """From, subject, headers, tag, the issue variable, and the delivery time."""
        form: Form = [("from", email.from_address), ("subject", subject)]
        if email.reply_to:
            form.append(("h:Reply-To", email.reply_to))
        form += [(f"h:{name}", value) for name, value in headers.items()]
        form.append(("o:tag", TAG_UNSAFE.sub("-", f"spark-mail-{email.slug}")[:128]))
        form.append(("v:spark-mail-issue", email.slug))
        if self.deliver_at is not None:
            form.append(("o:deliverytime", email_utils.format_datetime(self.deliver_at)))
        return form

    def send_test(self, email: RenderedEmail, recipients: Sequence[str]) -> SendResult:
        self.limit_test_recipients(recipients, MAX_TO)
        form = self.common(email, email.subject, email.headers)
        form += [("to", bare_address(r)) for r in recipients]
        form += [("text", email.text), ("html", email.html)]
        before = self.requests_made
        answer = self._post(form, "test send")
        return SendResult(
            esp_ids={"message_id": str(answer.get("id", ""))},
            requests=self.requests_made - before,
            recipients=len(recipients),
        )

    def _post(self, form: Form, what: str) -> dict[str, Any]:
        body, content_type = encode_form(form)
        response = self.request(
            "POST", self.messages_path, what, json_bytes=body, content_type=content_type
        )
        answer: dict[str, Any] = self.json(response, what)
        if not answer.get("id"):
            raise EspError(f"mailgun: the answer to {what} has no message id", maybe_sent=True)
        return answer

    # -- own list ------------------------------------------------------------------------
    def merged(self, template: PersonalizedTemplate) -> MergedIssue:
        """The issue with Mailgun's recipient-variable tags, made once; its send options
        are checked against the 16 KB limit before anything is sent."""
        return self.once_per_issue(template.email, lambda: self._merge(template))

    def _merge(self, template: PersonalizedTemplate) -> MergedIssue:
        merged = merged_issue(template, lambda name: f"%recipient.{name}%")
        self._check_options(self.common(template.email, merged.subject, merged.headers))
        return merged

    @staticmethod
    def _check_options(form: Form) -> None:
        size = sum(
            len(k.encode()) + len(v.encode()) for k, v in form if k[:2] in ("o:", "h:", "v:", "t:")
        )
        size += len(f"v:{BATCH_VARIABLE}") + 32
        if size > OPTIONS_LIMIT:
            raise EspError(
                f"mailgun: the send options (headers, tag, variables) take {size:,} bytes; "
                f"Mailgun takes at most {OPTIONS_LIMIT:,} per message, nothing was sent",
                hint="shorten the settings that become headers (unsubscribe_url, "
                "unsubscribe_mailto, reply_to)",
                code="options",
            )

    def prepare_batches(self, template: PersonalizedTemplate) -> None:
        super().prepare_batches(template)
        self.merged(template)

    def batch_job(
        self, template: PersonalizedTemplate, readers: Sequence[Reader], key: str
    ) -> Callable[[], BatchResult]:
        """The batch's form, encoded here (the caller's thread); the call in the worker."""
        merged = self.merged(template)
        form = self.common(template.email, merged.subject, merged.headers)
        form.append((f"v:{BATCH_VARIABLE}", batch_tag(key)))
        variables: dict[str, dict[str, str]] = {}
        for reader in readers:
            address = deliverable_address(reader.email)
            form.append(("to", address))
            variables[address] = merged.values(template, reader)
        form += [
            ("recipient-variables", json.dumps(variables, ensure_ascii=False)),
            ("text", merged.text),
            ("html", merged.html),
        ]
        body, content_type = encode_form(form)
        return functools.partial(self._post_batch, body, content_type, len(readers))

    def _post_batch(self, body: bytes, content_type: str, count: int) -> BatchResult:
        requests, sent_bytes = self.thread_tally()
        response = self.request(
            "POST", self.messages_path, "batch send", json_bytes=body, content_type=content_type
        )
        answer = self.json(response, "batch send")
        message_id = str(answer.get("id") or "")
        if not message_id:
            raise EspError("mailgun: the batch answer has no message id", maybe_sent=True)
        after = self.thread_tally()
        return BatchResult(
            [("sent", message_id)] * count,
            requests=after[0] - requests,
            bytes_sent=after[1] - sent_bytes,
        )

    def lookup_batch(self, key: str, reader_keys: list[str]) -> dict[str, str]:
        """The batch's `accepted` events (see the module docstring for where this ends)."""
        wanted = set(reader_keys)
        tag = batch_tag(key)
        found: dict[str, str] = {}
        path = f"v3/{quote(self.domain, safe='')}/events"
        params: dict[str, str] | None = {
            "event": "accepted",
            "limit": str(EVENTS_PAGE),
            "ascending": "no",
            "user-variables": json.dumps({BATCH_VARIABLE: tag}),
        }
        read = 0
        while read < EVENTS_READ and len(found) < len(wanted):
            response = self.request("GET", path, "search the batch's events", params=params)
            page = self.json(response, "search the batch's events")
            items = page.get("items")
            if not isinstance(items, list) or not items:
                break
            read += len(items)
            for item in items:
                address, message_id = _accepted(item, tag)
                if address in wanted:
                    found[address] = message_id
            next_path = self._next_page(page)
            if next_path is None:
                break
            path, params = next_path, None
        return found

    def _next_page(self, page: dict[str, Any]) -> str | None:
        """The next page's path, only on the API's own host (the key goes with it)."""
        paging = page.get("paging")
        url = str(paging.get("next") or "") if isinstance(paging, dict) else ""
        base = urlsplit(self.base_url)
        parts = urlsplit(url)
        if not url or (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
            return None
        path = parts.path[len(base.path) :] if parts.path.startswith(base.path) else parts.path
        return path.lstrip("/") + (f"?{parts.query}" if parts.query else "")

    # -- scheduling ----------------------------------------------------------------------
    def check_batch_schedule(self, at: dt.datetime) -> None:
        days = self.settings.mailgun_schedule_days
        if at - self.clock.now() > dt.timedelta(days=days):
            raise ConfigError(
                f"mailgun: {at.isoformat()} is more than {days:g} days ahead; Mailgun schedules "
                f"at most {days:g} days ahead on this plan",
                hint="schedule it later (dispatch sends it on time from cron), or set "
                "mailgun_schedule_days = 7 if your plan allows it",
            )

    def schedule_batches(self, at: dt.datetime, on_ids: OnIds, known: dict[str, str]) -> None:
        """Every batch from now on carries `at` as `o:deliverytime`."""
        self.check_batch_schedule(at)
        self.deliver_at = at.astimezone(dt.UTC)

    def unschedule(self, esp_ids: dict[str, str]) -> None:
        raise UnsupportedOperation(
            "mailgun: cannot take back scheduled messages one by one (its API can only "
            f"delete ALL scheduled and queued mail of {self.domain})",
            hint="the issue goes out as scheduled; to stop it, use the Mailgun control panel",
        )


def _accepted(item: Any, tag: str) -> tuple[str, str]:
    """(canonical recipient, message id) of an `accepted` event of the batch, else ("", "")."""
    if not isinstance(item, dict) or item.get("event") != "accepted":
        return "", ""
    variables = item.get("user-variables")
    if not isinstance(variables, dict) or variables.get(BATCH_VARIABLE) != tag:
        return "", ""
    message = item.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    message_id = str(headers.get("message-id", "")) if isinstance(headers, dict) else ""
    return canonical_address(str(item.get("recipient") or "")), message_id


def encode_form(form: Form) -> tuple[bytes, str]:
    """multipart/form-data, encoded once (every retry sends the same bytes)."""
    boundary = f"spark-mail-{uuid.uuid4().hex}"
    parts = []
    for name, value in form:
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{quoted}"\r\n\r\n{value}\r\n'
        )
    parts.append(f"--{boundary}--\r\n")
    return "".join(parts).encode(), f"multipart/form-data; boundary={boundary}"
