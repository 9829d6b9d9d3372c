"""An issue file: YAML front matter + Markdown body, loaded into a validated Issue.

Every problem is reported as one IssueError naming the file and, where known, the line.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from spark_mail.errors import IssueError

FENCE = "---"
POLL_MIN_OPTIONS, POLL_MAX_OPTIONS = 2, 5
SLUG_RE = re.compile(r"[^a-z0-9]+")


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
    return SLUG_RE.sub("-", text.lower()).strip("-") or "issue"


# -- parsing -------------------------------------------------------------------


def split_front_matter(path: Path, text: str) -> tuple[str, str, int]:
    """Return (yaml text, markdown body, line number where the body starts)."""
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != FENCE:
        raise IssueError(
            path,
            "no front matter: the file must start with a '---' line",
            line=1,
            hint="add '---', then 'title:' and 'date:' lines, then '---' before the text",
        )
    for index in range(1, len(lines)):
        if lines[index].strip() == FENCE:
            return "".join(lines[1:index]), "".join(lines[index + 1 :]), index + 2
    raise IssueError(
        path, "front matter is never closed", line=1, hint="add a '---' line after the front matter"
    )


def _key_lines(node: yaml.Node, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Map each key path in the YAML to its (0-based, within the YAML) line."""
    found: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            found[key] = key_node.start_mark.line
            found.update(_key_lines(value_node, key))
    return found


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

    def text(self, table: dict[str, Any], key: tuple[str, ...], default: str = "") -> str:
        value = table.get(key[-1], default)
        if value is None:
            return default
        if isinstance(value, dict | list):
            raise self.fail(key, f"'{'.'.join(key)}' must be text", "write it as a plain string")
        return str(value)


KNOWN_KEYS = {
    "title", "date", "subtitle", "subject", "preheader", "number", "send_at", "layout", "tags",
    "promo", "poll", "share",
}  # fmt: skip
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
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time())
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise f.fail(
            ("send_at",),
            f"'send_at' is not a date and time: {value!r}",
            "write it as ISO 8601, e.g. 2025-01-20T07:00:00+01:00",
        ) from None


def _check_keys(
    f: _Fields, table: dict[str, Any], allowed: set[str], prefix: tuple[str, ...]
) -> None:
    for key in table:
        if key not in allowed:
            import difflib

            close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
            raise f.fail(
                (*prefix, str(key)),
                f"unknown front matter key '{'.'.join((*prefix, str(key)))}'",
                f"did you mean '{close[0]}'?" if close else "remove it",
            )


# libyaml's parser when PyYAML has it (15x faster on a front matter: the largest part of a
# warm build); the resolvers below are Python-level and work with either.
class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader that leaves dates as text (we parse them, with errors that name the line)
    and reads yes/no/on/off as text (a poll option "Yes" must stay "Yes"), as YAML 1.2 does."""


_TIMESTAMP, _BOOL = "tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:bool"
_TRUE_FALSE = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_Loader.yaml_implicit_resolvers = {
    first: [
        (tag, _TRUE_FALSE if tag == _BOOL else regexp)
        for tag, regexp in resolvers
        if tag != _TIMESTAMP
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_issue(path: Path, text: str) -> Issue:
    front, body, body_line = split_front_matter(path, text)
    try:
        node = yaml.compose(front, Loader=_Loader)
        data = yaml.load(front, Loader=_Loader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise IssueError(
            path,
            f"front matter is not valid YAML: {problem}",
            line=None if mark is None else mark.line + 2,
            hint="check indentation and quote values that contain ':' or '#'",
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise IssueError(path, "front matter must be 'key: value' lines", line=2)
    f = _Fields(path, data, _key_lines(node) if node is not None else {})
    _check_keys(f, data, KNOWN_KEYS, ())
    for required in ("title", "date"):
        if data.get(required) in (None, ""):
            raise IssueError(
                path,
                f"front matter has no '{required}'",
                line=1,
                hint=f"add a '{required}:' line" + (" (YYYY-MM-DD)" if required == "date" else ""),
            )

    number = data.get("number")
    if number is not None and (isinstance(number, bool) or not isinstance(number, int)):
        raise f.fail(("number",), f"'number' must be a whole number, not {number!r}")
    tags = data.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",")]
    if not isinstance(tags, list):
        raise f.fail(("tags",), "'tags' must be a list", "write tags: [leadership, teams]")
    layout = f.text(data, ("layout",), "default")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", layout) or layout.startswith("."):
        raise f.fail(("layout",), f"'layout' is not a layout folder name: {layout!r}")

    return Issue(
        path=path,
        slug=path.stem,
        title=f.text(data, ("title",)),
        date=_as_date(f, data["date"]),
        body=body,
        body_line=body_line,
        subtitle=f.text(data, ("subtitle",)),
        subject=f.text(data, ("subject",)),
        preheader=f.text(data, ("preheader",)),
        number=number,
        send_at=None if data.get("send_at") is None else _as_datetime(f, data["send_at"]),
        layout=layout,
        layout_line=f.line(("layout",)),
        tags=tuple(str(t) for t in tags),
        promo=_promo(f, data.get("promo")),
        poll=_poll(f, data.get("poll")),
        share=_share(f, data.get("share")),
    )


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
    image = f.text(table, ("promo", "image"))
    return Promo(
        title=title,
        body=f.text(table, ("promo", "body")),
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
    return Poll(question=question, options=tuple(str(o) for o in options))


def _share(f: _Fields, value: Any) -> Share:
    table = _table(f, value, "share")
    if table is None:
        return Share()
    _check_keys(f, table, {"text"}, ("share",))
    return Share(text=f.text(table, ("share", "text")))


def load_issue(path: Path | str) -> Issue:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise missing_issue(path) from None
    except IsADirectoryError:
        raise IssueError(path, "is a folder, not an issue file") from None
    except OSError as exc:
        raise IssueError(path, f"cannot read the file ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise IssueError(path, "is not UTF-8 text", line=line, hint="save it as UTF-8") from None
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


def missing_issue(path: Path) -> IssueError:
    """The error for an issue file that is not there, with a "did you mean" from its folder."""
    import difflib

    near = [p.stem for p in path.parent.glob("*.md")] if path.parent.is_dir() else []
    close = difflib.get_close_matches(path.stem, near, n=3, cutoff=0.5)
    if close:
        hint = f"did you mean {' or '.join(close)}?"
    elif near:
        hint = "`spark-mail list` shows the issues there"
    else:
        hint = 'check the path; `spark-mail new "TITLE"` starts an issue'
    return IssueError(path, "no such file", hint=hint)
