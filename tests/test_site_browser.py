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


# Each page is loaded once and checked in light mode, then switched to dark and checked
# again (the pages have no script and no CSS transition, so switching the colour scheme of
# a loaded page gives what loading it in that scheme does): one test a colour scheme loaded
# every page twice and put axe-core into each load anew, ~2-3 s more of Chromium's CPU.
# (A test a colour scheme was for pytest-xdist to share them between workers; the browser
# tests now run in one worker: tests/process_groups.py.)
@pytest.mark.slow
def test_pages_pass_axe_and_fit_a_phone(newsletter: Path, browser: Any) -> None:
    """Index, an issue (promo, poll, sponsor, a wide table, a long code line), a draft,
    the tag list, a tag and the 404 page, in light and dark mode."""
    send_two(newsletter)
    set_site_url(newsletter)
    build_site(settings_for(newsletter), include_unsent=True)
    with serve_folder(newsletter / "site-preview") as base:
        page = served_page(browser, width=375, height=800, scheme="light")
        for path in PAGES:
            page.goto(base + path)
            assert page.title(), path
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                dark = page.evaluate("() => matchMedia('(prefers-color-scheme: dark)').matches")
                assert dark == (scheme == "dark"), f"{path} in {scheme} mode"
                scroll_width, viewport = page_width(page)
                assert scroll_width <= viewport, f"{path} is {scroll_width} px wide on a phone"
                assert summary(axe_violations(page)) == [], f"{path} in {scheme} mode"
