"""An issue file: YAML front matter + Markdown body, loaded into a validated Issue.

Every problem is reported as one IssueError naming the file and, where known, the line:
one broken file must never stop `dispatch` or `list` from handling the others. So the
front matter is bounded before and while YAML reads it (its size, its nesting, no anchors
or aliases, no absurd numbers), text fields are checked for what cannot be shown or put in
a header (control characters, line separators, lone surrogates), only regular files are
read, and the file name must make a safe slug (`slug_of`, the one rule for slugs).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from spark_mail.errors import IssueError
from spark_mail.files import read_issue_file
from spark_mail.front_matter import key_lines, read_front_matter, split_front_matter
from spark_mail.safe_text import describe, forbidden_character

__all__ = ["Issue", "Poll", "Promo", "Share", "load_issue", "parse_issue", "slug_of", "slugify"]

POLL_MIN_OPTIONS, POLL_MAX_OPTIONS = 2, 5
SLUG_RE = re.compile(r"[^a-z0-9]+")
# Limits that keep one absurd file from stalling or crashing a whole run (and
# files.MAX_ISSUE_BYTES).
NUMBER_RANGE = (0, 10**9)
SEND_AT_YEARS = (1900, 9998)
# A slug names a folder (dist/<slug>/), a lock file, a ledger row, URLs and ESP headers:
# one safe path segment, ASCII so every header and URL can carry it as it is.
SAFE_SLUG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,119}")


@dataclass(frozen=True)
class Promo:
    title: str
    body: str = ""  # Markdown
    label: str = "PROMO CONTENT"
    image: str = ""
    image_alt: str = ""
    cta_text: str = ""
    cta_url: str = ""


@dataclass(frozen=True)
class Poll:
    question: str
    options: tuple[str, ...]


@dataclass(frozen=True)
class Share:
    text: str = ""  # empty: the newsletter's share_text setting


@dataclass(frozen=True)
class Issue:
    path: Path
    slug: str
    title: str
    date: dt.date
    body: str  # Markdown, with ::: sponsor containers
    body_line: int  # line of the file where the body starts (for error messages)
    subtitle: str = ""
    subject: str = ""
    preheader: str = ""
    number: int | None = None
    send_at: dt.datetime | None = None  # may be naive: then read in the newsletter's timezone
    layout: str = "default"
    layout_line: int | None = None  # the `layout:` line, for a layout error
    tags: tuple[str, ...] = ()
    promo: Promo | None = None
    poll: Poll | None = None
    share: Share = field(default_factory=Share)

    @property
    def effective_subject(self) -> str:
        return self.subject or self.title


def slugify(text: str) -> str:
    """A slug made from a title: lower-case ASCII words joined by '-', at most 80 characters
    (a date prefix and all still fits the slug rule's 120). Accents are dropped, not the
    letters they sit on: "Über Café" -> "uber-cafe"."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return SLUG_RE.sub("-", ascii_text.lower()).strip("-")[:80].strip("-") or "issue"


def slug_problem(slug: str) -> str | None:
    """Why `slug` cannot be an issue's slug, or None: THE rule for slugs. A slug must be one
    safe path segment (`..` would make dist/<slug>/ the newsletter's root)."""
    if SAFE_SLUG_RE.fullmatch(slug):
        return None
    if not slug:
        return "an issue file needs a name before '.md'"
    if slug[0] in ".-":
        return f"an issue name may not start with {slug[0]!r}"
    if len(slug) > 120:
        return "an issue name is at most 120 characters"
    return "an issue name may only use the letters A-Z and a-z, digits, '-', '_' and '.'"


def slug_of(path: Path) -> str:
    """The slug of an issue file (its name without `.md`), refused when unsafe."""
    slug = path.stem if path.suffix == ".md" else path.name
    problem = slug_problem(slug)
    if problem is not None:
        suggestion = slugify(slug)
        raise IssueError(
            path,
            f"cannot be an issue: {problem} (name {slug!r})",
            hint=f"rename the file, e.g. to {suggestion}.md",
        )
    return slug


# -- parsing -------------------------------------------------------------------


class _Fields:
    """Typed access to the front matter, with errors that carry the key's line."""

    def __init__(self, path: Path, data: dict[str, Any], lines: dict[tuple[str, ...], int]):
        self.path, self.data, self.lines = path, data, lines

    def line(self, key: tuple[str, ...]) -> int | None:
        """The file's line of a front matter key (after the opening '---')."""
        line = self.lines.get(key)
        return None if line is None else line + 2

    def fail(self, key: tuple[str, ...], message: str, hint: str | None = None) -> IssueError:
        return IssueError(self.path, message, line=self.line(key), hint=hint)

    def text(
        self,
        table: dict[str, Any],
        key: tuple[str, ...],
        default: str = "",
        *,
        multiline: bool = False,
    ) -> str:
        value = table.get(key[-1], default)
        if value is None:
            return default
        return self.checked(key, value, multiline=multiline)

    def checked(self, key: tuple[str, ...], value: Any, *, multiline: bool = False) -> str:
        """`value` as text fit for its place: a single line (headers, titles, links) has no
        control character or line separator; no text has a lone surrogate."""
        name = ".".join(key)
        if isinstance(value, dict | list):
            raise self.fail(key, f"{name!r} must be text", "write it as a plain string")
        text = str(value) if multiline else str(value).strip()
        bad = forbidden_character(text, multiline=multiline)
        if bad:
            where = "text" if multiline else "a header or a single line"
            raise self.fail(
                key,
                f"{name!r} contains {describe(bad)}, which {where} cannot carry ({text[:40]!r})",
                "remove it" if multiline else "remove it (write it on one line)",
            )
        return text


KNOWN_KEYS = {
    "title", "date", "subtitle", "subject", "preheader", "number", "send_at", "layout", "tags",
    "promo", "poll", "share",
}  # fmt: skip
LINK_SCHEMES = frozenset({"https", "http", "mailto"})
PROMO_KEYS = {"label", "title", "body", "image", "image_alt", "cta_text", "cta_url"}


def _as_date(f: _Fields, value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise f.fail(
            ("date",), f"'date' is not a date: {value!r}", "write it as YYYY-MM-DD"
        ) from None


def _as_datetime(f: _Fields, value: Any) -> dt.datetime:
    when: dt.datetime | None = None
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, dt.date):
        when = dt.datetime.combine(value, dt.time())
    else:
        with contextlib.suppress(ValueError):
            when = dt.datetime.fromisoformat(str(value))
    if when is None:
        raise f.fail(
            ("send_at",),
            f"'send_at' is not a date and time: {value!r}",
            "write it as ISO 8601, e.g. 2025-01-20T07:00:00+01:00",
        )
    if not SEND_AT_YEARS[0] <= when.year <= SEND_AT_YEARS[1]:
        # Near year 1 or 9999 an offset or time zone overflows when read as UTC.
        raise f.fail(
            ("send_at",),
            f"'send_at' {when.isoformat()} is not a year from {SEND_AT_YEARS[0]} to "
            f"{SEND_AT_YEARS[1]}",
            "write the time the issue should go out",
        )
    return when


def _check_keys(
    f: _Fields, table: dict[str, Any], allowed: set[str], prefix: tuple[str, ...]
) -> None:
    for key in table:
        if key not in allowed:
            import difflib

            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            raise f.fail(
                (*prefix, str(key)),
                f"unknown front matter key {'.'.join((*prefix, str(key)))!r}",
                f"did you mean '{close[0]}'?" if close else "remove it",
            )


def _check_body(path: Path, body: str, body_line: int) -> None:
    bad = forbidden_character(body, multiline=True)
    if bad:
        raise IssueError(
            path,
            f"the text contains {describe(bad)}",
            line=body_line + body.count("\n", 0, bad.start()),
            hint="remove it (an editor's 'show invisibles' finds it)",
        )


def parse_issue(path: Path, text: str) -> Issue:
    slug = slug_of(path)
    front, body, body_line = split_front_matter(path, text)
    node, data = read_front_matter(path, front)
    _check_body(path, body, body_line)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise IssueError(path, "front matter must be 'key: value' lines", line=2)
    f = _Fields(path, data, key_lines(node) if node is not None else {})
    _check_keys(f, data, KNOWN_KEYS, ())
    for required in ("title", "date"):
        if data.get(required) in (None, ""):
            raise IssueError(
                path,
                f"front matter has no '{required}'",
                line=1,
                hint=f"add a '{required}:' line" + (" (YYYY-MM-DD)" if required == "date" else ""),
            )
    layout = f.text(data, ("layout",), "default")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", layout) or layout.startswith("."):
        raise f.fail(("layout",), f"'layout' is not a layout folder name: {layout!r}")
    return Issue(
        path=path,
        slug=slug,
        title=f.text(data, ("title",)),
        date=_as_date(f, data["date"]),
        body=body,
        body_line=body_line,
        subtitle=f.text(data, ("subtitle",)),
        subject=f.text(data, ("subject",)),
        preheader=f.text(data, ("preheader",)),
        number=_number(f, data.get("number")),
        send_at=None if data.get("send_at") is None else _as_datetime(f, data["send_at"]),
        layout=layout,
        layout_line=f.line(("layout",)),
        tags=_tags(f, data.get("tags")),
        promo=_promo(f, data.get("promo")),
        poll=_poll(f, data.get("poll")),
        share=_share(f, data.get("share")),
    )


def _number(f: _Fields, number: Any) -> int | None:
    if number is None:
        return None
    low, high = NUMBER_RANGE
    if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
        raise f.fail(
            ("number",),
            f"'number' must be a whole number from {low} to {high:,}, not {number!r}",
            "write the issue's number, e.g. number: 42",
        )
    return number


def _tags(f: _Fields, tags: Any) -> tuple[str, ...]:
    tags = tags or []
    if isinstance(tags, str):
        tags = [t for t in tags.split(",")]
    if not isinstance(tags, list):
        raise f.fail(("tags",), "'tags' must be a list", "write tags: [leadership, teams]")
    return tuple(t for t in (f.checked(("tags",), tag) for tag in tags) if t)


def _table(f: _Fields, value: Any, key: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise f.fail((key,), f"'{key}' must be a table of 'key: value' lines")
    return value


def _promo(f: _Fields, value: Any) -> Promo | None:
    table = _table(f, value, "promo")
    if table is None:
        return None
    _check_keys(f, table, PROMO_KEYS, ("promo",))
    title = f.text(table, ("promo", "title"))
    if not title:
        raise f.fail(("promo",), "'promo' has no 'title'", "add 'title:' under 'promo:'")
    cta_text, cta_url = f.text(table, ("promo", "cta_text")), f.text(table, ("promo", "cta_url"))
    if bool(cta_text) != bool(cta_url):
        raise f.fail(("promo",), "'promo' needs both 'cta_text' and 'cta_url' (or neither)")
    scheme = cta_url.partition(":")[0].strip().lower() if ":" in cta_url else ""
    if cta_url and scheme not in LINK_SCHEMES:
        # javascript:, data: and the like run or smuggle content in the archive's pages
        raise f.fail(
            ("promo", "cta_url"),
            f"'cta_url' must be an https://, http:// or mailto: address, not {cta_url[:40]!r}",
            "write the full address, e.g. https://example.com/offer",
        )
    image = f.text(table, ("promo", "image"))
    return Promo(
        title=title,
        body=f.text(table, ("promo", "body"), multiline=True),
        label=f.text(table, ("promo", "label"), "PROMO CONTENT") or "PROMO CONTENT",
        image=image,
        image_alt=f.text(table, ("promo", "image_alt")),
        cta_text=cta_text,
        cta_url=cta_url,
    )


def _poll(f: _Fields, value: Any) -> Poll | None:
    table = _table(f, value, "poll")
    if table is None:
        return None
    _check_keys(f, table, {"question", "options"}, ("poll",))
    question = f.text(table, ("poll", "question"))
    if not question:
        raise f.fail(("poll",), "'poll' has no 'question'", "add 'question:' under 'poll:'")
    options = table.get("options")
    if not isinstance(options, list) or not all(
        isinstance(o, str | int | float) and not isinstance(o, bool) for o in options
    ):
        raise f.fail(("poll", "options"), "'poll.options' must be a list of strings")
    if not POLL_MIN_OPTIONS <= len(options) <= POLL_MAX_OPTIONS:
        raise f.fail(
            ("poll", "options"),
            f"a poll has {POLL_MIN_OPTIONS} to {POLL_MAX_OPTIONS} options, "
            f"this one has {len(options)}",
            "add or remove options",
        )
    return Poll(
        question=question, options=tuple(f.checked(("poll", "options"), o) for o in options)
    )


def _share(f: _Fields, value: Any) -> Share:
    table = _table(f, value, "share")
    if table is None:
        return Share()
    _check_keys(f, table, {"text"}, ("share",))
    return Share(text=f.text(table, ("share", "text")))


def load_issue(path: Path | str) -> Issue:
    path = Path(path)
    raw = read_issue_file(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise IssueError(path, "is not UTF-8 text", line=line, hint="save it as UTF-8") from None
    if len(text) > KEPT_TEXT_LIMIT:
        return parse_issue(path, text)  # not kept: 16 such files would pin 160 MB in a desk
    return parsed_issue(path, text)


KEPT_TEXT_LIMIT = 256_000  # characters; an issue is tens of thousands


@lru_cache(maxsize=16)
def parsed_issue(path: Path, text: str) -> Issue:
    """parse_issue, once per path and text in a process: a send reads its issue twice (its
    build, then the per-reader template), dispatch and the site read every issue on each run.
    An Issue is frozen throughout; a file that does not parse raises again each time."""
    return parse_issue(path, text)


def names_a_file(arg: str | Path) -> bool:
    """True when a command's ISSUE argument is a file path, False when it is a slug."""
    path = Path(arg)
    return path.exists() or path.suffix == ".md" or len(path.parts) > 1


def resolve_issue_path(arg: str | Path, issues_dir: Path) -> Path:
    """An issue named by path, or by slug (file stem) inside the issues folder (where a
    missing one is then reported, with the issues there that are spelled alike)."""
    if names_a_file(arg):
        return Path(arg)
    return issues_dir / f"{arg}.md"
