"""Accessibility: axe-core finds nothing in the built emails (light and dark), and the
`a11y.*` rules of `check` catch contrast, language, heading order and vague link text."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import pytest

from browser import axe_violations, content_page
from conftest import REPO, SAMPLE_ISSUE
from spark_mail.config import load_settings
from spark_mail.render import RenderedEmail, build

SECOND_ISSUE = REPO / "tests" / "fixtures" / "issues" / "2025-02-03-shipping-small.md"
# WCAG 2.1 A and AA: an email is shown inside the mail client's page, which has the landmarks
# axe's best-practice rules ask for, so those are left out.
WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@functools.cache
def built(path: Path) -> RenderedEmail:
    """The issue built once a test process (a build is pure; each test only reads it)."""
    return build(path, load_settings(REPO))


def axe_in(browser: Any, html: str, scheme: str) -> list[dict[str, Any]]:
    # no images from the internet (content_page loads nothing from it)
    page = content_page(browser, html, width=700, height=900, scheme=scheme)
    return axe_violations(page, tags=WCAG)


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
    from spark_mail.colors import contrast, parse_color
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


# -- the a11y.* rules of `check` --------------------------------------------------------------


def a11y_findings_of(html: str) -> dict[str, str]:
    from spark_mail.checks.a11y import a11y_findings
    from spark_mail.checks.styles import StyledEmail

    return {f.rule_id: f.message for f in a11y_findings(StyledEmail(html))}


@pytest.mark.parametrize("issue", [SAMPLE_ISSUE, SECOND_ISSUE], ids=["sample", "second"])
def test_default_layout_has_no_a11y_finding(issue: Path):
    """`check` finds nothing a11y.* in the sample and a second issue."""
    from spark_mail.checks import run_checks

    report = run_checks(built(issue), load_settings(REPO))
    assert [f for f in report.findings if f.rule_id.startswith("a11y.")] == []


def test_contrast_rule_finds_light_mode_text_with_where_it_is():
    """The raw brand orange on white is reported with its ratio and its place."""
    email = built(SAMPLE_ISSUE)
    message = a11y_findings_of(email.html.replace("color:#c34b0a", "color:#e8590c"))[
        "a11y.contrast"
    ]
    assert "light mode" in message and "#e8590c on #ffffff (3.58:1, needs 4.5:1)" in message
    assert "'card header'" in message


def test_contrast_rule_applies_the_dark_mode_rules():
    """Links the dark rules leave grey on the dark page are reported under dark mode."""
    html = built(SAMPLE_ISSUE).html.replace(".footer div, .footer a, .header a {", ".footer div {")
    message = a11y_findings_of(html)["a11y.contrast"]
    assert "dark mode" in message and "<a> in 'footer' 'Unsubscribe'" in message


CONTRAST_HTML = """<html lang="en"><body>
<table bgcolor="#555555"><tr><td style="color:#333333">grey on a grey cell</td></tr></table>
<table bgcolor="#555555"><tr><td style="background-color:#ffffff;color:#333333">kept</td></tr></table>
<p style="color:#8a8a8a;font-size:24px">large text</p>
<p style="color:#8a8a8a;font-size:19px;font-weight:bold">bold text</p>
<p style="color:#8a8a8a;font-size:19px">small text</p>
<p style="color:#8a8a8a;font-size:19px"><b>bold tag</b></p>
<p style="color:#8a8a8a;font-size:19px;font-weight:bold"><span style="font-weight:400">not bold</span></p>
<div style="display:none;color:#eeeeee">hidden</div>
<div aria-hidden="true" style="color:#eeeeee">hidden too</div>
</body></html>"""


def test_contrast_rule_reads_backgrounds_sizes_weights_and_hidden_text():
    """A cell's bgcolor is its background unless its style sets one; large (24 px) and bold
    (18.66 px) text needs only 3:1, a weight set on a child undoes the parent's bold; hidden
    text is not read."""
    assert a11y_findings_of(CONTRAST_HTML)["a11y.contrast"] == (
        "text below WCAG AA contrast in light mode: "
        "#333333 on #555555 (1.69:1, needs 4.5:1): <td> 'grey on a grey cell'; "
        "#8a8a8a on #ffffff (3.45:1, needs 4.5:1): <p> 'small text'; "
        "#8a8a8a on #ffffff (3.45:1, needs 4.5:1): <span> 'not bold'"
    )


def test_lang_heading_order_and_link_text_rules():
    """No lang, a skipped heading level and 'click here' are each reported."""
    html = built(SAMPLE_ISSUE).html
    html = html.replace('<html lang="en"', "<html", 1).replace(' lang="en"', "", 1)
    html = html.replace("<h2", "<h4", 1).replace(">Subscribe</a>", ">click here</a>", 1)
    found = a11y_findings_of(html)
    assert "<html> and the body wrapper" in found["a11y.lang"]
    assert "<h4> 'The Evolving Role" in found["a11y.heading-order"]
    assert "follows <h1>" in found["a11y.heading-order"]
    assert "'click here'" in found["a11y.link-text"]
