"""The email's HTML as a tree with its CSS, for the client-support and accessibility rules.

One lxml parse of the final (inlined) HTML; Outlook's `<!--[if mso]>` markup stays a comment,
as every client but desktop Outlook reads it. The `<style>` blocks are split into rules with
the at-rules around them (a small parser: email CSS has no nesting beyond `@media`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cached_property
from typing import Any

from spark_mail.render.css import COMMENT_RE, CssRule, declarations, parse_css

__all__ = ["CssRule", "StyledEmail", "at_rule_names", "declarations", "describe", "parse_css"]

SKIP_CLASSES = ("mj-", "mj_")


def at_rule_names(text: str) -> list[str]:
    """Every at-rule of a style sheet (`@media ...`, `@import ...`, `@font-face`)."""
    return [" ".join(m.split()) for m in re.findall(r"@[a-z-]+[^{;]*", COMMENT_RE.sub("", text))]


def section_of(element: Any) -> str:
    """The nearest class that names a part of the layout (`footer`, `card share`, ...)."""
    node = element
    while node is not None:
        names = [
            c
            for c in (node.get("class") or "").split()
            if not c.startswith(SKIP_CLASSES) and not c.endswith("-outlook")
        ]
        if names:
            return " ".join(names)
        node = node.getparent()
    return ""


def describe(element: Any) -> str:
    """`<td> in 'card share'`: where an element stands, for a finding."""
    section = section_of(element)
    return f"<{element.tag}> in {section!r}" if section else f"<{element.tag}>"


class StyledEmail:
    """The email's tree, its elements with inline styles, and its style sheet rules."""

    def __init__(self, html: str) -> None:
        import lxml.html

        self.html = html
        self.root = lxml.html.document_fromstring(html)

    def elements(self) -> Iterator[Any]:
        for element in self.root.iter():
            if isinstance(element.tag, str):
                yield element

    @cached_property
    def style_texts(self) -> list[str]:
        return [style.text or "" for style in self.root.iter("style")]

    @cached_property
    def rules(self) -> list[CssRule]:
        return [rule for text in self.style_texts for rule in parse_css(text)]

    def inline(self, element: Any) -> tuple[tuple[str, str], ...]:
        return declarations(element.get("style") or "")
