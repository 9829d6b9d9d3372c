"""The plain-text part, made from the Markdown tokens (never scraped back out of the HTML).

Links stay readable as `text (https://...)`; paragraphs wrap at 72 columns without ever
breaking a URL; code and tables keep their shape within 78 columns. `email_text(view)` is
the whole text part, from the same view model as the HTML.
"""

from __future__ import annotations

import html
import re
import textwrap
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

from markdown_it.token import Token

if TYPE_CHECKING:
    from spark_mail.render.view import EmailView

WIDTH = 72  # prose
CODE_WIDTH = 78  # code and tables, kept as written up to the common 78-column limit
TAG_RE = re.compile(r"<[^>]+>")


def inline_text(token: Token) -> str:
    out: list[str] = []
    hrefs: list[str] = []
    starts: list[int] = []
    for child in token.children or []:
        kind = child.type
        if kind == "text":
            out.append(child.content)
        elif kind == "code_inline":
            out.append(f"`{child.content}`")
        elif kind == "softbreak":
            out.append(" ")
        elif kind == "hardbreak":
            out.append("\n")
        elif kind == "link_open":
            hrefs.append(str(child.attrs.get("href", "")))
            starts.append(len("".join(out)))
        elif kind == "link_close":
            href = hrefs.pop() if hrefs else ""
            start = starts.pop() if starts else 0
            label = "".join(out)[start:]
            if href and href != label and not href.startswith("#"):
                out.append(f" ({href})")
        elif kind == "image":
            alt = child.content or str(child.attrs.get("alt", ""))
            out.append(f"[image: {alt}]" if alt else "[image]")
        elif kind == "html_inline":
            out.append(html.unescape(TAG_RE.sub("", child.content)))
    return "".join(out)


def columns(text: str) -> int:
    """How many columns `text` takes in a monospaced mail reader: CJK and emoji take two,
    combining marks and zero-width characters none."""
    if text.isascii():  # no ASCII character is wide, combining or a format character
        return len(text)
    return sum(
        0 if unicodedata.combining(c) or unicodedata.category(c) == "Cf"
        else 2 if unicodedata.east_asian_width(c) in "WF"
        else 1
        for c in text
    )  # fmt: skip


def pad(text: str, width: int) -> str:
    """`text` padded with spaces to `width` columns (ljust by display width)."""
    return text + " " * (width - columns(text))


@lru_cache(maxsize=4096)
def wrap(text: str, indent: str = "", first: str | None = None) -> str:
    """`text` wrapped at WIDTH, each line after a hard break again. Cached: a process that
    builds an issue again (the preview, a send after its check, the personalised copy)
    wraps the same paragraphs, and wrapping is most of the text part's time."""
    lines: list[str] = []
    for i, para_line in enumerate(text.split("\n")):
        lead = (first if first is not None else indent) if i == 0 else indent
        lines.extend(wrapper(lead, indent).wrap(para_line) or [lead.rstrip()])
    return "\n".join(lines)


@lru_cache(maxsize=64)
def wrapper(first: str, indent: str) -> textwrap.TextWrapper:
    """The TextWrapper for these indents (textwrap.wrap would make one for every line;
    a TextWrapper keeps no state between calls)."""
    return textwrap.TextWrapper(
        width=WIDTH,
        initial_indent=first,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


class TextWriter:
    """Block tokens -> plain text. Paragraphs are separated by a blank line; the items of a
    tight list and the rows of a table follow each other line by line."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, bool]] = []  # (text, follows the previous on the next line)
        self.lists: list[list[int]] = []  # [ordered?, next number, items so far]
        self.quote = 0
        self.pending_item: str | None = None
        self.tight = False
        self.rows: list[list[str]] = []
        self.cell: list[str] | None = None

    def add(self, text: str, follows: bool = False) -> None:
        self.parts.append((text, follows))

    def feed(self, tokens: Iterable[Token]) -> str:
        for tok in tokens:
            self.token(tok)
        return _join(self.parts)

    def token(self, tok: Token) -> None:
        kind = tok.type
        prefix = "> " * self.quote
        if kind in ("bullet_list_open", "ordered_list_open"):
            self.lists.append([kind == "ordered_list_open", int(tok.attrs.get("start", 1) or 1), 0])
        elif kind in ("bullet_list_close", "ordered_list_close"):
            self.lists.pop()
        elif kind == "list_item_open":
            ordered, counter, _ = self.lists[-1]
            self.pending_item = f"{counter}. " if ordered else "- "
            self.lists[-1][1] = counter + 1
        elif kind == "paragraph_open":
            self.tight = tok.hidden  # markdown-it hides the paragraphs of a tight list
        elif kind == "blockquote_open":
            self.quote += 1
        elif kind == "blockquote_close":
            self.quote -= 1
        elif kind == "inline" and self.cell is not None:
            self.cell.append(inline_text(tok))
        elif kind == "inline":
            self.inline(tok, prefix)
        elif kind == "heading_close":
            title = self.parts.pop()[0] if self.parts else ""
            self.add(underlined(title, "=" if tok.tag in ("h1", "h2") else "-"))
        elif kind in ("fence", "code_block"):
            self.add(code_text(tok.content, prefix + "   " * len(self.lists) + "    "))
        elif kind == "hr":
            self.add(prefix + "-" * 20)
        elif kind == "html_block":
            stripped = html.unescape(TAG_RE.sub("", tok.content)).strip()
            if stripped:
                self.add(wrap(stripped, prefix + "   " * len(self.lists)))
        elif kind == "tr_open":
            self.rows.append([])
        elif kind in ("th_open", "td_open"):
            self.cell = []
        elif kind in ("th_close", "td_close") and self.cell is not None:
            self.rows[-1].append(" ".join(self.cell))
            self.cell = None
        elif kind == "table_close":
            self.add(table_text(self.rows, prefix))
            self.rows = []

    def inline(self, tok: Token, prefix: str) -> None:
        text = inline_text(tok)
        if self.pending_item is None:
            self.add(wrap(text, prefix + "   " * len(self.lists)))
            return
        base = prefix + "   " * (len(self.lists) - 1)
        item = self.lists[-1]
        # A tight list's items (and a list nested in a tight item) follow line by line.
        follows = self.tight and (item[2] > 0 or len(self.lists) > 1)
        self.add(wrap(text, base + " " * len(self.pending_item), base + self.pending_item), follows)
        item[2] += 1
        self.pending_item = None


def tokens_to_text(tokens: Iterable[Token]) -> str:
    """Render block tokens as plain text paragraphs separated by blank lines."""
    return TextWriter().feed(tokens)


def underlined(title: str, mark: str) -> str:
    """A heading wrapped like prose, underlined as wide as its widest line."""
    lines = wrap(title).splitlines() or [""]
    return "\n".join(lines) + "\n" + mark * max(columns(line) for line in lines)


def code_text(code: str, indent: str) -> str:
    """Code kept as written (tabs as the spaces they show as), indented; a line too long for
    CODE_WIDTH continues on the next line (broken at a space where there is one), indented
    two more spaces."""
    room = max(20, CODE_WIDTH - len(indent))
    lines: list[str] = []
    for line in code.rstrip("\n").split("\n"):
        line = line.expandtabs(8)  # as a terminal shows it: a tab is up to 8 columns
        first, width = True, room
        while len(line) > width:
            cut = line.rfind(" ", width // 2, width + 1)
            cut = cut if cut > 0 else width
            lines.append(indent + ("" if first else "  ") + line[:cut].rstrip())
            line = line[cut:].lstrip(" ")
            first, width = False, room - 2
        lines.append(indent + ("" if first else "  ") + line)
    return "\n".join(line.rstrip() for line in lines)


def table_text(rows: list[list[str]], prefix: str) -> str:
    """A table as aligned columns with a rule under the header row; rows that would not fit
    in CODE_WIDTH are written as `a | b | c`, one per line."""
    if not rows:
        return ""
    count = max(len(r) for r in rows)
    rows = [r + [""] * (count - len(r)) for r in rows]
    widths = [max(columns(r[i]) for r in rows) for i in range(count)]
    if len(prefix) + sum(widths) + 3 * (count - 1) > CODE_WIDTH:
        widths = [0] * count
    lines = [" | ".join(pad(c, w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    rule = "-+-".join("-" * max(w, 3) for w in widths)
    return "\n".join(prefix + line for line in [lines[0], rule, *lines[1:]])


def _join(parts: list[tuple[str, bool]]) -> str:
    out = ""
    for text, follows in parts:
        if text.strip():
            out += (("\n" if follows else "\n\n") + text) if out else text
    return out.rstrip()  # the first line may be indented code: keep its spaces


def markdown_text(markdown: str) -> str:
    from spark_mail.render.markdown import parse

    return tokens_to_text(parse(markdown)) if markdown.strip() else ""


def boxed(label: str, title: str, body: str) -> str:
    """A sponsor / promo block in plain text: a labelled box a reader can skip."""
    bar = "-" * WIDTH
    head = f"{label}: {title}" if title else label
    return "\n".join(p for p in (bar, head, "", body, bar) if p is not None).replace(
        "\n\n\n", "\n\n"
    )


def email_text(view: EmailView) -> str:
    """The whole text part: the same sections, links and words as the HTML."""
    issue, settings = view.issue, view.settings
    parts: list[str] = []
    if view.web_url:
        parts.append(f"View this issue in your browser: {view.web_url}")
    parts.append(underlined(issue.title, "="))
    if issue.subtitle:
        parts.append(wrap(issue.subtitle))
    number = f" · Issue #{issue.number}" if issue.number else ""
    parts.append(f"{settings.name}{number} · {view.long_date}")
    for block in view.blocks:
        body = tokens_to_text(block.tokens)
        parts.append(boxed(block.label, block.sponsor, body) if block.kind == "sponsor" else body)
    if view.promo:
        promo = view.promo
        body = promo.body_text
        if promo.cta_text:
            body = f"{body}\n\n{promo.cta_text}: {promo.cta_url}".strip()
        parts.append(boxed(promo.label, promo.title, body))
    if issue.poll:
        lines = [wrap(issue.poll.question)]
        lines += [f"- {option.text}: {option.url}" for option in view.poll_options]
        parts.append("\n".join(lines))
    if view.share_text:
        parts.append(wrap(f"{view.share_text} {view.share_url}".strip()))
    footer = ["-- "]
    if settings.disclaimer:
        footer.append(wrap(settings.disclaimer))
    if settings.postal_address:
        footer.append(wrap(f"{settings.name} · {settings.postal_address}"))
    if view.unsubscribe_url:
        footer.append(f"Unsubscribe: {view.unsubscribe_url}")
    parts.append("\n\n".join(footer))
    return "\n\n".join(p for p in parts if p.strip()) + "\n"
