"""What readers' mail clients get: the inbox preview, image widths for Outlook, the Date header."""

from __future__ import annotations

import email as email_pkg
import re
import shutil
import subprocess
import sys
from email import policy
from pathlib import Path

import pytest

from conftest import SAMPLE_ISSUE, write_issue
from spark_mail.config import load_settings
from spark_mail.render import RenderedEmail, build

FILLER = "\u034f\u200c\u00a0"  # the usual zero-width filler: CGJ, ZWNJ, no-break space
TAG_RE = re.compile(r"<[^>]+>")


@pytest.fixture(scope="module")
def sample() -> RenderedEmail:
    return build(SAMPLE_ISSUE, load_settings(SAMPLE_ISSUE.parent))


def inbox_preview(html: str, length: int = 250) -> str:
    """What an inbox shows after the subject: the body's first text, hidden or not."""
    body = html[html.index("<body") :]
    body = re.sub(r"<!--.*?-->", "", body, flags=re.S)
    text = re.sub(r"\s+", " ", TAG_RE.sub(" ", body)).strip()
    return text[:length]


def test_preheader_is_hidden_without_colour_tricks(sample: RenderedEmail) -> None:
    """The hidden preheader has no colour, opacity or tiny font (SpamAssassin's
    HTML_FONT_LOW_CONTRAST); display:none and a zero height hide it."""
    match = re.search(r'<div style="(display:none[^"]*)">How top engineering', sample.html)
    assert match, "the preheader is not the first hidden block"
    style = match.group(1)
    assert "display:none" in style and "max-height:0" in style and "mso-hide:all" in style
    assert not re.search(r"(^|;)\s*(color|opacity|font-size)\s*:", style), style


def test_inbox_preview_ends_with_the_preheader(sample: RenderedEmail) -> None:
    """After the preheader comes only invisible filler, so the preview does not run on
    into 'View in browser TINY BIG SPARK ...'."""
    preview = inbox_preview(sample.html)
    assert preview.startswith(sample.preheader)
    rest = preview[len(sample.preheader) :]
    assert len(rest) > 150 and set(rest) <= set(FILLER + " "), rest[:80]


def test_body_images_get_the_column_width_for_outlook(newsletter: Path) -> None:
    """Markdown images get width="552" (the text column) and height="auto" in the body,
    518 in a sponsor box; an image given its own width keeps it."""
    body = (
        "![Chart](https://example.com/chart.png)\n\n"
        '<img src="https://example.com/small.png" alt="Small" width="120">\n\n'
        "::: sponsor Acme\n![Acme](https://example.com/acme-badge.png)\n:::\n"
    )
    email = build(
        write_issue(newsletter, "img", "title: T\ndate: 2025-01-01", body), load_settings()
    )
    chart = re.search(r"<img [^>]*chart\.png[^>]*>", email.html)
    logo = re.search(r"<img [^>]*acme-badge\.png[^>]*>", email.html)
    small = re.search(r"<img [^>]*small\.png[^>]*>", email.html)
    assert chart and 'width="552"' in chart.group(0) and 'height="auto"' in chart.group(0)
    assert "max-width:100%" in chart.group(0).replace(" ", "")
    assert logo and 'width="518"' in logo.group(0)
    assert small and 'width="120"' in small.group(0) and 'width="552"' not in small.group(0)


def date_header(rendered: RenderedEmail) -> str:
    msg = email_pkg.message_from_bytes(rendered.to_mime().as_bytes(), policy=policy.default)
    return str(msg["Date"])


def test_date_header_is_in_the_newsletters_timezone(sample: RenderedEmail) -> None:
    """No send_at: 08:00 on the issue's date in America/New_York, not 08:00 +0000."""
    assert date_header(sample) == "Mon, 20 Jan 2025 08:00:00 -0500"


def test_date_header_reads_a_naive_send_at_in_the_timezone(newsletter: Path) -> None:
    """send_at without an offset is the newsletter's local time in the Date header too."""
    path = write_issue(newsletter, "t", "title: T\ndate: 2025-07-01\nsend_at: 2025-07-01T07:30:00")
    assert date_header(build(path, load_settings())) == "Tue, 01 Jul 2025 07:30:00 -0400"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("spamassassin") is None, reason="SpamAssassin is not installed")
def test_spamassassin_sees_no_low_contrast_font(sample: RenderedEmail) -> None:
    """SpamAssassin (offline, -L) does not score the hidden preheader as low-contrast text."""
    message = sample.to_mime(to="reader@example.com").as_bytes()
    result = subprocess.run(
        ["spamassassin", "-L", "-t"], input=message, capture_output=True, timeout=120
    )
    report = result.stdout.decode(errors="replace")
    assert "Content analysis details" in report, result.stderr[-300:]
    assert "HTML_FONT_LOW_CONTRAST" not in report


@pytest.mark.slow
def test_build_stays_light_on_imports() -> None:
    """A build loads neither premailer, cssutils nor requests (a premailer build spent half
    its cold start there): the inliner is lxml + cssselect."""
    script = (
        "import sys\n"
        "from spark_mail.config import load_settings\n"
        "from spark_mail.render import build\n"
        f"build({str(SAMPLE_ISSUE)!r}, load_settings())\n"
        "print(sorted(m for m in ('premailer', 'cssutils', 'requests') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=SAMPLE_ISSUE.parent.parent, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-500:]
    assert result.stdout.strip() == "[]"
