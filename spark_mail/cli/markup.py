"""rich's console markup, read without rich where the output is plain text.

Under cron, in a pipe or a script, rich writes a message as its markup with the tags taken
out: no colour, no wrapping (the consoles soft-wrap). Importing rich to do that is about a
sixth of a cold `spark-mail build`, so `plain_text` does it here, and says None for anything
it does not read exactly as rich does (a tab, a `[@click]` handler, a closing tag it cannot
match): that message goes to rich. `escape` is rich's escape, so messages never need rich to
be written. tests/test_plain_output.py holds both to rich's own results.
"""

from __future__ import annotations

import re

# rich's tag: backslashes that may escape it, "[", a name that starts with a-z # / or @, "]"
TAG = re.compile(r"(\\*)(\[([a-z#/@][^[]*?)])")
# the control characters rich takes out of any text it prints: BEL, BS, VT, FF and CR
CONTROL = str.maketrans(dict.fromkeys((7, 8, 11, 12, 13)))


def escape(text: str) -> str:
    """`text` as markup that prints as written: each backslash before a tag doubled and the
    tag's "[" escaped; a lone trailing backslash doubled (it would escape what follows)."""
    escaped = TAG.sub(lambda m: m[1] * 2 + "\\" + m[2], text)
    if escaped.endswith("\\") and not escaped.endswith("\\\\"):
        return escaped + "\\"
    return escaped


def plain_text(markup: str) -> str | None:
    """What rich prints for `markup` on a console without colour, or None where only rich
    can say (its output may differ, or it raises a MarkupError)."""
    if "\t" in markup:  # rich expands tabs by display width
        return None
    pieces: list[str] = []
    open_tags: list[str] = []
    position = 0
    for match in TAG.finditer(markup):
        backslashes, tag, name = match[1], match[2], match[3].partition("=")[0]
        start, end = match.span()
        pieces.append(markup[position:start].replace("\\[", "["))
        position = end
        literal, escaped = divmod(len(backslashes), 2)
        pieces.append("\\" * literal)
        if escaped:
            pieces.append(tag)
        elif name.startswith("@"):
            return None
        elif not name.startswith("/"):
            open_tags.append(name.strip())
        elif not closes(open_tags, name[1:].strip()):
            return None
    pieces.append(markup[position:].replace("\\[", "["))
    return "".join(pieces).translate(CONTROL)


def closes(open_tags: list[str], name: str) -> bool:
    """Close `name` (the last open tag when empty) where rich closes the same tag: the last
    open tag, written the same way. rich compares parsed styles ("b" closes "bold") or, where
    a name does not parse, the names as written ("x  y" is not "x y"; a link's URL keeps its
    case), and closes the last open tag that matches: any other close may take another tag
    than the one taken here, or none (rich raises), so it goes to rich."""
    if not open_tags or (name and open_tags[-1] != name):
        return False
    open_tags.pop()
    return True
