"""Buttondown (https://buttondown.com): the ESP keeps the audience; an issue is an "email".

- every email is created as `"status": "draft"`: the API's default status is
  `about_to_send`, so a plain create would mail every subscriber at once;
- test sends: POST /v1/emails/{id}/send-draft `{"recipients": [...]}` on a `[TEST]` draft;
- audience send: draft (id to the ledger first), then POST /v1/emails/{id}/publish
  `{"status": "about_to_send"}`; schedule: `{"status": "scheduled", "publish_date": ...}`;
  unschedule: PATCH back to `draft` with `publish_date: "none"`;
- lookup: GET /v1/emails/{id} -> status;
- auth `Authorization: Token KEY`; `X-Idempotency-Key` honoured; newer API versions refuse
  a request that sends unless `X-Buttondown-Live-Dangerously: true`, so only the publish
  request carries it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import httpx

from spark_mail.errors import ConfigError, EspError
from spark_mail.providers.base import (
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

SENDS = {"X-Buttondown-Live-Dangerously": "true"}
SENT_STATES = {"about_to_send", "in_flight", "sent", "resending", "throttled"}
NOT_SENT_STATES = {"draft", "deleted", "errored", "suppressed", "paused"}
# Buttondown picks HTML vs Markdown by sniffing; say it explicitly.
FANCY = "<!-- buttondown-editor-mode: fancy -->\n"


class ButtondownProvider(HttpProvider):
    name = "buttondown"
    capabilities = frozenset(
        {Capability.TEST, Capability.SEND, Capability.SCHEDULE, Capability.LOOKUP}
    )
    idempotent = True
    owns_audience = True
    default_base_url = "https://api.buttondown.com/v1"
    idempotency_header = "X-Idempotency-Key"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.settings.api_key.reveal()}"}

    def parse_error(self, body: Any) -> tuple[str, str]:
        if not isinstance(body, dict):
            return "", ""
        detail = body.get("detail")
        if isinstance(detail, list):  # 422: a list of validation errors
            detail = "; ".join(
                f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg', '')}"
                for d in detail
                if isinstance(d, dict)
            )
        return str(body.get("code") or ""), str(detail or "")

    @property
    def audience(self) -> str:
        return "your Buttondown subscribers"

    def dry_run_answer(self, request: httpx.Request, body: Any) -> tuple[int, Any]:
        path = request.url.path.rstrip("/")
        if request.method == "POST" and path.endswith("/emails"):
            return 201, {"id": "dry-run-draft", "status": "draft"}
        if path.endswith("/send-draft"):
            return 200, None
        status = (body or {}).get("status", "draft") if isinstance(body, dict) else "draft"
        return 200, {"id": path.split("/")[-2], "status": status}

    @staticmethod
    def _content(email: RenderedEmail) -> dict[str, Any]:
        return {
            "subject": email.subject,
            "body": FANCY + email.html,
            "description": email.preheader,
            "metadata": {"spark_mail_slug": email.slug, "content_hash": email.content_hash},
        }

    def _draft(
        self,
        email: RenderedEmail,
        key: str,
        on_ids: OnIds | None = None,
        known: Known | None = None,
    ) -> str:
        """The draft to send: the one an interrupted attempt made (brought up to date when
        the issue changed since), else a new one."""
        earlier = (known or {}).get("email_id")
        if earlier:
            if (known or {}).get("content") != email.content_hash[:16]:
                self.request(
                    "PATCH", f"emails/{earlier}", "update draft", json_body=self._content(email)
                )
            return earlier
        body = {**self._content(email), "status": "draft"}
        response = self.request(
            "POST", "emails", "create draft", json_body=body, idempotency_key=key
        )
        draft_id = str(self.json(response, "create draft").get("id") or "")
        if not draft_id:
            raise EspError("buttondown: the draft was created without an id", maybe_sent=True)
        if on_ids is not None:
            on_ids({"email_id": draft_id})
        return draft_id

    def send_test(self, email: RenderedEmail, recipients: Sequence[str]) -> SendResult:
        before = self.requests_made
        key = key_for_test_send(email, recipients)
        draft_id = self._draft(email, f"{key}:draft")
        self.request(
            "POST",
            f"emails/{draft_id}/send-draft",
            "send test copy",
            json_body={"recipients": list(recipients)},
            idempotency_key=key,
        )
        return SendResult(
            esp_ids={"test_email_id": draft_id},
            requests=self.requests_made - before,
            recipients=len(recipients),
        )

    def _publish(
        self, email: RenderedEmail, on_ids: OnIds, update: dict[str, Any], known: dict[str, str]
    ) -> SendResult:
        before = self.requests_made
        draft_id = self._draft(email, f"{email.idempotency_key}:draft", on_ids, known)
        self.request(
            "POST",
            f"emails/{draft_id}/publish",
            "publish",
            json_body=update,
            # one key per kind of publish: a send after an unschedule is a new request
            idempotency_key=f"{email.idempotency_key}:publish:{update['status']}:"
            f"{update.get('publish_date', '')}",
            extra_headers=SENDS,
        )
        return SendResult(esp_ids={"email_id": draft_id}, requests=self.requests_made - before)

    def send(self, email: RenderedEmail, on_ids: OnIds, known: Known | None = None) -> SendResult:
        return self._publish(email, on_ids, {"status": "about_to_send"}, known or {})

    def schedule(
        self, email: RenderedEmail, at: dt.datetime, on_ids: OnIds, known: Known | None = None
    ) -> SendResult:
        update = {"status": "scheduled", "publish_date": iso_utc(at)}
        return self._publish(email, on_ids, update, known or {})

    def unschedule(self, esp_ids: dict[str, str]) -> None:
        email_id = esp_ids.get("email_id")
        if not email_id:
            raise ConfigError("buttondown: no email id recorded for this issue")
        self.request(
            "PATCH",
            f"emails/{email_id}",
            "unschedule",
            json_body={"status": "draft", "publish_date": "none"},
        )

    def lookup(self, esp_ids: dict[str, str]) -> DeliveryState:
        email_id = esp_ids.get("email_id")
        if not email_id:
            return DeliveryState.UNKNOWN
        return self.lookup_status(
            f"emails/{email_id}", "look up email", SENT_STATES, NOT_SENT_STATES
        )
