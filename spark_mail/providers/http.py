"""Providers behind an HTTP API: one client, the one retry loop, the rate limiter, and the
wording of ESP errors.

The retry rule is the send lifecycle's fault rule applied to one request:
- nothing left (the connection was refused, DNS failed, no free connection): retry;
- 429: the ESP refused before acting: wait (Retry-After, else backoff) and retry;
- 5xx, a timeout or a dropped connection after the request left, a 2xx whose body cannot be
  read: the ESP may have acted. Repeated only when repeating is harmless (a GET, or a
  request carrying an idempotency key the ESP honours); otherwise the error says
  `maybe_sent` at once, and the caller finds out before anything is sent again;
- any other 4xx: a clear refusal, never retried.
Retries are bounded in number and total time; waits go through the Clock. Each attempt is
bounded as a whole (spark_mail/providers/deadline.py), however slowly the server answers.
Every ESP error becomes one line with the key masked before it is shortened.
"""

from __future__ import annotations

import abc
import datetime as dt
import email.utils as email_utils
import json
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import httpx

from spark_mail import __version__
from spark_mail.clock import SYSTEM_CLOCK, Clock
from spark_mail.config import Settings
from spark_mail.errors import ConfigError, EspError
from spark_mail.providers.base import DeliveryState, Provider
from spark_mail.providers.deadline import DeadlineTransport, deadline
from spark_mail.secrets import redact, shorten

if TYPE_CHECKING:
    from spark_mail.personalize import PersonalizedTemplate
    from spark_mail.render import RenderedEmail

log = logging.getLogger("spark_mail.providers")
T = TypeVar("T")
MESSAGE_LIMIT = 300  # characters of an ESP's error message shown


def compact_json(value: Any) -> str:
    """JSON as request bodies carry it: no spaces, non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


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
            return min(retry_after, self.total_seconds)  # the ESP said when
        ceiling = min(self.max_delay, self.backoff * 2 ** (attempt - 1))
        return random.uniform(ceiling / 2, ceiling)  # "equal jitter": spread out, never zero


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Retry-After is seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds and seconds != float("inf") else None
    try:
        when = email_utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
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

    def __init__(self, per_second: float | None, clock: Clock = SYSTEM_CLOCK) -> None:
        self.interval = 1.0 / per_second if per_second else 0.0
        self.clock = clock
        self._next = 0.0
        self._lock = threading.Lock()
        self.slowdowns = 0

    def wait(self) -> None:
        if not self.interval and not self._next:
            return
        with self._lock:
            now = self.clock.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self.clock.sleep(start - now)

    def slow_down(self, pause: float) -> None:
        with self._lock:
            self.slowdowns += 1
            self._next = max(self._next, self.clock.monotonic() + pause)
            self.interval = min(self.MAX_INTERVAL, max(0.05, self.interval * 2))


class HttpProvider(Provider):
    """A provider behind an HTTP API: one httpx.Client, retries, rate limit, error wording."""

    default_base_url: ClassVar[str]
    idempotency_header: ClassVar[str | None] = None
    requests_per_second: ClassVar[float | None] = None
    # False for an ESP that authenticates otherwise (SES: boto3's credential chain).
    needs_api_key: ClassVar[bool] = True

    def __init__(
        self, settings: Settings, *, retry: RetryPolicy | None = None, **options: Any
    ) -> None:
        super().__init__(settings, **options)  # clock, recorder
        if self.needs_api_key and not settings.api_key:
            raise ConfigError(
                f"{self.name}: no API key",
                hint="set SPARK_MAIL_API_KEY in .env (or the environment)",
            )
        self.base_url = _checked_base_url(settings.api_url or self.endpoint())
        self.retry = retry or RetryPolicy.from_settings(settings)
        rate = settings.send_rate or self.requests_per_second
        self.limiter = RateLimiter(rate, self.clock)
        self.requests_made = 0
        self.bytes_sent = 0
        self._tally = threading.local()  # this thread's requests and bytes (batch results)
        self._tally_lock = threading.Lock()
        self._per_issue: dict[str, Any] = {}  # once_per_issue's results, by idempotency key
        self._per_issue_lock = threading.Lock()
        if self.dry_run is not None:
            self.dry_run.answer = self.dry_run_answer
            if settings.api_key:
                self.dry_run.secrets.append(settings.api_key.reveal())
        self._client: httpx.Client | None = None

    # -- vendor specifics ----------------------------------------------------------------
    def endpoint(self) -> str:
        """The API's base URL unless SPARK_MAIL_API_URL replaces it (SES: by region)."""
        return self.default_base_url

    @abc.abstractmethod
    def auth_headers(self) -> dict[str, str]: ...

    @abc.abstractmethod
    def parse_error(self, body: Any) -> tuple[str, str]:
        """(code, message) out of the vendor's error body (any JSON value)."""

    def describe_error(self, response: httpx.Response, body: Any) -> tuple[str, str]:
        """(code, message) of an error answer; most ESPs say it all in the body."""
        return self.parse_error(body) if body is not None else ("", "")

    def dry_run_answer(self, request: httpx.Request, body: Any) -> tuple[int, Any]:
        """What the ESP would plausibly answer (status, JSON), for dry runs."""
        return 200, {"id": f"dry-run-{self.dry_run.count if self.dry_run else 0}"}

    def prepare_batches(self, template: PersonalizedTemplate) -> None:
        _ = self.client  # the TLS context and certificates load once, before the first batch

    # -- the client -----------------------------------------------------------------------
    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            timeout = self.settings.send_timeout
            transport: httpx.BaseTransport = (
                self.dry_run if self.dry_run is not None else DeadlineTransport(self.base_url)
            )
            self._client = httpx.Client(
                base_url=self.base_url + "/",
                timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
                transport=transport,
                headers={**self.auth_headers(), "User-Agent": f"spark-mail/{__version__}"},
                follow_redirects=False,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def mask(self, text: str) -> str:
        return redact(text, [self.settings.api_key])

    def esp_text(self, text: str, limit: int = MESSAGE_LIMIT) -> str:
        """Text an ESP wrote, fit to show or store: the key masked FIRST, then one line cut
        to `limit` (cut first, and an ESP echoing the key near the cut leaks its prefix)."""
        return shorten(self.mask(text), limit)

    def error(self, response: httpx.Response, what: str) -> EspError:
        try:
            body = response.json()
        except ValueError:
            body = None
        code, message = self.describe_error(response, body)
        code = self.esp_text(code or response.reason_phrase.lower().replace(" ", "_"), 60)
        status = response.status_code
        text = f"{self.name}: {status} {code or 'error'}"
        hint = None
        if status in (401, 403):
            hint = "check SPARK_MAIL_API_KEY"
        elif message:
            text += f" ({self.esp_text(message)})"
        if status == 404 and not message:
            hint = "check SPARK_MAIL_API_URL" if self.settings.api_url else None
        return EspError(
            self.esp_text(f"{text} [{what}]", 2 * MESSAGE_LIMIT),
            hint=hint,
            status=status,
            code=code or "error",
        )

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
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> httpx.Response:
        """One API call under the retry rule above; returns a 2xx response or raises.
        `json_bytes`: a body already encoded (batches assembled from fragments), as JSON or
        as `content_type` says (Mailgun's multipart/form-data)."""
        headers = dict(extra_headers or {})
        content = json_bytes
        if json_body is not None:
            # Encoded once for every attempt (a retry carries the same bytes), compactly.
            content = compact_json(json_body).encode()
        if content is not None:
            headers["Content-Type"] = content_type
        if idempotency_key and self.idempotency_header:
            headers[self.idempotency_header] = idempotency_key
        # Repeating is harmless for a read, or when the ESP drops a repeated key.
        repeatable = method == "GET" or bool(idempotency_key and self.idempotency_header)
        attempt = _Attempts(self, method, what, repeatable)
        while True:
            self.limiter.wait()
            self._count(len(content or b""))
            try:
                with deadline(self.settings.send_timeout):
                    response = self.client.request(
                        method, path, content=content, headers=headers, params=params
                    )
            except httpx.HTTPError as exc:
                attempt.transport_failure(exc)
            else:
                if response.status_code < 300:
                    return response
                attempt.answered(response)

    def lookup_status(
        self, path: str, what: str, sent: set[str], not_sent: set[str]
    ) -> DeliveryState:
        """Ask the ESP for a send's `status` (sent / scheduled / not sent / unknown); a 404
        means it never existed or was removed: nothing went out."""
        try:
            response = self.request("GET", path, what)
        except EspError as exc:
            if exc.status == 404:
                return DeliveryState.NOT_SENT
            raise
        status = str(self.json(response, what).get("status") or "")
        if status in sent:
            return DeliveryState.SENT
        if status == "scheduled":
            return DeliveryState.SCHEDULED
        if status in not_sent:
            return DeliveryState.NOT_SENT
        return DeliveryState.UNKNOWN

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

    def once_per_issue(self, email: RenderedEmail, make: Callable[[], T]) -> T:
        """`make()` once per issue (by its idempotency key), however many batch threads ask at
        once: the issue with the ESP's merge tags, a template stored at the ESP. One that
        raises is tried again by the next caller."""
        with self._per_issue_lock:
            if email.idempotency_key not in self._per_issue:
                self._per_issue[email.idempotency_key] = make()
            result: T = self._per_issue[email.idempotency_key]
            return result

    def json(self, response: httpx.Response, what: str, shape: type = dict) -> Any:
        """The answer's JSON, of the `shape` the API documents (dict or list). An answer that
        cannot be read after a request that changes something may hide an ESP that acted:
        `maybe_sent`."""
        try:
            body = response.json()
        except ValueError:
            problem = "is not JSON"
        else:
            if isinstance(body, shape):
                return body
            problem = f"is a JSON {type(body).__name__}, not a JSON {shape.__name__}"
        raise EspError(
            f"{self.name}: the {response.status_code} answer to {what} {problem}",
            hint="check SPARK_MAIL_API_URL points at the API",
            status=response.status_code,
            maybe_sent=response.request.method != "GET",
        )


class _Attempts:
    """The retry rule of one `request` (see the module docstring): decides, after each
    failed attempt, whether to raise or wait and try again."""

    def __init__(self, provider: HttpProvider, method: str, what: str, repeatable: bool) -> None:
        self.provider = provider
        self.method = method
        self.what = what
        self.repeatable = repeatable
        self.started = provider.clock.monotonic()
        self.count = 0
        self.maybe_sent = False  # an earlier attempt may have been acted on

    def transport_failure(self, exc: httpx.HTTPError) -> None:
        name = self.provider.name
        detail = self.provider.esp_text(_describe(exc))
        left = not isinstance(
            exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout
        ) and not isinstance(exc, httpx.UnsupportedProtocol)
        if not left:
            failure = EspError(
                f"{name}: cannot reach {self.provider.base_url} [{self.what}] ({detail})",
                hint="check the network, or SPARK_MAIL_API_URL",
                maybe_sent=self.maybe_sent,
            )
            self.retry_or_raise(failure, None)
            return
        self.maybe_sent = self.maybe_sent or self.method != "GET"
        failure = EspError(
            f"{name}: no answer [{self.what}] ({detail})",
            hint="it may have been sent: spark-mail finds out before sending again",
            maybe_sent=self.maybe_sent,
        )
        if not self.repeatable:
            raise failure from None
        self.retry_or_raise(failure, None)

    def answered(self, response: httpx.Response) -> None:
        status = response.status_code
        failure = self.provider.error(response, self.what)
        if 300 <= status < 400:
            # A redirect is no refusal: a proxy may answer it after forwarding the request.
            failure.hint = "the API answered with a redirect: check SPARK_MAIL_API_URL"
            failure.maybe_sent = self.maybe_sent or self.method != "GET"
            raise failure from None
        if status == 429:
            failure.maybe_sent = self.maybe_sent
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            self.retry_or_raise(failure, retry_after, slow_down=True)
            return
        acted = status >= 500 or (status == 409 and self.repeatable and self.method != "GET")
        if acted and self.method != "GET":
            # A proxy's 502/504, an ESP's 500 after it wrote: it may have acted.
            self.maybe_sent = True
        failure.maybe_sent = self.maybe_sent
        if not acted or not self.repeatable:
            raise failure from None
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        self.retry_or_raise(failure, retry_after)

    def retry_or_raise(
        self, failure: EspError, retry_after: float | None, *, slow_down: bool = False
    ) -> None:
        self.count += 1
        policy = self.provider.retry
        delay = policy.delay(self.count, retry_after)
        if slow_down:
            self.provider.limiter.slow_down(delay)
        spent = self.provider.clock.monotonic() - self.started
        if self.count >= policy.attempts or spent + delay > policy.total_seconds:
            failure.message += f" - gave up after {self.count} attempt{'s' * (self.count > 1)}"
            raise failure from None
        log.warning("%s; retrying in %.1fs (attempt %d)", failure.message, delay, self.count + 1)
        self.provider.clock.sleep(delay)


def _checked_base_url(url: str) -> str:
    """The API's base URL, refused with one line when it cannot be one."""
    base = url.strip().rstrip("/")
    try:
        parsed = httpx.URL(base)
    except (httpx.InvalidURL, ValueError, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(
            f"SPARK_MAIL_API_URL {base!r} is not an http(s) URL",
            hint="use the API's base URL, e.g. https://api.resend.com",
        )
    return base


def _describe(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
