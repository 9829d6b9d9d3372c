"""The reader desk in a real browser (headless Chromium): a reader's unsubscribe link, the
button, the confirmation; a poll link and its results; both fit a 375 px phone."""

from __future__ import annotations

from pathlib import Path

import pytest

from browser import axe_violations, page_width, served_page
from desk_support import SECRET, desk_settings, path_of, reader_links, serve_process

pytestmark = pytest.mark.slow
ENV = {"SPARK_MAIL_POLL_DAYS": "0", "SPARK_MAIL_SIGNING_SECRET": SECRET}


def test_a_reader_unsubscribes_with_the_button_and_votes_on_a_phone(browser, newsletter: Path):
    """Open the unsubscribe link, press the button, see the confirmation; open a poll
    link, see the results; no sideways scrolling at 375 px, no axe violations."""
    settings = desk_settings(newsletter)
    links = reader_links(settings, "anna@example.com")
    with serve_process(newsletter, env=ENV) as base:
        page = served_page(browser, width=375, height=800, scheme="light")
        # Chromium sends Host 127.0.0.1, which the desk serves (like a proxy's health check).
        page.goto(base + path_of(links.unsubscribe))
        assert page.locator("h1").inner_text() == "Unsubscribe?"
        width, viewport = page_width(page)
        assert width <= viewport
        assert axe_violations(page) == []
        page.get_by_role("button", name="Unsubscribe").click()
        page.wait_for_selector("#done")
        assert page.locator("h1").inner_text() == "You're unsubscribed"
        assert "an•••@example.com" in page.content()

        page.goto(base + path_of(links.polls[0]))
        assert "your vote is in" in page.locator(".notice").inner_text()
        assert page.locator(".results li").count() == 3
        assert "1 vote" in page.locator(".results li").first.inner_text()
        width, viewport = page_width(page)
        assert width <= viewport
        assert axe_violations(page) == []
        page.fill("#comment", "Loved the part about teams")
        page.get_by_role("button", name="Send").click()
        page.wait_for_selector("text=Thanks for your comment")
