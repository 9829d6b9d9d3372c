"""A fake ESP on 127.0.0.1: answers like the Buttondown, Resend and Postmark HTTP APIs (and
Mailgun, SendGrid and an SES front: their own section at the end of this file).

One server serves all three vendors' routes (their paths do not overlap), each with the
vendor's auth header, status codes, JSON bodies and error bodies, so a provider pointed at
`esp.url("resend")` cannot tell it from the real thing on the paths spark-mail uses:

    buttondown  /v1/emails (create; default status `about_to_send` SENDS), /v1/emails/{id}
                (GET, PATCH, DELETE), /v1/emails/{id}/send-draft, /v1/emails/{id}/publish;
                `Authorization: Token KEY`; `X-Idempotency-Key` replays the first answer;
                sending needs `X-Buttondown-Live-Dangerously: true` (newer API versions).
    resend      /emails (max 50 `to`), /emails/batch (max 100), /broadcasts (create),
                /broadcasts/{id} (GET, DELETE), /broadcasts/{id}/send (`scheduled_at`);
                `Authorization: Bearer KEY`; `Idempotency-Key` on /emails and /emails/batch.
    postmark    /email, /email/batch (max 500, HTTP 200 with a per-message `ErrorCode`);
                /templates (POST create, GET by id or alias), /email/batchWithTemplates
                (max 500; renders Mustachio's `{{{raw}}}` and `{{escaped}}` tags from each
                message's TemplateModel and keeps the result in `delivered`);
                `X-Postmark-Server-Token: KEY`; message streams `outbound` and `broadcast`.

Request bodies are validated against the vendors' request schemas copied to tests/schemas/
(a schema failure answers the vendor's 422 and is kept in `schema_errors`): a body
fastjsonschema's compiled check finds valid is not validated again (jsonschema took 0.2 ms a
Postmark message, 80 ms a SendGrid call to 1,000 readers); jsonschema judges and words the
others.

Faults are programmed per request: `esp.fail(429, times=2, retry_after=1)`,
`esp.fail(500)`, `esp.hold(2.0)` (process the request, then keep the answer back for 2 s),
`esp.drop()` (process, then close the connection without an answer), `esp.echo_key(422,
at=290)` (an error message repeating the request's API key at character 290). Every request
is recorded (`esp.requests`, or GET /_requests from another process).

Use it as a context manager or through the `esp` pytest fixture, or as its own process:

    python tests/esp_server.py --port 0 --provider resend --api-key KEY

which prints `PORT <n>` and `URL <base url>` on stdout, then serves until killed. Control
endpoints for other processes: GET /_requests, GET /_state, GET /_delivered?fields=kind,to
(only those fields of each message delivered), POST /_fault (JSON: the fields of Fault),
POST /_settings (postmark_search_lag, mailgun_events_lag, ses_upstream), POST /_release
(every held answer goes now, and later holds do not wait), POST /_reset.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.utils as email_utils
import functools
import itertools
import json
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
RESEND_MAX_TO = 50
RESEND_MAX_BATCH = 100
POSTMARK_MAX_BATCH = 500
POSTMARK_MAX_TO = 50
POSTMARK_STREAMS = {"outbound", "broadcast"}


@dataclass
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes = field(repr=False, default=b"")
    query: str = ""

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    def to_json(self) -> dict[str, Any]:
        """Its fields but `raw`, as they are (asdict's deep copy of a 500-message body was
        most of what GET /_requests cost the server)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "raw"}


@dataclass
class Fault:
    status: int | None = None  # answer this status instead of processing
    retry_after: float | None = None
    hold: float = 0.0  # process, then wait this long before answering
    drop: bool = False  # process, then close the connection without answering
    times: int = 1
    path: str | None = None  # only requests whose path contains this
    method: str | None = None
    # The ESP ACTS, then answers badly (what proxies and overloaded ESPs do):
    after_status: int | None = None  # this status (a 5xx with the vendor's body)
    after_raw: str | None = None  # this body as it is (an HTML 502 page, broken JSON)
    after_json: Any = None  # JSON of the wrong shape ([], "ok", {"data": 3}, ...)
    after_gzip: bool = False  # a 200 claiming gzip whose body is not gzip
    drip: float = 0.0  # send the answer one byte every `drip` seconds
    hang: bool = False  # never answer (until the server stops)
    echo_key_at: int | None = None  # with `status`: the error message echoes the key here

    def matches(self, method: str, path: str) -> bool:
        if self.path is not None and self.path not in path:
            return False
        return self.method is None or self.method.upper() == method


class Reply(Exception):
    """Raised by a route to answer at once: status, JSON body, extra headers."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}


@functools.cache
def _load_schemas() -> dict[str, Any]:
    """The vendors' request schemas, read once per process (every FakeEsp reads them; no
    one changes them)."""
    schemas = {}
    for path in SCHEMA_DIR.glob("*.json"):
        schemas[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return schemas


@functools.cache
def schema_checks(name: str) -> tuple[Any, Any]:
    """The schema `name`'s quick check of validity (fastjsonschema's compiled code: True or
    False) and jsonschema's validator (which words the errors), made once per process: both
    only read the schema, and threads share them. tests/test_schema_check.py holds the quick
    check to never pass what jsonschema's 2020-12 rules refuse."""
    import fastjsonschema
    import jsonschema

    schema = _load_schemas()[name]
    # no defaults filled into the body; formats unchecked, as jsonschema leaves them by default
    compiled = fastjsonschema.compile(schema, use_default=False, use_formats=False)

    def passes(body: Any) -> bool:
        try:
            compiled(body)
        except fastjsonschema.JsonSchemaException:
            return False
        return True

    return passes, jsonschema.Draft202012Validator(schema)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class FakeEsp:
    """The server, its recorded requests, its state (emails, broadcasts) and its faults."""

    def __init__(self, api_key: str = "test-key", *, validate: bool = True, port: int = 0):
        self.api_key = api_key
        self.validate = validate
        self._port = port
        self.lock = threading.RLock()
        self.arrived = threading.Condition(self.lock)  # notified on each recorded request
        self.requests: list[Recorded] = []
        self.schema_errors: list[str] = []
        self.faults: list[Fault] = []
        self.emails: dict[str, dict[str, Any]] = {}  # buttondown emails by id
        self.broadcasts: dict[str, dict[str, Any]] = {}  # resend broadcasts by id
        self.delivered: list[dict[str, Any]] = []  # every message that "went out"
        self.idempotency: dict[str, tuple[str, int, Any]] = {}  # key -> (body hash, status, body)
        self.postmark_inactive: set[str] = set()  # recipients Postmark refuses (ErrorCode 406)
        self.templates: dict[str, dict[str, Any]] = {}  # postmark templates by id and alias
        # Postmark's message search lags behind sending: while True it finds nothing.
        self.postmark_search_lag = False
        # Mailgun, SendGrid and the SES front (their section at the end of this file)
        self.mailgun = MailgunState()
        self.sendgrid = SendgridState()
        self.ses = SesFront()
        self.stopping = threading.Event()  # releases hanging answers
        # client address (host, port) -> when (time.monotonic()) the answer to its request
        # began to hang or drip, the ESP having acted: see provider_support.spoilt_requests_end
        self.spoilt: dict[tuple[str, int], float] = {}
        self.released = threading.Event()  # releases held answers (release_holds)
        self._ids = itertools.count(1)
        self._schemas = _load_schemas() if validate else {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> FakeEsp:
        esp = self

        class Handler(EspHandler):
            server_esp = esp

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        # stop() waits for serve_forever's next look at its shutdown flag: at 50 ms that was
        # most of what every test using the fake ESP spent on it.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def release_holds(self) -> None:
        """Every answer kept back by `hold` goes now, and later holds keep nothing back:
        for a test that holds a request until something else has happened."""
        self.released.set()

    def stop(self) -> None:
        self.stopping.set()
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeEsp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the server first"
        return self._server.server_address[1]

    def url(self, provider: str) -> str:
        """The base URL for `provider`, as its API description's servers[0].url has it."""
        base = f"http://127.0.0.1:{self.port}"
        return f"{base}/v1" if provider == "buttondown" else base

    # -- programming faults --------------------------------------------------------
    def fail(
        self,
        status: int,
        *,
        times: int = 1,
        retry_after: float | None = None,
        path: str | None = None,
        method: str | None = None,
    ) -> None:
        """The next `times` matching requests get `status` (the vendor's body) unprocessed."""
        with self.lock:
            self.faults.append(Fault(status, retry_after, 0.0, False, times, path, method))

    def hold(
        self, seconds: float, *, times: int = 1, path: str | None = None, method: str | None = None
    ) -> None:
        """Process the next matching requests, then keep each answer back for `seconds`."""
        with self.lock:
            self.faults.append(Fault(None, None, seconds, False, times, path, method))

    def drop(self, *, times: int = 1, path: str | None = None, method: str | None = None) -> None:
        """Process the next matching requests, then close the connection without answering."""
        with self.lock:
            self.faults.append(Fault(None, None, 0.0, True, times, path, method))

    def act_then(
        self,
        *,
        status: int | None = None,
        raw: str | None = None,
        shape: Any = None,
        gzip: bool = False,
        drip: float = 0.0,
        hang: bool = False,
        times: int = 1,
        path: str | None = None,
        method: str | None = None,
    ) -> None:
        """The next matching requests are PROCESSED (emails go out), then answered badly:
        `status` (e.g. 502/504 as a proxy would), `raw` (a body that is not JSON), `shape`
        (JSON of the wrong shape), `gzip` (a broken gzip body), `drip` (one byte every
        `drip` seconds), or `hang` (no answer at all until the server stops)."""
        fault = Fault(times=times, path=path, method=method, after_status=status, after_raw=raw)
        fault.after_json, fault.after_gzip, fault.drip, fault.hang = shape, gzip, drip, hang
        with self.lock:
            self.faults.append(fault)

    def echo_key(
        self,
        status: int,
        *,
        at: int = 290,
        times: int = 1,
        path: str | None = None,
        method: str | None = None,
    ) -> None:
        """The next matching requests get `status` with an error message that repeats the
        API key the request carried, starting at character `at` (as careless ESPs and
        proxies do: "invalid token 're_...'"), unprocessed."""
        fault = Fault(status, times=times, path=path, method=method, echo_key_at=at)
        with self.lock:
            self.faults.append(fault)

    def wait_for_request(self, method: str, path: str, timeout: float) -> bool:
        """Until a `method` request whose path contains `path` has arrived (woken by each
        request); False after `timeout` seconds."""
        with self.arrived:
            return self.arrived.wait_for(
                lambda: any(r.method == method and path in r.path for r in self.requests),
                timeout,
            )

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.schema_errors.clear()
            self.faults.clear()
            self.emails.clear()
            self.broadcasts.clear()
            self.delivered.clear()
            self.idempotency.clear()
            self.postmark_inactive.clear()
            self.templates.clear()
            self.mailgun = MailgunState()
            self.sendgrid = SendgridState()
            self.ses = SesFront(upstream=self.ses.upstream)

    # -- reading what happened -------------------------------------------------------
    def calls(self, method: str | None = None, path: str | None = None) -> list[Recorded]:
        """Recorded requests, optionally only those with this method and a path matching
        `path` (a regular expression, anchored at both ends)."""
        with self.lock:
            found = list(self.requests)
        if method:
            found = [r for r in found if r.method == method.upper()]
        if path:
            found = [r for r in found if re.fullmatch(path, r.path)]
        return found

    @property
    def audience_sends(self) -> list[dict[str, Any]]:
        """Messages that went to an ESP-owned audience (Buttondown publish, Resend broadcast)."""
        with self.lock:
            return [d for d in self.delivered if d["kind"] == "audience"]

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {
                "emails": self.emails,
                "broadcasts": self.broadcasts,
                "delivered": self.delivered,
                "schema_errors": self.schema_errors,
            }

    # -- helpers for routes ---------------------------------------------------------
    def new_id(self, prefix: str = "") -> str:
        number = next(self._ids)
        return f"{prefix}{uuid.UUID(int=number).hex[:8]}-{number:04d}"

    def check_schema(self, name: str, body: Any) -> str | None:
        if name not in self._schemas:
            return None
        proven, validator = schema_checks(name)
        if proven(body):  # valid, as jsonschema would find it (test_schema_check.py)
            return None
        errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
        if not errors:
            return None
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(body)"
        message = f"{name}: {where}: {first.message}"
        with self.lock:
            self.schema_errors.append(message)
        return message


class EspHandler(BaseHTTPRequestHandler):
    server_esp: FakeEsp
    protocol_version = "HTTP/1.1"
    # The head and the body of an answer are two writes: with Nagle's algorithm on, the
    # body waited for the client's delayed ACK of the head, ~40 ms on every keep-alive
    # answer (SES's one SendEmail a reader paid it 60 times a send). Real ESPs' servers
    # send without it too.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # -- dispatch ------------------------------------------------------------------
    def _handle(self, method: str) -> None:
        esp = self.server_esp
        path = urlsplit(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if path.startswith("/_"):
            self._control(method, path, raw)
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = Recorded(
            method, path, dict(self.headers.items()), body, raw, urlsplit(self.path).query
        )
        with esp.arrived:
            esp.requests.append(record)
            esp.arrived.notify_all()
        provider = vendor_of(path)
        fault = esp._take_fault(method, path)
        if fault is not None and fault.status is not None:
            status, payload, headers = fault_answer(provider, fault)
            if fault.echo_key_at is not None:
                payload = error_body(provider, status, "invalid", echo_key(record, fault))
            self._send(status, payload, headers)
            return
        try:
            status, payload, headers = route(esp, provider, method, path, record)
        except Reply as reply:
            status, payload, headers = reply.status, reply.body, reply.headers
        if fault is not None and fault.drop:
            self.close_connection = True
            self.connection.close()
            return
        if fault is not None and fault.hold:
            esp.released.wait(fault.hold)
        if fault is not None and fault.hang:
            esp.spoilt[self.client_address[:2]] = time.monotonic()
            esp.stopping.wait()
            return
        if fault is not None:
            self._send_after(fault, provider, status, payload, headers)
            return
        self._send(status, payload, headers)

    def _send_after(
        self, fault: Fault, provider: str, status: int, payload: Any, headers: dict[str, str]
    ) -> None:
        """The answer to a request that was processed, as the fault spoils it."""
        if fault.after_status is not None:
            status, payload, headers = fault_answer(provider, Fault(fault.after_status))
        if fault.after_raw is not None:
            self._send_bytes(
                status if fault.after_status else 200,
                fault.after_raw.encode(),
                {"Content-Type": "text/html"},
                fault.drip,
            )
            return
        if fault.after_gzip:
            self._send_bytes(
                200,
                b"\x1f\x8bnot really gzip",
                {"Content-Type": "application/json", "Content-Encoding": "gzip"},
                0,
            )
            return
        if fault.after_json is not None:
            payload = fault.after_json
        if isinstance(payload, RawBody):
            self._send_bytes(status, payload.data, {"Content-Type": payload.type}, fault.drip)
            return
        data = b"" if payload is None else json.dumps(payload).encode()
        self._send_bytes(status, data, {"Content-Type": "application/json", **headers}, fault.drip)

    def _send_bytes(self, status: int, data: bytes, headers: dict[str, str], drip: float) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            if not drip:
                self.wfile.write(data)
                return
            self.server_esp.spoilt[self.client_address[:2]] = time.monotonic()
            for byte in data:  # a slow-drip server: one byte at a time
                if self.server_esp.stopping.wait(drip):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _control(self, method: str, path: str, raw: bytes) -> None:
        esp = self.server_esp
        if path == "/_requests":  # ?method=POST&path=/send: those whose path contains it
            query = parse_qs(urlsplit(self.path).query)
            wanted, part = query.get("method", [""])[0], query.get("path", [""])[0]
            found = [r for r in esp.calls(wanted or None) if part in r.path]
            self._send(200, [r.to_json() for r in found], {})
        elif path == "/_state":
            self._send(200, esp.state(), {})
        elif path == "/_delivered":
            # only the fields asked for (?fields=kind,to): whole messages, bodies and all,
            # took 0.2-0.35 s of the server's CPU per look at a send to 2,000 readers
            wanted = parse_qs(urlsplit(self.path).query).get("fields", [""])[0].split(",")
            with esp.lock:
                found = [{k: d[k] for k in wanted if k in d} for d in esp.delivered]
            self._send(200, found, {})
        elif path == "/_wait" and method == "POST":
            spec = json.loads(raw or b"{}")
            found = esp.wait_for_request(spec["method"], spec["path"], float(spec["timeout"]))
            self._send(200, {"arrived": found}, {})
        elif path == "/_fault" and method == "POST":
            spec = json.loads(raw or b"{}")
            with esp.lock:
                esp.faults.append(Fault(**spec))
            self._send(200, {"ok": True}, {})
        elif path == "/_settings" and method == "POST":
            spec = json.loads(raw or b"{}")
            with esp.lock:
                esp.postmark_search_lag = bool(spec.get("postmark_search_lag", False))
                esp.mailgun.events_lag = bool(spec.get("mailgun_events_lag", False))
                esp.ses.upstream = spec.get("ses_upstream", esp.ses.upstream)
            self._send(200, {"ok": True}, {})
        elif path == "/_release" and method == "POST":
            esp.release_holds()
            self._send(200, {"ok": True}, {})
        elif path == "/_reset" and method == "POST":
            esp.reset()
            self._send(200, {"ok": True}, {})
        else:
            self._send(404, {"detail": "no such control endpoint"}, {})

    def _send(self, status: int, payload: Any, headers: dict[str, str]) -> None:
        if isinstance(payload, RawBody):  # forwarded as it came (the SES front)
            self._send_bytes(status, payload.data, {"Content-Type": payload.type, **headers}, 0)
            return
        data = b"" if payload is None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): like a real server, carry on


def vendor_of(path: str) -> str:
    if path.startswith(("/v3/mail/", "/v3/user/")):
        return "sendgrid"
    if path.startswith("/v3/"):
        return "mailgun"
    if path.startswith("/v2/email/"):
        return "ses"
    if path.startswith("/v1/"):
        return "buttondown"
    if path.startswith(("/emails", "/broadcasts")):
        return "resend"
    if path.startswith(("/email", "/templates", "/messages")):
        return "postmark"
    return "unknown"


# -- vendor error bodies ----------------------------------------------------------------
def error_body(provider: str, status: int, code: str, message: str) -> Any:
    if provider in ("mailgun", "sendgrid", "ses"):
        return more_error_body(provider, code, message)
    if provider == "resend":
        return {"statusCode": status, "name": code, "message": message}
    if provider == "postmark":
        numbers = {"unauthorized": 10, "validation": 300, "inactive": 406, "stream": 1235}
        return {"ErrorCode": numbers.get(code, 0), "Message": message}
    return {"code": code, "detail": message, "metadata": {}}


def echo_key(req: Recorded, fault: Fault) -> str:
    """An error message with the request's credential at character `fault.echo_key_at`
    (for SES with temporary credentials, the session token: its SignatureDoesNotMatch
    message repeats the canonical request, whose signed headers carry it)."""
    auth = req.header("Authorization") or req.header("X-Postmark-Server-Token") or ""
    key = req.header("X-Amz-Security-Token") or auth.split(" ", 1)[-1]
    filler = "The request was rejected because the credential presented is not valid. " * 10
    return f"{filler[: fault.echo_key_at or 0]}{key} is not a valid API key."


def fault_answer(provider: str, fault: Fault) -> tuple[int, Any, dict[str, str]]:
    status = fault.status or 500
    headers: dict[str, str] = {}
    if fault.retry_after is not None:
        # Resend spells it lower-case; HTTP headers are case-insensitive anyway.
        headers["retry-after" if provider == "resend" else "Retry-After"] = f"{fault.retry_after:g}"
    if status == 429:
        messages = {
            "resend": (
                "rate_limit_exceeded",
                "Too many requests. You can only make 2 requests per second.",
            ),
            "postmark": ("rate_limit", "Rate limit exceeded."),
            "buttondown": ("throttled", "Request was throttled."),
            "mailgun": (
                "throttled",
                "Domain mg.example.com is not allowed to send: account-requests-per-sec limit "
                "exceeded, try again after 1 seconds",
            ),
            "sendgrid": ("throttled", "too many requests"),
        }
        code, message = messages.get(provider, ("throttled", "Too many requests"))
    elif status >= 500:
        code, message = "internal_server_error", "An unexpected error occurred."
    else:
        code, message = "fault", f"injected {status}"
    if provider == "postmark" and status >= 500:
        return status, None, headers  # Postmark's 500 has no documented body
    if provider == "ses" and status in SES_FAULTS:  # SES names its error in a header
        code, message = SES_FAULTS[status]
        headers["x-amzn-ErrorType"] = code
    return status, error_body(provider, status, code, message), headers


# -- routes -----------------------------------------------------------------------------
def route(
    esp: FakeEsp, provider: str, method: str, path: str, req: Recorded
) -> tuple[int, Any, dict[str, str]]:
    if provider == "buttondown":
        return buttondown(esp, method, path, req)
    if provider == "resend":
        return resend(esp, method, path, req)
    if provider == "postmark":
        return postmark(esp, method, path, req)
    if provider in MORE_ROUTES:
        return MORE_ROUTES[provider](esp, method, path, req)
    return 404, {"detail": "Not found."}, {}


def _idempotent(
    esp: FakeEsp, provider: str, key: str | None, req: Recorded, handler: Any
) -> tuple[int, Any, dict[str, str]]:
    """Replay the first answer for a repeated idempotency key (same body), 409 otherwise."""
    if not key:
        return handler()
    scoped = f"{provider}:{key}"
    with esp.lock:
        seen = esp.idempotency.get(scoped)
        if seen is not None:
            digest, status, body = seen
            if digest != req.raw.hex():
                raise Reply(
                    409 if provider == "resend" else 400,
                    error_body(
                        provider,
                        409,
                        "invalid_idempotent_request",
                        "Same idempotency key used with a different request payload.",
                    ),
                )
            return status, body, {}
        status, body, headers = handler()
        if status < 400:
            esp.idempotency[scoped] = (req.raw.hex(), status, body)
        return status, body, headers


# Buttondown ------------------------------------------------------------------------------
BUTTONDOWN_SENDING = {"about_to_send", "scheduled"}


def _buttondown_auth(esp: FakeEsp, req: Recorded) -> None:
    if req.header("Authorization") != f"Token {esp.api_key}":
        raise Reply(401, {"detail": "Invalid token."})


def _buttondown_validate(esp: FakeEsp, schema: str, body: Any) -> None:
    if body is None:
        raise Reply(
            422, {"detail": [{"type": "missing", "loc": ["body"], "msg": "Field required"}]}
        )
    problem = esp.check_schema(schema, body)
    if problem:
        raise Reply(422, {"detail": [{"type": "value_error", "loc": ["body"], "msg": problem}]})


def _buttondown_status_change(
    esp: FakeEsp, email: dict[str, Any], update: dict[str, Any], req: Recorded
) -> None:
    status = update.get("status") or email["status"]
    if status in BUTTONDOWN_SENDING and email["status"] not in BUTTONDOWN_SENDING | {"sent"}:
        if (req.header("X-Buttondown-Live-Dangerously") or "").lower() != "true":
            raise Reply(
                400,
                error_body(
                    "buttondown",
                    400,
                    "sending_requires_confirmation",
                    "This request would send an email; pass X-Buttondown-Live-Dangerously: true.",
                ),
            )
        if status == "scheduled" and not (update.get("publish_date") or email.get("publish_date")):
            raise Reply(
                400,
                error_body(
                    "buttondown",
                    400,
                    "publish_date_missing",
                    "Scheduled emails need a publish_date.",
                ),
            )
    if email["status"] == "sent" and status != "sent":
        raise Reply(
            400, error_body("buttondown", 400, "status_invalid", "This email was already sent.")
        )
    for key in ("subject", "body", "description", "metadata"):
        if update.get(key) is not None:
            email[key] = update[key]
    if "publish_date" in update:
        email["publish_date"] = (
            None if update["publish_date"] in (None, "none") else update["publish_date"]
        )
    if status == "about_to_send" and email["status"] != "sent":
        email["status"] = "sent"  # the fake delivers at once
        email["publish_date"] = email.get("publish_date") or _now()
        esp.delivered.append(
            {
                "kind": "audience",
                "provider": "buttondown",
                "id": email["id"],
                "subject": email["subject"],
            }
        )
    elif status != "about_to_send":
        email["status"] = status


def buttondown(
    esp: FakeEsp, method: str, path: str, req: Recorded
) -> tuple[int, Any, dict[str, str]]:
    _buttondown_auth(esp, req)
    parts = path.strip("/").split("/")  # v1, emails, {id}, action
    if parts[:2] != ["v1", "emails"]:
        return 404, {"detail": "Not found."}, {}
    key = req.header("X-Idempotency-Key")
    if len(parts) == 2 and method == "POST":

        def create() -> tuple[int, Any, dict[str, str]]:
            _buttondown_validate(esp, "buttondown-EmailInput", req.body)
            body = req.body
            email = {
                "id": esp.new_id(),
                "creation_date": _now(),
                "status": "draft",
                "subject": body.get("subject", ""),
                "body": body.get("body", ""),
                "description": body.get("description", ""),
                "metadata": body.get("metadata", {}),
                "publish_date": None,
            }
            _buttondown_status_change(
                esp,
                email,
                {
                    "status": body.get("status", "about_to_send"),
                    "publish_date": body.get("publish_date"),
                },
                req,
            )
            esp.emails[email["id"]] = email
            return 201, dict(email), {}

        return _idempotent(esp, "buttondown", key, req, create)
    if len(parts) < 3:
        return 405, {"detail": f'Method "{method}" not allowed.'}, {}
    email = esp.emails.get(parts[2])
    if email is None:
        return 404, {"detail": "Not found."}, {}
    action = parts[3] if len(parts) > 3 else ""
    if action == "" and method == "GET":
        return 200, dict(email), {}
    if action == "" and method == "DELETE":
        with esp.lock:
            esp.emails.pop(email["id"], None)
        return 204, None, {}
    if (action == "" and method == "PATCH") or (action == "publish" and method == "POST"):

        def update() -> tuple[int, Any, dict[str, str]]:
            _buttondown_validate(esp, "buttondown-EmailUpdateInput", req.body)
            with esp.lock:
                _buttondown_status_change(esp, email, req.body, req)
            return 200, dict(email), {}

        return _idempotent(esp, "buttondown", key, req, update)
    if action == "send-draft" and method == "POST":

        def send_draft() -> tuple[int, Any, dict[str, str]]:
            _buttondown_validate(esp, "buttondown-SendDraftInput", req.body)
            recipients = req.body.get("recipients") or []
            with esp.lock:
                for to in recipients:
                    esp.delivered.append(
                        {
                            "kind": "test",
                            "provider": "buttondown",
                            "id": email["id"],
                            "to": to,
                            "subject": email["subject"],
                        }
                    )
            return 200, None, {}

        return _idempotent(esp, "buttondown", key, req, send_draft)
    return 405, {"detail": f'Method "{method}" not allowed.'}, {}


# Resend ----------------------------------------------------------------------------------
def _resend_auth(esp: FakeEsp, req: Recorded) -> None:
    header = req.header("Authorization") or ""
    if not header.startswith("Bearer ") or not header[7:]:
        raise Reply(
            401,
            error_body(
                "resend",
                401,
                "missing_api_key",
                "Missing API key in the authorization header. Include the following header "
                "in the request: Authorization: Bearer YOUR_API_KEY",
            ),
        )
    if header[7:] != esp.api_key:
        raise Reply(403, error_body("resend", 403, "invalid_api_key", "API key is invalid"))


def _resend_invalid(esp: FakeEsp, schema: str, body: Any) -> None:
    if not isinstance(body, dict | list):
        raise resend_422("validation_error", "Invalid JSON body")
    problem = esp.check_schema(schema, body)
    if problem:
        raise resend_422("validation_error", problem)


def resend_422(name: str, message: str) -> Reply:
    """Resend's 422 answer: {"statusCode": 422, "name": ..., "message": ...}."""
    return Reply(422, error_body("resend", 422, name, message))


def _resend_email(esp: FakeEsp, body: dict[str, Any], kind: str) -> dict[str, Any]:
    for name in ("from", "to", "subject"):
        if not body.get(name):
            raise resend_422("missing_required_field", f"Missing `{name}` field.")
    to = body["to"] if isinstance(body["to"], list) else [body["to"]]
    if len(to) > RESEND_MAX_TO:
        raise resend_422(
            "validation_error",
            f"Too many recipients: `to` accepts at most {RESEND_MAX_TO} addresses.",
        )
    email_id = esp.new_id()
    esp.delivered.append(
        {"kind": kind, "provider": "resend", "id": email_id, "to": to, "subject": body["subject"]}
    )
    return {"id": email_id}


def resend(esp: FakeEsp, method: str, path: str, req: Recorded) -> tuple[int, Any, dict[str, str]]:
    _resend_auth(esp, req)
    parts = path.strip("/").split("/")
    key = req.header("Idempotency-Key")
    if parts == ["emails"] and method == "POST":

        def send() -> tuple[int, Any, dict[str, str]]:
            _resend_invalid(esp, "resend-SendEmailRequest", req.body)
            with esp.lock:
                return 200, _resend_email(esp, req.body, "message"), {}

        return _idempotent(esp, "resend", key, req, send)
    if parts == ["emails", "batch"] and method == "POST":

        def batch() -> tuple[int, Any, dict[str, str]]:
            if not isinstance(req.body, list) or not req.body:
                raise resend_422("validation_error", "Body must be a non-empty array.")
            if len(req.body) > RESEND_MAX_BATCH:
                raise resend_422(
                    "validation_error",
                    f"Too many emails: a batch holds at most {RESEND_MAX_BATCH}.",
                )
            for item in req.body:
                _resend_invalid(esp, "resend-SendEmailRequest", item)
                if "scheduled_at" in item:
                    raise resend_422(
                        "validation_error", "`scheduled_at` is not supported in batch emails."
                    )
            with esp.lock:
                return 200, {"data": [_resend_email(esp, item, "message") for item in req.body]}, {}

        return _idempotent(esp, "resend", key, req, batch)
    if parts == ["broadcasts"] and method == "POST":
        _resend_invalid(esp, "resend-CreateBroadcastOptions", req.body)
        body = req.body
        broadcast = {
            "id": esp.new_id(),
            "object": "broadcast",
            "name": body.get("name", ""),
            "segment_id": body.get("segment_id") or body.get("audience_id"),
            "from": body["from"],
            "subject": body["subject"],
            "preview_text": body.get("preview_text", ""),
            "html": body.get("html"),
            "text": body.get("text"),
            "status": "draft",
            "created_at": _now(),
            "scheduled_at": None,
            "sent_at": None,
        }
        with esp.lock:
            esp.broadcasts[broadcast["id"]] = broadcast
            if body.get("send"):
                _resend_send_broadcast(esp, broadcast, body.get("scheduled_at"))
        return 201, {"id": broadcast["id"], "object": "broadcast"}, {}
    if len(parts) >= 2 and parts[0] == "broadcasts":
        broadcast = esp.broadcasts.get(parts[1])
        if broadcast is None:
            return 404, error_body("resend", 404, "not_found", "Broadcast not found"), {}
        if len(parts) == 2 and method == "GET":
            return 200, dict(broadcast), {}
        if len(parts) == 2 and method == "DELETE":
            with esp.lock:
                if broadcast["status"] not in ("draft", "scheduled"):
                    return (
                        422,
                        error_body(
                            "resend",
                            422,
                            "validation_error",
                            "Only draft or scheduled broadcasts can be removed.",
                        ),
                        {},
                    )
                esp.broadcasts.pop(broadcast["id"])
            return 200, {"id": broadcast["id"], "object": "broadcast", "deleted": True}, {}
        if parts[2:] == ["send"] and method == "POST":
            body = req.body if req.body is not None else {}
            _resend_invalid(esp, "resend-SendBroadcastOptions", body)
            with esp.lock:
                _resend_send_broadcast(esp, broadcast, body.get("scheduled_at"))
            return 200, {"id": broadcast["id"]}, {}
    return 404, error_body("resend", 404, "not_found", "The requested endpoint does not exist."), {}


def _resend_send_broadcast(
    esp: FakeEsp, broadcast: dict[str, Any], scheduled_at: str | None
) -> None:
    if broadcast["status"] != "draft":
        raise resend_422("validation_error", f"Broadcast is already {broadcast['status']}.")
    if scheduled_at:
        broadcast["status"] = "scheduled"
        broadcast["scheduled_at"] = scheduled_at
        return
    broadcast["status"] = "sent"  # the fake delivers at once
    broadcast["sent_at"] = _now()
    esp.delivered.append(
        {
            "kind": "audience",
            "provider": "resend",
            "id": broadcast["id"],
            "subject": broadcast["subject"],
        }
    )


# Postmark --------------------------------------------------------------------------------
def _postmark_auth(esp: FakeEsp, req: Recorded) -> None:
    if req.header("X-Postmark-Server-Token") != esp.api_key:
        raise Reply(
            401,
            {
                "ErrorCode": 10,
                "Message": "The Server Token you provided in the X-Postmark-Server-Token request "
                "header was invalid. Please verify that you are using a valid token.",
            },
        )


MUSTACHIO_TAG = re.compile(r"\{\{\{\s*([\w.]+)\s*\}\}\}|\{\{\s*([\w.]+)\s*\}\}")


def mustachio(text: str, model: dict[str, Any], html: bool) -> str:
    """Postmark's template language as far as spark-mail uses it: `{{{name}}}` inserts the
    value as it is, `{{name}}` HTML-escapes it in an HTML body; unknown names are empty."""
    import html as html_lib

    pieces = _split(MUSTACHIO_TAG, text)  # text, raw name, escaped name, text, ...
    out = list(pieces[::3])
    for n in range(1, len(out)):
        raw, escaped = pieces[3 * n - 2], pieces[3 * n - 1]
        value = str(model.get(raw or escaped, ""))
        out[n] = f"{html_lib.escape(value) if html and escaped else value}{out[n]}"
    return "".join(out)


@functools.lru_cache(maxsize=64)
def _split(tag: re.Pattern[str], text: str) -> list[str | None]:
    """`text` split at `tag` (the text between the tags, and each tag's groups): once per
    template or message body, not once per reader filling it in."""
    return tag.split(text)


def _postmark_templated(esp: FakeEsp, body: Any) -> dict[str, Any]:
    """One message of /email/batchWithTemplates: rendered from its template, then sent."""
    if not isinstance(body, dict):
        return {"ErrorCode": 300, "Message": "Invalid email request: not an object"}
    template = esp.templates.get(str(body.get("TemplateAlias") or body.get("TemplateId") or ""))
    if template is None:
        return {"ErrorCode": 1101, "Message": "The template was not found."}
    model = body.get("TemplateModel")
    if not isinstance(model, dict):
        return {"ErrorCode": 403, "Message": "'TemplateModel' is required."}
    rendered = {
        "Subject": mustachio(template["Subject"], model, False),
        "HtmlBody": mustachio(template["HtmlBody"], model, True),
        "TextBody": mustachio(template["TextBody"], model, False),
    }
    message = {k: v for k, v in body.items() if not k.startswith("Template")}
    return _postmark_message(esp, {**message, **rendered}, keep=True)


def postmark_template(
    esp: FakeEsp, method: str, path: str, req: Recorded
) -> tuple[int, Any, dict[str, str]]:
    parts = path.strip("/").split("/")
    if method == "GET" and len(parts) == 2:
        template = esp.templates.get(parts[1])
        if template is None:
            return 404, {"ErrorCode": 1101, "Message": "The template was not found."}, {}
        return 200, dict(template), {}
    if method == "POST" and len(parts) == 1:
        body = req.body if isinstance(req.body, dict) else {}
        missing = [k for k in ("Name", "Subject") if not body.get(k)]
        if missing or not (body.get("HtmlBody") or body.get("TextBody")):
            return 422, {"ErrorCode": 1120, "Message": "Name, Subject and a body are required."}, {}
        alias = body.get("Alias")
        with esp.lock:
            if alias and alias in esp.templates:
                return 422, {"ErrorCode": 1123, "Message": "This alias is already in use."}, {}
            template = {
                "TemplateId": next(esp._ids),
                "Name": body["Name"],
                "Alias": alias,
                "Subject": body["Subject"],
                "HtmlBody": body.get("HtmlBody") or "",
                "TextBody": body.get("TextBody") or "",
                "Active": True,
            }
            esp.templates[str(template["TemplateId"])] = template
            if alias:
                esp.templates[alias] = template
        return 200, {k: template[k] for k in ("TemplateId", "Name", "Alias", "Active")}, {}
    return 405, {"ErrorCode": 0, "Message": "Method not allowed"}, {}


def _postmark_message(esp: FakeEsp, body: Any, keep: bool = False) -> dict[str, Any]:
    """One message: its answer element (ErrorCode 0 when it went out). `keep`: record the
    rendered content too (templated messages, which no request body shows)."""
    problem = (
        esp.check_schema("postmark-SendEmailRequest", body)
        if isinstance(body, dict)
        else "not an object"
    )
    if problem:
        return {"ErrorCode": 300, "Message": f"Invalid email request: {problem}"}
    to = [a.strip() for a in (body.get("To") or "").split(",") if a.strip()]
    if not body.get("From") or not to:
        return {"ErrorCode": 300, "Message": "Invalid email request: 'From' and 'To' are required."}
    if len(to) > POSTMARK_MAX_TO:
        return {
            "ErrorCode": 300,
            "Message": f"Invalid 'To' address: at most {POSTMARK_MAX_TO} recipients.",
        }
    stream = body.get("MessageStream", "outbound")
    if stream not in POSTMARK_STREAMS:
        return {
            "ErrorCode": 1235,
            "Message": f"The message stream '{stream}' does not exist on this server.",
        }
    inactive = [a for a in to if a.lower() in esp.postmark_inactive]
    if inactive:
        return {
            "ErrorCode": 406,
            "Message": "You tried to send to recipient(s) that have been marked as inactive. "
            f"Found inactive addresses: {', '.join(inactive)}.",
        }
    message_id = str(uuid.uuid4())
    esp.delivered.append(
        {
            "kind": "message",
            "provider": "postmark",
            "id": message_id,
            "to": to,
            "subject": body.get("Subject"),
            "stream": stream,
            "metadata": body.get("Metadata") or {},
            **(
                {
                    "html": body.get("HtmlBody"),
                    "text": body.get("TextBody"),
                    "headers": body.get("Headers") or [],
                }
                if keep
                else {}
            ),
        }
    )
    return {
        "To": ", ".join(to),
        "SubmittedAt": _now(),
        "MessageID": message_id,
        "ErrorCode": 0,
        "Message": "OK",
    }


def postmark_search(esp: FakeEsp, req: Recorded) -> tuple[int, Any, dict[str, str]]:
    """GET /messages/outbound: outbound message search, with `metadata_<key>` filters,
    `recipient`, `count` (at most 500) and `offset`."""
    from urllib.parse import parse_qs

    query = {k: v[0] for k, v in parse_qs(req.query).items()}
    try:
        count, offset = int(query["count"]), int(query["offset"])
    except (KeyError, ValueError):
        return 422, {"ErrorCode": 300, "Message": "count and offset are required."}, {}
    if count > POSTMARK_MAX_BATCH:
        return 422, {"ErrorCode": 300, "Message": "count may be at most 500."}, {}
    wanted = {k[len("metadata_") :]: v for k, v in query.items() if k.startswith("metadata_")}
    with esp.lock:
        found = (
            []
            if esp.postmark_search_lag
            else [
                d
                for d in esp.delivered
                if d["provider"] == "postmark"
                and all((d.get("metadata") or {}).get(k) == v for k, v in wanted.items())
                and ("recipient" not in query or query["recipient"] in d["to"])
            ]
        )
    page = [
        {
            "MessageID": d["id"],
            "Recipients": d["to"],
            "To": [{"Email": a} for a in d["to"]],
            "Status": "Sent",
            "Metadata": d.get("metadata") or {},
            "MessageStream": d["stream"],
        }
        for d in found[offset : offset + count]
    ]
    return 200, {"TotalCount": len(found), "Messages": page}, {}


def postmark(
    esp: FakeEsp, method: str, path: str, req: Recorded
) -> tuple[int, Any, dict[str, str]]:
    _postmark_auth(esp, req)
    if path.startswith("/templates"):
        return postmark_template(esp, method, path, req)
    if path.rstrip("/") == "/messages/outbound" and method == "GET":
        return postmark_search(esp, req)
    if method != "POST":
        return 405, {"ErrorCode": 0, "Message": "Method not allowed"}, {}
    if path.rstrip("/") == "/email/batchWithTemplates":
        messages = req.body.get("Messages") if isinstance(req.body, dict) else None
        if not isinstance(messages, list):
            return (
                422,
                {"ErrorCode": 300, "Message": "Invalid request: 'Messages' is required."},
                {},
            )
        if len(messages) > POSTMARK_MAX_BATCH:
            return (
                422,
                {
                    "ErrorCode": 300,
                    "Message": f"Invalid request: a batch holds at most {POSTMARK_MAX_BATCH} messages.",
                },
                {},
            )
        with esp.lock:
            return 200, [_postmark_templated(esp, m) for m in messages], {}
    if path.rstrip("/") == "/email":
        with esp.lock:
            answer = _postmark_message(esp, req.body)
        return (200 if answer["ErrorCode"] == 0 else 422), answer, {}
    if path.rstrip("/") == "/email/batch":
        if not isinstance(req.body, list):
            return (
                422,
                {"ErrorCode": 300, "Message": "Invalid email request: expected an array."},
                {},
            )
        if len(req.body) > POSTMARK_MAX_BATCH:
            return (
                422,
                {
                    "ErrorCode": 300,
                    "Message": f"Invalid email request: a batch holds at most {POSTMARK_MAX_BATCH} messages.",
                },
                {},
            )
        with esp.lock:
            return 200, [_postmark_message(esp, item) for item in req.body], {}
    return 404, {"ErrorCode": 0, "Message": "Not found"}, {}


# == Mailgun, SendGrid and the SES front (issue 15) =========================================
# Mailgun   POST /v3/{domain}/messages (multipart/form-data; `recipient-variables` makes one
#           message per `to`, with %recipient.NAME% filled in; at most 1,000 `to`; the o:,
#           h:, v:, t: options at most 16 KB; `o:deliverytime` at most 3 days ahead),
#           GET /v3/{domain}/events (event, user-variables, tags filters; limit <= 300;
#           `paging.next` URLs); HTTP Basic `api:KEY`; errors `{"message": "..."}`.
# SendGrid  POST /v3/mail/send (at most 1,000 personalizations, substitutions per
#           personalization at most 10,000 bytes, `send_at` at most 72 h ahead, 202 with an
#           empty body and `X-Message-Id`), POST /v3/mail/batch, POST /v3/user/scheduled_sends;
#           `Authorization: Bearer KEY`; errors `{"errors": [{"message", "field"}]}` (an
#           address it refuses: 400 naming `personalizations.N.to.M.email`, nothing sent).
# SES       /v2/email/... forwarded to a real local SES stand-in (moto_server, `esp.ses.upstream`)
#           so every fault above applies to SES too; GetAccount (which moto lacks) is answered
#           here as SES documents it; the SigV4 `Credential=` must name `esp.ses.access_key`;
#           the account's sending limits as SES enforces them (a ThrottlingException for a
#           burst, "Daily message quota exceeded." past Max24HourSend), which moto lacks.
MAILGUN_MAX_TO = 1000
SES_FAULTS = {  # status -> (x-amzn-ErrorType, message) as SES answers them
    403: (
        "AccessDeniedException",
        "User: arn:aws:iam::123456789012:user/newsletter is not authorized to perform: "
        "ses:GetAccount because no identity-based policy allows the ses:GetAccount action",
    ),
    429: ("TooManyRequestsException", "Maximum sending rate exceeded."),
}
MAILGUN_OPTIONS_LIMIT = 16 * 1024
MAILGUN_SCHEDULE_DAYS = 3
MAILGUN_EVENTS_LIMIT = 300
SENDGRID_MAX_PERSONALIZATIONS = 1000
SENDGRID_SUBSTITUTIONS_LIMIT = 10_000
SENDGRID_SCHEDULE_HOURS = 72
SENDGRID_MAX_BYTES = 30 * 1024 * 1024


@dataclass
class RawBody:
    """An answer body sent as it is (not JSON-encoded)."""

    data: bytes
    type: str = "application/json"


@dataclass
class MailgunState:
    domains: set[str] = field(default_factory=lambda: {"mg.example.com"})
    events: list[dict[str, Any]] = field(default_factory=list)
    events_lag: bool = False  # the events API does not show anything yet


@dataclass
class SendgridState:
    batches: set[str] = field(default_factory=set)
    scheduled_sends: dict[str, str] = field(default_factory=dict)  # batch id -> cancel | pause
    # Addresses SendGrid refuses: the whole call is answered 400, each error naming the
    # personalization (`personalizations.N.to.M.email`), nothing sent.
    invalid: set[str] = field(default_factory=set)


@dataclass
class SesFront:
    upstream: str | None = None  # moto_server's URL
    access_key: str = "AKIDSPARKMAILTEST"
    account: dict[str, Any] = field(
        default_factory=lambda: {
            "SendQuota": {"Max24HourSend": 50000.0, "MaxSendRate": 50.0, "SentLast24Hours": 0.0},
            "SendingEnabled": True,
            "ProductionAccessEnabled": True,
            "EnforcementStatus": "HEALTHY",
            "DedicatedIpAutoWarmupEnabled": False,
        }
    )
    # The next `throttle` SendEmail calls are refused as SES refuses a burst over the
    # account's MaxSendRate: 400 ThrottlingException "Maximum sending rate exceeded.".
    throttle: int = 0
    # Past SendQuota.Max24HourSend (counted in SentLast24Hours, one per accepted SendEmail)
    # SendEmail is refused with "Daily message quota exceeded.": (status, x-amzn-ErrorType).
    quota_refusal: tuple[int, str] = (400, "ThrottlingException")

    def refusal(self) -> Reply | None:
        """SES's answer to a SendEmail it refuses for the account's sending limits."""
        quota = self.account["SendQuota"]
        if self.throttle > 0:
            self.throttle -= 1
            message, status, kind = "Maximum sending rate exceeded.", 400, "ThrottlingException"
        elif 0 <= quota["Max24HourSend"] <= quota["SentLast24Hours"]:
            message = "Daily message quota exceeded."
            status, kind = self.quota_refusal
        else:
            return None
        return Reply(status, {"message": message}, {"x-amzn-ErrorType": kind})


def more_error_body(provider: str, code: str, message: str) -> Any:
    if provider == "sendgrid":
        return {"errors": [{"field": None, "message": message, "help": None}]}
    return {"message": message}


def parse_form(req: Recorded) -> list[tuple[str, str]]:
    """multipart/form-data (or urlencoded) fields in order, as the API reads them."""
    from email.parser import BytesParser
    from email.policy import compat32
    from email.utils import collapse_rfc2231_value
    from urllib.parse import parse_qsl

    content_type = req.header("Content-Type") or ""
    if content_type.startswith("application/x-www-form-urlencoded"):
        return parse_qsl(req.raw.decode(), keep_blank_values=True)
    if not content_type.startswith("multipart/form-data"):
        return []
    # The same MIME parser (email.feedparser) under the compat32 policy: the parts, their
    # names and payloads are the same; the HTTP policy's header objects, which nothing here
    # reads, made a 1,000-reader Mailgun batch take ~0.25 s to read (8x this).
    message = BytesParser(policy=compat32).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + req.raw
    )
    fields = []
    for part in message.get_payload() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True) or b""
        fields.append(
            (str(name if name is None else collapse_rfc2231_value(name)), payload.decode("utf-8"))
        )
    return fields


def form_as_json(fields: list[tuple[str, str]], schema: dict[str, Any] | None) -> dict[str, Any]:
    """The form as JSON for the schema: array properties as lists, the rest as strings."""
    arrays = {
        k for k, v in ((schema or {}).get("properties") or {}).items() if v.get("type") == "array"
    }
    out: dict[str, Any] = {}
    for name, value in fields:
        if name in arrays:
            out.setdefault(name, []).append(value)
        elif name in out:
            out[name] = [out[name], value] if not isinstance(out[name], list) else out[name]
        else:
            out[name] = value
    return out


# Mailgun ---------------------------------------------------------------------------------
MAILGUN_VARIABLE = re.compile(r"%recipient\.([\w.-]+)%")


def _mailgun_fill(text: str, variables: dict[str, Any]) -> str:
    pieces = _split(MAILGUN_VARIABLE, text)  # text, name, text, name, ..., text
    out = list(pieces[::2])
    for n in range(1, len(out)):
        name = pieces[2 * n - 1]
        value = variables.get(name, f"%recipient.{name}%")
        out[n] = f"{value}{out[n]}"
    return "".join(out)


def _mailgun_400(message: str) -> Reply:
    return Reply(400, {"message": message})


def mailgun(esp: FakeEsp, method: str, path: str, req: Recorded) -> tuple[int, Any, dict[str, str]]:
    import base64

    expected = "Basic " + base64.b64encode(f"api:{esp.api_key}".encode()).decode()
    if req.header("Authorization") != expected:
        raise Reply(401, "Forbidden")
    parts = path.strip("/").split("/")
    if len(parts) < 3 or parts[1] not in esp.mailgun.domains:
        return 404, {"message": f"Domain not found: {parts[1] if len(parts) > 1 else ''}"}, {}
    domain = parts[1]
    if parts[2:] == ["messages"] and method == "POST":
        with esp.lock:
            return _mailgun_send(esp, domain, req)
    if parts[2] == "events" and method == "GET":
        return _mailgun_events(esp, domain, req, parts[3] if len(parts) > 3 else None)
    return 404, {"message": "Not Found"}, {}


def _mailgun_check(esp: FakeEsp, form: list[tuple[str, str]]) -> dict[str, Any]:
    schema = esp._schemas.get("mailgun-SendMessage")
    body = form_as_json(form, schema)
    problem = esp.check_schema("mailgun-SendMessage", body)
    if problem:
        raise _mailgun_400(problem)
    if not any(body.get(k) for k in ("text", "html", "amp-html", "template")):
        raise _mailgun_400(
            "Need at least one of 'text', 'html', 'amp-html' or 'template' parameters specified"
        )
    if len(body["to"]) > MAILGUN_MAX_TO:
        raise _mailgun_400(f"Too many recipients: at most {MAILGUN_MAX_TO} per message")
    options = sum(
        len(k.encode()) + len(v.encode()) for k, v in form if k[:2] in ("o:", "h:", "v:", "t:")
    )
    if options > MAILGUN_OPTIONS_LIMIT:
        raise _mailgun_400(
            "Send options (parameters starting with o:, h:, or v:) are limited to 16KB total"
        )
    when = body.get("o:deliverytime")
    if when:
        try:
            at = email_utils.parsedate_to_datetime(when)
        except (TypeError, ValueError):
            raise _mailgun_400(f"o:deliverytime {when!r} is not an RFC 2822 date") from None
        if at - dt.datetime.now(dt.UTC) > dt.timedelta(days=MAILGUN_SCHEDULE_DAYS):
            raise _mailgun_400(f"o:deliverytime may be at most {MAILGUN_SCHEDULE_DAYS} days ahead")
    variables = body.get("recipient-variables")
    if variables is not None:
        try:
            body["recipient-variables"] = json.loads(variables)
        except ValueError:
            raise _mailgun_400("recipient-variables parameter is not a valid JSON") from None
    return body


def _mailgun_send(esp: FakeEsp, domain: str, req: Recorded) -> tuple[int, Any, dict[str, str]]:
    form = parse_form(req)
    body = _mailgun_check(esp, form)
    message_id = f"<{esp.new_id()}@{domain}>"
    batch = body.get("recipient-variables")
    headers = {k[2:]: v for k, v in form if k.startswith("h:")}
    user_variables = {k[2:]: v for k, v in form if k.startswith("v:")}
    tags = [v for k, v in form if k == "o:tag"]
    groups = [[to] for to in body["to"]] if isinstance(batch, dict) else [list(body["to"])]
    for to in groups:
        values = batch.get(to[0], {}) if isinstance(batch, dict) else {}
        esp.delivered.append(
            {
                "kind": "message",
                "provider": "mailgun",
                "id": message_id,
                "to": to,
                "subject": _mailgun_fill(body["subject"], values),
                "html": _mailgun_fill(body.get("html", ""), values),
                "text": _mailgun_fill(body.get("text", ""), values),
                "headers": {k: _mailgun_fill(v, values) for k, v in headers.items()},
                "deliverytime": body.get("o:deliverytime"),
                "variables": user_variables,
            }
        )
        for address in to:
            esp.mailgun.events.append(
                {
                    "event": "accepted",
                    "id": esp.new_id(),
                    "timestamp": time.time(),
                    "recipient": address,
                    "message": {"headers": {"message-id": message_id.strip("<>"), "to": address}},
                    "tags": tags,
                    "user-variables": user_variables,
                }
            )
    return 200, {"id": message_id, "message": "Queued. Thank you."}, {}


def _mailgun_events(
    esp: FakeEsp, domain: str, req: Recorded, token: str | None
) -> tuple[int, Any, dict[str, str]]:
    import base64
    from urllib.parse import parse_qs

    if token:
        query = json.loads(base64.urlsafe_b64decode(token.encode()))
    else:
        query = {k: v[0] for k, v in parse_qs(req.query).items()}
        query["offset"] = 0
    limit = int(query.get("limit") or 100)
    if limit > MAILGUN_EVENTS_LIMIT:
        return 400, {"message": f"limit: at most {MAILGUN_EVENTS_LIMIT}"}, {}
    wanted = json.loads(query["user-variables"]) if query.get("user-variables") else {}
    with esp.lock:
        found = (
            []
            if esp.mailgun.events_lag
            else [
                e
                for e in esp.mailgun.events
                if (not query.get("event") or e["event"] == query["event"])
                and (not query.get("tags") or query["tags"] in e["tags"])
                and all(e["user-variables"].get(k) == v for k, v in wanted.items())
            ]
        )
    if query.get("ascending") != "yes":
        found.reverse()
    offset = int(query["offset"])
    page = found[offset : offset + limit]
    following = base64.urlsafe_b64encode(json.dumps({**query, "offset": offset + limit}).encode())
    base = f"http://127.0.0.1:{esp.port}/v3/{domain}/events"
    return 200, {"items": page, "paging": {"next": f"{base}/{following.decode()}"}}, {}


# SendGrid --------------------------------------------------------------------------------
def _sendgrid_400(message: str, field_name: str | None = None) -> Reply:
    return Reply(400, {"errors": [{"message": message, "field": field_name, "help": None}]})


def sendgrid(
    esp: FakeEsp, method: str, path: str, req: Recorded
) -> tuple[int, Any, dict[str, str]]:
    if req.header("Authorization") != f"Bearer {esp.api_key}":
        message = "The provided authorization grant is invalid, expired, or revoked"
        raise Reply(401, {"errors": [{"field": None, "message": message, "help": None}]})
    route_path = path.rstrip("/")
    if route_path == "/v3/mail/send" and method == "POST":
        if len(req.raw) > SENDGRID_MAX_BYTES:
            message = "The email must be smaller than 30MB, including attachments."
            raise Reply(413, {"errors": [{"field": None, "message": message}]})
        with esp.lock:
            return _sendgrid_send(esp, req)
    if route_path == "/v3/mail/batch" and method == "POST":
        batch_id = uuid.uuid4().hex
        with esp.lock:
            esp.sendgrid.batches.add(batch_id)
        return 201, {"batch_id": batch_id}, {}
    if route_path == "/v3/user/scheduled_sends" and method == "POST":
        body = req.body if isinstance(req.body, dict) else {}
        if body.get("batch_id") not in esp.sendgrid.batches:
            raise _sendgrid_400("invalid batch id", "batch_id")
        if body.get("status") not in ("cancel", "pause"):
            raise _sendgrid_400("status must be cancel or pause", "status")
        with esp.lock:
            esp.sendgrid.scheduled_sends[body["batch_id"]] = body["status"]
            for item in esp.delivered:
                if item.get("batch_id") == body["batch_id"] and body["status"] == "cancel":
                    item["kind"] = "cancelled"
        return 201, {"batch_id": body["batch_id"], "status": body["status"]}, {}
    return 404, {"errors": [{"message": "not found", "field": None}]}, {}


def _sendgrid_check(esp: FakeEsp, body: Any) -> None:
    if not isinstance(body, dict):
        raise _sendgrid_400("Bad Request")
    problem = esp.check_schema("sendgrid-PostMailSend", body)
    if problem:
        raise _sendgrid_400(problem)
    people = body["personalizations"]
    if (
        sum(len(p.get("to", [])) + len(p.get("cc", [])) + len(p.get("bcc", [])) for p in people)
        > 1000
    ):
        raise _sendgrid_400(
            "The recipients of all personalizations may be at most 1000.", "personalizations"
        )
    for person in people:
        size = sum(
            len(k.encode()) + len(v.encode())
            for k, v in (person.get("substitutions") or {}).items()
        )
        if size > SENDGRID_SUBSTITUTIONS_LIMIT:
            raise _sendgrid_400(
                "substitutions may be at most 10000 bytes per personalization",
                "personalizations.substitutions",
            )
    refused = [
        {"message": "Does not contain a valid address.", "help": None,
         "field": f"personalizations.{n}.to.{m}.email"}
        for n, person in enumerate(people)
        for m, to in enumerate(person.get("to", []))
        if str(to.get("email", "")).lower() in esp.sendgrid.invalid
    ]  # fmt: skip
    if refused:
        raise Reply(400, {"errors": refused})
    types = [c["type"] for c in body.get("content", [])]
    if "text/plain" in types and types[0] != "text/plain":
        raise _sendgrid_400("text/plain must come first in content", "content")
    if "send_at" in body:
        ahead = body["send_at"] - time.time()
        if ahead > SENDGRID_SCHEDULE_HOURS * 3600:
            raise _sendgrid_400("send_at: cannot be more than 72 hours in the future", "send_at")
    if "batch_id" in body and body["batch_id"] not in esp.sendgrid.batches:
        raise _sendgrid_400("invalid batch id", "batch_id")


def _sendgrid_fill(text: str, substitutions: dict[str, str]) -> str:
    for key, value in substitutions.items():
        text = text.replace(key, value)
    return text


def _sendgrid_send(esp: FakeEsp, req: Recorded) -> tuple[int, Any, dict[str, str]]:
    body = req.body
    _sendgrid_check(esp, body)
    message_id = uuid.uuid4().hex[:22]
    content = {c["type"]: c["value"] for c in body.get("content", [])}
    for person in body["personalizations"]:
        subs = person.get("substitutions") or {}
        esp.delivered.append(
            {
                "kind": "message",
                "provider": "sendgrid",
                "id": message_id,
                "to": [t["email"] for t in person["to"]],
                "subject": _sendgrid_fill(person.get("subject") or body.get("subject", ""), subs),
                "html": _sendgrid_fill(content.get("text/html", ""), subs),
                "text": _sendgrid_fill(content.get("text/plain", ""), subs),
                "headers": {**(body.get("headers") or {}), **(person.get("headers") or {})},
                "custom_args": person.get("custom_args") or {},
                "send_at": person.get("send_at", body.get("send_at")),
                "batch_id": body.get("batch_id"),
            }
        )
    return 202, None, {"X-Message-Id": message_id}


# SES (forwarded to moto) -------------------------------------------------------------------
def ses(esp: FakeEsp, method: str, path: str, req: Recorded) -> tuple[int, Any, dict[str, str]]:
    auth = req.header("Authorization") or ""
    if f"Credential={esp.ses.access_key}/" not in auth:
        raise Reply(
            403,
            {"message": "The security token included in the request is invalid."},
            {"x-amzn-ErrorType": "UnrecognizedClientException"},
        )
    if path.rstrip("/") == "/v2/email/account" and method == "GET":
        return 200, esp.ses.account, {}
    if esp.ses.upstream is None:
        return 500, {"message": "no SES stand-in behind this front"}, {}
    sending = path.rstrip("/") == "/v2/email/outbound-emails" and method == "POST"
    if sending:
        with esp.lock:
            refused = esp.ses.refusal()
        if refused is not None:
            raise refused
    status, data, headers = _forward(esp.ses.upstream, method, path, req)
    if status == 200 and sending:
        answer = json.loads(data or b"{}")
        with esp.lock:
            esp.ses.account["SendQuota"]["SentLast24Hours"] += 1
            esp.delivered.append(
                {
                    "kind": "message",
                    "provider": "ses",
                    "id": answer.get("MessageId"),
                    "to": list((req.body or {}).get("Destination", {}).get("ToAddresses", [])),
                }
            )
    return (
        status,
        RawBody(data, headers.get("Content-Type", "application/json")),
        {k: v for k, v in headers.items() if k.lower().startswith("x-amzn")},
    )


def _forward(
    upstream: str, method: str, path: str, req: Recorded
) -> tuple[int, bytes, dict[str, str]]:
    import http.client

    target = urlsplit(upstream)
    connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=30)
    try:
        headers = {k: v for k, v in req.headers.items() if k.lower() not in ("host", "connection")}
        connection.request(
            method, path + (f"?{req.query}" if req.query else ""), req.raw or None, headers
        )
        answer = connection.getresponse()
        return answer.status, answer.read(), dict(answer.getheaders())
    finally:
        connection.close()


def moto_messages(upstream: str) -> list[dict[str, Any]]:
    """The raw messages the SES stand-in (moto_server) received: {id, source, destinations
    (each recipient once), raw_data}. moto lists a recipient twice when it is both in the
    request's destinations and the raw `To:`, so destinations are de-duplicated here."""
    import urllib.request

    with urllib.request.urlopen(f"{upstream}/moto-api/data.json", timeout=10) as answer:
        data = json.loads(answer.read())
    messages = data.get("ses", {}).get("RawMessage", [])
    for message in messages:
        message["destinations"] = list(dict.fromkeys(message["destinations"]))
    return messages


MORE_ROUTES = {"mailgun": mailgun, "sendgrid": sendgrid, "ses": ses}


# -- settings for tests -----------------------------------------------------------------------
SIGNING_SECRET = "fake-esp-signing-secret-0123456789"
FAST_RETRIES = {
    "SPARK_MAIL_SEND_BACKOFF": "0.01",
    # Generous: a busy machine must not turn a slow answer into a failure. Tests of
    # timeouts set their own, with an ESP that never answers.
    "SPARK_MAIL_SEND_TIMEOUT": "30",
    "SPARK_MAIL_SEND_ATTEMPTS": "3",
    "SPARK_MAIL_SEND_RETRY_SECONDS": "10",
}


def esp_env(esp: FakeEsp, provider: str, **extra: str) -> dict[str, str]:
    """Environment pointing spark-mail at this fake ESP, with fast retries."""
    return {
        "SPARK_MAIL_PROVIDER": provider,
        "SPARK_MAIL_API_KEY": esp.api_key,
        "SPARK_MAIL_API_URL": esp.url(provider),
        "SPARK_MAIL_AUDIENCE_ID": "seg_test",
        "SPARK_MAIL_MAILGUN_DOMAIN": "mg.example.com",
        "SPARK_MAIL_TEST_RECIPIENTS": "editor@example.com",
        # Own-list sends sign each reader's unsubscribe and poll links.
        "SPARK_MAIL_SIGNING_SECRET": SIGNING_SECRET,
        **FAST_RETRIES,
        **extra,
    }


def settings_for(esp: FakeEsp, root: Path, provider: str, **extra: str) -> Any:
    """Settings for the newsletter in `root`, sending through this fake ESP."""
    from spark_mail.config import load_settings

    return load_settings(root, env=esp_env(esp, provider, **extra))


# -- pytest fixture and command line ---------------------------------------------------------
def esp_fixture() -> Iterator[FakeEsp]:
    with FakeEsp() as esp:
        yield esp


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake ESP on 127.0.0.1 for spark-mail tests.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--provider",
        default="resend",
        choices=["buttondown", "resend", "postmark", "mailgun", "sendgrid", "ses"],
    )
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--no-validate", action="store_true")
    args = parser.parse_args(argv)
    esp = FakeEsp(args.api_key, validate=not args.no_validate, port=args.port).start()
    print(f"PORT {esp.port}", flush=True)
    print(f"URL {esp.url(args.provider)}", flush=True)
    try:
        signal.pause()  # serve until a signal ends the process
    except KeyboardInterrupt:
        pass
    finally:
        esp.stop()


if __name__ == "__main__":
    sys.exit(main())
