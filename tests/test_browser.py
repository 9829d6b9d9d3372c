"""The built email in a real browser (headless Chromium): no horizontal scrolling on a phone.

Skipped where Chromium is not installed (.ci/run installs Debian's chromium when it can).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from browser import content_page, page_width
from conftest import write_issue
from spark_mail.config import load_settings
from spark_mail.render import build

pytestmark = pytest.mark.slow  # Chromium


@pytest.mark.parametrize("width", [375, 800])
def test_no_horizontal_scrolling(newsletter: Path, browser: Any, width: int):
    """At 375 px (a phone) and on a desktop the page is never wider than the window,
    even with a long code line and a wide table in the issue."""
    body = (
        "Intro.\n\n```\n" + "long_code_line_" * 40 + "\n```\n\n| "
        + " | ".join(f"column_number_{i}" for i in range(10)) + " |\n|" + "---|" * 10 + "\n"
        + "\n" + "https://example.com/" + "a" * 200 + "\n"
    )  # fmt: skip
    email = build(
        write_issue(newsletter, "wide", "title: T\ndate: 2025-01-01", body), load_settings()
    )
    # The page's viewport is the window: Playwright sets it to any width (a headless
    # Chromium window alone will not go below 500 px).
    page = content_page(browser, email.html, width=width, height=900, scheme="light")
    scroll_width, viewport = page_width(page)
    assert viewport == width
    assert scroll_width <= viewport, f"page is {scroll_width}px wide in a {viewport}px window"


def test_asyncio_runs_between_and_after_browser_tests(browser_session: Any) -> None:
    """The test process's one Chromium stays open for the whole session, and asyncio.run()
    (link checks, in-process app tests) works outside the browser tests all the same."""
    import asyncio

    from browser import driving

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    for _ in range(2):
        with driving(browser_session) as chromium:  # as the `browser` fixture does
            page = content_page(chromium, "<p>6 * 7</p>", width=375, height=800, scheme="light")
            assert page.evaluate("() => 6 * 7") == 42
        assert asyncio.run(answer()) == 42


def test_no_window_loads_the_address_bars_popup(browser: Any) -> None:
    """Chromium gives each window a renderer for its address bar's popup, ~1 s of CPU a
    window for a popup no test opens; the features that make it are turned off (browser.py).
    (A Chromium that renames them shows up here.)"""
    content_page(browser, "<p>a window</p>", width=375, height=800, scheme="light")
    cdp = browser.new_browser_cdp_session()
    try:
        targets = cdp.send("Target.getTargets", {"filter": [{}]})["targetInfos"]
    finally:
        cdp.detach()
    assert [t["url"] for t in targets if t["type"] == "page"]  # the window is seen
    assert [t["url"] for t in targets if "omnibox" in t["url"]] == []


def test_playwrights_own_disabled_features_stay_disabled() -> None:
    """Our --disable-features replaces Playwright's (Chromium reads the last one): its list
    is read from the installed driver, features documented in Playwright's source included."""
    from browser import CHROMIUM_ARGS, playwright_disabled_features

    pytest.importorskip("playwright")
    features = playwright_disabled_features()
    assert {"MediaRouter", "PaintHolding", "ThirdPartyStoragePartitioning"} <= set(features)
    (flag,) = [a for a in CHROMIUM_ARGS if a.startswith("--disable-features=")]
    assert set(features) <= set(flag.partition("=")[2].split(","))
