"""The links in an email, seen from the desk: which routes they are, and who clicked.

Routes follow from the PATH of the configured `unsubscribe_url` and `poll_url` (their
`{slug}`, `{option}` and `{index}` may sit in the path or the query), so a newsletter whose
emails already went out with `https://example.com/poll/{slug}?answer={index}` keeps working.

Who clicked:
- own-list copies carry `issue=<slug>&email=<address>&token=<t>` (spark_mail.personalize):
  the token is checked with `verify_token` (HMAC-SHA256, compared in constant time);
- the one email an ESP sends its own list carries the issue's signed link
  (`issue=<slug>&token=<issue token>`), which `IssueLinks` adds when the email is built, plus
  `reader=<the ESP's subscriber id>` where the `poll_reader_tag` setting names the ESP's
  merge tag. Without an id the client address stands in for the reader.

Votes are stored under a pseudonymous voter id (an HMAC of who clicked), never the address.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from spark_mail.config import Secret, Settings
from spark_mail.personalize import MIN_SECRET_CHARS, TokenSigner, verify_token

PLACEHOLDERS = ("slug", "option", "index")
DEFAULT_UNSUBSCRIBE_PATH = "/unsubscribe"
DEFAULT_POLL_PATH = "/poll/{slug}"
DEFAULT_POLL_QUERY = {"answer": "index"}
RESULTS_PATH = "/poll/{slug}/results"  # what the web archive links to (read-only)
ISSUE_PURPOSE = "poll-issue"  # the issue-wide token of ESP-list poll links
CSRF_SECONDS = 24 * 3600  # how long a confirm page's form stays good
MAX_READER_ID = 200
UNFILLED_TAG_RE = re.compile(r"\{\{|\{%|\*\||%recipient|<%")  # a merge tag the ESP left
SLUG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


@dataclass(frozen=True)
class PageRoute:
    """A page of the desk: the Starlette path and which query names carry placeholders."""

    path: str
    query: Mapping[str, str]  # query name -> "slug" / "option" / "index"


def page_route(url: str, default_path: str, default_query: Mapping[str, str]) -> PageRoute:
    """The route a configured URL points at (its path and placeholder query names)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return PageRoute(default_path, dict(default_query))  # a merge tag, or nothing set
    path = parts.path or "/"
    for brace in re.findall(r"\{[^}]*\}", path):
        if brace[1:-1] not in PLACEHOLDERS:
            path = path.replace(brace, quote(brace, safe=""))  # literal text, not a parameter
    query = {
        name: value[1:-1]
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
        if value[1:-1] in PLACEHOLDERS and value.startswith("{") and value.endswith("}")
    }
    return PageRoute(path, query)


def site_path(settings: Settings) -> str:
    """Where the site's root is on its host: "" for https://host, "/letters" for
    https://host/letters (the web archive's pages and the poll results live under it)."""
    return unquote(urlsplit(settings.site_url).path).rstrip("/") if settings.site_url else ""


def unsubscribe_route(settings: Settings) -> PageRoute:
    return page_route(settings.unsubscribe_url, DEFAULT_UNSUBSCRIBE_PATH, {})


def poll_route(settings: Settings) -> PageRoute:
    return page_route(settings.poll_url, DEFAULT_POLL_PATH, DEFAULT_POLL_QUERY)


def allowed_hosts(settings: Settings) -> set[str]:
    """Host names the desk answers to: those of its public URLs, the `desk_hosts` setting,
    and this machine's own names (health checks, a proxy passing its own Host)."""
    hosts = {"127.0.0.1", "localhost", "[::1]"}
    urls = (settings.site_url, settings.unsubscribe_url, settings.poll_url, settings.base_url)
    names = [urlsplit(url).hostname or "" for url in urls] + list(settings.desk_hosts)
    for host in (name.strip() for name in names):
        if host and "{" not in host:
            hosts.add(host.lower())
            hosts.add(dns_name(host))  # what browsers send for a unicode host
    return hosts


def dns_name(host: str) -> str:
    """A host name as DNS and the Host header spell it (`bücher.example` is
    `xn--bcher-kva.example`); the name itself where IDNA cannot encode it."""
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return host.lower()


def placeholder_values(
    route: PageRoute, path_params: Mapping[str, Any], query: Mapping[str, str]
) -> dict[str, str]:
    """The slug / option / index a request carries, from its path or its query."""
    values = {k: str(v) for k, v in path_params.items() if k in PLACEHOLDERS}
    for name, placeholder in route.query.items():
        if name in query and placeholder not in values:
            values[placeholder] = query[name]
    return values


# -- signing ---------------------------------------------------------------------------


def _tag(key: bytes, message: str, size: int = 16) -> str:
    digest = hmac.digest(key, message.encode(), "sha256")[:size]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def same(a: str, b: str) -> bool:
    """Constant-time comparison that accepts any text (non-ASCII never matches a tag)."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode())


def issue_token(secret: Secret, slug: str) -> str:
    """The token of an issue's generic poll links (not tied to a reader)."""
    return TokenSigner(secret, slug)("", ISSUE_PURPOSE)


def reader_token_ok(secret: Secret, slug: str, email: str, purpose: str, token: str) -> bool:
    return verify_token(secret, slug, email, purpose, token)


def issue_token_ok(secret: Secret, slug: str, token: str) -> bool:
    return bool(secret) and same(token, issue_token(secret, slug))


class Keys:
    """The desk's derived keys: voter ids and CSRF tokens (both from the signing secret)."""

    def __init__(self, secret: Secret) -> None:
        self.secret = secret
        self._key = secret.reveal().encode()

    def __repr__(self) -> str:
        return "Keys(********)"

    def voter(self, kind: str, value: str) -> str:
        """A pseudonymous voter id: the same reader always gets the same one."""
        tag = _tag(self._key, "\0".join(("spark-mail/voter", kind, value)), 12)
        return f"{kind}-{tag}"

    def csrf(self, action: str, subject: str, now: float) -> str:
        stamp = str(int(now))
        tag = _tag(self._key, "\0".join(("spark-mail/csrf", stamp, action, subject)))
        return f"{stamp}.{tag}"

    def csrf_ok(self, token: str, action: str, subject: str, now: float) -> bool | None:
        """True: good; False: forged or for something else; None: good but expired."""
        stamp, _, _tag_part = token.partition(".")
        if not plain_number(stamp, 12):
            return False
        if not same(token, self.csrf(action, subject, float(stamp))):
            return False
        return True if 0 <= now - int(stamp) <= CSRF_SECONDS else None


def plain_number(text: str, digits: int) -> bool:
    """Whether `text` is 1 to `digits` ASCII digits (str.isdigit also takes `²` and `١`,
    which int() refuses or reads as another number)."""
    return 0 < len(text) <= digits and text.isascii() and text.isdigit()


def reader_id(value: str | None) -> str:
    """The ESP's subscriber id from a link, or "" when absent or never filled in."""
    if not value or len(value) > MAX_READER_ID or UNFILLED_TAG_RE.search(value):
        return ""
    return value.strip() if value.isprintable() else ""


def masked(address: str) -> str:
    """`an•••@example.com`: enough for a reader to recognise, little for a shoulder."""
    local, _, domain = address.rpartition("@")
    shown = local[:2] if len(local) > 3 else local[:1]
    return f"{shown}•••@{domain}"


# -- the generic email's poll links (an ESP's own list) ----------------------------------


def append_query(url: str, extra: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


class IssueLinks:
    """The `reader` of the one email an ESP sends to its own list (a render.ReaderSource):
    poll links get the issue's signed token and, with `poll_reader_tag` set, the ESP's
    subscriber-id merge tag; everything else stays as it is (the ESP unsubscribes)."""

    def __init__(self, settings: Settings, slug: str) -> None:
        self.slug = slug
        token = issue_token(settings.signing_secret, slug)
        self._query = f"issue={quote(slug, safe='')}&token={token}"
        if settings.poll_reader_tag:
            self._query += f"&reader={settings.poll_reader_tag}"

    def field(self, name: str) -> Any:
        import jinja2

        return jinja2.Undefined(name=f"reader.{name}")

    def link(self, url: str, purpose: str) -> str:
        if purpose != "poll" or not url or url.startswith("#"):
            return url
        return append_query(url, self._query)


def generic_reader(settings: Settings, slug: str) -> IssueLinks | None:
    """IssueLinks when the newsletter signs its links (a signing secret is set), else None."""
    secret = settings.signing_secret
    if not secret or len(secret.reveal()) < MIN_SECRET_CHARS:
        return None
    return IssueLinks(settings, slug)
