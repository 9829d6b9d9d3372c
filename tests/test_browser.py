"""The built email in a real browser (headless Chromium): no horizontal scrolling on a phone.

Skipped where Chromium is not installed (.ci/run installs Debian's chromium when it can).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import write_issue
from spark_mail.config import load_settings
from spark_mail.render import build

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed"),
    pytest.mark.slow,  # a Chromium process per test
]
# Headless Chromium will not make its window narrower than 500 px, so the email is measured
# inside a 375 px iframe, as a phone's mail app shows it.
HOST = """<!DOCTYPE html><html><body style="margin:0">
<iframe id="f" src="{src}" width="{width}" height="900" style="border:0"></iframe>
<script>document.getElementById('f').addEventListener('load', (e) => {{
  const w = e.target.contentWindow;
  document.title = 'width=' + w.document.documentElement.scrollWidth + ' viewport=' + w.innerWidth;
}});</script></body></html>"""


def page_widths(html_file: Path, width: int, profile: Path) -> tuple[int, int]:
    """(scroll width of the email's page, width of the frame it is shown in)."""
    probe = html_file.with_suffix(".probe.html")
    probe.write_text(HOST.format(src=html_file.name, width=width), encoding="utf-8")
    assert CHROMIUM is not None
    out = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--allow-file-access-from-files",
            "--virtual-time-budget=5000",
            f"--user-data-dir={profile}",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    match = re.search(r"<title>width=(\d+) viewport=(\d+)</title>", out.stdout)
    assert match, out.stderr[-500:]
    return int(match.group(1)), int(match.group(2))


@pytest.mark.parametrize("width", [375, 800])
def test_no_horizontal_scrolling(newsletter: Path, tmp_path: Path, width: int):
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
    html_file = tmp_path / "email.html"
    html_file.write_text(email.html, encoding="utf-8")
    scroll_width, viewport = page_widths(html_file, width, tmp_path / "profile")
    assert scroll_width <= viewport, f"page is {scroll_width}px wide in a {viewport}px window"
