"""`clients.*`: CSS and HTML that the major mail clients drop, from the caniemail.com data.

The final email (inlined HTML and its `<style>` blocks, as every client but desktop Outlook
reads it) is scanned for the features caniemail tracks: CSS properties and some of their
values, at-rules, selectors, HTML elements and attributes, image formats. A feature that a
client does not support at all ("n" in its newest test) is a finding naming the client,
what happens there and where it is used.

Features the default layout uses on purpose, with a fallback for the clients that drop them
(the phone layout's `@media`, the dark-mode rules, rounded corners, ...), are listed once
each as `info`, saying what those readers see instead; anything else is a warning.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from spark_mail.checks.caniemail import Client, Feature, features, resolve_clients
from spark_mail.checks.report import Finding, Severity
from spark_mail.checks.styles import StyledEmail, at_rule_names, declarations

# Used on purpose with a fallback: what a client that drops the feature shows instead.
FALLBACKS = {
    "css-at-media": "the desktop layout, scaled to the screen (no one-column phone layout)",
    "css-at-media-prefers-color-scheme": "the light design, or the client's own dark mode",
    "html-meta-color-scheme": "its own choice of light or dark colours",
    "css-border-radius": "square corners",
    "css-overflow-wrap": "long words broken by `word-break` instead",
    "css-word-break": "a long word or URL that may widen its column a little",
    "css-white-space": "code lines that wrap at spaces only",
    "css-table-layout": "table columns sized by their content",
    "css-selector-child": "the rules of the dark-mode block not applied (light design)",
    "css-box-shadow": "no shadow",
    "css-max-width": "MJML's Outlook tables, which fix the width instead",
    # MJML's own resets and the hidden preheader: dropping them changes nothing visible.
    "css-border-spacing": "the same spacing from the table's cellspacing attribute",
    "css-cursor": "the usual pointer",
    "css-height": "images as tall as their width makes them (height:auto does the same)",
    "css-max-height": "the hidden preheader still hidden (display:none, mso-hide:all)",
    "css-overflow": "the hidden preheader still hidden (display:none, mso-hide:all)",
    "css-outline": "no outline around linked images, as intended",
    "css-word-spacing": "normal word spacing, as intended",
    "css-word-wrap": "long code lines wrapped by `white-space` and `word-break` instead",
}
# Property values that are features of their own in caniemail.
VALUE_FEATURES = (
    ("display", re.compile(r"\bflex\b"), "css-display-flex"),
    ("display", re.compile(r"\bgrid\b"), "css-display-grid"),
    ("display", re.compile(r"\bnone\b"), "css-display-none"),
)


def _compiled(table: dict[str, str], flags: int = 0) -> tuple[tuple[re.Pattern[str], str], ...]:
    """A table of regex -> caniemail slug as (compiled pattern, slug) pairs, in its order."""
    return tuple((re.compile(regex, flags), slug) for regex, slug in table.items())


# Features of their own in any property's value, in selectors, in at-rules (the first match).
ANY_VALUE_FEATURES = _compiled(
    {
        r"linear-gradient\(": "css-linear-gradient",
        r"radial-gradient\(": "css-radial-gradient",
        r"\bvar\(--": "css-variables",
        r"\bcalc\(": "css-unit-calc",
        r"\brgba\(": "css-rgba",
        r"\d(rem)\b": "css-unit-rem",
        r"\d(vw)\b": "css-unit-vw",
        r"\d(vh)\b": "css-unit-vh",
    }
)
SELECTOR_FEATURES = _compiled(
    {
        r">": "css-selector-child",
        r"\+": "css-selector-adjacent-sibling",
        r"~": "css-selector-general-sibling",
        r"\[": "css-selector-attribute",
        r":hover\b": "css-pseudo-class-hover",
        r"::?before\b": "css-pseudo-element-before",
        r"::?after\b": "css-pseudo-element-after",
    }
)
AT_RULE_FEATURES = _compiled(
    {
        r"@media\b.*prefers-color-scheme": "css-at-media-prefers-color-scheme",
        r"@media\b": "css-at-media",
        r"@font-face\b": "css-at-font-face",
        r"@import\b": "css-at-import",
        r"@supports\b": "css-at-supports",
        r"@keyframes\b": "css-at-keyframes",
    },
    re.I,
)
ATTRIBUTE_FEATURES = {"srcset": "html-srcset", "loading": "html-loading-attribute"}
IMAGE_FORMATS = re.compile(r"\.(svg|webp|avif|heif|bmp|tiff?|ico|apng)(\?|#|$)", re.I)
ELEMENTS_MEANING = "is not shown there, or its content stands as plain text"


@dataclass
class Use:
    """Where one feature is used: up to a few places, and how many."""

    places: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, place: str, times: int = 1) -> None:
        self.count += times
        if place not in self.places and len(self.places) < 3:
            self.places.append(place)

    def where(self) -> str:
        more = self.count - len(self.places)
        return "; ".join(self.places) + (f" (+{more} more)" if more > 0 else "")


def feature_uses(page: StyledEmail, known: dict[str, Feature]) -> dict[str, Use]:
    """caniemail feature slug -> where the email uses it."""
    uses: dict[str, Use] = defaultdict(Use)
    found: dict[tuple[str, str], tuple[str, ...]] = {}  # a layout repeats its declarations

    def declaration(name: str, value: str, place: str) -> None:
        slugs = found.get((name, value))
        if slugs is None:
            slugs = found[name, value] = declaration_features(name, value, known)
        for slug in slugs:
            uses[slug].add(place)

    for element in page.elements():
        tag = str(element.tag).lower()
        if tag == "meta" and (element.get("name") or "").lower() == "color-scheme":
            uses["html-meta-color-scheme"].add("<meta name=color-scheme> in <head>")
        elif f"html-{tag}" in known and tag not in ("html", "body", "div", "table"):
            uses[f"html-{tag}"].add(page.describe(element))
        for attribute, slug in ATTRIBUTE_FEATURES.items():
            if element.get(attribute) is not None:
                uses[slug].add(page.describe(element))
        if tag == "img":
            match = IMAGE_FORMATS.search(element.get("src") or "")
            if match:
                slug = f"image-{match.group(1).lower().replace('tif', 'tiff')[:4]}"
                uses[slug].add(page.describe(element))
        style = element.get("style")
        if style:
            inline = f"inline style of {page.describe(element)}"
            for slug, count in style_features(style, known):
                uses[slug].add(inline, count)
    for rule in page.rules:
        place = f"<style> rule `{rule.selector[:60]}`"
        for pattern, slug in SELECTOR_FEATURES:
            if pattern.search(rule.selector):
                uses[slug].add(place)
        for name, value in rule.declarations:
            declaration(name, value, place)
    for text in page.style_texts:
        for at_rule in at_rule_names(text):
            for pattern, slug in AT_RULE_FEATURES:
                if pattern.search(at_rule):
                    uses[slug].add(f"<style> `{at_rule[:60]}`")
                    break
    return {slug: use for slug, use in uses.items() if slug in known}


_STYLE_FEATURES: dict[str, tuple[dict[str, Feature], tuple[tuple[str, int], ...]]] = {}


def style_features(style: str, known: dict[str, Feature]) -> tuple[tuple[str, int], ...]:
    """The features a style attribute uses, each with how many of its declarations use it;
    kept per process with the caniemail data they were found in (a layout repeats its style
    attributes; `caniemail refresh` loads new data)."""
    kept = _STYLE_FEATURES.get(style)
    if kept is not None and kept[0] is known:
        return kept[1]
    counts: dict[str, int] = {}
    for name, value in declarations(style):
        for slug in declaration_features(name, value, known):
            counts[slug] = counts.get(slug, 0) + 1
    found = tuple(counts.items())
    if kept is not None or len(_STYLE_FEATURES) < 4096:
        _STYLE_FEATURES[style] = (known, found)
    return found


def declaration_features(name: str, value: str, known: dict[str, Feature]) -> tuple[str, ...]:
    """The features one declaration uses, in the order they are counted."""
    slugs: list[str] = []
    if f"css-{name}" in known:
        slugs.append(f"css-{name}")
    for prop, pattern, slug in VALUE_FEATURES:
        if name == prop and pattern.search(value):
            slugs.append(slug)
    for pattern, slug in ANY_VALUE_FEATURES:
        if pattern.search(value):
            slugs.append(slug)
    return tuple(slugs)


def client_findings(
    page: StyledEmail, clients: Sequence[Client] | None = None
) -> Iterator[Finding]:
    """A finding per feature that at least one of `clients` drops."""
    known = features()
    chosen = tuple(clients) if clients is not None else resolve_clients(None)
    for slug, use in sorted(feature_uses(page, known).items()):
        feature = known[slug]
        dropping = [c for c in chosen if c.id in feature.support]
        dropping = [c for c in dropping if feature.support[c.id].value == "n"]
        if dropping:
            yield finding(feature, dropping, use)


def finding(feature: Feature, dropping: list[Client], use: Use) -> Finding:
    names = ", ".join(c.name for c in dropping)
    what = feature.title if feature.slug.startswith("css-") else f"<{feature.title}>"
    if feature.slug in FALLBACKS:
        return Finding(
            f"clients.{feature.slug}",
            Severity.INFO,
            f"{what}: not supported in {names}, which show {FALLBACKS[feature.slug]} "
            f"(used on purpose: {use.where()})",
            f"nothing to do; {feature.url}",
        )
    effect = "ignores it" if feature.slug.startswith("css-") else ELEMENTS_MEANING
    return Finding(
        f"clients.{feature.slug}",
        Severity.WARNING,
        f"{what}: {names} {effect} - used in {use.where()}",
        f"use something these clients support, or give them a fallback; {feature.url}",
    )
