"""The plain-text part, made from the Markdown tokens (never scraped back out of the HTML).

Links stay readable as `text (https://...)`; paragraphs wrap at 72 columns without ever
breaking a URL.
"""

from __future__ import annotations

import html
import re
import textwrap
from collections.abc import Iterable

from markdown_it.token import Token

WIDTH = 72
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


def wrap(text: str, indent: str = "", first: str | None = None) -> str:
    lines: list[str] = []
    for i, para_line in enumerate(text.split("\n")):
        lead = (first if first is not None else indent) if i == 0 else indent
        lines.extend(
            textwrap.wrap(
                para_line,
                width=WIDTH,
                initial_indent=lead,
                subsequent_indent=indent,
                break_long_words=False,
                break_on_hyphens=False,
            )
            or [lead.rstrip()]
        )
    return "\n".join(lines)


def tokens_to_text(tokens: Iterable[Token]) -> str:
    """Render block tokens as plain text paragraphs separated by blank lines."""
    parts: list[str] = []
    lists: list[list[int]] = []  # stack of [ordered?, counter]
    quote = 0
    pending_item: str | None = None
    row: list[str] = []
    for tok in tokens:
        kind = tok.type
        prefix = "> " * quote
        indent = prefix + "   " * len(lists)
        if kind in ("bullet_list_open", "ordered_list_open"):
            lists.append([kind == "ordered_list_open", int(tok.attrs.get("start", 1) or 1)])
        elif kind in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif kind == "list_item_open":
            ordered, counter = lists[-1]
            pending_item = f"{counter}. " if ordered else "- "
            lists[-1][1] = counter + 1
        elif kind == "blockquote_open":
            quote += 1
        elif kind == "blockquote_close":
            quote -= 1
        elif kind == "inline" and not row:
            text = inline_text(tok)
            if pending_item is not None:
                base = prefix + "   " * (len(lists) - 1)
                parts.append(wrap(text, base + " " * len(pending_item), base + pending_item))
                pending_item = None
            else:
                parts.append(wrap(text, indent))
        elif kind == "heading_open":
            pass
        elif kind == "heading_close":
            title = parts.pop() if parts else ""
            underline = "=" if tok.tag in ("h1", "h2") else "-"
            parts.append(f"{title}\n{underline * min(len(title.splitlines()[-1]), WIDTH)}")
        elif kind in ("fence", "code_block"):
            code = tok.content.rstrip("\n")
            parts.append("\n".join(indent + "    " + line for line in code.split("\n")))
        elif kind == "hr":
            parts.append(prefix + "-" * 20)
        elif kind == "html_block":
            stripped = html.unescape(TAG_RE.sub("", tok.content)).strip()
            if stripped:
                parts.append(wrap(stripped, indent))
        elif kind in ("th_open", "td_open"):
            row.append("")
        elif kind == "inline" and row:
            row[-1] = inline_text(tok)
        elif kind == "tr_close":
            parts.append(prefix + " | ".join(row))
            row = []
    return _join(parts)


def _join(parts: list[str]) -> str:
    return "\n\n".join(p for p in parts if p.strip()).strip()


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
