"""The archive's pages in headless Chromium: axe-core finds nothing, in light and dark mode,
and nothing scrolls sideways on a 375 px phone (long code lines and wide tables wrap)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from browser import axe_violations, page_width, served_page
from site_support import DRAFT, SECOND, send_two, serve_folder, set_site_url, settings_for
from spark_mail.site import build_site

PAGES = [
    "/",
    f"/issues/{SECOND}/",
    f"/issues/{DRAFT}/",
    "/tags/",
    "/tags/engineering/",
    "/404.html",
]


def summary(violations: list[dict[str, Any]]) -> list[str]:
    return [f"{v['id']}: {v['nodes'][0]['target']}" for v in violations]


# One test a colour scheme: twelve axe runs in one test made it the suite's longest, which
# pytest-xdist cannot share between workers.
@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_pages_pass_axe_and_fit_a_phone(newsletter: Path, browser: Any, scheme: str) -> None:
    """Index, an issue (promo, poll, sponsor, a wide table, a long code line), a draft,
    the tag list, a tag and the 404 page."""
    send_two(newsletter)
    set_site_url(newsletter)
    build_site(settings_for(newsletter), include_unsent=True)
    with serve_folder(newsletter / "site-preview") as base:
        page = served_page(browser, width=375, height=800, scheme=scheme)
        for path in PAGES:
            page.goto(base + path)
            assert page.title(), path
            scroll_width, viewport = page_width(page)
            assert scroll_width <= viewport, f"{path} is {scroll_width} px wide on a phone"
            assert summary(axe_violations(page)) == [], f"{path} in {scheme} mode"
