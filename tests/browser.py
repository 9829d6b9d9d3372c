"""Headless Chromium for the tests, through Playwright driving the machine's own Chromium.

Playwright's Python package brings its driver but no browser; Debian's `chromium` is used
(`.ci/run` installs it when it can). Where either is missing, the tests that ask for the
`browser` fixture are skipped, everything else still runs.

    def test_x(browser):
        page = browser.new_page(viewport={"width": 375, "height": 800})
        page.goto(url)
        violations = axe_violations(page)   # axe-core's findings, as dicts

    def test_y(browser):
        page = content_page(browser, html, width=700, height=900, scheme="dark")
        violations = axe_violations(page)   # the worker's one page for HTML set as content

    def test_z(browser):
        page = served_page(browser, width=375, height=800, scheme="light")
        page.goto(base_url)                 # the worker's one page for served pages

One Playwright driver and one Chromium serve every browser test of a test process (each
started costs ~4 s of CPU, and each new page a renderer of its own, ~1.5 s more).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Each window of Chromium (a page of its own, a new context) started a renderer for its
# address bar's popup (chrome://omnibox-popup.top-chrome), ~1 s of CPU a window, and ~0.5 s
# more in the browser process, for a popup no test opens: these features make it.
OMNIBOX_POPUP = ["WebUIOmniboxPopup", "WebUIOmniboxAimPopup"]


def playwright_disabled_features() -> list[str]:
    """The features Playwright's driver turns off with a --disable-features of its own
    (chromiumSwitches.ts in its bundle). Chromium reads only the last --disable-features it
    is given, ours below, so Playwright's list goes into it, read from the installed driver
    rather than copied (a copy would go stale with a Playwright upgrade, quietly)."""
    import re

    try:
        import playwright
    except ImportError:
        return []  # no browser tests to run: browser_session skips them
    lib = Path(playwright.__file__).parent / "driver" / "package" / "lib"
    for source in (lib / "coreBundle.js", lib / "server" / "chromium" / "chromiumSwitches.js"):
        if source.is_file():
            found = re.search(
                r"disabledFeatures = \[(.*?)\]", source.read_text(encoding="utf-8"), re.S
            )
            if found:
                return re.findall(r'^\s*"(\w+)"', found.group(1), re.M)
    raise RuntimeError(f"no disabledFeatures list in Playwright's driver under {lib}: see "
                       "tests/browser.py playwright_disabled_features")  # fmt: skip


PLAYWRIGHT_OFF = playwright_disabled_features()
# The flags keep Chromium off the network it would otherwise call home to, and off every
# host but 127.0.0.1 (the images a site page links to from the internet are not fetched).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--disable-features=" + ",".join([*PLAYWRIGHT_OFF, *OMNIBOX_POPUP]),
]


@dataclass
class Session:
    """The test process's Playwright: its event loop and its Chromium."""

    loop: asyncio.AbstractEventLoop
    browser: Any


@contextlib.contextmanager
def driving(session: Session) -> Iterator[Any]:
    """Playwright's loop marked as the thread's running loop for as long as the block runs.

    Playwright's sync API runs its event loop in a greenlet that stays suspended inside
    run_until_complete() between calls, and marks that loop as the thread's running loop
    after each call; its next call switches straight back into the loop and needs the mark.
    Left marked, every asyncio.run() of the test process (link checks, in-process app tests)
    would fail with "cannot be called from a running event loop". So the mark is set only
    while a browser test runs, and taken away again after it.
    """
    # A test process runs its tests one by one on its main thread: nothing else is running.
    asyncio._set_running_loop(session.loop)
    try:
        yield session.browser
    finally:
        asyncio._set_running_loop(None)


@pytest.fixture(scope="session")
def browser_session() -> Iterator[Session]:
    """The test process's one Playwright driver and headless Chromium, started at the first
    test that asks for them (skipped where they cannot run here)."""
    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed")
    manager = sync_playwright()
    playwright = manager.start()
    try:
        session = Session(asyncio.get_running_loop(), None)
        session.browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except BaseException:
        manager.__exit__()
        asyncio._set_running_loop(None)
        raise
    asyncio._set_running_loop(None)
    try:
        yield session
    finally:
        with driving(session):
            try:
                session.browser.close()
            finally:
                manager.__exit__()


@pytest.fixture
def browser(browser_session: Session) -> Iterator[Any]:
    """Headless Chromium (Playwright's Browser), for this test."""
    with driving(browser_session) as chromium:
        yield chromium


def content_page(browser: Any, html: str, *, width: int, height: int, scheme: str) -> Any:
    """The test process's one page for HTML set as its content, set to `html` at this
    viewport and colour scheme (`prefers-color-scheme`); nothing from the internet loads
    (images, fonts). The page stays open for the next test: a new page each test started a
    renderer process and compiled axe-core again, ~1.5 s of CPU."""
    page = _CONTENT_PAGES.get(id(browser))
    if page is None or page.is_closed():
        page = _CONTENT_PAGES[id(browser)] = browser.new_page()
        page.route("http*://**", lambda route: route.abort())
    page.set_viewport_size({"width": width, "height": height})
    page.emulate_media(color_scheme=scheme)
    page.set_content(html)  # a new document, in the same window (document.open())
    return page


_CONTENT_PAGES: dict[int, Any] = {}


def served_page(browser: Any, *, width: int, height: int, scheme: str) -> Any:
    """The test process's one page for pages served on 127.0.0.1 (the site, the desk), at
    this viewport and colour scheme, with no cookies and an empty HTTP cache, as a new
    browser context would have it. The page stays open for the next test: a new context
    per test started a renderer process of its own and warmed axe-core up again in it,
    ~1.5-2 s of CPU each."""
    entry = _SERVED_PAGES.get(id(browser))
    if entry is None or entry[1].is_closed():
        context = browser.new_context()
        page = context.new_page()
        entry = _SERVED_PAGES[id(browser)] = (context, page, context.new_cdp_session(page))
    context, page, cdp = entry
    context.clear_cookies()
    cdp.send("Network.clearBrowserCache")
    page.set_viewport_size({"width": width, "height": height})
    page.emulate_media(color_scheme=scheme)
    return page


_SERVED_PAGES: dict[int, tuple[Any, Any, Any]] = {}


def axe_violations(
    page: Any, *, rules: list[str] | None = None, tags: list[str] | None = None
) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (only `rules`, or only the rules
    tagged with one of `tags` such as "wcag2aa", when given)."""
    from axe_playwright_python.base import AXE_SCRIPT

    # resultTypes: only the violations come back in full (every rule still runs, and every
    # violating node is still listed); passes and the rest would be serialized by the page
    # and sent back over Playwright's pipe, a node list each, for nothing.
    options: dict[str, Any] = {"resultTypes": ["violations"]}
    if rules:
        options["runOnly"] = {"type": "rule", "values": rules}
    elif tags:
        options["runOnly"] = {"type": "tag", "values": tags}
    # axe-core (570 kB) goes into a window once, and only into those it is run in: a page
    # loaded by set_content keeps its window, so the next email on it finds axe there; a
    # navigation starts a new window. (Compiled into every document by add_init_script, it
    # cost each navigation that no axe run followed, and each new page's about:blank.)
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE_SCRIPT)
    return list(page.evaluate("options => axe.run(options)", options)["violations"])


def page_width(page: Any) -> tuple[int, int]:
    """(scroll width of the document, width of the viewport): wider means sideways scroll."""
    return page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
