"""Markdown -> HTML fragments, split into blocks at ``::: sponsor NAME`` containers.

The same parse feeds the plain-text part (render/text.py), so both parts always say the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.container import container_plugin

SPONSOR = "sponsor"
DEFAULT_SPONSOR_LABEL = "SPONSORED"


@dataclass(frozen=True)
class Block:
    """One piece of the body: prose, or a sponsor box (with the sponsor's name)."""

    kind: str  # "prose" | "sponsor"
    html: str
    tokens: tuple[Token, ...]
    sponsor: str = ""
    label: str = ""


def _validate_sponsor(params: str, *args: object) -> bool:
    return params.strip().split(maxsplit=1)[:1] == [SPONSOR]


@lru_cache(maxsize=1)
def parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"xhtmlOut": True, "typographer": False})
    md.enable(["table", "strikethrough"])
    md.use(container_plugin, name=SPONSOR, validate=_validate_sponsor)
    return md


def parse(markdown: str) -> list[Token]:
    return parser().parse(markdown)


def to_html(tokens: list[Token] | tuple[Token, ...]) -> str:
    md = parser()
    return md.renderer.render(list(tokens), md.options, {})


def inline_html(markdown: str) -> str:
    """Markdown of a short field (promo body etc.) as HTML."""
    return to_html(parse(markdown)) if markdown.strip() else ""


def sponsor_heading(info: str) -> tuple[str, str]:
    """`sponsor Refind | PARTNER` -> ("Refind", "PARTNER"); the label defaults to SPONSORED."""
    rest = info.strip()[len(SPONSOR) :].strip()
    name, _, label = rest.partition("|")
    return name.strip(), (label.strip() or DEFAULT_SPONSOR_LABEL)


def rewrite_links(tokens: list[Token], rewrite: Callable[[str, str], str]) -> None:
    """Replace every link's href with `rewrite(href, block_kind)` ("prose" or "sponsor"),
    in place, before the tokens become HTML and text (so both parts carry the same URL)."""
    depth = 0
    for tok in tokens:
        if tok.type == f"container_{SPONSOR}_open":
            depth += 1
        elif tok.type == f"container_{SPONSOR}_close":
            depth -= 1
        for child in tok.children or ():
            if child.type == "link_open" and child.attrs.get("href"):
                kind = SPONSOR if depth else "prose"
                child.attrs["href"] = rewrite(str(child.attrs["href"]), kind)


def split_blocks(tokens: list[Token]) -> list[Block]:
    blocks: list[Block] = []
    prose: list[Token] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == f"container_{SPONSOR}_open":
            if prose:
                blocks.append(Block("prose", to_html(prose), tuple(prose)))
                prose = []
            depth, j = 1, i + 1
            while j < len(tokens) and depth:
                if tokens[j].type == f"container_{SPONSOR}_open":
                    depth += 1
                elif tokens[j].type == f"container_{SPONSOR}_close":
                    depth -= 1
                j += 1
            inner = tokens[i + 1 : j - 1]
            name, label = sponsor_heading(tok.info)
            blocks.append(Block("sponsor", to_html(inner), tuple(inner), name, label))
            i = j
            continue
        prose.append(tok)
        i += 1
    if prose:
        blocks.append(Block("prose", to_html(prose), tuple(prose)))
    return blocks
