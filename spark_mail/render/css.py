"""A small CSS parser for the CSS of email layouts: rules, their selectors and declarations,
and the at-rules (`@media ...`) around them. Email CSS has no nesting beyond `@media` and no
need for a full CSS engine; the inliner (render/inline.py) and the checks share this one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

COMMENT_RE = re.compile(r"/\*.*?\*/", re.S)


@dataclass(frozen=True)
class CssRule:
    """One rule of a <style> block: its selector, declarations and enclosing at-rules."""

    selector: str
    declarations: tuple[tuple[str, str], ...]
    at_rules: tuple[str, ...] = ()  # e.g. ("@media (prefers-color-scheme: dark)",)


@lru_cache(maxsize=4096)
def declarations(text: str) -> tuple[tuple[str, str], ...]:
    """`a: b; c: d !important` -> (("a", "b"), ("c", "d !important")). Cached: a layout's
    elements repeat a few dozen style attributes, and the inliner and every check read
    them (the result is a tuple: nobody can change a cached one)."""
    out: list[tuple[str, str]] = []
    for part in text.split(";"):
        name, colon, value = part.partition(":")
        if colon and name.strip():
            out.append((name.strip().lower(), value.strip()))
    return tuple(out)


def parse_css(text: str, at_rules: tuple[str, ...] = ()) -> list[CssRule]:
    """The rules of a style sheet, with the at-rules (`@media ...`) that enclose them."""
    text = COMMENT_RE.sub("", text)
    rules: list[CssRule] = []
    i = 0
    while i < len(text):
        open_at = text.find("{", i)
        if open_at < 0:
            break
        head = text[i:open_at].strip()
        depth, j = 1, open_at + 1
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        body = text[open_at + 1 : j - 1]
        statement_end = head.rfind(";")  # `@import url(x);` before the next rule
        if statement_end >= 0:
            head = head[statement_end + 1 :].strip()
        if head.startswith("@") and "{" in body:
            rules.extend(parse_css(body, (*at_rules, " ".join(head.split()))))
        else:
            rules.append(CssRule(" ".join(head.split()), declarations(body), at_rules))
        i = j
    return rules
