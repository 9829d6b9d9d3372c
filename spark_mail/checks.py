"""Pre-send checks: rules that run on the final RenderedEmail and return one Report.

Each rule has an id, a severity and a fix hint. Errors block a send (`check` exits 1); warnings
are advice (they block too with `--strict`). The rules look at exactly what readers get: the
inlined HTML (parsed with the stdlib html.parser, never with regexes), the plain-text part,
the headers, subject and preheader. Link checking (network) lives in spark_mail/links.py and
only runs with `links=True`; without it nothing here touches the network.

    from spark_mail.checks import run_checks
    report = run_checks(email, settings, links=False)
    report.errors, report.warnings, report.ok, report.failed(strict), report.to_json()
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from spark_mail.config import Settings
from spark_mail.errors import ChecksFailed
from spark_mail.render import GMAIL_CLIP_BYTES, RenderedEmail
from spark_mail.render.inline import MERGE_TAG_RE

if TYPE_CHECKING:
    from spark_mail.links import LinkResult

SIZE_WARN_BYTES = 90 * 1024
SUBJECT_MAX = 70
PREHEADER_MIN, PREHEADER_MAX = 40, 140
MAX_LINKS = 40
IMAGE_MAX_BYTES = 1024 * 1024
BOX_CLASSES = {"sponsor-box": "sponsor", "promo-box": "promo"}
# A label discloses paid content when it says so in one of these words.
DISCLOSURE_RE = re.compile(
    r"\b(sponsor\w*|promo\w*|ad|ads|advert\w*|partner\w*|paid|affiliate|presented by"
    r"|brought to you by|anzeige|werbung|publicit\w*|patrocinad\w*)\b",
    re.I,
)
PLACEHOLDER_RE = re.compile(r"\bTODO\b|\bTBD\b|\blorem ipsum\b", re.I)
TEMPLATE_MARKERS = ("{{", "{%", "%recipient")
LOCAL_HOSTS = {"localhost", "0.0.0.0", "::1", "[::1]"}
ALLOWED_SCHEMES = {"https", "mailto", "tel"}
VOID_TAGS = {"img", "br", "hr", "meta", "link", "input", "source", "col", "area", "base", "wbr"}


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    rule_id: str
    severity: Severity
    message: str
    hint: str

    def to_json(self) -> dict[str, str]:
        return {
            "rule_id": self.rule_id,
            "severity": str(self.severity),
            "message": self.message,
            "hint": self.hint,
        }


@dataclass
class Report:
    """What the checks found for one email."""

    slug: str
    findings: list[Finding] = field(default_factory=list)
    html_bytes: int = 0
    link_count: int = 0
    links_checked: bool = False
    links: list[LinkResult] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def failed(self, strict: bool = False) -> bool:
        return bool(self.errors) or (strict and bool(self.warnings))

    def summary(self) -> str:
        def plural(n: int, word: str) -> str:
            return f"{n} {word}{'' if n == 1 else 's'}"

        if not self.findings:
            return "clean"
        return f"{plural(len(self.errors), 'error')}, {plural(len(self.warnings), 'warning')}"

    def raise_for_failure(self, strict: bool = False) -> None:
        """ChecksFailed (exit 1) when the report blocks a send."""
        if self.failed(strict):
            what = "errors" if self.errors else "warnings (--strict)"
            raise ChecksFailed(
                f"{self.slug}: checks failed: {self.summary()}",
                hint=f"fix the {what} listed above, then run `spark-mail check` again",
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "ok": self.ok,
            "summary": self.summary(),
            "error_count": len(self.errors),
            "warning_count": len(self.warnings),
            "html_bytes": self.html_bytes,
            "gmail_clip_bytes": GMAIL_CLIP_BYTES,
            "link_count": self.link_count,
            "links_checked": self.links_checked,
            "findings": [f.to_json() for f in self.findings],
            "links": [link.to_json() for link in self.links],
        }


# -- reading the HTML ----------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    href: str
    text: str


@dataclass(frozen=True)
class Image:
    src: str
    alt: str | None  # None: no alt attribute at all
    decorative: bool  # role="presentation" / aria-hidden: an empty alt is right


@dataclass
class Box:
    kind: str  # "sponsor" | "promo"
    label: str = ""  # the first text inside the box


class EmailParser(HTMLParser):
    """One pass over the HTML: links, images, visible text and sponsor / promo boxes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[Anchor] = []
        self.images: list[Image] = []
        self.boxes: list[Box] = []
        self.text_parts: list[str] = []
        self._anchor: tuple[str, list[str]] | None = None
        self._skip = 0  # inside <style>/<script>/<title>
        self._open_box: Box | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag in ("style", "script", "title"):
            self._skip += 1
        elif tag == "a" and "href" in values:
            self._anchor = (values["href"].strip(), [])
        elif tag == "img":
            self.images.append(
                Image(
                    src=values.get("src", "").strip(),
                    alt=dict(attrs).get("alt") if "alt" in values else None,
                    decorative=values.get("role") == "presentation"
                    or values.get("aria-hidden") == "true",
                )
            )
        for cls in values.get("class", "").split():
            if cls in BOX_CLASSES:
                self._open_box = Box(BOX_CLASSES[cls])
                self.boxes.append(self._open_box)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in ("style", "script", "title"):
            self._skip -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._anchor is not None:
            href, parts = self._anchor
            self.anchors.append(Anchor(href, " ".join("".join(parts).split())))
            self._anchor = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.text_parts.append(data)
        if self._anchor is not None:
            self._anchor[1].append(data)
        if self._open_box is not None and data.strip():
            self._open_box.label = " ".join(data.split())
            self._open_box = None

    @property
    def visible_text(self) -> str:
        return " ".join(" ".join(self.text_parts).split())


def parse_html(html: str) -> EmailParser:
    parser = EmailParser()
    parser.feed(html)
    parser.close()
    return parser


# -- helpers -------------------------------------------------------------------------------


def allowed_merge_tags(settings: Settings) -> set[str]:
    """Merge tags the newsletter's own settings put in on purpose (e.g. Buttondown's
    unsubscribe_url = "{{ unsubscribe_url }}"): the ESP fills those in, they are not leftovers."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.update(MERGE_TAG_RE.findall(value))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                walk(getattr(value, f.name))
        elif isinstance(value, tuple | list):
            for item in value:
                walk(item)

    walk(settings)
    return found


def is_merge_tag_url(url: str, allowed: set[str]) -> bool:
    """A URL the ESP writes per recipient: we can neither judge nor fetch it."""
    return any(tag in url for tag in allowed)


def url_problem(url: str) -> str | None:
    """Why readers cannot follow this URL, or None when it is fine."""
    if not url:
        return "is empty"
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not scheme:
        return "is relative (it has no https://), so it leads nowhere in an inbox"
    if scheme == "http":
        problem = "uses http:, not https:"
    elif scheme == "file":
        return "points to a file on your computer (file:)"
    elif scheme not in ALLOWED_SCHEMES:
        return f"uses the {scheme}: scheme, which email clients do not open"
    else:
        problem = ""
    host = (parts.hostname or "").lower()
    if scheme in ("http", "https") and (
        host in LOCAL_HOSTS or host.endswith(".localhost") or host.startswith("127.")
    ):
        return f"points to {host}, which only exists on your computer"
    return problem or None


def source_lines(source: Path | None, pattern: re.Pattern[str]) -> list[int]:
    """Lines of the issue file where `pattern` occurs (to point the editor at the spot)."""
    if source is None:
        return []
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return []
    return [n for n, line in enumerate(text.splitlines(), start=1) if pattern.search(line)]


def where(source: Path | None, lines: list[int]) -> str:
    if source is None or not lines:
        return ""
    shown = ", ".join(str(n) for n in lines[:5]) + (", ..." if len(lines) > 5 else "")
    return f" ({source}: line{'s' if len(lines) > 1 else ''} {shown})"


def snippet(text: str, start: int, end: int, width: int = 30) -> str:
    left = max(0, start - width)
    return " ".join(text[left : end + width].split())


def words(text: str) -> str:
    return " ".join(text.split()).casefold()


# -- the rules -----------------------------------------------------------------------------


class Checker:
    """The offline rules. Each `rule_*` method yields Findings."""

    def __init__(self, email: RenderedEmail, settings: Settings) -> None:
        self.email = email
        self.settings = settings
        self.page = parse_html(email.html)
        self.allowed = allowed_merge_tags(settings)

    def run(self) -> list[Finding]:
        findings: list[Finding] = []
        for name in sorted(dir(self)):
            if name.startswith("rule_"):
                findings.extend(getattr(self, name)())
        return findings

    def urls(self) -> Iterator[tuple[str, str]]:
        """(kind, url) of every link and image, merge-tag URLs left out."""
        for anchor in self.page.anchors:
            if not is_merge_tag_url(anchor.href, self.allowed):
                yield "link", anchor.href
        for image in self.page.images:
            if not is_merge_tag_url(image.src, self.allowed):
                yield "image", image.src

    # errors
    def rule_size(self) -> Iterator[Finding]:
        size = self.email.html_bytes
        if size > GMAIL_CLIP_BYTES:
            yield Finding(
                "size.clipped",
                Severity.ERROR,
                f"the HTML is {size / 1024:.1f} KB: Gmail clips anything over "
                f"{GMAIL_CLIP_BYTES / 1024:.0f} KB and hides the rest, unsubscribe link included",
                "shorten the issue or move long sections to the web copy",
            )
        elif size > SIZE_WARN_BYTES:
            yield Finding(
                "size.near-clip",
                Severity.WARNING,
                f"the HTML is {size / 1024:.1f} KB, close to Gmail's "
                f"{GMAIL_CLIP_BYTES / 1024:.0f} KB clipping limit",
                "trim the issue a little; ESPs add tracking that makes it bigger",
            )

    def rule_unsubscribe_link(self) -> Iterator[Finding]:
        if not any(a.href and "unsubscribe" in a.text.casefold() for a in self.page.anchors):
            yield Finding(
                "unsubscribe.link",
                Severity.ERROR,
                "no visible unsubscribe link (an <a href> whose text says 'unsubscribe')",
                "set unsubscribe_url in spark-mail.toml (the default layout links it)",
            )

    def rule_postal_address(self) -> Iterator[Finding]:
        address = self.settings.postal_address.strip()
        if not address:
            yield Finding(
                "postal-address",
                Severity.ERROR,
                "no postal address: the law (CAN-SPAM) requires one in every email",
                "set postal_address in spark-mail.toml",
            )
            return
        missing = [
            part
            for part, text in (("HTML", self.page.visible_text), ("text", self.email.text))
            if words(address) not in words(text)
        ]
        if missing:
            yield Finding(
                "postal-address",
                Severity.ERROR,
                f"the postal address is missing from the {' and '.join(missing)} part",
                "keep newsletter.postal_address in the layout's footer",
            )

    def rule_list_unsubscribe_headers(self) -> Iterator[Finding]:
        headers = {k.lower(): v for k, v in self.email.headers.items()}
        missing = [
            name
            for name in ("List-Unsubscribe", "List-Unsubscribe-Post")
            if not headers.get(name.lower())
        ]
        if missing:
            yield Finding(
                "headers.list-unsubscribe",
                Severity.ERROR,
                f"missing header {' and '.join(missing)}: Gmail and Yahoo require "
                "one-click unsubscribe from bulk senders",
                "set unsubscribe_url (https) in spark-mail.toml",
            )

    def rule_image_alt(self) -> Iterator[Finding]:
        for image in self.page.images:
            if image.alt is None or (not image.alt.strip() and not image.decorative):
                yield Finding(
                    "image.alt",
                    Severity.ERROR,
                    f"image without alt text: {image.src or '(no src)'}",
                    "describe the image (promo: image_alt; Markdown: ![text](url)); readers "
                    "with images off or a screen reader see only this",
                )

    def rule_urls(self) -> Iterator[Finding]:
        seen: set[str] = set()
        for kind, url in self.urls():
            problem = url_problem(url)
            if problem and url not in seen:
                seen.add(url)
                yield Finding(
                    "url.unsafe",
                    Severity.ERROR,
                    f"{kind} {url or '(empty)'} {problem}",
                    "use a full https:// URL that readers can open",
                )

    def rule_unresolved_template(self) -> Iterator[Finding]:
        allowed = self.allowed
        for part, content in (("HTML", self.email.html), ("text", self.email.text)):
            cleaned = MERGE_TAG_RE.sub(
                lambda m: "" if m.group(0) in allowed else m.group(0), content
            )
            for marker in TEMPLATE_MARKERS:
                at = cleaned.find(marker)
                if at >= 0:
                    yield Finding(
                        "template.unresolved",
                        Severity.ERROR,
                        f"unresolved template text {marker!r} in the {part} part: "
                        f"...{snippet(cleaned, at, at + len(marker))}...",
                        "fill it in; a merge tag your ESP should replace belongs in a "
                        "setting (e.g. unsubscribe_url), not in the issue",
                    )
                    break

    def rule_placeholder_text(self) -> Iterator[Finding]:
        alts = " ".join(i.alt or "" for i in self.page.images)
        haystack = "\n".join(
            (self.email.subject, self.email.preheader, self.page.visible_text, alts,
             self.email.text)
        )  # fmt: skip
        found = sorted({m.group(0).lower() for m in PLACEHOLDER_RE.finditer(haystack)})
        if found:
            names = ", ".join("lorem ipsum" if f.startswith("lorem") else f.upper() for f in found)
            lines = source_lines(self.email.source, PLACEHOLDER_RE)
            yield Finding(
                "content.placeholder",
                Severity.ERROR,
                f"placeholder text left in: {names}{where(self.email.source, lines)}",
                "replace it with the real text",
            )

    # warnings
    def rule_subject(self) -> Iterator[Finding]:
        subject = self.email.subject
        if len(subject) > SUBJECT_MAX:
            yield Finding(
                "subject.length",
                Severity.WARNING,
                f"the subject has {len(subject)} characters; inboxes cut it after about "
                f"{SUBJECT_MAX}",
                "shorten the subject",
            )
        letters = [c for c in subject if c.isalpha()]
        if len(letters) >= 4 and all(c.isupper() for c in letters):
            yield Finding(
                "subject.caps",
                Severity.WARNING,
                "the subject is in all capitals, which reads as shouting and trips spam filters",
                "write it in sentence or title case",
            )

    def rule_preheader(self) -> Iterator[Finding]:
        pre = self.email.preheader.strip()
        if not pre:
            yield Finding(
                "preheader.missing",
                Severity.WARNING,
                "no preheader: inboxes show the first words of the email instead",
                f"add 'preheader:' to the front matter ({PREHEADER_MIN}-{PREHEADER_MAX} "
                "characters)",
            )
            return
        if not PREHEADER_MIN <= len(pre) <= PREHEADER_MAX:
            yield Finding(
                "preheader.length",
                Severity.WARNING,
                f"the preheader has {len(pre)} characters; "
                f"{PREHEADER_MIN}-{PREHEADER_MAX} fill the inbox preview well",
                "make it " + ("longer" if len(pre) < PREHEADER_MIN else "shorter"),
            )
        subject = words(self.email.subject)
        if subject and words(pre).startswith(subject):
            yield Finding(
                "preheader.repeats-subject",
                Severity.WARNING,
                "the preheader repeats the subject, so the inbox shows it twice",
                "say something the subject does not",
            )

    def rule_block_labels(self) -> Iterator[Finding]:
        expected = {
            kind: sum(1 for s in self.email.sections if s == kind) for kind in ("sponsor", "promo")
        }
        for kind, count in expected.items():
            boxes = [b for b in self.page.boxes if b.kind == kind]
            labelled = [b for b in boxes if DISCLOSURE_RE.search(b.label)]
            for box in boxes:
                if box not in labelled:
                    yield Finding(
                        "block.label",
                        Severity.WARNING,
                        f"a {kind} block has no label saying it is paid content "
                        f"(it starts with {box.label or 'nothing'!r})",
                        "give it a label such as SPONSORED, PROMO CONTENT or PARTNER",
                    )
            if len(boxes) < count:
                yield Finding(
                    "block.label",
                    Severity.WARNING,
                    f"{count - len(boxes)} {kind} block(s) are not marked in the HTML, so "
                    "their label cannot be seen",
                    f'keep css-class="{kind}-box" with a label line in the layout\'s {kind} '
                    "partial",
                )

    def rule_link_count(self) -> Iterator[Finding]:
        count = len(self.page.anchors)
        if count > MAX_LINKS:
            yield Finding(
                "links.count",
                Severity.WARNING,
                f"{count} links; more than {MAX_LINKS} looks like spam to some filters",
                "cut the links that matter least",
            )


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


def run_checks(
    email: RenderedEmail,
    settings: Settings,
    links: bool = False,
    *,
    now: float | None = None,
) -> Report:
    """All rules for one email. With links=False nothing touches the network."""
    checker = Checker(email, settings)
    report = Report(
        slug=email.slug,
        findings=checker.run(),
        html_bytes=email.html_bytes,
        link_count=len(checker.page.anchors),
    )
    if links:
        from spark_mail.links import check_links  # httpx only when links are checked

        targets: dict[str, str] = {}
        for kind, url in checker.urls():
            if urlsplit(url).scheme.lower() in ("http", "https") and (
                kind == "image" or url not in targets
            ):
                targets[url] = kind  # an image's size is checked too
        report.links = check_links(targets, settings, now=now)
        report.links_checked = True
        report.findings.extend(link_findings(report.links))
    order = {Severity.ERROR: 0, Severity.WARNING: 1}
    report.findings.sort(key=lambda f: order[f.severity])
    return report


def check_issue(issue: str | Path, settings: Settings, *, links: bool = True) -> Report:
    """Build an issue file (or slug in issues/) and check it: what `spark-mail check` runs.

    A missing file or broken front matter raises IssueError (exit 2) before any rule runs."""
    from spark_mail.issue import resolve_issue_path
    from spark_mail.render import build

    email = build(resolve_issue_path(issue, settings.issues_path), settings)
    return run_checks(email, settings, links=links)
