"""Which characters text may carry where it goes: the one rule for issue fields and settings.

A value that becomes a header or a single line (a subject, a title, `from`, an unsubscribe
URL) may not contain a control character (CR and LF above all: they would start a new
header), DEL, or Unicode's line and paragraph separators. Text that may span lines (the
Markdown, a disclaimer) may contain tab and line ends, but no other control character. No
text may contain a lone surrogate: it is no character at all (YAML's "\\ud800" escape, or
an environment variable holding bytes that are not UTF-8), nor the noncharacters U+FFFE and
U+FFFF, which XML cannot carry (the web archive's feeds and sitemap are XML). What is left is
exactly what XML 1.0 allows, so every text fits an email header, a page and a feed.
"""

from __future__ import annotations

import re

SINGLE_LINE_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufffe\uffff]")
MULTILINE_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def forbidden_character(text: str, *, multiline: bool = False) -> re.Match[str] | None:
    """The first character `text` may not carry (see the module docstring), or None."""
    return (MULTILINE_FORBIDDEN if multiline else SINGLE_LINE_FORBIDDEN).search(text)


def describe(match: re.Match[str]) -> str:
    """What the forbidden character is, for an error message."""
    code = ord(match.group())
    if 0xD800 <= code <= 0xDFFF:
        return f"a lone surrogate (U+{code:04X}, not a character)"
    if code in (0x0A, 0x0D, 0x85):
        return f"a line break (U+{code:04X})"
    if code in (0xFFFE, 0xFFFF):
        return f"the noncharacter U+{code:04X} (not text)"
    if code in (0x2028, 0x2029):
        return f"the {'line' if code == 0x2028 else 'paragraph'} separator U+{code:04X}"
    return f"the control character U+{code:04X}"
