"""Colours: WCAG contrast, and a text-safe shade of a brand colour.

A brand's accent (say `#e8590c`) is often too light for text on white (3.58:1 where WCAG AA
asks 4.5:1). `readable(accent, background)` keeps its hue and mixes it towards black (or
white, on a dark background) just enough to reach the ratio, so links and labels stay on
brand and legible. The layout keeps the brand colour itself for borders.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

AA_TEXT = 4.5  # WCAG 2.x AA, normal text
AA_LARGE_TEXT = 3.0  # 24 px and up, or 18.66 px (14 pt) bold and up
HEX_RE = re.compile(r"^#?([0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})$", re.I)
FUNCTION_RE = re.compile(r"^(rgba?|hsla?)\((.*)\)$", re.I)
NUMBER_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)(%|deg)?$", re.I)
# The CSS named colours (CSS Color 4), `transparent` aside (what shows is what is below).
NAMED_TEXT = (
    "aliceblue:f0f8ff antiquewhite:faebd7 aqua:00ffff aquamarine:7fffd4 azure:f0ffff "
    "beige:f5f5dc bisque:ffe4c4 black:000000 blanchedalmond:ffebcd blue:0000ff "
    "blueviolet:8a2be2 brown:a52a2a burlywood:deb887 cadetblue:5f9ea0 chartreuse:7fff00 "
    "chocolate:d2691e coral:ff7f50 cornflowerblue:6495ed cornsilk:fff8dc crimson:dc143c "
    "cyan:00ffff darkblue:00008b darkcyan:008b8b darkgoldenrod:b8860b darkgray:a9a9a9 "
    "darkgreen:006400 darkgrey:a9a9a9 darkkhaki:bdb76b darkmagenta:8b008b "
    "darkolivegreen:556b2f darkorange:ff8c00 darkorchid:9932cc darkred:8b0000 "
    "darksalmon:e9967a darkseagreen:8fbc8f darkslateblue:483d8b darkslategray:2f4f4f "
    "darkslategrey:2f4f4f darkturquoise:00ced1 darkviolet:9400d3 deeppink:ff1493 "
    "deepskyblue:00bfff dimgray:696969 dimgrey:696969 dodgerblue:1e90ff firebrick:b22222 "
    "floralwhite:fffaf0 forestgreen:228b22 fuchsia:ff00ff gainsboro:dcdcdc "
    "ghostwhite:f8f8ff gold:ffd700 goldenrod:daa520 gray:808080 green:008000 "
    "greenyellow:adff2f grey:808080 honeydew:f0fff0 hotpink:ff69b4 indianred:cd5c5c "
    "indigo:4b0082 ivory:fffff0 khaki:f0e68c lavender:e6e6fa lavenderblush:fff0f5 "
    "lawngreen:7cfc00 lemonchiffon:fffacd lightblue:add8e6 lightcoral:f08080 "
    "lightcyan:e0ffff lightgoldenrodyellow:fafad2 lightgray:d3d3d3 lightgreen:90ee90 "
    "lightgrey:d3d3d3 lightpink:ffb6c1 lightsalmon:ffa07a lightseagreen:20b2aa "
    "lightskyblue:87cefa lightslategray:778899 lightslategrey:778899 lightsteelblue:b0c4de "
    "lightyellow:ffffe0 lime:00ff00 limegreen:32cd32 linen:faf0e6 magenta:ff00ff "
    "maroon:800000 mediumaquamarine:66cdaa mediumblue:0000cd mediumorchid:ba55d3 "
    "mediumpurple:9370db mediumseagreen:3cb371 mediumslateblue:7b68ee "
    "mediumspringgreen:00fa9a mediumturquoise:48d1cc mediumvioletred:c71585 "
    "midnightblue:191970 mintcream:f5fffa mistyrose:ffe4e1 moccasin:ffe4b5 "
    "navajowhite:ffdead navy:000080 oldlace:fdf5e6 olive:808000 olivedrab:6b8e23 "
    "orange:ffa500 orangered:ff4500 orchid:da70d6 palegoldenrod:eee8aa palegreen:98fb98 "
    "paleturquoise:afeeee palevioletred:db7093 papayawhip:ffefd5 peachpuff:ffdab9 "
    "peru:cd853f pink:ffc0cb plum:dda0dd powderblue:b0e0e6 purple:800080 red:ff0000 "
    "rosybrown:bc8f8f royalblue:4169e1 saddlebrown:8b4513 salmon:fa8072 sandybrown:f4a460 "
    "seagreen:2e8b57 seashell:fff5ee sienna:a0522d silver:c0c0c0 skyblue:87ceeb "
    "slateblue:6a5acd slategray:708090 slategrey:708090 snow:fffafa springgreen:00ff7f "
    "steelblue:4682b4 tan:d2b48c teal:008080 thistle:d8bfd8 tomato:ff6347 turquoise:40e0d0 "
    "violet:ee82ee wheat:f5deb3 white:ffffff whitesmoke:f5f5f5 yellow:ffff00 "
    "yellowgreen:9acd32 rebeccapurple:663399"
)
NAMED = dict(re.findall(r"([a-z]+):([0-9a-f]{6})", NAMED_TEXT))

RGB = tuple[int, int, int]


def number(text: str, scale: float) -> float | None:
    """`50%` -> 0.5 * scale, `128` -> 128.0, `90deg` -> 90.0; anything else -> None."""
    match = NUMBER_RE.match(text.strip())
    if not match:
        return None
    value = float(match.group(1))
    return value * scale / 100 if match.group(2) == "%" else value


def function_color(name: str, arguments: str) -> RGB | None:
    """`rgb(1 2 3)`, `rgba(1, 2, 3, 1)`, `hsl(20 90% 48% / 100%)` -> (r, g, b)."""
    main, _, alpha_text = arguments.partition("/")
    parts = [p for p in re.split(r"[\s,]+", main.strip()) if p]
    if not alpha_text and len(parts) == 4:
        parts, alpha_text = parts[:3], parts[3]
    alpha = number(alpha_text, 1.0) if alpha_text.strip() else 1.0
    if len(parts) != 3 or alpha is None or alpha < 1:
        return None  # half-transparent: its contrast depends on what is below
    if name.startswith("rgb"):
        values = [number(p, 255.0) for p in parts]
        if any(v is None for v in values):
            return None
        r, g, b = (round(min(255.0, max(0.0, v or 0.0))) for v in values)
        return r, g, b
    hue, sat, light = number(parts[0], 360.0), number(parts[1], 1.0), number(parts[2], 1.0)
    if hue is None or sat is None or light is None or not math.isfinite(hue):
        return None
    if not parts[1].endswith("%") or not parts[2].endswith("%"):
        return None
    return hsl_to_rgb(hue, min(1.0, max(0.0, sat)), min(1.0, max(0.0, light)))


def hsl_to_rgb(hue: float, sat: float, light: float) -> RGB:
    chroma = (1 - abs(2 * light - 1)) * sat

    def channel(n: int) -> int:
        k = (n + hue / 30) % 12
        return round(255 * (light - chroma / 2 * max(-1, min(k - 3, 9 - k, 1))))

    return channel(0), channel(8), channel(4)


def parse_color(value: str) -> RGB | None:
    """Any opaque CSS colour (hex of 3, 4, 6 or 8 digits, `rgb()`, `rgba()`, `hsl()`,
    `hsla()`, a named colour) -> (r, g, b); anything else -> None, never an exception
    (transparent and half-transparent colours too: their contrast depends on what is below;
    `inherit`, `currentColor`, `var(--x)`: the caller keeps what the element inherits)."""
    text = value.strip().lower().removesuffix("!important").strip()
    text = "#" + NAMED[text] if text in NAMED else text
    match = HEX_RE.match(text)
    if match:
        digits = match.group(1)
        if len(digits) <= 4:
            digits = "".join(c * 2 for c in digits)
        if len(digits) == 8 and digits[6:] != "ff":
            return None
        return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
    match = FUNCTION_RE.match(text)
    return function_color(match.group(1), match.group(2)) if match else None


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
