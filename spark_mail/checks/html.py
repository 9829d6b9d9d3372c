"""One pass over the email's HTML (stdlib html.parser, never regexes): links, images,
visible text and sponsor / promo boxes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from html.parser import HTMLParser

BOX_CLASSES = {"sponsor-box": "sponsor", "promo-box": "promo"}


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

    @cached_property
    def visible_text(self) -> str:
        """All the text readers see, whitespace collapsed (read once the parse is done)."""
        return " ".join(" ".join(self.text_parts).split())


def parse_html(html: str) -> EmailParser:
    parser = EmailParser()
    parser.feed(html)
    parser.close()
    return parser
