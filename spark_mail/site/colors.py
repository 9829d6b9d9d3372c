"""Brand colours made readable on the web pages (WCAG 2 contrast).

A brand's accent is often too light for text on white (#e8590c is 3.6:1; body-size text needs
4.5:1). The pages keep the brand's hue and darken it (on a light background) or lighten it
(on a dark one) just enough to pass, so the archive passes an accessibility audit whatever
colours the newsletter picked.
"""

from __future__ import annotations

import re

AA_TEXT = 4.5
HEX_RE = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")


def rgb(color: str) -> tuple[int, int, int] | None:
    match = HEX_RE.fullmatch(color.strip())
    if match is None:
        return None
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def luminance(color: tuple[int, int, int]) -> float:
    def channel(value: int) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(v) for v in color)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def readable(color: str, background: str, fallback: str, minimum: float = AA_TEXT) -> str:
    """`color`, mixed towards black or white (whichever the background is not) until it
    reaches `minimum` contrast on `background`; `fallback` for a colour that is not #rrggbb."""
    fg, bg = rgb(color), rgb(background)
    if fg is None or bg is None:
        return fallback
    target = (0, 0, 0) if luminance(bg) > 0.18 else (255, 255, 255)
    for step in range(21):
        share = step / 20
        r, g, b = (round(c + (t - c) * share) for c, t in zip(fg, target, strict=True))
        if contrast((r, g, b), bg) >= minimum:
            return f"#{r:02x}{g:02x}{b:02x}"
    return fallback
