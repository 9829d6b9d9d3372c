"""Colours: WCAG contrast, and a text-safe shade of a brand colour.

A brand's accent (say `#e8590c`) is often too light for text on white (3.58:1 where WCAG AA
asks 4.5:1). `readable(accent, background)` keeps its hue and mixes it towards black (or
white, on a dark background) just enough to reach the ratio, so links and labels stay on
brand and legible. The layout keeps the brand colour itself for borders.
"""

from __future__ import annotations

import re
from functools import lru_cache

AA_TEXT = 4.5  # WCAG 2.x AA, normal text
AA_LARGE_TEXT = 3.0  # 24 px and up, or 18.66 px (14 pt) bold and up
HEX_RE = re.compile(r"^#?([0-9a-f]{3}|[0-9a-f]{6})$", re.I)
RGB_RE = re.compile(r"^rgba?\(\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*(?:,\s*([\d.]+)\s*)?\)$", re.I)
NAMED = {
    "white": "#ffffff",
    "black": "#000000",
    "red": "#ff0000",
    "green": "#008000",
    "blue": "#0000ff",
    "gray": "#808080",
    "grey": "#808080",
    "silver": "#c0c0c0",
    "orange": "#ffa500",
    "yellow": "#ffff00",
    "navy": "#000080",
    "purple": "#800080",
    "maroon": "#800000",
}

RGB = tuple[int, int, int]


def parse_color(value: str) -> RGB | None:
    """`#abc`, `#aabbcc`, `rgb(1, 2, 3)`, a few names -> (r, g, b); anything else -> None
    (transparent and half-transparent colours too: their contrast depends on what is below)."""
    text = value.strip().lower().removesuffix("!important").strip()
    text = NAMED.get(text, text)
    match = HEX_RE.match(text)
    if match:
        digits = match.group(1)
        if len(digits) == 3:
            digits = "".join(c * 2 for c in digits)
        return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
    match = RGB_RE.match(text)
    if match and (match.group(4) is None or float(match.group(4)) >= 1):
        r, g, b = (min(255, int(match.group(i))) for i in (1, 2, 3))
        return r, g, b
    return None


def to_hex(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def luminance(rgb: RGB) -> float:
    """WCAG relative luminance."""

    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(fg: RGB, bg: RGB) -> float:
    """WCAG contrast ratio, 1.0 to 21.0."""
    a, b = sorted((luminance(fg), luminance(bg)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def mix(rgb: RGB, toward: RGB, amount: float) -> RGB:
    r, g, b = (round(c + (t - c) * amount) for c, t in zip(rgb, toward, strict=True))
    return r, g, b


@lru_cache(maxsize=64)
def readable(color: str, background: str, ratio: float = AA_TEXT) -> str:
    """`color`, or the nearest shade of it (towards black on a light background, towards
    white on a dark one) that reaches `ratio` against `background`. Unparseable colours are
    returned as they are."""
    fg, bg = parse_color(color), parse_color(background)
    if fg is None or bg is None:
        return color
    if contrast(fg, bg) >= ratio:
        return to_hex(fg)
    toward: RGB = (0, 0, 0) if luminance(bg) > 0.18 else (255, 255, 255)
    steps = 100
    for step in range(1, steps + 1):
        shade = mix(fg, toward, step / steps)
        if contrast(shade, bg) >= ratio:
            return to_hex(shade)
    return to_hex(toward)
