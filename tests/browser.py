"""Headless Chromium for the tests, through Playwright driving the machine's own Chromium.

Playwright's Python package brings its driver but no browser; Debian's `chromium` is used
(`.ci/run` installs it when it can). Where either is missing, the tests that ask for the
`browser` fixture are skipped, everything else still runs.

    def test_x(browser):
        page = browser.new_page(viewport={"width": 375, "height": 800})
        page.goto(url)
        violations = axe_violations(page)   # axe-core's findings, as dicts
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The flags keep Chromium off the network it would otherwise call home to.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# Module scope, not session: Playwright's sync API leaves its event loop marked as running
# on the main thread while it is open, so every later asyncio.run() in the session (link
# checks, in-process app tests) would fail with "cannot be called from a running event loop".
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the test module (skipped where it cannot run here)."""
    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def axe_violations(
    page: Any, *, rules: list[str] | None = None, tags: list[str] | None = None
) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (only `rules`, or only the rules
    tagged with one of `tags` such as "wcag2aa", when given)."""
    from axe_playwright_python.sync_playwright import Axe

    # resultTypes: only the violations come back in full (every rule still runs, and every
    # violating node is still listed); passes and the rest would be serialized by the page
    # and sent back over Playwright's pipe, a node list each, for nothing.
    options: dict[str, Any] = {"resultTypes": ["violations"]}
    if rules:
        options["runOnly"] = {"type": "rule", "values": rules}
    elif tags:
        options["runOnly"] = {"type": "tag", "values": tags}
    result = Axe().run(page, options=options)
    return list(result.response["violations"])


def page_width(page: Any) -> tuple[int, int]:
    """(scroll width of the document, width of the viewport): wider means sideways scroll."""
    return page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
