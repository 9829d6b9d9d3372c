"""The desk's defences, in front of every route (a plain ASGI middleware, no per-request
overhead beyond a few dictionary looks):

- only the configured host names are served (a DNS-rebinding page gets 400);
- each client address gets `desk_rate_limit` requests a minute (429 beyond: a GET flood);
- repeated bad tokens from one address are slowed down: after BAD_TOKENS within
  BAD_WINDOW, that address gets 429 with Retry-After for a minute, twice as long at each
  repeat (at most an hour), without its links even being checked;
- request bodies over MAX_BODY_BYTES are refused (413), whether announced by
  Content-Length or streamed; ESP webhooks (WEBHOOK_PREFIX) may send up to
  MAX_WEBHOOK_BYTES (SendGrid batches events, an SNS message reaches 256 KB); a body
  still arriving BODY_SECONDS after the request began is refused (408);
- only one Host header is taken, and its port must be a number;
- every response says `Referrer-Policy: no-referrer` (the tokens in a desk URL must not
  travel to other sites), `X-Content-Type-Options: nosniff` and, unless the page set a
  stricter one, a CSP with `frame-ancestors 'none'`.

ESP webhooks are not counted against `desk_rate_limit` (an ESP reports a send's bounces in
bursts from a few addresses); a forged one counts as a bad token instead.

Limits count the reader's address: behind a proxy, run `serve --proxy-headers`; requests
from this machine itself (a proxy without those headers, health checks) are not limited.
Counters live in each worker's memory (with N workers an address gets up to N times the
allowance); they run on a Clock so tests move time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from spark_mail.clock import Clock
from spark_mail.errors import RequestRefused

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# (status, title, message) -> a full response; the pages module renders it.
RefusalPage = Callable[[RequestRefused], Awaitable[tuple[int, list[tuple[bytes, bytes]], bytes]]]

MAX_BODY_BYTES = 16 * 1024
BODY_SECONDS = 10.0  # from the request's start to the last byte of its body
WEBHOOK_PREFIX = "/webhooks/"
MAX_WEBHOOK_BYTES = 2 * 1024 * 1024
RATE_WINDOW = 60.0
BAD_TOKENS = 10  # bad tokens from one address before it is slowed down
BAD_WINDOW = 600.0
FIRST_PENALTY = 60.0
MAX_PENALTY = 3600.0
MAX_TRACKED = 50_000  # client addresses remembered before the oldest windows are dropped
SECURITY_HEADERS = [
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
]
DEFAULT_CSP = (b"content-security-policy", b"frame-ancestors 'none'")


def _seconds(until: float, now: float) -> int:
    return max(1, math.ceil(until - now))


class RateLimit:
    """At most `limit` requests per key in each `window` seconds (0: no limit)."""

    def __init__(self, clock: Clock, limit: int, window: float = RATE_WINDOW) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self._windows: dict[str, tuple[float, int]] = {}  # key -> (window end, count)

    def hit(self, key: str) -> int:
        """Count one request; the seconds to wait when over the limit, else 0."""
        if self.limit <= 0:
            return 0
        now = self.clock.monotonic()
        end, count = self._windows.get(key, (0.0, 0))
        if now >= end:
            if len(self._windows) >= MAX_TRACKED:
                self._windows = {k: w for k, w in self._windows.items() if w[0] > now}
            end, count = now + self.window, 0
        self._windows[key] = (end, count + 1)
        return _seconds(end, now) if count + 1 > self.limit else 0


class BadTokens:
    """Bad tokens per key: BAD_TOKENS within BAD_WINDOW block the key for FIRST_PENALTY
    seconds, twice as long at each repeat (at most MAX_PENALTY)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        # key -> [window end, bad tokens in it, blocked until, blocks so far]
        self._keys: dict[str, list[float]] = {}

    def wait(self, key: str) -> int:
        entry = self._keys.get(key)
        now = self.clock.monotonic()
        return _seconds(entry[2], now) if entry and entry[2] > now else 0

    def add(self, key: str) -> None:
        now = self.clock.monotonic()
        entry = self._keys.get(key)
        if entry is None:
            if len(self._keys) >= MAX_TRACKED:
                self._keys = {k: e for k, e in self._keys.items() if max(e[0], e[2]) > now}
            entry = self._keys[key] = [now + BAD_WINDOW, 0.0, 0.0, 0.0]
        if now >= entry[0]:
            entry[0], entry[1] = now + BAD_WINDOW, 0.0
        entry[1] += 1
        if entry[1] >= BAD_TOKENS:
            entry[3] += 1
            entry[2] = now + min(FIRST_PENALTY * 2 ** (entry[3] - 1), MAX_PENALTY)
            entry[1] = 0.0


class Guard:
    """The per-client counters: requests (the middleware) and bad tokens (the routes)."""

    def __init__(self, clock: Clock, rate_limit: int) -> None:
        self.requests = RateLimit(clock, rate_limit)
        self.bad_tokens = BadTokens(clock)

    def check_bad_tokens(self, client: str) -> None:
        wait = self.bad_tokens.wait(client) if counted(client) else 0
        if wait:
            raise RequestRefused(
                429,
                "Too many bad links",
                "This address has opened too many links that do not check out. "
                "Please wait a while and use the link in your email again.",
                retry_after=wait,
            )

    def bad_token(self, client: str) -> None:
        if counted(client):
            self.bad_tokens.add(client)


def counted(client: str) -> bool:
    """Whether limits apply to this client address. Not to this machine's own: that is a
    health check, or a proxy that does not pass the reader's address on (without
    --proxy-headers every reader would share one allowance, and one bad link would slow
    down everyone)."""
    return not (client.startswith("127.") or client in ("::1", "localhost", "unknown"))


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def host_name(scope: Scope) -> str | None:
    """The name in the request's one Host header, lowercased, without its port or a
    trailing dot; None for no Host, several (RFC 9112: 400) or a port that is not one."""
    hosts = [value for key, value in scope.get("headers", ()) if key == b"host"]
    if len(hosts) != 1:
        return None
    host = bytes(hosts[0]).decode("latin-1").strip().lower()
    if host.startswith("["):  # [IPv6]:port
        inside, _, port = host.partition("]")
        name = inside + "]"
        if port and not port.startswith(":"):
            return None
        port = port[1:]
    else:
        name, _, port = host.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        return None
    return name.rstrip(".")


class SecurityMiddleware:
    """See the module docstring. `refusal_page` renders a refusal as a complete response."""

    def __init__(
        self, app: ASGIApp, *, hosts: set[str], guard: Guard, refusal_page: RefusalPage
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.guard = guard
        self.refusal_page = refusal_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            self._admit(scope)
        except RequestRefused as refused:
            await self._refuse(refused, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in names]
                if b"content-security-policy" not in names:
                    headers.append(DEFAULT_CSP)
                message["headers"] = headers
            await send(message)

        await self.app(scope, _limited(receive, body_limit(scope)), send_secured)

    def _admit(self, scope: Scope) -> None:
        if host_name(scope) not in self.hosts:
            raise RequestRefused(
                400,
                "Unknown site",
                "This server does not answer for that site name.",
            )
        client = client_address(scope)
        webhook = is_webhook(scope)
        wait = self.guard.requests.hit(client) if counted(client) and not webhook else 0
        if wait:
            raise RequestRefused(
                429,
                "Too many requests",
                "Too many requests from your address. Please wait a minute and try again.",
                retry_after=wait,
            )
        length = header(scope, b"content-length")
        if length is not None and (
            not length.isdigit() or len(length) > 12 or int(length) > body_limit(scope)
        ):
            raise RequestRefused(413, "Request too large", "The request is too large.")

    async def _refuse(self, refused: RequestRefused, send: Send) -> None:
        status, headers, body = await self.refusal_page(refused)
        headers = headers + [h for h in SECURITY_HEADERS]
        if refused.retry_after:
            headers.append((b"retry-after", str(refused.retry_after).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def is_webhook(scope: Scope) -> bool:
    return str(scope.get("path", "")).startswith(WEBHOOK_PREFIX)


def body_limit(scope: Scope) -> int:
    return MAX_WEBHOOK_BYTES if is_webhook(scope) else MAX_BODY_BYTES


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive` that refuses a streamed body once it passes `limit` bytes, or when it
    has not all arrived BODY_SECONDS after the request began (a slow body would hold
    the connection, and a place in the worker, as long as the client liked)."""
    seen = 0
    complete = False
    deadline = asyncio.get_running_loop().time() + BODY_SECONDS

    async def receive_limited() -> Message:
        nonlocal seen, complete
        if complete:  # the body is in: later calls wait for a disconnect, as they may
            return await receive()
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            raise RequestRefused(
                408, "Request too slow", "The request took too long to arrive."
            ) from None
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            complete = not message.get("more_body", False)
            if seen > limit:
                raise RequestRefused(413, "Request too large", "The request is too large.")
        return message

    return receive_limited
