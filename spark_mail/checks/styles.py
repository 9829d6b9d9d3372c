"""The email's HTML as a tree with its CSS, for the client-support and accessibility rules.

One lxml parse of the final (inlined) HTML; Outlook's `<!--[if mso]>` markup stays a comment,
as every client but desktop Outlook reads it. The `<style>` blocks are split into rules with
the at-rules around them (a small parser: email CSS has no nesting beyond `@media`).

The rules walk the tree several times; what they ask of it more than once is kept on the
StyledEmail: its elements (the tree is parsed with lxml.etree's HTML parser, whose elements
cost nothing to look up in Python, unlike lxml.html's), and where each element stands
(`describe`, from its nearest named ancestor, computed once per element).
"""

from __future__ import annotations

import re
from functools import cached_property, lru_cache
from typing import Any

from spark_mail.render.css import COMMENT_RE, CssRule, declarations, parse_css
from spark_mail.render.simple_xpath import TreeIndex

__all__ = [
    "CssRule", "StyledEmail", "at_rule_names", "declarations", "describe", "parse_css",
    "parse_document", "style_map", "text_content",
]  # fmt: skip

SKIP_CLASSES = ("mj-", "mj_")


@lru_cache(maxsize=4096)
def style_map(style: str) -> dict[str, str]:
    """An inline style attribute as {property: value} (the later of two wins). Cached, as a
    layout repeats its style attributes over hundreds of elements: read only."""
    return dict(declarations(style))


@lru_cache(maxsize=64)
def sheet_rules(text: str) -> tuple[CssRule, ...]:
    """parse_css of a <style> block, once per process: every email of a layout has the same
    blocks (the rules are frozen: nothing can change a shared one)."""
    return tuple(parse_css(text))


def at_rule_names(text: str) -> list[str]:
    """Every at-rule of a style sheet (`@media ...`, `@import ...`, `@font-face`)."""
    return [" ".join(m.split()) for m in re.findall(r"@[a-z-]+[^{;]*", COMMENT_RE.sub("", text))]


def section_names(element: Any) -> str:
    """The classes of `element` that name a part of the layout, or ""."""
    return " ".join(
        c
        for c in (element.get("class") or "").split()
        if not c.startswith(SKIP_CLASSES) and not c.endswith("-outlook")
    )


def section_of(element: Any) -> str:
    """The nearest class that names a part of the layout (`footer`, `card share`, ...)."""
    node = element
    while node is not None:
        names = section_names(node)
        if names:
            return names
        node = node.getparent()
    return ""


def describe(element: Any) -> str:
    """`<td> in 'card share'`: where an element stands, for a finding."""
    section = section_of(element)
    return f"<{element.tag}> in {section!r}" if section else f"<{element.tag}>"


def parse_document(html: str) -> Any:
    """`html` as lxml.html.document_fromstring reads it (the same parser options, so the
    same tree), with plain lxml elements."""
    from lxml import etree

    root = etree.fromstring(html, etree.HTMLParser())
    if root is None:
        raise etree.ParserError("Document is empty")
    return root


def text_content(element: Any) -> str:
    """The text of an element and all it contains (lxml.html's `text_content()`)."""
    return str(_string_xpath()(element))


@lru_cache(maxsize=1)
def _string_xpath() -> Any:
    from lxml import etree

    return etree.XPath("string()")


class StyledEmail:
    """The email's tree, its elements with inline styles, and its style sheet rules."""

    def __init__(self, html: str) -> None:
        self.html = html
        self.root = parse_document(html)
        self._places: dict[Any, str] = {}
        self._sections: dict[Any, str] = {}

    def elements(self) -> list[Any]:
        """Every element (comments and processing instructions left out), in document order."""
        return self._elements

    @cached_property
    def _elements(self) -> list[Any]:
        return [element for element in self.root.iter() if isinstance(element.tag, str)]

    def describe(self, element: Any) -> str:
        """`describe(element)`, once per element of this email."""
        place = self._places.get(element)
        if place is None:
            section = self.section_of(element)
            place = f"<{element.tag}> in {section!r}" if section else f"<{element.tag}>"
            self._places[element] = place
        return place

    def section_of(self, element: Any) -> str:
        """`section_of(element)`, each ancestor's answer kept for its descendants."""
        found = self._sections.get(element)
        if found is None:
            names = section_names(element)
            if names:
                found = names
            else:
                parent = element.getparent()
                found = "" if parent is None else self.section_of(parent)
            self._sections[element] = found
        return found

    @cached_property
    def index(self) -> TreeIndex:
        """The tree's elements by tag and class, for the simple selectors' XPath."""
        return TreeIndex(self.root)

    @cached_property
    def style_texts(self) -> list[str]:
        return [style.text or "" for style in self.root.iter("style")]

    @cached_property
    def rules(self) -> list[CssRule]:
        return [rule for text in self.style_texts for rule in sheet_rules(text)]

    def inline(self, element: Any) -> tuple[tuple[str, str], ...]:
        return declarations(element.get("style") or "")
