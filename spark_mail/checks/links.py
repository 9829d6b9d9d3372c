"""Concurrent link checking with a cache, for `spark-mail check`.

- httpx.AsyncClient; at most MAX_CONNECTIONS requests at once and PER_HOST to one host, so a
  newsletter with 30 links to its own site does not hammer it; every request has the
  `link_timeout` setting as its timeout.
- HEAD first (cheap); when HEAD fails with a status >= 400 or a protocol error (many servers
  answer HEAD with 405/501/404 or hang up), GET, streamed: only the headers are read.
  A timeout or a refused connection is not retried with GET: it would only double the wait.
- Redirects are followed (up to MAX_REDIRECTS) and reported: final URL and redirect count.
- 401/403/429/999 (sites that refuse robots, e.g. LinkedIn) are "unverified", not broken:
  a warning asks the editor to open them by hand.
- Successes are cached in `<state_dir>/links.json` for `link_cache_hours`; failures are never
  cached, so a fixed link is seen at once and a passing network hiccup does not stick.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from spark_mail import __version__
from spark_mail.checks.report import Finding, Severity
from spark_mail.config import Settings

if TYPE_CHECKING:
    import httpx

MAX_CONNECTIONS = 64
PER_HOST = 16
MAX_REDIRECTS = 10
BLOCKED_STATUSES = {401, 403, 429, 999}
CACHE_FILE = "links.json"
CACHE_VERSION = 1
IMAGE_MAX_BYTES = 1024 * 1024
USER_AGENT = f"Mozilla/5.0 (compatible; spark-mail/{__version__} link check)"


@dataclass(frozen=True)
class LinkResult:
    url: str
    kind: str = "link"  # "link" | "image"
    ok: bool = False
    status: int | None = None
    reason: str = ""
    final_url: str = ""  # where the redirects ended; "" when there were none
    redirects: int = 0
    size: int | None = None  # Content-Length, when the server sent one
    error: str = ""  # why there is no answer: timeout, refused, ...
    unreachable: bool = False  # could not connect at all (DNS, refused, no network)
    blocked: bool = False  # the site refuses automated checks (401/403/429/999)
    method: str = "HEAD"
    cached: bool = False
    checked_at: float = 0.0

    @property
    def problem(self) -> str:
        if self.error:
            return self.error
        if self.status is not None:
            return f"HTTP {self.status} {self.reason}".strip()
        return ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["problem"] = self.problem
        return data


# -- the cache -------------------------------------------------------------------------------


class LinkCache:
    """URL -> last successful result, in one JSON file, valid for `max_age` seconds."""

    def __init__(self, path: Path, max_age: float) -> None:
        self.path = path
        self.max_age = max_age
        self.entries: dict[str, dict[str, Any]] = {}
        self.dirty = False

    def load(self) -> LinkCache:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return self  # no cache yet, or a broken one: it is only a cache, start over
        if isinstance(data, dict) and data.get("version") == CACHE_VERSION:
            links = data.get("links")
            if isinstance(links, dict):
                self.entries = {k: v for k, v in links.items() if isinstance(v, dict)}
        return self

    def get(self, url: str, now: float) -> LinkResult | None:
        entry = self.entries.get(url)
        if entry is None or not 0 <= now - float(entry.get("checked_at", 0)) < self.max_age:
            return None
        known = LinkResult.__dataclass_fields__
        fields = {k: v for k, v in entry.items() if k in known and k not in ("url", "cached")}
        try:
            return LinkResult(url=url, cached=True, **fields)
        except TypeError:  # an entry from another version: check the link again
            return None

    def put(self, result: LinkResult) -> None:
        if result.ok and not result.blocked and self.max_age > 0:
            entry = {k: v for k, v in asdict(result).items() if k not in ("url", "cached", "kind")}
            self.entries[result.url] = entry
            self.dirty = True

    def save(self, now: float) -> None:
        if not self.dirty:
            return
        from spark_mail.files import write_atomic

        fresh = {
            url: e
            for url, e in self.entries.items()
            if now - float(e.get("checked_at", 0)) < self.max_age
        }
        payload = {"version": CACHE_VERSION, "links": fresh}
        write_atomic(self.path, json.dumps(payload, indent=1, sort_keys=True))
        self.dirty = False


# -- checking -------------------------------------------------------------------------------


class _Limits:
    """A global and a per-host concurrency limit (httpx's pool only knows the global one)."""

    def __init__(self, total: int, per_host: int) -> None:
        self.total = asyncio.Semaphore(total)
        self.per_host_limit = per_host
        self.hosts: dict[str, asyncio.Semaphore] = {}

    def host(self, url: str) -> asyncio.Semaphore:
        key = (urlsplit(url).hostname or "").lower()
        if key not in self.hosts:
            self.hosts[key] = asyncio.Semaphore(self.per_host_limit)
        return self.hosts[key]


def _from_response(url: str, kind: str, response: httpx.Response, method: str) -> LinkResult:
    status = response.status_code
    length = response.headers.get("content-length", "")
    return LinkResult(
        url=url,
        kind=kind,
        ok=status < 400 or status in BLOCKED_STATUSES,
        status=status,
        reason=response.reason_phrase,
        final_url=str(response.url) if response.history else "",
        redirects=len(response.history),
        size=int(length) if length.isdigit() else None,
        blocked=status in BLOCKED_STATUSES,
        method=method,
        checked_at=time.time(),
    )


def _from_error(url: str, kind: str, exc: Exception, method: str, timeout: float) -> LinkResult:
    import httpx

    unreachable = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
    if isinstance(exc, httpx.TimeoutException):
        error = f"no answer within {timeout:g} s (timeout)"
    elif isinstance(exc, httpx.TooManyRedirects):
        error = f"more than {MAX_REDIRECTS} redirects"
    elif isinstance(exc, httpx.ConnectError):
        error = f"cannot connect: {exc}" if str(exc) else "cannot connect"
    else:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return LinkResult(
        url=url, kind=kind, error=error, unreachable=unreachable, method=method,
        checked_at=time.time(),
    )  # fmt: skip


async def _check_one(
    client: httpx.AsyncClient, limits: _Limits, url: str, kind: str, timeout: float
) -> LinkResult:
    import httpx

    async with limits.host(url), limits.total:
        try:
            head = await client.head(url)
        except (httpx.TimeoutException, httpx.ConnectError, httpx.TooManyRedirects) as exc:
            return _from_error(url, kind, exc, "HEAD", timeout)
        except (httpx.HTTPError, ValueError):  # protocol errors: GET may still work
            head = None
        if head is not None and head.status_code < 400:
            return _from_response(url, kind, head, "HEAD")
        try:
            async with client.stream("GET", url) as got:  # headers only, body never read
                return _from_response(url, kind, got, "GET")
        except (httpx.HTTPError, ValueError) as exc:
            if head is not None:
                return _from_response(url, kind, head, "HEAD")
            return _from_error(url, kind, exc, "GET", timeout)


async def check_links_async(
    targets: Mapping[str, str],
    timeout: float,
    *,
    max_connections: int = MAX_CONNECTIONS,
    per_host: int = PER_HOST,
) -> list[LinkResult]:
    """Check every URL (url -> kind) now, concurrently; no cache. Results in input order."""
    import httpx

    from spark_mail.tls import https_context

    if not targets:
        return []
    limits = _Limits(max_connections, per_host)
    async with httpx.AsyncClient(
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        timeout=httpx.Timeout(timeout, pool=None),  # waiting for a slot is not a timeout
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=16),
        headers={"User-Agent": USER_AGENT, "Accept": "*/*"},
        trust_env=False,  # the same answer on every machine; no proxy surprises
        verify=https_context(),
    ) as client:
        return list(
            await asyncio.gather(
                *(_check_one(client, limits, url, kind, timeout) for url, kind in targets.items())
            )
        )


def check_links(
    targets: Mapping[str, str],
    settings: Settings,
    *,
    now: float | None = None,
    max_connections: int = MAX_CONNECTIONS,
    per_host: int = PER_HOST,
) -> list[LinkResult]:
    """Check links (url -> "link" | "image"), answering from the cache where it is fresh."""
    now = time.time() if now is None else now
    cache = LinkCache(settings.state_path / CACHE_FILE, settings.link_cache_hours * 3600).load()
    results: dict[str, LinkResult] = {}
    todo: dict[str, str] = {}
    for url, kind in targets.items():
        hit = cache.get(url, now)
        if hit is None:
            todo[url] = kind
        else:
            results[url] = replace(hit, kind=kind)
    if todo:
        fresh = asyncio.run(
            check_links_async(
                todo, settings.link_timeout, max_connections=max_connections, per_host=per_host
            )
        )
        for result in fresh:
            results[result.url] = result
            cache.put(replace(result, checked_at=now))
        cache.save(now)
    return [results[url] for url in targets]


def link_findings(results: list[LinkResult]) -> list[Finding]:
    """Broken links (errors) and heavy images (warnings) from a link check."""
    findings: list[Finding] = []
    failed = [r for r in results if not r.ok]
    fresh = [r for r in results if not r.cached]
    if len(fresh) > 1 and all(r.unreachable for r in fresh):
        # The network is down (or DNS is): one line, not one per link.
        return [
            Finding(
                "links.unreachable",
                Severity.ERROR,
                f"could not reach any of the {len(fresh)} links checked ({fresh[0].problem}): "
                "is the network down?",
                "connect, or run with --no-links to check offline",
            )
        ]
    for r in failed:
        findings.append(
            Finding(
                "links.broken",
                Severity.ERROR,
                f"broken {r.kind}: {r.url} ({r.problem})",
                "fix or remove the URL",
            )
        )
    for r in results:
        if r.blocked:
            findings.append(
                Finding(
                    "links.unverified",
                    Severity.WARNING,
                    f"{r.url} refused an automated check ({r.problem})",
                    "open it in a browser to make sure it works",
                )
            )
        elif r.ok and r.kind == "image" and r.size is not None and r.size > IMAGE_MAX_BYTES:
            findings.append(
                Finding(
                    "image.heavy",
                    Severity.WARNING,
                    f"image {r.url} is {r.size / 1024 / 1024:.1f} MB; it loads slowly on phones",
                    "resize or compress it to a few hundred KB",
                )
            )
    return findings
