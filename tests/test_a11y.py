"""Accessibility: axe-core finds nothing in the built emails (light and dark), and the
`a11y.*` rules of `check` catch contrast, language, heading order and vague link text."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from browser import axe_violations
from conftest import REPO, SAMPLE_ISSUE
from spark_mail.config import load_settings
from spark_mail.render import RenderedEmail, build

SECOND_ISSUE = REPO / "tests" / "fixtures" / "issues" / "2025-02-03-shipping-small.md"
# WCAG 2.1 A and AA: an email is shown inside the mail client's page, which has the landmarks
# axe's best-practice rules ask for, so those are left out.
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def built(path: Path) -> RenderedEmail:
    return build(path, load_settings(REPO))


def axe_in(browser: Any, html: str, scheme: str) -> list[dict[str, Any]]:
    page = browser.new_page(viewport={"width": 700, "height": 900}, color_scheme=scheme)
    try:
        page.route("http*://**", lambda route: route.abort())  # no images from the internet
        page.set_content(html)
        return axe_violations(page, tags=WCAG)
    finally:
        page.close()


def summary(violations: list[dict[str, Any]]) -> list[str]:
    return [
        f"{v['id']}: {node['target']} {node.get('failureSummary', '')[:160]}"
        for v in violations
        for node in v["nodes"]
    ]


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("issue", [SAMPLE_ISSUE, SECOND_ISSUE], ids=["sample", "second"])
def test_axe_finds_no_violation(browser: Any, issue: Path, scheme: str):
    """axe-core (contrast included) passes on the sample and a second issue, in light mode
    and with the layout's dark-mode rules on."""
    violations = axe_in(browser, built(issue).html, scheme)
    assert not violations, summary(violations)


@pytest.mark.slow
def test_axe_sees_a_low_contrast_brand_colour_in_a_layout_that_uses_it_raw(browser: Any):
    """The guard works: the raw brand orange as link colour fails axe's contrast rule."""
    email = built(SECOND_ISSUE)
    raw = email.html.replace("color:#c34b0a", "color:#e8590c")
    assert raw != email.html
    ids = {v["id"] for v in axe_in(browser, raw, "light")}
    assert "color-contrast" in ids


def test_brand_accent_gets_a_text_safe_shade():
    """Links and labels use the darkest needed shade of the accent: AA on white and #fafafa;
    a brand colour that already passes is kept as it is."""
    from spark_mail.render.colors import contrast, parse_color
    from spark_mail.render.view import Palette

    settings = load_settings(REPO)
    palette = Palette.from_settings(settings)
    white, box = parse_color("#ffffff"), parse_color("#fafafa")
    accent = parse_color(palette.accent_text)
    assert white and box and accent
    assert contrast(accent, white) >= 4.5 and contrast(accent, box) >= 4.5
    assert palette.accent == "#e8590c" and palette.accent_text != palette.accent
    dark_brand = dataclasses.replace(settings.brand, accent_color="#1d4ed8")
    kept = Palette.from_settings(dataclasses.replace(settings, brand=dark_brand))
    assert kept.accent_text == "#1d4ed8" and kept.button == "#1d4ed8"
