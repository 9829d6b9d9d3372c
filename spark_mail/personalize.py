"""Per-reader copies of an issue, rendered once.

The expensive pipeline (Markdown, Jinja, MJML, CSS inlining) runs once per issue with a
placeholder `reader`: every `reader.first_name`, every per-reader link leaves a marker
such as `spkrdr<nonce>q3x` in the email (letters and digits only, so Jinja's autoescape,
MJML and the inliner (lxml) pass it through untouched, even inside an href). The nonce is a
hash of the issue and the settings, so no issue text can forge a marker (text such as
`spkrdr0x` stays text, and never becomes a reader's value). `prepare()` then cuts the
HTML, the text and the headers at the markers once; `PersonalizedTemplate.copy(reader)`
makes a reader's copy by joining the pieces with that reader's values:

- in HTML, values are HTML-escaped, and URL-quoted too where the marker stands inside a
  URL attribute (href, src, ...);
- in the text part and headers, values are inserted as they are (links: URL-quoted);
- control characters (CR, LF, ...) in a value become spaces, so no value can start a new
  header line; the per-reader List-Unsubscribe header is built from the per-reader URL.

Per-reader links (unsubscribe, poll answers) get `issue=<slug>&email=<address>&token=<t>`
appended, where the token is an HMAC-SHA256 over (issue slug, address, purpose) keyed with
the signing secret (`SPARK_MAIL_SIGNING_SECRET`), so the site receiving the click can check
it with `verify_token` before unsubscribing anyone.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from html import escape as html_escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from spark_mail.audience import AudienceError, Reader, canonical_address
from spark_mail.config import ENV_PREFIX, Secret, Settings
from spark_mail.errors import ConfigError, LayoutError

if TYPE_CHECKING:  # the reader desk checks tokens without the renderer or the issue parser
    from spark_mail.issue import Issue
    from spark_mail.render import RenderedEmail

MARKER = "spkrdr{nonce}q{index}x"
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
URL_ATTRIBUTES = frozenset({"href", "src", "action", "background", "cite", "poster"})
ATTRIBUTE_RE = re.compile(r"""([^\s"'<>/=]+)\s*=\s*("[^"]*"?|'[^']*'?|[^\s"'>]*)""")
URL_SAFE_RE = re.compile(r"[A-Za-z0-9_.~-]*")  # what quote(safe="") leaves as it is
# A plain address: quote(safe="") would only turn its "@" into "%40" (the common case, fast).
PLAIN_ADDRESS_RE = re.compile(r"[A-Za-z0-9_.~-]+@[A-Za-z0-9_.~-]+")
HTML_SPECIAL_RE = re.compile(r"[&<>\"']")  # what html.escape changes
TOKEN_BYTES = 16  # 128-bit tag: 22 URL-safe characters
MIN_SECRET_CHARS = 16
PURPOSES = ("unsubscribe", "poll")
GENERATE_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


# -- signed tokens ---------------------------------------------------------------------


def require_secret(settings: Settings) -> Secret:
    """The signing secret, or a ConfigError saying how to set one."""
    secret = settings.signing_secret
    name = f"{ENV_PREFIX}SIGNING_SECRET"
    if not secret:
        raise ConfigError(
            f"per-reader links need a signing secret and {name} is not set",
            hint=f"add {name}=... to .env (make one with: {GENERATE_SECRET})",
        )
    if len(secret.reveal()) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"{name} is too short (fewer than {MIN_SECRET_CHARS} characters): "
            "tokens signed with it could be guessed",
            hint=f"make a longer one with: {GENERATE_SECRET}",
        )
    return secret


class TokenSigner:
    """Signs one issue's tokens: the key and the message prefix are prepared once, since a
    send signs two tokens for every reader."""

    __slots__ = ("_key", "_prefix")

    def __init__(self, secret: Secret, slug: str) -> None:
        self._key = secret.reveal().encode()
        self._prefix = f"spark-mail/1\0{slug}\0"

    def __repr__(self) -> str:
        return "TokenSigner(********)"

    def __call__(self, email: str, purpose: str) -> str:
        """URL-safe HMAC-SHA256 tag over (issue slug, canonical address, purpose)."""
        return self.sign_canonical(canonical_address(email), purpose)

    def sign_canonical(self, canonical: str, purpose: str) -> str:
        """The tag for an address already in its canonical spelling (a reader's copy signs
        two tokens: the address is made canonical once)."""
        message = f"{self._prefix}{canonical}\0{purpose}".encode()
        tag = hmac.digest(self._key, message, "sha256")[:TOKEN_BYTES]
        return base64.urlsafe_b64encode(tag).rstrip(b"=").decode()


def sign_token(secret: Secret, slug: str, email: str, purpose: str) -> str:
    """URL-safe HMAC-SHA256 tag over (issue slug, canonical address, purpose)."""
    return TokenSigner(secret, slug)(email, purpose)


def verify_token(secret: Secret, slug: str, email: str, purpose: str, token: str) -> bool:
    """True when `token` was signed for exactly this issue, address and purpose."""
    if not secret:
        return False
    # Constant time; as bytes, since compare_digest refuses str with non-ASCII characters.
    expected = sign_token(secret, slug, email, purpose).encode()
    return hmac.compare_digest(expected, token.encode("utf-8", "surrogatepass"))


def reader_link(url: str, slug: str, email: str, token: str) -> str:
    """`url` with the reader's query appended (before any #fragment)."""
    parts = urlsplit(url)
    own = f"issue={quote(slug, safe='')}&email={email}&token={token}"
    query = f"{parts.query}&{own}" if parts.query else own
    return urlunsplit(parts._replace(query=query))


# -- the placeholder reader used for the one render -------------------------------------


@dataclass(frozen=True)
class Slot:
    """What one marker stands for: a reader column (with the layout's default), or a
    signed token for a purpose. `quote`: always URL-quote the value (it sits in a link)."""

    kind: str  # "field" or "token"
    name: str  # column name, or the token's purpose
    default: str = ""
    quote: bool = False


class Marker(str):
    """A marker in the rendered layout; `| default(x)` asks for a slot with default x."""

    placeholder: ReaderPlaceholder
    slot: Slot

    def __jinja_default__(self, default_value: Any, boolean: bool = False) -> str:
        # An empty column counts as missing, with or without `boolean`.
        slot = dataclasses.replace(self.slot, default=str(default_value))
        return self.placeholder.marker(slot)


class ReaderPlaceholder:
    """The `reader` for the render that all copies share (see render.ReaderSource).
    `nonce`: part of every marker, so that only this render's markers are read as such."""

    def __init__(self, slug: str, nonce: str = "") -> None:
        self.slug = slug
        self.nonce = nonce
        self.slots: list[Slot] = []
        self._index: dict[Slot, int] = {}
        self.markers = re.compile(MARKER.format(nonce=nonce, index=r"(\d+)"))
        # a marker a filter has mangled (`| upper`): the nonce in any case
        self.mangled = re.compile(f"spkrdr{nonce}", re.I)

    def marker(self, slot: Slot) -> Marker:
        if slot not in self._index:
            self._index[slot] = len(self.slots)
            self.slots.append(slot)
        marker = Marker(MARKER.format(nonce=self.nonce, index=self._index[slot]))
        marker.placeholder, marker.slot = self, slot
        return marker

    def field(self, name: str) -> Marker:
        return self.marker(Slot("field", name))

    def link(self, url: str, purpose: str) -> str:
        if not url or url.startswith("#"):
            return url  # no page to carry the reader's token to
        email = self.marker(Slot("field", "email", quote=True))
        token = self.marker(Slot("token", purpose))
        return reader_link(url, self.slug, email, token)


# -- cutting the built email at the markers ----------------------------------------------


@dataclass(frozen=True)
class _Cut:
    """A text cut at its markers, as [piece, value, piece, value, ..., piece] with the
    values left empty; `uses[i]` numbers the rendered value that fills the i-th gap."""

    layout: tuple[str, ...]
    uses: tuple[int, ...]

    def join(self, values: list[str]) -> str:
        if not self.uses:
            return self.layout[0]
        out = list(self.layout)
        out[1::2] = [values[i] for i in self.uses]
        return "".join(out)

    def merge(self, tag: Callable[[int], str], static: Callable[[str], str]) -> str:
        """The text for an ESP's merge: gap i becomes `tag(number of its value)`, and each
        static piece goes through `static` (escaping what the ESP would read as a tag)."""
        out = [static(piece) for piece in self.layout]
        out[1::2] = [tag(i) for i in self.uses]
        return "".join(out)


def _in_url_attribute(html: str, position: int) -> bool | None:
    """True: the position is inside a URL attribute's value; False: inside another
    attribute; None: in text."""
    tag_start = html.rfind("<", 0, position)
    if tag_start < 0 or html.rfind(">", 0, position) > tag_start:
        return None
    open_attribute = None
    for match in ATTRIBUTE_RE.finditer(html, tag_start + 1, position):
        value = match.group(2)
        closed = len(value) >= 2 and value[0] in "\"'" and value[-1] == value[0]
        if match.end() == position and not closed:
            open_attribute = match.group(1).lower()
    return open_attribute in URL_ATTRIBUTES if open_attribute else False


class _Renderings:
    """The distinct (slot, escaping) combinations of a template, numbered."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, bool, bool]] = []  # (slot index, html-escape, url-quote)
        self._numbers: dict[tuple[int, bool, bool], int] = {}

    def number(self, key: tuple[int, bool, bool]) -> int:
        if key not in self._numbers:
            self._numbers[key] = len(self.keys)
            self.keys.append(key)
        return self._numbers[key]

    def cut(self, text: str, slots: list[Slot], html: bool, markers: re.Pattern[str]) -> _Cut:
        pieces: list[str] = []
        uses: list[int] = []
        last = 0
        for match in markers.finditer(text):
            index = int(match.group(1))
            if index >= len(slots):
                raise LayoutError(f"unexpected per-reader marker {match.group()!r} in the email")
            url = slots[index].quote
            if html and not url:
                url = bool(_in_url_attribute(text, match.start()))
            pieces += (text[last : match.start()], "")
            uses.append(self.number((index, html, url)))
            last = match.end()
        pieces.append(text[last:])
        return _Cut(tuple(pieces), tuple(uses))


@dataclass(frozen=True)
class ReaderCopy:
    """One reader's email: the address and the parts that differ from reader to reader."""

    to: str
    html: str
    text: str
    headers: dict[str, str]

    def email(self, base: RenderedEmail) -> RenderedEmail:
        """The issue as this reader gets it (for providers that take a RenderedEmail)."""
        return dataclasses.replace(base, html=self.html, text=self.text, headers=self.headers)

    def to_mime(self, base: RenderedEmail) -> EmailMessage:
        return self.email(base).to_mime(to=self.to)


def clean_value(value: str) -> str:
    """A reader value fit for any part: control characters (CR, LF, ...) become spaces."""
    if value.isprintable():
        return value.strip()
    return CONTROL_RE.sub(" ", value).strip()


class PersonalizedTemplate:
    """A built issue cut at its per-reader markers; `copy(reader)` is cheap."""

    def __init__(
        self,
        email: RenderedEmail,
        slots: list[Slot],
        secret: Secret | None,
        markers: re.Pattern[str],
    ) -> None:
        self.email = email  # the built email, markers and all
        self.slots = tuple(slots)
        self.markers = markers
        self._signer = None if secret is None else TokenSigner(secret, email.slug)
        renderings = _Renderings()
        self._html = renderings.cut(email.html, slots, True, markers)
        self._text = renderings.cut(email.text, slots, False, markers)
        self._headers = {
            k: renderings.cut(v, slots, False, markers) for k, v in email.headers.items()
        }
        self._keys = tuple(renderings.keys)
        self._static_headers = not any(cut.uses for cut in self._headers.values())

    @property
    def personalized(self) -> bool:
        return bool(self._keys)

    def uses_slot(self, kind: str, name: str) -> bool:
        """Whether the HTML part shows a marker of this slot."""
        slots = (self.slots[self._keys[use][0]] for use in self._html.uses)
        return any(slot.kind == kind and slot.name == name for slot in slots)

    def values_for(self, reader: Reader) -> list[str]:
        """This reader's value for every slot, cleaned (not escaped yet)."""
        email = reader.email
        if not email.isprintable() or "@" not in email:
            raise AudienceError(
                f"line {reader.line}: the address {email!r} is not a single printable address",
                hint="fix the row in the subscribers file",
            )
        fields: Mapping[str, str] = reader.fields
        values: list[str] = []
        canonical = None
        for slot in self.slots:
            if slot.kind == "token":
                assert self._signer is not None  # prepare() refused a template without one
                if canonical is None:
                    canonical = canonical_address(email)
                values.append(self._signer.sign_canonical(canonical, slot.name))
            elif slot.name == "email":
                values.append(email)
            else:
                value = clean_value(fields.get(slot.name) or "")
                values.append(value or slot.default)
        return values

    def rendered_values(self, reader: Reader) -> list[str]:
        """This reader's values, escaped for each place they go (HTML, URL, plain)."""
        raw = self.values_for(reader)
        rendered = []
        quoted: dict[int, str] = {}  # a slot often sits in several links: quote it once
        for slot_index, in_html, url in self._keys:
            value = raw[slot_index]
            if url:
                if slot_index not in quoted:
                    if URL_SAFE_RE.fullmatch(value):  # tokens: nothing to quote
                        quoted[slot_index] = value
                    elif PLAIN_ADDRESS_RE.fullmatch(value):
                        quoted[slot_index] = value.replace("@", "%40")
                    else:
                        quoted[slot_index] = quote(value, safe="")
                value = quoted[slot_index]  # quoting leaves nothing HTML would read
            elif in_html and HTML_SPECIAL_RE.search(value):
                value = html_escape(value)
            rendered.append(value)
        return rendered

    def headers_for(self, rendered: list[str]) -> dict[str, str]:
        """The headers with these rendered values (shared when no header is per-reader)."""
        if self._static_headers:
            return self.email.headers
        return {k: cut.join(rendered) for k, cut in self._headers.items()}

    def merge_layout(
        self, tag: Callable[[int], str], static: Callable[[str], str]
    ) -> tuple[str, str]:
        """(HTML, text) with merge tags where each reader's values go (see _Cut.merge): the
        ESP fills tag n with `rendered_values(reader)[n]`, already escaped for its place."""
        return self._html.merge(tag, static), self._text.merge(tag, static)

    def merge_headers(
        self, tag: Callable[[int], str], static: Callable[[str], str]
    ) -> dict[str, str]:
        """The headers for an ESP's merge, like `merge_layout` (Mailgun, SendGrid)."""
        return {k: cut.merge(tag, static) for k, cut in self._headers.items()}

    @property
    def value_count(self) -> int:
        """How many values `rendered_values` gives each reader (the merge tags' numbers)."""
        return len(self._keys)

    def copy(self, reader: Reader) -> ReaderCopy:
        rendered = self.rendered_values(reader)
        return ReaderCopy(
            to=reader.email,
            html=self._html.join(rendered),
            text=self._text.join(rendered),
            headers=self.headers_for(rendered),
        )


def prepare(issue: Issue | Path | str, settings: Settings) -> PersonalizedTemplate:
    """Render an issue once for personalised sending.

    Raises ConfigError when per-reader links need a signing secret that is missing, and
    LayoutError when the layout gives readers no per-reader unsubscribe link or applies a
    filter other than `default` to a reader field (the filter would mangle the marker).
    """
    from spark_mail.issue import Issue, load_issue
    from spark_mail.render import render_issue
    from spark_mail.render.inline import content_nonce

    if not isinstance(issue, Issue):
        issue = load_issue(issue)
    # The nonce hashes everything the issue's text and the settings put in the email.
    placeholder = ReaderPlaceholder(issue.slug, content_nonce(f"{issue!r}\0{settings!r}"))
    email = render_issue(issue, settings, reader=placeholder)
    layout_file = f"layout {issue.layout!r}"
    for part in (email.html, email.text):
        clean = placeholder.markers.sub("", part)
        if placeholder.mangled.search(clean):
            raise LayoutError(
                f"{layout_file}: a reader field passes through a filter other than `default`",
                hint='write {{ reader.first_name | default("there") }} and style it with CSS',
            )
    needs_secret = any(slot.kind == "token" for slot in placeholder.slots)
    secret = require_secret(settings) if needs_secret else None
    template = PersonalizedTemplate(email, placeholder.slots, secret, placeholder.markers)
    if settings.unsubscribe_url and not template.uses_slot("token", "unsubscribe"):
        raise LayoutError(
            f"{layout_file}: the email has no per-reader unsubscribe link",
            hint="link to {{ reader.unsubscribe_url }} in the footer "
            "(newsletter.unsubscribe_url is the same link for everyone)",
        )
    return template
