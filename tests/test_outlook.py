"""Desktop Outlook's layout: the `<!--[if mso]>` tables never make the email wider than 600 px.

The browser test renders the Outlook branch (conditional comments for Outlook switched on,
the `!mso` parts dropped) in headless Chromium and measures it; the `layout.outlook-width`
rule catches the same mistake statically in a user's own layout.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from browser import content_page
from conftest import REPO, SAMPLE_ISSUE
from spark_mail.checks import run_checks
from spark_mail.checks.outlook import outlook_branch, too_wide
from spark_mail.config import load_settings
from spark_mail.render import RenderedEmail, build

SECOND_ISSUE = REPO / "tests" / "fixtures" / "issues" / "2025-02-03-shipping-small.md"
# For every 600 px section table of the Outlook markup: how far its widest descendant
# reaches past its left edge, and which elements stick out of their parent's content box
# (a 548 px image in a 516 px cell stays inside 600 px but still breaks the column).
MEASURE = """() => {
// Outlook sizes an image by its width attribute; CSS percentages and max-width do not count.
for (const img of document.querySelectorAll('img[width]')) {
  img.style.width = img.getAttribute('width') + 'px';
  img.style.maxWidth = 'none';
}
return [...document.querySelectorAll('table[width="600"]')].map((table) => {
  const left = table.getBoundingClientRect().left;
  let reach = 0;
  const overflows = [];
  for (const el of table.querySelectorAll('*')) {
    const box = el.getBoundingClientRect();
    reach = Math.max(reach, box.right - left);
    const parent = el.parentElement, style = getComputedStyle(parent);
    const inner = parent.getBoundingClientRect().right - parseFloat(style.paddingRight)
      - parseFloat(style.borderRightWidth);
    const inline = getComputedStyle(el).display === 'inline';  // text runs wrap by line
    if (!inline && box.width && box.right > inner + 0.5) overflows.push(el.outerHTML.slice(0, 120));
  }
  return {section: table.className, reach, overflows};
});
}"""


def built(path: Path) -> RenderedEmail:
    return build(path, load_settings(REPO))


def outlook_reach(browser: Any, html: str) -> list[dict[str, Any]]:
    # Images and fonts from the internet: refused, their width attributes still count.
    page = content_page(browser, outlook_branch(html), width=900, height=900, scheme="light")
    return list(page.evaluate(MEASURE))


@pytest.mark.slow
@pytest.mark.parametrize("issue", [SAMPLE_ISSUE, SECOND_ISSUE], ids=["sample", "second"])
def test_outlook_branch_stays_inside_600px(browser: Any, issue: Path):
    """In Outlook's markup nothing inside a 600 px section reaches past 600 px (the share
    divider and a promo image used to be 648 and 548-in-516 px wide)."""
    sections = outlook_reach(browser, built(issue).html)
    assert len(sections) >= 5, "the Outlook section tables are missing"
    too_wide = [s for s in sections if s["reach"] > 600.5 or s["overflows"]]
    assert not too_wide, too_wide


def test_outlook_branch_opens_mso_comments_and_drops_the_rest():
    """outlook_branch keeps what Outlook reads and nothing that only other clients read."""
    html = (
        '<!--[if mso | IE]><table width="600"><![endif]--><p>both</p>'
        "<!--[if !mso]><!--><p>not outlook</p><!--<![endif]-->"
        "<!--[if mso]><p>outlook</p><![endif]-->"
    )
    assert outlook_branch(html) == '<table width="600"><p>both</p><p>outlook</p>'


@pytest.mark.slow
def test_default_layout_has_no_outlook_width_finding():
    """The default layout gives the `layout.outlook-width` rule nothing to report."""
    for issue in (SAMPLE_ISSUE, SECOND_ISSUE):
        email = built(issue)
        assert too_wide(email.html) == []
        report = run_checks(email, load_settings(REPO))
        assert "layout.outlook-width" not in {f.rule_id for f in report.findings}


def test_outlook_width_rule_catches_a_unitless_padding(newsletter: Path):
    """A custom layout with `padding="0 24px 16px"` on a divider is reported with its section."""
    layout = newsletter / "layouts" / "mine"
    shutil.copytree(REPO / "layouts" / "default", layout)
    share = layout / "partials" / "share.mjml"
    share.write_text(
        share.read_text().replace(
            '<mj-divider border-width="1px" border-color="#e5e7eb" padding="0px 24px 16px" />',
            '<mj-divider border-width="1px" border-color="#e5e7eb" padding="0 24px 16px" />',
        )
    )
    assert 'padding="0 24px 16px"' in share.read_text()
    issue = newsletter / "issues" / SAMPLE_ISSUE.name
    issue.write_text(
        issue.read_text().replace("date: 2025-01-20", "date: 2025-01-20\nlayout: mine")
    )
    settings = load_settings()
    report = run_checks(build(issue, settings), settings)
    found = [f for f in report.findings if f.rule_id == "layout.outlook-width"]
    assert len(found) == 1, report.findings
    assert "600 px wide" in found[0].message and "'card share'" in found[0].message
    assert "552 px of room" in found[0].message


def test_width_attribute_counts_where_the_style_sets_no_pixel_width() -> None:
    """Outlook takes the width attribute when the style sets no width (or `0px`); a style
    width wins over the attribute; a cell's padding takes from the room inside it."""
    html = """<html><body><table width="600" class="card"><tr><td style="padding:0px 20px">
<table width="580"><tr><td>too wide by its attribute</td></tr></table>
<img width="500" style="width:560px" src="x.png" alt="">
<div style="width:0px" width="570">zero style width: the attribute</div>
</td></tr></table></body></html>"""
    assert [(p.tag, p.width, p.room, p.section) for p in too_wide(html)] == [
        ("table", 580.0, 560.0, "card"),
        ("div", 570.0, 560.0, "card"),
    ]
