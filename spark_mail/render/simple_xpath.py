"""The XPath cssselect writes for the simple selectors of a layout, run in Python on an index
of the tree built once, instead of by lxml once per selector over the whole tree.

A layout's CSS is mostly `.class`, `tag`, `tag.class` and `.a.b`, joined by ` ` and `>`
(`.prose h2`, `.card > table`, `.card .button td`). For each, cssselect writes XPath such as
`descendant-or-self::*[@class and contains(@class, 'card') and contains(concat(' ',
normalize-space(@class), ' '), ' card ')]/descendant::td`, which libxml2 evaluates by testing
every element of the email (~0.1-0.2 ms a selector, dozens of selectors a build and again a
check). Here each element's tag and class names are read once (TreeIndex), and a selector is
a few dictionary look-ups and a walk of the subtrees it names.

Only XPath of exactly those shapes is taken (`plan` rebuilds the text from what it read and
compares: anything else, an id, an attribute, a pseudo-class, another spelling, is None and
left to lxml), and it selects what lxml selects: the same elements, in document order, each
once. Class names: ASCII letters, digits, `-` and `_`; `normalize-space` splits on the four
XML blanks (space, tab, CR, LF) only; names are compared as written (libxml2 does not fold
case).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

BLANKS_RE = re.compile(r"[ \t\r\n]+")
STEP_RE = re.compile(r"(descendant-or-self::|descendant::)?([A-Za-z][A-Za-z0-9]*|\*)(?:\[(.*)\])?")
CLASS_RE = re.compile(r"contains\(@class, '([A-Za-z0-9_-]+)'\)")
FIRST, CHILD, DESCENDANT = "descendant-or-self::", "", "descendant::"
# (axis, tag or None for any element, the class names it must have)
Step = tuple[str, str | None, tuple[str, ...]]


def class_test(name: str) -> str:
    return (
        f"@class and contains(@class, '{name}') and "
        f"contains(concat(' ', normalize-space(@class), ' '), ' {name} ')"
    )


def step_text(axis: str, tag: str | None, classes: tuple[str, ...]) -> str:
    if len(classes) > 1:
        predicate = " and ".join(f"({class_test(c)})" for c in classes)
    else:
        predicate = "".join(class_test(c) for c in classes)
    return f"{axis}{tag or '*'}" + (f"[{predicate}]" if predicate else "")


@lru_cache(maxsize=1024)
def plan(xpath: str) -> tuple[Step, ...] | None:
    """The steps of `xpath` when it has one of the shapes above, else None."""
    steps: list[Step] = []
    for number, part in enumerate(xpath.split("/")):
        match = STEP_RE.fullmatch(part)
        if match is None:
            return None
        axis = match.group(1) or CHILD
        if (axis == FIRST) != (number == 0):
            return None
        tag = None if match.group(2) == "*" else match.group(2)
        classes = tuple(CLASS_RE.findall(match.group(3) or ""))
        steps.append((axis, tag, classes))
    if "/".join(step_text(*step) for step in steps) != xpath:
        return None
    return tuple(steps)


class TreeIndex:
    """The elements under a root (comments and processing instructions left out), in
    document order, by tag and by class name. Build it when the tree's tags and classes
    are final: it does not see later changes."""

    __slots__ = ("by_class", "by_tag", "classes", "elements", "position")

    def __init__(self, root: Any) -> None:
        self.elements: list[Any] = []
        self.position: dict[Any, int] = {}
        self.by_tag: dict[str, list[Any]] = {}
        self.by_class: dict[str, list[Any]] = {}
        self.classes: dict[Any, frozenset[str]] = {}
        for element in root.iter():
            tag = element.tag
            if not isinstance(tag, str):
                continue
            self.position[element] = len(self.elements)
            self.elements.append(element)
            self.by_tag.setdefault(tag, []).append(element)
            value = element.get("class")
            if value is not None:
                names = frozenset(BLANKS_RE.split(value))
                self.classes[element] = names
                for name in names:
                    self.by_class.setdefault(name, []).append(element)

    def fits(self, element: Any, tag: str | None, classes: tuple[str, ...]) -> bool:
        if tag is not None and element.tag != tag:
            return False
        return not classes or self.has(element, classes)

    def has(self, element: Any, classes: tuple[str, ...]) -> bool:
        names = self.classes.get(element)
        return names is not None and all(c in names for c in classes)

    def select(self, steps: tuple[Step, ...]) -> list[Any]:
        """The elements the plan's XPath selects from the root, as lxml gives them."""
        _, tag, classes = steps[0]
        if classes:
            start = self.by_class.get(classes[0], [])
        elif tag is not None:
            start = self.by_tag.get(tag, [])
        else:
            start = self.elements
        found = [e for e in start if self.fits(e, tag, classes)]
        for axis, tag, classes in steps[1:]:
            if not found:
                return found
            reached: dict[Any, None] = {}
            for element in found:
                # lxml's tag filter is the XPath name test: exact, case and all
                if axis == CHILD:
                    below = element.iterchildren(tag) if tag is not None else iter(element)
                else:
                    below = element.iter(tag) if tag is not None else element.iter()
                    if tag is None or element.tag == tag:
                        next(below)  # descendant, not descendant-or-self: itself comes first
                for candidate in below:  # the position: an element, not a comment
                    if candidate in self.position and (not classes or self.has(candidate, classes)):
                        reached[candidate] = None
            found = list(reached)
            if len(found) > 1:
                found.sort(key=self.position.__getitem__)
        return found
