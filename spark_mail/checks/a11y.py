"""`a11y.*`: what makes an email hard to read or to follow with a screen reader.

- `a11y.contrast`: text whose colour is too close to its background (WCAG 2.x AA: 4.5:1,
  3:1 for large text), computed from the inlined styles as light mode shows them and again
  under the layout's `@media (prefers-color-scheme: dark)` rules (their `!important`
  declarations win over the inline styles, as in the clients that apply them);
- `a11y.lang`: no `lang` on `<html>` or on the body wrapper (`role="article"`), so screen
  readers guess the language;
- `a11y.heading-order`: a heading that skips a level (h1 then h3);
- `a11y.link-text`: links that say "click here", "read more", ... out of context.
(Images without alt text are `image.alt`, an error.)
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from spark_mail.checks.report import Finding, RuleBook
from spark_mail.checks.styles import CssRule, StyledEmail, style_map, text_content
from spark_mail.colors import AA_LARGE_TEXT, AA_TEXT, RGB, contrast, parse_color, to_hex
from spark_mail.render.selectors import elements_of

DARK_RE = re.compile(r"prefers-color-scheme\s*:\s*dark", re.I)
VAGUE_LINK_TEXT = {
    "click here", "click", "here", "this", "this link", "link", "read more", "more",
    "more info", "go", "details",
}  # fmt: skip
DEFAULT_FONT_PX = 16.0
WHITE: RGB = (255, 255, 255)
HIDDEN_RE = re.compile(r"display\s*:\s*none", re.I)
CSS_VALUE_PART_RE = re.compile(r"[\w-]+\([^)]*\)|[^\s(),/]+")  # `rgb(1 2 3)`, `#000`, `top`
WEIGHT_RE = re.compile(r"[0-9]{1,4}")
FONT_PX_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)px")
BACKGROUNDS = ("background-color", "background")
RULES = RuleBook(  # the usual fix ("": the finding gives its own)
    errors={},
    warnings={
        "a11y.contrast": "darken the text or lighten its background (the default layout derives "
        "a text-safe shade of brand.accent_color); check dark-mode rules for links too",
        "a11y.lang": "set `language` in spark-mail.toml and keep "
        '<mjml lang="{{ newsletter.language }}">',
        "a11y.heading-order": "",
        "a11y.link-text": "say where the link goes (screen readers list links by their text)",
    },
)


def is_bold(value: str) -> bool:
    weight = value.strip().lower().removesuffix("!important").strip()
    if weight in ("bold", "bolder"):
        return True
    # ASCII digits only: str.isdigit() also takes '²', which int() refuses
    return bool(WEIGHT_RE.fullmatch(weight)) and int(weight) >= 700


@lru_cache(maxsize=4096)
def first_color(value: str) -> RGB | None:
    """The first colour in a `background` value: the shorthand's colour may stand anywhere
    (`url(...) no-repeat #000`)."""
    for part in CSS_VALUE_PART_RE.findall(value):
        color = color_of(part)
        if color is not None:
            return color
    return None


# A layout repeats a few dozen colours, styles and pairs of colours over hundreds of
# elements, and the contrast rule reads the tree twice (light, dark): each is worked out
# once per process.
color_of = lru_cache(maxsize=4096)(parse_color)
contrast_of = lru_cache(maxsize=4096)(contrast)


@lru_cache(maxsize=1024)
def dark_selector(text: str) -> tuple[str, tuple[int, int, int]] | None:
    """One selector of a dark-mode rule as (XPath, specificity), once per process; None for
    one lxml cannot match (a pseudo-class): that rule is left out for it."""
    from cssselect import GenericTranslator, SelectorError, parse

    try:
        (selector,) = parse(text)
        xpath = GenericTranslator().selector_to_xpath(selector)
    except (SelectorError, ValueError):
        return None
    return xpath, selector.specificity()


def dark_overrides(page: StyledEmail) -> dict[Any, dict[str, str]]:
    """element -> the declarations the dark-mode rules give it (specificity, then order)."""
    chosen: dict[Any, dict[str, tuple[tuple[int, int, int], int, str]]] = {}
    rules: list[CssRule] = [r for r in page.rules if any(DARK_RE.search(a) for a in r.at_rules)]
    for order, rule in enumerate(rules):
        wanted = {n: v for n, v in rule.declarations if n in ("color", "background-color")}
        if not wanted:
            continue
        for selector_text in rule.selector.split(","):
            found = dark_selector(selector_text.strip())
            if found is None:
                continue
            xpath, specificity = found
            key = (specificity, order)
            for element in elements_of(xpath, page.root, page.index) or ():
                slot = chosen.setdefault(element, {})
                for name, value in wanted.items():
                    if name not in slot or key >= slot[name][:2]:
                        slot[name] = (*key, value)
    return {el: {n: v[2] for n, v in decl.items()} for el, decl in chosen.items()}


Look = tuple[RGB | None, RGB | None, float | None, bool | None]


def look_of(styles: dict[str, str]) -> Look:
    """What an element's styles set for the contrast rule: (colour, background (from the
    styles, not the bgcolor attribute), font size in px, bold); None where they set nothing."""
    match = FONT_PX_RE.match(styles.get("font-size") or "")
    weight = styles.get("font-weight")
    return (
        color_of(styles.get("color", "")),
        next(filter(None, (first_color(styles.get(n, "")) for n in BACKGROUNDS)), None),
        float(match.group(1)) if match else None,
        is_bold(weight) if weight else None,
    )


@lru_cache(maxsize=4096)
def style_look(style: str) -> tuple[bool, Look]:
    """(hidden, look_of) of a style attribute, once per process: a layout repeats its styles."""
    return bool(style and HIDDEN_RE.search(style)), look_of(style_map(style))


@lru_cache(maxsize=4096)
def dark_look(style: str, extra: tuple[tuple[str, str], ...]) -> Look:
    """look_of a style attribute with the dark-mode declarations over it, once per process."""
    return look_of({**style_map(style), **dict(extra)})


def low_contrast(page: StyledEmail, overrides: dict[Any, dict[str, str]]) -> Iterator[str]:
    """`"#777777 on #ffffff (4.48:1, needs 4.5:1): <div> in 'footer' 'Some text...'"`."""
    seen: set[tuple[str, str, str]] = set()
    problems: list[str] = []

    def walk(el: Any, fg: RGB, bg: RGB, size: float, bold: bool) -> None:
        get = el.get
        style = get("style") or ""
        hidden, look = style_look(style)
        if hidden or get("aria-hidden") == "true":
            return
        extra = overrides.get(el)
        if extra:
            look = dark_look(style, tuple(extra.items()))
        color, background, px, weight = look
        fg = color or fg
        if background is None:
            bgcolor = get("bgcolor")
            background = color_of(bgcolor) if bgcolor else None
        bg = background or bg
        size = size if px is None else px
        bold = (bold or el.tag in ("b", "strong", "th")) if weight is None else weight
        needed = AA_LARGE_TEXT if size >= 24 or (bold and size >= 18.66) else AA_TEXT
        ratio = contrast_of(fg, bg)
        if ratio < needed:
            text = " ".join(((el.text or "") + "".join(c.tail or "" for c in el)).split())
            key = (to_hex(fg), to_hex(bg), page.describe(el)) if text else None
            if key is not None and key not in seen:
                seen.add(key)
                problems.append(
                    f"{key[0]} on {key[1]} ({ratio:.2f}:1, needs {needed:g}:1): "
                    f"{key[2]} {text[:40]!r}"
                )
        for child in el:
            if isinstance(child.tag, str) and child.tag not in ("style", "script", "head"):
                walk(child, fg, bg, size, bold)

    body = page.root.find("body")
    if body is not None:
        walk(body, (0, 0, 0), WHITE, DEFAULT_FONT_PX, False)
    return iter(problems)


def contrast_findings(page: StyledEmail) -> Iterator[Finding]:
    for mode, overrides in (("light", {}), ("dark", dark_overrides(page))):
        if mode == "dark" and not overrides:
            continue
        problems = list(low_contrast(page, overrides))
        if problems:
            shown = "; ".join(problems[:3]) + (
                f" (+{len(problems) - 3} more)" * (len(problems) > 3)
            )
            yield RULES.finding(
                "a11y.contrast", f"text below WCAG AA contrast in {mode} mode: {shown}"
            )


def lang_findings(page: StyledEmail) -> Iterator[Finding]:
    missing = []
    if not (page.root.get("lang") or "").strip():
        missing.append("<html>")
    wrappers = page.root.xpath('//*[@role="article"]')
    if wrappers and not (wrappers[0].get("lang") or "").strip():
        missing.append('the body wrapper (role="article")')
    if missing:
        yield RULES.finding(
            "a11y.lang",
            f"no lang attribute on {' and '.join(missing)}: screen readers guess the language",
        )


def heading_findings(page: StyledEmail) -> Iterator[Finding]:
    previous = 0
    for heading in page.root.xpath("//h1|//h2|//h3|//h4|//h5|//h6"):
        level = int(heading.tag[1])
        if level > previous + 1:
            title = " ".join(text_content(heading).split())[:50]
            yield RULES.finding(
                "a11y.heading-order",
                f"<h{level}> {title!r} follows "
                + (f"<h{previous}>" if previous else "no heading")
                + ": a level is skipped, so the outline is broken for screen readers",
                fix=f"use <h{previous + 1}> (in Markdown: {'#' * (previous + 1)} ...), or the "
                "heading level in between",
            )
        previous = level


def bare_words(text: str) -> str:
    """`"Read more »"`, `Click here…`, `“Here”` -> `read more`, `click here`, `here`: the
    words without punctuation and symbols (arrows, quotes, ellipses), case-folded."""
    kept = "".join(c if unicodedata.category(c)[0] not in "PS" else " " for c in text)
    return " ".join(kept.casefold().split())


def link_text_findings(page: StyledEmail) -> Iterator[Finding]:
    vague = sorted(
        {
            " ".join(text_content(a).split())
            for a in page.root.iter("a")
            if bare_words(text_content(a)) in VAGUE_LINK_TEXT
        }
    )
    if vague:
        yield RULES.finding(
            "a11y.link-text",
            f"link text that says nothing out of context: {', '.join(repr(v) for v in vague)}",
        )


def a11y_findings(page: StyledEmail) -> Iterator[Finding]:
    yield from contrast_findings(page)
    yield from lang_findings(page)
    yield from heading_findings(page)
    yield from link_text_findings(page)
