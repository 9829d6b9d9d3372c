"""The provider protocol, and the one place that retries, rate-limits and words ESP errors.

A provider takes a RenderedEmail and delivers it:

    send_test(email, recipients)      a copy to editors; never the audience
    send(email, on_ids)               the real send to the newsletter's audience, once
    schedule(email, at, on_ids)       hand it to the ESP's own scheduler
    unschedule(esp_ids) / lookup(esp_ids) -> DeliveryState

`on_ids(ids)` is called with every id the ESP hands out (a Buttondown draft, a Resend
broadcast) BEFORE the request that actually sends leaves, so the caller can write it to the
ledger first: after a crash, `lookup` can then ask the ESP what happened.

Each provider lists its `capabilities`; asking for another one raises UnsupportedOperation.

Own-list sending (spark_mail/bulk.py) uses `send_batch(template, readers, key)`: one ESP call
(or, for SMTP, one run over a connection) for at most `batch_size` readers, answered message
by message in a BatchResult. It is called from several threads at once (`batch_concurrency`):
a provider keeps what it shares (the httpx client, SMTP connections) thread-safe.

Failures (HttpProvider.request):
- 429, 5xx, timeouts and connection errors are retried with exponential backoff and jitter,
  honouring Retry-After, bounded by `send_attempts` and `send_retry_seconds`; 4xx never.
- A request that may have reached the ESP (a timeout or dropped connection after it left)
  is only repeated when repeating is harmless: a GET, or a request carrying an idempotency
  key the ESP honours. Otherwise the error says `maybe_sent` and the caller records the send
  as `uncertain` rather than sending twice.
- Every ESP error becomes one line: `resend: 403 invalid_api_key - check SPARK_MAIL_API_KEY`.
  The API key never appears in a message (it is masked if an ESP echoes it back).
"""

from __future__ import annotations

import abc
import datetime as dt
import email.utils as email_utils
import functools
import hashlib
import json
import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from spark_mail import __version__
from spark_mail.config import Settings
from spark_mail.errors import ConfigError, ProviderError, UnsupportedOperation
from spark_mail.render import RenderedEmail

if TYPE_CHECKING:
    from spark_mail.audience import Reader
    from spark_mail.personalize import PersonalizedTemplate

log = logging.getLogger("spark_mail.providers")

MASK = "********"
# Headers that carry credentials: masked in dry-run files whatever their value.
SECRET_HEADERS = {"authorization", "x-postmark-server-token"}
ADDRESS_RE = re.compile(r"^[^@\s<>(),;:\"\[\]\\]+@[^@\s<>(),;:\"\[\]\\]+\.[^@\s<>(),;:\"\[\]\\]+$")


class Capability(StrEnum):
    TEST = "test"
    SEND = "send"
    SCHEDULE = "schedule"
    LOOKUP = "lookup"
    BATCH = "batch"


class DeliveryState(StrEnum):
    """What the ESP says became of an audience send (answer of `lookup`)."""

    SENT = "sent"
    NOT_SENT = "not_sent"
    SCHEDULED = "scheduled"
    UNKNOWN = "unknown"


@dataclass
class SendResult:
    esp_ids: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    recipients: int | None = None  # None: the ESP's audience, size unknown to us
    refused: dict[str, str] = field(default_factory=dict)  # address -> the ESP's reason


OnIds = Callable[[dict[str, str]], object]

# What became of one message of a batch: (sent | refused | failed | uncertain, detail), the
# detail being the ESP's message id when sent, else the reason. Same words as the ledger's
# ReaderState.
Outcome = tuple[str, str]


@dataclass
class BatchResult:
    """One batch's answer, message by message, in the order of the readers given."""

    outcomes: list[Outcome]
    requests: int = 0
    bytes_sent: int = 0
    # Set when the connection or server failed part-way (SMTP): stop sending more batches.
    error: EspError | None = None


class EspError(ProviderError):
    """An ESP answered with an error, or could not be reached."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status: int | None = None,
        code: str | None = None,
        maybe_sent: bool = False,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code
        self.maybe_sent = maybe_sent


def check_addresses(addresses: Iterable[str], what: str) -> list[str]:
    """Validate recipients before anything is sent: one address each, no CR/LF, no lists."""
    checked = []
    for raw in addresses:
        address = raw.strip()
        if "\r" in raw or "\n" in raw:
            raise ConfigError(
                f"{what}: {raw!r} contains a line break", hint="one address per entry"
            )
        parsed = email_utils.getaddresses([address])
        addr = parsed[0][1] if len(parsed) == 1 else ""
        if not addr or not ADDRESS_RE.match(addr):
            raise ConfigError(
                f"{what}: {address!r} is not an email address",
                hint="write it as name@example.com",
            )
        checked.append(address)
    if not checked:
        raise ConfigError(f"{what}: no recipients", hint="give at least one address")
    return checked


def key_for_test_send(email: RenderedEmail, recipients: Sequence[str]) -> str:
    """Idempotency key of one test send: the retries of THIS call reuse it, while the next
    test send (a fresh nonce) still goes out, even with the same content and recipients."""
    digest = hashlib.sha256("\n".join(sorted(recipients)).encode()).hexdigest()[:12]
    return f"{email.idempotency_key}:test:{digest}:{uuid.uuid4().hex[:12]}"


def mime_for(email: RenderedEmail, to: str | list[str]) -> EmailMessage:
    """The message one send hands to a mail server: each copy gets its own Message-ID (mail
    clients drop a second message with a known id) and the time it leaves as its Date."""
    message = email.to_mime(to=to)
    domain = email_utils.parseaddr(email.from_address)[1].rpartition("@")[2] or "spark-mail.invalid"
    del message["Message-ID"], message["Date"]
    message["Message-ID"] = email_utils.make_msgid(idstring=email.slug[:40], domain=domain)
    message["Date"] = email_utils.formatdate(usegmt=True)
    return message


# -- retries and rate limits ---------------------------------------------------------------
@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    backoff: float = 1.0  # first delay; doubles each attempt
    max_delay: float = 60.0
    total_seconds: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            attempts=max(1, settings.send_attempts),
            backoff=max(0.0, settings.send_backoff),
            total_seconds=max(0.0, settings.send_retry_seconds),
        )

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after  # the ESP said when; more jitter is not needed
        ceiling = min(self.max_delay, self.backoff * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # "equal jitter": spread out, never zero


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Retry-After is seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email_utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - (now or dt.datetime.now(dt.UTC))).total_seconds())


class RateLimiter:
    """At most `per_second` request starts per second (Resend: 2), across threads.

    A 429 slows it down for everyone (`slow_down`): no request starts before the ESP's
    Retry-After has passed, and from then on requests start half as often (at least 50 ms
    apart for an ESP without a documented limit), so concurrent batches stop hammering.
    """

    MAX_INTERVAL = 10.0

    def __init__(self, per_second: float | None) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self._next = 0.0
        self._lock = threading.Lock()
        self.slowdowns = 0

    def wait(self) -> None:
        if not self.interval and not self._next:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            time.sleep(start - now)

    def slow_down(self, pause: float) -> None:
        with self._lock:
            self.slowdowns += 1
            self._next = max(self._next, time.monotonic() + pause)
            self.interval = min(self.MAX_INTERVAL, max(0.05, self.interval * 2))


# -- dry run -----------------------------------------------------------------------------------
class DryRunTransport(httpx.BaseTransport):
    """Stands in for the network: records each request (credentials masked) and answers what
    the ESP plausibly would, so a dry run runs the same provider code as a real send."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self.secrets = [s for s in secrets if s]
        self.exchanges: list[dict[str, Any]] = []
        self.messages: list[tuple[list[str], bytes]] = []  # SMTP / outbox: (recipients, MIME)
        self.answer: Callable[[httpx.Request, Any], tuple[int, Any]] | None = None

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

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
        return httpx.Response(status, json=payload)

    def record_message(self, recipients: list[str], message: EmailMessage) -> None:
        self.messages.append((recipients, self.redact(message.as_string()).encode()))

    @property
    def count(self) -> int:
        return len(self.exchanges) + len(self.messages)


# -- the protocol ------------------------------------------------------------------------------
WHAT = {
    Capability.TEST: "send test copies",
    Capability.SEND: "send to the newsletter's audience",
    Capability.SCHEDULE: "schedule a send on its side",
    Capability.LOOKUP: "tell whether a send went out",
    Capability.BATCH: "send to your own subscriber list (it keeps the audience itself)",
}
HINTS = {
    Capability.SCHEDULE: "give the issue a `send_at` and run `spark-mail dispatch` from cron",
    Capability.SEND: "set `audience` to your subscribers file (own-list sending), "
    "or use buttondown / resend",
    Capability.BATCH: "remove the `audience` setting (SPARK_MAIL_AUDIENCE) to send to the "
    "ESP's own list, or use postmark, resend, smtp or outbox for your subscribers file",
}


class Provider(abc.ABC):
    name: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]
    # The audience-send request carries an idempotency key the ESP honours (a retry with
    # the same key cannot send twice).
    idempotent: ClassVar[bool] = False
    # The ESP keeps the subscriber list (Buttondown, Resend); otherwise `send` needs readers.
    owns_audience: ClassVar[bool] = True
    # Own-list sending: readers per batch call, and batch calls in flight at once.
    batch_size: ClassVar[int] = 0
    batch_concurrency: ClassVar[int] = 1

    def __init__(self, settings: Settings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self.dry_run = transport if isinstance(transport, DryRunTransport) else None

    @property
    def concurrency(self) -> int:
        """Batch calls in flight at once: the `send_concurrency` setting, else our default."""
        return max(1, self.settings.send_concurrency or self.batch_concurrency)

    @classmethod
    def require(cls, capability: Capability) -> None:
        if capability not in cls.capabilities:
            raise UnsupportedOperation(
                f"{cls.name}: cannot {WHAT[capability]}", hint=HINTS.get(capability)
            )

    @property
    def audience(self) -> str:
        """Who an audience send reaches, for summaries."""
        return f"the {self.name} audience"

    @abc.abstractmethod
    def send_test(self, email: RenderedEmail, recipients: Sequence[str]) -> SendResult: ...

    def send(self, email: RenderedEmail, on_ids: OnIds) -> SendResult:
        """Send to the audience the ESP keeps (own lists go through `send_batch`)."""
        self.require(Capability.SEND)
        raise NotImplementedError

    def schedule(self, email: RenderedEmail, at: dt.datetime, on_ids: OnIds) -> SendResult:
        self.require(Capability.SCHEDULE)
        raise NotImplementedError

    def unschedule(self, esp_ids: dict[str, str]) -> None:
        self.require(Capability.SCHEDULE)
        raise NotImplementedError

    def lookup(self, esp_ids: dict[str, str]) -> DeliveryState:
        self.require(Capability.LOOKUP)
        raise NotImplementedError

    def send_batch(
        self, template: PersonalizedTemplate, readers: Sequence[Reader], key: str
    ) -> BatchResult:
        """Send each reader its own copy; `key` names this batch for idempotency."""
        self.require(Capability.BATCH)
        raise NotImplementedError

    def batch_job(
        self, template: PersonalizedTemplate, readers: Sequence[Reader], key: str
    ) -> Callable[[], BatchResult]:
        """The batch as a call for a worker thread. A provider may do the CPU work (encoding
        every message) here, in the caller's thread, while earlier batches are on the wire,
        so a worker's turn is only the request."""
        return functools.partial(self.send_batch, template, readers, key)

    def prepare_batches(self, template: PersonalizedTemplate) -> None:
        """Set-up once before the first batch (a connection, a template stored at the ESP),
        so it is not charged to the batches. Most providers need none."""
        return None

    def require_audience(self) -> None:
        """For providers without an ESP-side list: `send` was called without readers."""
        raise ConfigError(
            f"{self.name}: delivers to your own subscriber list, and none was given",
            hint='set `audience = "subscribers.csv"` in spark-mail.toml (or SPARK_MAIL_AUDIENCE)',
        )

    def close(self) -> None:  # most providers hold nothing to close
        return None

    def __enter__(self) -> Provider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iso_utc(at: dt.datetime) -> str:
    if at.tzinfo is None:
        raise ConfigError(f"schedule time {at.isoformat()} has no time zone", hint="add an offset")
    return at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class HttpProvider(Provider):
    """A provider behind an HTTP API: one httpx.Client, retries, rate limit, error wording."""

    default_base_url: ClassVar[str]
    idempotency_header: ClassVar[str | None] = None
    requests_per_second: ClassVar[float | None] = None

    def __init__(
        self,
        settings: Settings,
        transport: httpx.BaseTransport | None = None,
        *,
        retry: RetryPolicy | None = None,
        requests_per_second: float | None = None,
    ) -> None:
        super().__init__(settings, transport)
        if not settings.api_key:
            raise ConfigError(
                f"{self.name}: no API key",
                hint="set SPARK_MAIL_API_KEY in .env (or the environment)",
            )
        self.base_url = (settings.api_url or self.default_base_url).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"SPARK_MAIL_API_URL {self.base_url!r} is not an http(s) URL",
                hint=f"use the API's base URL, e.g. {self.default_base_url}",
            )
        self.retry = retry or RetryPolicy.from_settings(settings)
        self.limiter = RateLimiter(requests_per_second or self.requests_per_second)
        self.requests_made = 0
        self.bytes_sent = 0
        self._tally = threading.local()  # this thread's requests and bytes (batch results)
        self._tally_lock = threading.Lock()
        if self.dry_run is not None:
            self.dry_run.answer = self.dry_run_answer
            self.dry_run.secrets.append(settings.api_key.reveal())
        self._transport = transport
        self._client: httpx.Client | None = None

    # -- vendor specifics ----------------------------------------------------------------
    @abc.abstractmethod
    def auth_headers(self) -> dict[str, str]: ...

    @abc.abstractmethod
    def parse_error(self, body: Any) -> tuple[str, str]:
        """(code, message) out of the vendor's error body."""

    def dry_run_answer(self, request: httpx.Request, body: Any) -> tuple[int, Any]:
        """What the ESP would plausibly answer (status, JSON), for dry runs."""
        return 200, {"id": f"dry-run-{len(self.dry_run.exchanges) if self.dry_run else 0}"}

    def prepare_batches(self, template: PersonalizedTemplate) -> None:
        _ = self.client  # the TLS context and certificates load once, before the first batch

    # -- the client -----------------------------------------------------------------------
    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            timeout = self.settings.send_timeout
            self._client = httpx.Client(
                base_url=self.base_url + "/",
                timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
                transport=self._transport,
                headers={**self.auth_headers(), "User-Agent": f"spark-mail/{__version__}"},
                follow_redirects=False,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _mask(self, text: str) -> str:
        key = self.settings.api_key.reveal()
        return text.replace(key, MASK) if key else text

    def error(self, response: httpx.Response, what: str) -> EspError:
        try:
            body = response.json()
        except ValueError:
            body = None
        code, message = self.parse_error(body) if body is not None else ("", "")
        code = code or response.reason_phrase.lower().replace(" ", "_") or "error"
        status = response.status_code
        text = f"{self.name}: {status} {code}"
        hint = None
        if status in (401, 403):
            hint = "check SPARK_MAIL_API_KEY"
        elif message:
            text += f" ({' '.join(message.split())[:300]})"
        if status == 404 and not message:
            hint = "check SPARK_MAIL_API_URL" if self.settings.api_url else None
        return EspError(self._mask(f"{text} [{what}]"), hint=hint, status=status, code=code)

    def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        json_body: Any = None,
        idempotency_key: str | None = None,
        extra_headers: dict[str, str] | None = None,
        json_bytes: bytes | None = None,
    ) -> httpx.Response:
        """One API call with the retry rules above; returns a 2xx/3xx response or raises.
        `json_bytes`: a body already encoded as JSON (batches assembled from fragments)."""
        headers = dict(extra_headers or {})
        content = json_bytes
        if json_bytes is not None:
            headers["Content-Type"] = "application/json"
        elif json_body is not None:
            # Encoded once for every attempt (a retry carries the same bytes), compactly:
            # a batch of 500 copies is megabytes.
            content = json.dumps(json_body, ensure_ascii=False, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        if idempotency_key and self.idempotency_header:
            headers[self.idempotency_header] = idempotency_key
        # Repeating is harmless for a read, or when the ESP drops a repeated key.
        repeatable = method == "GET" or bool(idempotency_key and self.idempotency_header)
        started = time.monotonic()
        attempt = 0
        maybe_sent = False
        while True:
            attempt += 1
            retry_after: float | None = None
            self.limiter.wait()
            self._count(len(content or b""))
            try:
                response = self.client.request(method, path, content=content, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                failure = EspError(
                    f"{self.name}: cannot reach {self.base_url} [{what}] ({_describe(exc)})",
                    hint="check the network, or SPARK_MAIL_API_URL",
                    maybe_sent=maybe_sent,
                )
            except httpx.TransportError as exc:
                # The request left; the ESP may have acted on it.
                maybe_sent = maybe_sent or method != "GET"
                failure = EspError(
                    f"{self.name}: no answer [{what}] ({_describe(exc)})",
                    hint="it may have been sent: check with the ESP before sending again",
                    maybe_sent=maybe_sent,
                )
                if not repeatable:
                    raise failure from None
            else:
                if response.status_code < 400:
                    return response
                failure = self.error(response, what)
                failure.maybe_sent = maybe_sent
                if response.status_code != 429 and response.status_code < 500:
                    raise failure from None
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            delay = self.retry.delay(attempt, retry_after)
            if isinstance(failure, EspError) and failure.status == 429:
                self.limiter.slow_down(delay)
            spent = time.monotonic() - started
            if attempt >= self.retry.attempts or spent + delay > self.retry.total_seconds:
                failure.message += f" - gave up after {attempt} attempt{'s' * (attempt > 1)}"
                raise failure from None
            log.warning("%s; retrying in %.1fs (attempt %d)", failure.message, delay, attempt + 1)
            time.sleep(delay)

    def _count(self, size: int) -> None:
        with self._tally_lock:
            self.requests_made += 1
            self.bytes_sent += size
        tally = self._tally
        tally.requests = getattr(tally, "requests", 0) + 1
        tally.bytes = getattr(tally, "bytes", 0) + size

    def thread_tally(self) -> tuple[int, int]:
        """(requests, bytes) this thread has made so far: a batch's share is the difference,
        whatever other threads send meanwhile."""
        return getattr(self._tally, "requests", 0), getattr(self._tally, "bytes", 0)

    def json(self, response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise EspError(
                f"{self.name}: {response.status_code} answer to {what} is not JSON",
                hint="check SPARK_MAIL_API_URL points at the API",
            ) from None


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
