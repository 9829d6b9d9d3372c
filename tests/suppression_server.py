"""A stand-in for the ESPs' suppression-list APIs on 127.0.0.1, for `audience sync`.

One server answers the routes of all four (their paths do not overlap), each with the
vendor's auth, paging and error bodies:

    postmark  GET /message-streams/{stream}/suppressions/dump    X-Postmark-Server-Token
    mailgun   GET /v3/{domain}/bounces|complaints|unsubscribes   Basic api:KEY; `limit`
              (at most 1000), `paging.next` is a full URL (`page=next&address=<last>`),
              and the page after the last is empty, as Mailgun does
    sendgrid  GET /v3/suppression/bounces|spam_reports|unsubscribes   Bearer KEY;
              `limit` (at most 500) and `offset`
    ses       GET /v2/email/suppression/addresses   (SESv2 ListSuppressedDestinations, as
              boto3 calls it: an AWS SigV4 Authorization header, PageSize, NextToken)

`fail(status, times, retry_after)` answers the next requests with an error first; every
request is kept in `requests` as (method, path with query).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, quote, urlsplit

MAILGUN_MAX = 1000
SENDGRID_MAX = 500
SES_MAX = 1000


def reply(
    handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    handler.send_response(status)
    handler.send_header("content-length", str(len(body)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(body)


class LocalServer:
    """An HTTP server on 127.0.0.1 in a thread, serving while `running()`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # serve_forever looks at shutdown() every poll_interval: its 0.5 s default was half a
        # second of nothing at the end of every test
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[Self]:
        self.thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


class SuppressionServer(LocalServer):
    def __init__(self, api_key: str = "test-key", domain: str = "mg.example.com") -> None:
        self.api_key = api_key
        self.domain = domain
        self.postmark: list[dict[str, Any]] = []
        self.mailgun: dict[str, list[dict[str, Any]]] = {
            "bounces": [], "complaints": [], "unsubscribes": []
        }  # fmt: skip
        self.sendgrid: dict[str, list[dict[str, Any]]] = {
            "bounces": [], "spam_reports": [], "unsubscribes": []
        }  # fmt: skip
        self.ses: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.faults: list[tuple[int, float | None]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_GET(self) -> None:
                with server.lock:
                    server.requests.append(("GET", self.path))
                    fault = server.faults.pop(0) if server.faults else None
                if fault is not None:
                    status, retry_after = fault
                    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
                    self.answer(status, {"message": "slow down", "ErrorCode": 0}, headers)
                    return
                status, body = server.route(
                    self.path, {k.lower(): v for k, v in self.headers.items()}
                )
                self.answer(status, body)

            def answer(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                json_type = {"content-type": "application/json"}
                reply(self, status, json.dumps(body).encode(), {**json_type, **(headers or {})})

        super().__init__(Handler)

    def fail(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        self.faults.extend([(status, retry_after)] * times)

    # -- routes ---------------------------------------------------------------------------
    def route(self, target: str, headers: dict[str, str]) -> tuple[int, Any]:
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        if path.startswith("/message-streams/"):
            return self.postmark_dump(path, headers)
        if path.startswith("/v3/suppression/"):
            return self.sendgrid_list(path.rsplit("/", 1)[1], query, headers)
        if path.startswith("/v3/"):
            return self.mailgun_list(path, query, headers)
        if path == "/v2/email/suppression/addresses":
            return self.ses_list(query, headers)
        return 404, {"message": "not found"}

    def postmark_dump(self, path: str, headers: dict[str, str]) -> tuple[int, Any]:
        if headers.get("x-postmark-server-token") != self.api_key:
            return 401, {"ErrorCode": 10, "Message": "The Server Token you provided was invalid."}
        if not path.endswith("/broadcast/suppressions/dump"):
            return 422, {"ErrorCode": 1226, "Message": "The message stream was not found."}
        return 200, {"Suppressions": self.postmark}

    def mailgun_list(
        self, path: str, query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, Any]:
        expected = "Basic " + base64.b64encode(f"api:{self.api_key}".encode()).decode()
        if headers.get("authorization") != expected:
            return 401, {"message": "Invalid private key"}
        _, _, domain, kind = path.split("/", 3)
        if domain != self.domain or kind not in self.mailgun:
            return 404, {"message": "Domain not found"}
        limit = min(int(query.get("limit", "100")), MAILGUN_MAX)
        items = sorted(self.mailgun[kind], key=lambda i: i["address"])
        if query.get("page") == "next":
            items = [i for i in items if i["address"] > query.get("address", "")]
        page = items[:limit]
        last = page[-1]["address"] if page else query.get("address", "")
        base = f"{self.url}/v3/{domain}/{kind}"
        return 200, {
            "items": page,
            "paging": {
                "first": f"{base}?limit={limit}",
                "next": f"{base}?page=next&address={quote(last)}&limit={limit}",
                "previous": f"{base}?page=previous&limit={limit}",
                "last": f"{base}?page=last&limit={limit}",
            },
        }

    def sendgrid_list(
        self, kind: str, query: dict[str, str], headers: dict[str, str]
    ) -> tuple[int, Any]:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {"errors": [{"field": None, "message": "authorization required"}]}
        if kind not in self.sendgrid:
            return 404, {"errors": [{"message": "not found"}]}
        limit = int(query.get("limit", "500"))
        if limit > SENDGRID_MAX:
            return 400, {"errors": [{"field": "limit", "message": "limit must be at most 500"}]}
        offset = int(query.get("offset", "0"))
        return 200, self.sendgrid[kind][offset : offset + limit]

    def ses_list(self, query: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
        if not headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 Credential="):
            return 403, {"message": "Missing Authentication Token"}
        size = min(int(query.get("PageSize", "100")), SES_MAX)
        start = int(query.get("NextToken", "0"))
        page = self.ses[start : start + size]
        body: dict[str, Any] = {"SuppressedDestinationSummaries": page}
        if start + size < len(self.ses):
            body["NextToken"] = str(start + size)
        return 200, body
