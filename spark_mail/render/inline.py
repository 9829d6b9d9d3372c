"""CSS inlining for email built by MJML: the layout's `<mj-style inline="inline">` CSS is
written into each element's style attribute (MRML, the MJML compiler, does not do it).

A small inliner on lxml + cssselect (selectors.py) that does what premailer did here
(spark-mail used premailer before: premailer, cssutils and requests were half of a cold
build and of a warm one), keeping the lessons of that time:
- only the layout's inline CSS is applied; the `<style>` blocks MJML wrote (the phone layout,
  the dark-mode rules) are left exactly as they are, `!important` included;
- rules that cannot be inlined (inside `@media` or another at-rule, with a pseudo-class or
  pseudo-element) go into a `<style>` in `<head>`, their declarations made `!important` so
  they still win over the inline styles; `@import` goes there too, and is never fetched;
- order: rules by (!important, specificity, position); the element's own style attribute
  wins over them all (MJML's inline styles are deliberate);
- for Outlook, `text-align`, `vertical-align`, `background-color`, `width` and `height` of a
  styled element are also written as the HTML attributes align, valign, bgcolor, width and
  height (premailer's "basic attributes"), and a floated image gets align;
- merge tags: lxml %-encodes `{{ x }}` in href/src; every merge tag is swapped for an
  alphanumeric placeholder before and put back after. The placeholder carries a nonce made
  from the HTML itself, so no issue text can forge one (it would have to contain a hash of
  itself);
- the doctype: MJML's `<!doctype html>` comes out as `<!DOCTYPE html>`.
Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from spark_mail.errors import IssueError
from spark_mail.render.css import CssRule, declarations, parse_css
from spark_mail.render.selectors import select, translations
from spark_mail.render.simple_xpath import TreeIndex

MERGE_TAG_RE = re.compile(
    r"\{\{\{.*?\}\}\}"  # {{{ triple }}} (Resend, Postmark)
    r"|\{\{.*?\}\}"  # {{ double }} (Buttondown, Liquid, Handlebars)
    r"|\{%.*?%\}"  # {% tag %}
    r"|%recipient(?:\.[A-Za-z0-9_]+)?%"  # Mailgun recipient variables
    r"|%(?:tag_|mailing_list_)?unsubscribe_url%"  # Mailgun unsubscribe
    r"|\*\|[A-Z0-9_:]+\|\*"  # Mailchimp-style
    r"|<%[^%]*%>",  # SendGrid unsubscribe groups
    re.S,
)
PLACEHOLDER = "spkmrgtag{nonce}q{index}x"
IMPORT_RE = re.compile(r"@import\s+[^;]+;", re.I)
DOCTYPE = "<!DOCTYPE html>"
MAX_DEPTH = 255  # libxml2's HTML parser stops at 256 levels (without XML_PARSE_HUGE)


def protect_merge_tags(html: str) -> tuple[str, list[str], str]:
    """(html with placeholders, the merge tags, the nonce of this html's placeholders)."""
    nonce = content_nonce(html)
    tags: list[str] = []

    def swap(match: re.Match[str]) -> str:
        tags.append(match.group(0))
        return PLACEHOLDER.format(nonce=nonce, index=len(tags) - 1)

    return MERGE_TAG_RE.sub(swap, html), tags, nonce


def restore_merge_tags(html: str, tags: list[str], nonce: str) -> str:
    if not tags:
        return html
    placeholder = re.compile(PLACEHOLDER.format(nonce=nonce, index=r"(\d+)"))
    return placeholder.sub(lambda m: tags[int(m.group(1))], html)


def content_nonce(text: str) -> str:
    """16 hex digits of a hash of `text`: a marker built with it cannot come from `text`."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


IMPORTANT = "!important"
# CSS property -> the HTML attribute Outlook and old clients read instead.
BASIC_ATTRIBUTES = {
    "text-align": "align",
    "vertical-align": "valign",
    "background-color": "bgcolor",
    "width": "width",
    "height": "height",
}
PSEUDO_RE = re.compile(r":(?!not\()")  # a pseudo-class or -element (`:not(...)` aside)
Styles = dict[str, str]


def inlinable(rule: CssRule) -> bool:
    return (
        not rule.at_rules
        and not rule.selector.startswith("@")
        and not PSEUDO_RE.search(rule.selector)
    )


class StyleSheet:
    """A layout's inline CSS, read once per process (every email of a layout has the same):
    the rules to inline (each with its selectors), and the CSS left for <head>. (A plain
    class: a dataclass would cost a cold start the compiling of its methods.)"""

    __slots__ = ("inlinable", "leftover", "selectors")

    def __init__(
        self,
        inlinable: tuple[CssRule, ...],
        selectors: tuple[tuple[str, ...], ...],  # of each inlinable rule, split
        leftover: str,
    ) -> None:
        self.inlinable = inlinable
        self.selectors = selectors
        self.leftover = leftover


@lru_cache(maxsize=64)
def style_sheet(css: str) -> StyleSheet:
    imports = IMPORT_RE.findall(css)
    rules = parse_css(IMPORT_RE.sub("", css))
    kept = tuple(r for r in rules if inlinable(r))
    selectors = tuple(tuple(s.strip() for s in r.selector.split(",")) for r in kept)
    leftover = leftover_css([r for r in rules if not inlinable(r)], imports)
    return StyleSheet(kept, selectors, leftover)


def matches(root: Any, sheet: StyleSheet) -> dict[Any, Styles]:
    """element -> the declarations the sheet's inlinable rules give it, in cascade order."""
    applied: list[tuple[tuple[int, tuple[int, int, int], int], Any, str, str]] = []
    # A layout often styles the same selector in several rules (`.prose h1, .prose h2`,
    # then `.prose h1` alone): each is looked up in the tree once.
    found_by_selector: dict[str, tuple[list[Any], tuple[int, int, int]] | None] = {}
    index = TreeIndex(root)
    for position, rule in enumerate(sheet.inlinable):
        for selector in sheet.selectors[position]:
            if selector not in found_by_selector:
                found_by_selector[selector] = select(root, selector, index) if selector else None
            found = found_by_selector[selector]
            if found is None:
                continue
            elements, specificity = found
            for name, value in rule.declarations:
                rank = (int(value.endswith(IMPORTANT)), specificity, position)
                applied.extend((rank, element, name, value) for element in elements)
    styles: dict[Any, Styles] = {}
    for _, element, name, value in sorted(applied, key=lambda a: a[0]):
        slot = styles.setdefault(element, {})
        slot.pop(name, None)  # the later rule's value, in the later place
        slot[name] = value
    return styles


def merged_style(element: Any, from_rules: Styles) -> Styles:
    """The rules' declarations, then the element's own style attribute over them."""
    merged = dict(from_rules)
    for name, value in declarations(element.get("style") or ""):
        merged[name] = value
    return merged


def set_basic_attributes(element: Any, style: Styles) -> None:
    for prop, attribute in BASIC_ATTRIBUTES.items():
        value = style.get(prop, "").replace(IMPORTANT, "").strip()
        if not value or (prop == "background-color" and "transparent" in value.lower()):
            continue
        if prop in ("width", "height") and value.endswith("px"):
            value = value[:-2]
        if prop == "background-color" and re.fullmatch(r"#[0-9a-fA-F]{3}", value):
            value = "#" + "".join(c * 2 for c in value[1:])
        element.set(attribute, value)
    if element.tag == "img" and style.get("float", "").strip() in ("left", "right"):
        element.set("align", style["float"].strip())


def leftover_css(rules: list[CssRule], imports: list[str]) -> str:
    """The rules that cannot be inlined, as a style sheet; their declarations !important."""

    def block(rule: CssRule) -> Iterator[str]:
        body = "; ".join(
            f"{n}: {v if v.endswith(IMPORTANT) else v + ' ' + IMPORTANT}"
            for n, v in rule.declarations
        )
        text = f"{rule.selector} {{ {body} }}"
        for at_rule in reversed(rule.at_rules):
            text = f"{at_rule} {{ {text} }}"
        yield text

    return "\n".join([*imports, *(line for rule in rules for line in block(rule))])


def inline_css(html: str, css: str, source: Path | str = "the email") -> str:
    """Inline `css` into `html`; rules that cannot be inlined (@media) are kept in <head>.
    IssueError (naming `source`) for HTML nested deeper than libxml2 reads: it would drop
    everything after that point without a word (the footer and its unsubscribe link)."""
    from lxml import etree

    protected, tags, nonce = protect_merge_tags(html)
    sheet = style_sheet(css)
    parser = etree.HTMLParser()
    tree = etree.fromstring(protected.strip(), parser).getroottree()
    if any(error.type_name == "ERR_RESOURCE_LIMIT" for error in parser.error_log):
        raise IssueError(
            source,
            f"the email's HTML is nested more than {MAX_DEPTH} elements deep, and everything "
            "after that point (the footer, the unsubscribe link) would be cut off",
            hint="flatten the HTML written in the issue (nested <div>s, lists or quotes)",
        )
    root = tree.getroot()
    for element, from_rules in matches(root, sheet).items():
        style = merged_style(element, from_rules)
        element.set("style", "; ".join(f"{n}:{v}" for n, v in style.items()))
        set_basic_attributes(element, style)
    translations().save()
    head = root.find("head")
    if sheet.leftover and head is not None:
        element = etree.SubElement(head, "style", type="text/css")
        element.text = sheet.leftover
    out = etree.tostring(tree, method="html", encoding="unicode").rstrip("\n") + "\n"
    if out.lstrip()[:9].lower() != "<!doctype":
        out = DOCTYPE + "\n" + out
    return restore_merge_tags(out, tags, nonce)
