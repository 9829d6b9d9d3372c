"""Dry runs: the provider's real code runs against a recorder instead of the network.

The recorder stands in for the ESP: it records each HTTP request (credentials masked) and
answers what the ESP plausibly would (the provider's `dry_run_answer`), and it keeps each
MIME message an SMTP or outbox provider would have handed over. Nothing leaves the machine.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from email.message import EmailMessage
from typing import Any

import httpx

from spark_mail.secrets import MASK, redact

# Headers that carry credentials: masked in dry-run files whatever their value.
SECRET_HEADERS = {"authorization", "x-postmark-server-token", "x-amz-security-token"}


class DryRunRecorder(httpx.BaseTransport):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = [s for s in secrets if s]
        self.exchanges: list[dict[str, Any]] = []
        self.messages: list[tuple[list[str], bytes]] = []  # SMTP / outbox: (recipients, MIME)
        self.answer: Callable[[httpx.Request, Any], tuple[int, Any]] | None = None

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.read()
        try:
            body = json.loads(content) if content else None
        except ValueError:
            body = content.decode(errors="replace")
        headers = {}
        for name, value in request.headers.items():
            if name.lower() in SECRET_HEADERS:
                scheme = value.split(" ", 1)[0] + " " if " " in value else ""
                value = scheme + MASK
            headers[name] = self.redact(value)
        self.exchanges.append(
            {
                "method": request.method,
                "url": self.redact(str(request.url)),
                "headers": headers,
                "json": json.loads(self.redact(json.dumps(body))),
            }
        )
        status, payload = self.answer(request, body) if self.answer else (200, {})
        return httpx.Response(status, json=payload, request=request)

    def record_message(self, recipients: list[str], message: EmailMessage) -> None:
        self.messages.append((recipients, self.redact(message.as_string()).encode()))

    @property
    def count(self) -> int:
        return len(self.exchanges) + len(self.messages)
