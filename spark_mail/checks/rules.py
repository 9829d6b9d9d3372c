"""The offline rules: each `rule_*` method of Checker yields Findings of the rules in RULES
(id -> severity and fix).

They look at exactly what readers get: the inlined HTML, the plain-text part, the headers,
subject and preheader. Nothing here touches the network.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from spark_mail.checks.html import EmailFacts
from spark_mail.checks.report import Finding, RuleBook
from spark_mail.checks.styles import parse_document
from spark_mail.config import Settings
from spark_mail.render import GMAIL_CLIP_BYTES, RenderedEmail
from spark_mail.render.inline import MERGE_TAG_RE

SIZE_WARN_BYTES = 90 * 1024
SUBJECT_MAX = 70
PREHEADER_MIN, PREHEADER_MAX = 40, 140
MAX_LINKS = 40
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

# The offline rules, by id, with the usual fix ("": the finding gives its own).
RULES = RuleBook(
    errors={
        "size.clipped": "shorten the issue or move long sections to the web copy",
        "unsubscribe.link": "set unsubscribe_url in spark-mail.toml (the default layout links it)",
        "postal-address": "set postal_address in spark-mail.toml",
        "headers.list-unsubscribe": "set unsubscribe_url (https) in spark-mail.toml",
        "image.alt": "describe the image (promo: image_alt; Markdown: ![text](url)); readers "
        "with images off or a screen reader see only this",
        "url.unsafe": "use a full https:// URL that readers can open",
        "template.unresolved": "fill it in; a merge tag your ESP should replace belongs in a "
        "setting (e.g. unsubscribe_url), not in the issue",
        "content.placeholder": "replace it with the real text",
    },
    warnings={
        "size.near-clip": "trim the issue a little; ESPs add tracking that makes it bigger",
        "subject.length": "shorten the subject",
        "subject.caps": "write it in sentence or title case",
        "preheader.missing": "add 'preheader:' to the front matter "
        f"({PREHEADER_MIN}-{PREHEADER_MAX} characters)",
        "preheader.length": "",
        "preheader.repeats-subject": "say something the subject does not",
        "block.label": "give it a label such as SPONSORED, PROMO CONTENT or PARTNER",
        "links.count": "cut the links that matter least",
    },
)


class Checker:
    """The offline rules. Each `rule_*` method yields Findings."""

    def __init__(self, email: RenderedEmail, settings: Settings, tree: Any = None) -> None:
        """`tree`: the email's HTML as parse_document reads it, when the caller has it."""
        self.email = email
        self.settings = settings
        self.page = EmailFacts(parse_document(email.html) if tree is None else tree)
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
            yield RULES.finding(
                "size.clipped",
                f"the HTML is {size / 1024:.1f} KB: Gmail clips anything over "
                f"{GMAIL_CLIP_BYTES / 1024:.0f} KB and hides the rest, unsubscribe link included",
            )
        elif size > SIZE_WARN_BYTES:
            yield RULES.finding(
                "size.near-clip",
                f"the HTML is {size / 1024:.1f} KB, close to Gmail's "
                f"{GMAIL_CLIP_BYTES / 1024:.0f} KB clipping limit",
            )

    def rule_unsubscribe_link(self) -> Iterator[Finding]:
        if not any(a.href and "unsubscribe" in a.text.casefold() for a in self.page.anchors):
            yield RULES.finding(
                "unsubscribe.link",
                "no visible unsubscribe link (an <a href> whose text says 'unsubscribe')",
            )

    def rule_postal_address(self) -> Iterator[Finding]:
        address = self.settings.postal_address.strip()
        if not address:
            yield RULES.finding(
                "postal-address",
                "no postal address: the law (CAN-SPAM) requires one in every email",
            )
            return
        missing = [
            part
            for part, text in (("HTML", self.page.visible_text), ("text", self.email.text))
            if words(address) not in words(text)
        ]
        if missing:
            yield RULES.finding(
                "postal-address",
                f"the postal address is missing from the {' and '.join(missing)} part",
                fix="keep newsletter.postal_address in the layout's footer",
            )

    def rule_list_unsubscribe_headers(self) -> Iterator[Finding]:
        headers = {k.lower(): v for k, v in self.email.headers.items()}
        missing = [
            name
            for name in ("List-Unsubscribe", "List-Unsubscribe-Post")
            if not headers.get(name.lower())
        ]
        if missing:
            yield RULES.finding(
                "headers.list-unsubscribe",
                f"missing header {' and '.join(missing)}: Gmail and Yahoo require "
                "one-click unsubscribe from bulk senders",
            )

    def rule_image_alt(self) -> Iterator[Finding]:
        for image in self.page.images:
            if image.alt is None or (not image.alt.strip() and not image.decorative):
                yield RULES.finding(
                    "image.alt", f"image without alt text: {image.src or '(no src)'}"
                )

    def rule_urls(self) -> Iterator[Finding]:
        seen: set[str] = set()
        for kind, url in self.urls():
            problem = url_problem(url)
            if problem and url not in seen:
                seen.add(url)
                yield RULES.finding("url.unsafe", f"{kind} {url or '(empty)'} {problem}")

    def rule_unresolved_template(self) -> Iterator[Finding]:
        allowed = self.allowed
        for part, content in (("HTML", self.email.html), ("text", self.email.text)):
            # and once percent-decoded: Markdown encodes a link's `%` and `{` (`%25recipient`)
            for label, text in (("", content), (" (in a link, URL-encoded)", unquote(content))):
                # only an allowed merge tag is taken out: none in the text, nothing to take
                cleaned = (
                    MERGE_TAG_RE.sub(lambda m: "" if m.group(0) in allowed else m.group(0), text)
                    if any(tag in text for tag in allowed)
                    else text
                )
                found = [(cleaned.find(m), m) for m in TEMPLATE_MARKERS if m in cleaned]
                if found:
                    at, marker = found[0]
                    yield RULES.finding(
                        "template.unresolved",
                        f"unresolved template text {marker!r} in the {part} part{label}: "
                        f"...{snippet(cleaned, at, at + len(marker))}...",
                    )
                    break

    def rule_placeholder_text(self) -> Iterator[Finding]:
        alts = " ".join(i.alt or "" for i in self.page.images)
        haystack = "\n".join(
            (self.email.subject, self.email.preheader, self.page.visible_text, alts,
             self.email.text)
        )  # fmt: skip
        # Every letter that matches t, o, d, b, l, r, e or m ignoring case is one whose lower
        # case is that ASCII letter: no "todo", "tbd" or "lorem" in the lower-cased text, no
        # match (a plain search, where the regex tries each position of ~20k characters).
        lowered = haystack.lower()
        if not any(word in lowered for word in ("todo", "tbd", "lorem")):
            return
        found = sorted({m.group(0).lower() for m in PLACEHOLDER_RE.finditer(haystack)})
        if found:
            names = ", ".join("lorem ipsum" if f.startswith("lorem") else f.upper() for f in found)
            lines = source_lines(self.email.source, PLACEHOLDER_RE)
            yield RULES.finding(
                "content.placeholder",
                f"placeholder text left in: {names}{where(self.email.source, lines)}",
            )

    # warnings
    def rule_subject(self) -> Iterator[Finding]:
        subject = self.email.subject
        if len(subject) > SUBJECT_MAX:
            yield RULES.finding(
                "subject.length",
                f"the subject has {len(subject)} characters; inboxes cut it after about "
                f"{SUBJECT_MAX}",
            )
        letters = [c for c in subject if c.isalpha()]
        if len(letters) >= 4 and all(c.isupper() for c in letters):
            yield RULES.finding(
                "subject.caps",
                "the subject is in all capitals, which reads as shouting and trips spam filters",
            )

    def rule_preheader(self) -> Iterator[Finding]:
        pre = self.email.preheader.strip()
        if not pre:
            yield RULES.finding(
                "preheader.missing",
                "no preheader: inboxes show the first words of the email instead",
            )
            return
        if not PREHEADER_MIN <= len(pre) <= PREHEADER_MAX:
            yield RULES.finding(
                "preheader.length",
                f"the preheader has {len(pre)} characters; "
                f"{PREHEADER_MIN}-{PREHEADER_MAX} fill the inbox preview well",
                fix="make it " + ("longer" if len(pre) < PREHEADER_MIN else "shorter"),
            )
        subject = words(self.email.subject)
        if subject and words(pre).startswith(subject):
            yield RULES.finding(
                "preheader.repeats-subject",
                "the preheader repeats the subject, so the inbox shows it twice",
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
                    yield RULES.finding(
                        "block.label",
                        f"a {kind} block has no label saying it is paid content "
                        f"(it starts with {box.label or 'nothing'!r})",
                    )
            if len(boxes) < count:
                yield RULES.finding(
                    "block.label",
                    f"{count - len(boxes)} {kind} block(s) are not marked in the HTML, so "
                    "their label cannot be seen",
                    fix=f'keep css-class="{kind}-box" with a label line in the layout\'s {kind} '
                    "partial",
                )

    def rule_link_count(self) -> Iterator[Finding]:
        count = len(self.page.anchors)
        if count > MAX_LINKS:
            yield RULES.finding(
                "links.count",
                f"{count} links; more than {MAX_LINKS} looks like spam to some filters",
            )
