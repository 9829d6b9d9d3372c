"""What the offline rules read from the email's HTML: links, images, visible text and
sponsor / promo boxes, from the one lxml tree the other rules read too (styles.py).

The tree is read in document order as a stream of start tags, text and end tags, the stream
html.parser would give for the same HTML (the final HTML is lxml's own serialization, so both
parsers see the same elements): `<style>`, `<script>` and `<title>` text is not visible, a
link's text is all the text between its start and end tag, a box's label is the first text
after its start tag.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

BOX_CLASSES = {"sponsor-box": "sponsor", "promo-box": "promo"}
SKIP_TAGS = ("style", "script", "title")


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


class EmailFacts:
    """Links, images, visible text and sponsor / promo boxes of one email's tree."""

    def __init__(self, root: Any) -> None:
        self.anchors: list[Anchor] = []
        self.images: list[Image] = []
        self.boxes: list[Box] = []
        self.text_parts: list[str] = []
        self._anchor: tuple[str, list[str]] | None = None
        self._skip = 0  # inside <style>/<script>/<title>
        self._open_box: Box | None = None
        for node in reversed(list(root.itersiblings(preceding=True))):
            self._node(node)  # comments before <html>: only their tails are text
        self._node(root)
        for node in root.itersiblings():
            self._node(node)

    def _node(self, node: Any) -> None:
        tag = node.tag
        if isinstance(tag, str):  # not a comment or processing instruction
            self._start(node, tag)
            if node.text:
                self._data(node.text)
            for child in node:
                self._node(child)
            self._end(tag)
        if node.tail:
            self._data(node.tail)

    def _start(self, element: Any, tag: str) -> None:
        get = element.get
        if tag in SKIP_TAGS:
            self._skip += 1
        elif tag == "a" and get("href") is not None:
            self._anchor = (get("href").strip(), [])
        elif tag == "img":
            self.images.append(
                Image(
                    src=(get("src") or "").strip(),
                    alt=get("alt"),
                    decorative=get("role") == "presentation" or get("aria-hidden") == "true",
                )
            )
        classes = get("class")
        if classes:
            for cls in classes.split():
                if cls in BOX_CLASSES:
                    self._open_box = Box(BOX_CLASSES[cls])
                    self.boxes.append(self._open_box)

    def _end(self, tag: str) -> None:
        if tag in SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag == "a" and self._anchor is not None:
            href, parts = self._anchor
            self.anchors.append(Anchor(href, " ".join("".join(parts).split())))
            self._anchor = None

    def _data(self, data: str) -> None:
        if self._skip:
            return
        self.text_parts.append(data)
        if self._anchor is not None:
            self._anchor[1].append(data)
        if self._open_box is not None and data.strip():
            self._open_box.label = " ".join(data.split())
            self._open_box = None

    @cached_property
    def visible_text(self) -> str:
        """All the text readers see, whitespace collapsed (read once the walk is done)."""
        return " ".join(" ".join(self.text_parts).split())


def parse_html(html: str) -> EmailFacts:
    from spark_mail.checks.styles import parse_document

    return EmailFacts(parse_document(html))
