"""`layout.outlook-width`: desktop Outlook (Word's engine) lays the email out from the
`<!--[if mso]>` tables and pixel widths, ignoring `max-width`; an element wider than the
room its cell leaves pushes the whole email wider than 600 px.

`outlook_branch(html)` is the email as Outlook for Windows reads it: the conditional
comments for Outlook switched on, the `<!--[if !mso]><!-->` parts dropped. The rule walks
that tree and keeps the width each cell leaves for its content (its pixel width, less
horizontal padding and borders); an element whose pixel width is larger is reported with
the section it stands in.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from spark_mail.checks.report import Finding, Severity
from spark_mail.checks.styles import parse_document, style_map

# <!--[if !mso]><!--> ... <!--<![endif]-->: everything but Outlook.
NOT_MSO_RE = re.compile(r"<!--\[if\s+!mso[^\]]*\]><!-->.*?<!--<!\[endif\]-->", re.S | re.I)
# <!--[if mso | IE]> ... <![endif]-->: Outlook only (also `lte mso 11`).
MSO_RE = re.compile(r"<!--\[if\s+[^\]!]*mso[^\]]*\]>(.*?)<!\[endif\]-->", re.S | re.I)
PX_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(px)?\s*$", re.I)
LENGTH_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(px|em|rem|pt|%)?\s*$", re.I)
UNIT_PX = {"px": 1.0, "em": 16.0, "rem": 16.0, "pt": 4 / 3}  # Outlook's default 16 px font
BORDER_WIDTH_RE = re.compile(r"(\d+(?:\.\d+)?)px")
SECTION_HINT = "write every padding value with its unit ('0px 24px', not '0 24px')"


def outlook_branch(html: str) -> str:
    """The HTML desktop Outlook renders: mso comments opened, !mso parts removed."""
    return MSO_RE.sub(lambda m: m.group(1), NOT_MSO_RE.sub("", html))


def px(value: str | None) -> float | None:
    """`600`, `600px` -> 600.0; percentages, `auto` and other units -> None."""
    if value is None:
        return None
    match = PX_RE.match(value)
    return float(match.group(1)) if match else None


def length(value: str, room: float | None) -> float:
    """A padding or border length in Outlook's pixels: `24px` or `24`, `3em` / `2rem` (at
    16 px), `36pt` (4/3 px each), `10%` (of the cell's width); `calc()`, `auto` -> 0."""
    match = LENGTH_RE.match(value)
    if not match:
        return 0.0
    number, unit = float(match.group(1)), (match.group(2) or "px").lower()
    if unit == "%":
        return (room or 0.0) * number / 100
    return number * UNIT_PX.get(unit, 0.0)


def box_sides(shorthand: str, room: float | None = None) -> tuple[float, float]:
    """(left, right) of a padding shorthand of 1-4 values; a unitless 0 is 0."""
    values = [length(v, room) for v in shorthand.split()]
    if not values:
        return 0.0, 0.0
    right = values[1] if len(values) > 1 else values[0]
    left = values[3] if len(values) > 3 else right
    return left, right


def horizontal_space(styles: dict[str, str], room: float | None = None) -> float:
    """What an element's padding and borders take from the width inside it."""
    left, right = box_sides(styles.get("padding", ""), room)
    if "padding-left" in styles:
        left = length(styles["padding-left"], room)
    if "padding-right" in styles:
        right = length(styles["padding-right"], room)
    border = 0.0
    if "border" in styles:
        widths = BORDER_WIDTH_RE.findall(styles["border"])
        border = 2 * float(widths[0]) if widths else 0.0
    return left + right + border


@dataclass(frozen=True)
class TooWide:
    """An element wider than the room its cell leaves in Outlook's layout."""

    tag: str
    width: float
    room: float
    section: str


@lru_cache(maxsize=4096)
def section_in(classes: str) -> str:
    """The classes that name a part of the layout (MJML's and the Outlook copies left out)."""
    named = [c for c in classes.split() if not c.startswith("mj-") and not c.endswith("-outlook")]
    return " ".join(named)


@lru_cache(maxsize=4096)
def style_width(style: str) -> float | None:
    """The pixel width a style attribute sets, once per process."""
    return px(style_map(style).get("width"))


@lru_cache(maxsize=4096)
def space_in(style: str, room: float) -> float:
    """horizontal_space of a style attribute in a cell `room` px wide, once per process."""
    return horizontal_space(style_map(style), room)


def too_wide(html: str) -> list[TooWide]:
    """Every outermost element that is wider than its cell allows, in Outlook."""
    root = parse_document(outlook_branch(html))
    found: list[TooWide] = []

    def walk(element: object, room: float | None, section: str) -> None:
        tag = getattr(element, "tag", "")
        if not isinstance(tag, str):
            return  # a comment or processing instruction
        get = element.get  # type: ignore[attr-defined]
        classes = get("class")
        if classes:
            section = section_in(classes) or section
        style = get("style") or ""
        width = style_width(style) or px(get("width"))
        if width is not None and room is not None and width > room + 0.5:
            found.append(TooWide(tag, width, room, section))
            return  # its children overflow with it: one finding per place
        if width is not None:
            room = width
        if room is not None:
            room -= space_in(style, room)
        for child in element:  # type: ignore[attr-defined]
            walk(child, room, section)

    walk(root, None, "")
    return found


def outlook_width_findings(html: str) -> Iterator[Finding]:
    for problem in too_wide(html):
        where = f"the {problem.section!r} section" if problem.section else "the email"
        yield Finding(
            "layout.outlook-width",
            Severity.WARNING,
            f"Outlook for Windows: a <{problem.tag}> {problem.width:.0f} px wide in "
            f"{where} has only {problem.room:.0f} px of room, so desktop Outlook shows the "
            "email wider than the rest and readers scroll sideways",
            f"{SECTION_HINT}; MJML's Outlook tables are sized from the padding",
        )
