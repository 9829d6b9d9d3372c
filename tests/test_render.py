"""The render pipeline: every section of the default layout, the text part, the headers."""

from __future__ import annotations

import dataclasses
import re
import shutil
from html import unescape
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE_ISSUE, write_issue
from spark_mail.config import Settings, load_settings
from spark_mail.errors import IssueError
from spark_mail.issue import load_issue
from spark_mail.render import GMAIL_CLIP_BYTES, RenderedEmail, build, render_issue


@pytest.fixture(scope="module")
def sample() -> RenderedEmail:
    return build(SAMPLE_ISSUE, load_settings(SAMPLE_ISSUE.parent))


def visible_text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)))


def test_sample_html_is_under_100_kb(sample: RenderedEmail):
    """The sample issue stays well clear of Gmail's clipping limit."""
    assert sample.html_bytes < 100 * 1024 < GMAIL_CLIP_BYTES


def test_build_is_pure(sample: RenderedEmail):
    """Same files in, same bytes out: html, text and the MIME message."""
    again = build(SAMPLE_ISSUE, load_settings(SAMPLE_ISSUE.parent))
    assert again.html == sample.html and again.text == sample.text
    assert again.to_mime().as_bytes() == sample.to_mime().as_bytes()


def test_header_section(sample: RenderedEmail):
    """Title, subtitle, newsletter name, issue number, date and 'view in browser'."""
    text = visible_text(sample.html)
    assert "Engineering Leadership: Tech, People, Product Mastery!" in text
    assert "How Top Leaders Drive Innovation" in text
    assert "TINY BIG SPARK" in text and "#42" in text and "January 20, 2025" in text
    assert 'href="https://tinybigspark.com/p/2025-01-20-engineering-leadership"' in sample.html


def test_hidden_preheader(sample: RenderedEmail):
    """The preheader is in the body, hidden from view."""
    match = re.search(r'<div style="display:none[^"]*">([^<]*)', sample.html)
    assert match and match.group(1).startswith("How top engineering leaders")


def test_sponsor_box_is_labelled(sample: RenderedEmail):
    """A ::: sponsor container becomes a box labelled SPONSORED with the sponsor's name."""
    text = visible_text(sample.html)
    assert re.search(r"SPONSORED\s+Refind\s+Brain food", text)
    assert 'href="https://refind.com"' in sample.html
    # it stands in the middle of the article, not at the end
    assert text.index("SPONSORED") < text.index("The Impact of Product Thinking")


def test_sponsor_label_can_be_changed(newsletter: Path):
    """`::: sponsor NAME | LABEL` sets the label."""
    body = "Intro.\n\n::: sponsor Acme | PARTNER\nAcme makes things.\n:::\n\nOutro.\n"
    path = write_issue(newsletter, "label", "title: T\ndate: 2025-01-01", body)
    email = build(path, load_settings())
    assert re.search(r"PARTNER\s+Acme\s+Acme makes things", visible_text(email.html))
    assert "SPONSORED" not in email.html


def test_promo_block(sample: RenderedEmail):
    """The promo block shows its label, title, Markdown body and call to action."""
    text = visible_text(sample.html)
    assert re.search(r"PROMO CONTENT\s+Can email newsletters make money\?", text)
    assert "<strong>Absolutely!</strong>" in sample.html
    assert 'href="https://tinybigspark.com/newsletters-make-money"' in sample.html


def test_poll_options_link_to_poll_url(sample: RenderedEmail):
    """Each poll option is a link built from poll_url with the slug and the option's index."""
    assert "How would you rate today&#39;s newsletter?" in sample.html or (
        "How would you rate today's newsletter?" in sample.html
    )
    for index, option in enumerate(["Loved it", "It was good", "Could be better"], start=1):
        url = f"https://tinybigspark.com/poll/2025-01-20-engineering-leadership?answer={index}"
        assert re.search(rf'href="{re.escape(url)}"[^>]*>{option}</a>', sample.html)


def test_share_footer(sample: RenderedEmail):
    """The share text and share links to the web copy."""
    assert "If you think your colleagues and friends would find this content valuable" in (
        sample.html
    )
    assert "https://x.com/intent/post?url=https%3A%2F%2Ftinybigspark.com%2Fp%2F" in sample.html
    assert "linkedin.com/sharing/share-offsite/" in sample.html


def test_footer_has_disclaimer_address_and_unsubscribe(sample: RenderedEmail):
    """Disclaimer, postal address (CAN-SPAM) and a visible unsubscribe link."""
    text = visible_text(sample.html)
    assert 'Disclaimer: The "Tiny Big Spark" newsletter is for informational' in text
    assert "548 Market St #41620, San Francisco" in text
    assert re.search(
        r'<a href="https://tinybigspark.com/unsubscribe"[^>]*>Unsubscribe</a>', sample.html
    )


def test_one_click_unsubscribe_headers(sample: RenderedEmail):
    """RFC 8058: List-Unsubscribe with https and mailto, and List-Unsubscribe-Post."""
    assert sample.headers["List-Unsubscribe"] == (
        "<https://tinybigspark.com/unsubscribe>, <mailto:unsubscribe@tinybigspark.com>"
    )
    assert sample.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_responsive_and_dark_mode_markup(sample: RenderedEmail):
    """600 px body, phone breakpoint, viewport meta and prefers-color-scheme rules."""
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in sample.html
    assert "max-width:600px" in sample.html
    assert "@media only screen and (max-width: 480px)" in sample.html
    assert "@media (prefers-color-scheme: dark)" in sample.html
    assert 'name="color-scheme" content="light dark"' in sample.html


def test_text_part_is_readable(sample: RenderedEmail):
    """The text part keeps links as URLs and has every section as readable text."""
    text = sample.text
    assert "<" not in text.replace("<https", "")
    assert "Subscribe (https://refind.com)" in text
    assert "SPONSORED: Refind" in text
    assert "PROMO CONTENT: Can email newsletters make money?" in text
    assert "Find out how: https://tinybigspark.com/newsletters-make-money" in text
    assert (
        "- Loved it: https://tinybigspark.com/poll/2025-01-20-engineering-leadership?answer=1"
        in text
    )
    assert "Unsubscribe: https://tinybigspark.com/unsubscribe" in text
    assert "548 Market St" in text and "Disclaimer:" in text
    assert "- How do we scale our engineering efforts" in text
    assert all(len(line) <= 72 or "http" in line for line in text.splitlines())


def test_text_part_comes_from_markdown_not_html(newsletter: Path):
    """Markdown structure (lists, code, quotes, tables) reads well in the text part."""
    body = (
        "Intro with [a link](https://example.com/a).\n\n1. one\n2. two\n\n> quoted\n\n"
        "```\nprint('x')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    email = build(
        write_issue(newsletter, "md", "title: T\ndate: 2025-01-01", body), load_settings()
    )
    assert "a link (https://example.com/a)" in email.text
    assert "1. one\n\n2. two" in email.text or "1. one\n2. two" in email.text
    assert "> quoted" in email.text
    assert "    print('x')" in email.text
    assert "1 | 2" in email.text


def test_values_are_escaped_but_markdown_is_html(newsletter: Path):
    """A title with <tags> is escaped; the author's Markdown becomes HTML."""
    path = write_issue(
        newsletter, "esc", "title: 'Cats <b>& dogs</b>'\ndate: 2025-01-01", "**bold**\n"
    )
    email = build(path, load_settings())
    assert "Cats &lt;b&gt;&amp; dogs&lt;/b&gt;" in email.html
    assert "<b>& dogs" not in email.html
    assert "<strong>bold</strong>" in email.html


def test_header_injection_in_subject_is_refused(newsletter: Path):
    """A subject with a line break cannot add headers."""
    path = write_issue(
        newsletter, "inj", 'title: T\ndate: 2025-01-01\nsubject: "Hi\\r\\nBcc: x@y.z"'
    )
    with pytest.raises(IssueError, match="line break"):
        build(path, load_settings())


def test_sections_present_are_reported(newsletter: Path):
    """A minimal issue reports only the sections it has."""
    email = build(write_issue(newsletter, "min", "title: T\ndate: 2025-01-01"), load_settings())
    assert email.sections == ("header", "body", "share", "footer")


def test_without_postal_address_there_is_none(newsletter: Path):
    """Settings drive the footer: no address configured, no address line."""
    settings = dataclasses.replace(load_settings(), postal_address="")
    email = render_issue(load_issue(newsletter / "issues" / SAMPLE_ISSUE.name), settings)
    assert "548 Market St" not in email.html
    assert "548 Market St" not in email.text
    with_address = render_issue(
        load_issue(newsletter / "issues" / SAMPLE_ISSUE.name), load_settings()
    )
    assert "548 Market St" in with_address.html and "548 Market St" in with_address.text


def test_mime_message_is_complete(sample: RenderedEmail):
    """to_mime gives multipart/alternative with text and HTML, Date, Message-ID, unsubscribe."""
    import email as email_pkg
    from email import policy

    msg = email_pkg.message_from_bytes(
        sample.to_mime(to="reader@example.com").as_bytes(), policy=policy.default
    )
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Message-ID"].endswith("@tinybigspark.com>") and msg["Date"]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html_part = msg.get_body(("html",))
    text_part = msg.get_body(("plain",))
    assert html_part is not None and html_part.get_content() == sample.html
    assert text_part is not None and text_part.get_content() == sample.text


def test_settings_defaults_when_no_file(tmp_path: Path):
    """Without a settings file, build still works on defaults (checks flag what is missing)."""
    path = write_issue(tmp_path, "x", "title: T\ndate: 2025-01-01")
    email = build(path, Settings(root=tmp_path))
    assert email.subject == "T" and "List-Unsubscribe" not in email.headers


def test_the_same_mjml_with_other_inline_css_is_inlined_again(newsletter: Path) -> None:
    """The same issue built twice in one process, the layout's inline CSS edited in between
    (the MJML left the same): the second email has the new CSS, not the HTML the first build
    left behind (render_issue keeps the last few emails' HTML by their MJML and CSS)."""
    folder = newsletter / "layouts" / "default"
    shutil.copytree(REPO / "layouts" / "default", folder)
    issue = newsletter / "issues" / SAMPLE_ISSUE.name
    first = build(issue, load_settings(newsletter)).html
    assert build(issue, load_settings(newsletter)).html == first
    styles = folder / "partials" / "styles.mjml"
    old = ".prose p { margin: 0 0 16px; }"
    styles.write_text(styles.read_text().replace(old, old.replace("16", "17")))
    second = build(issue, load_settings(newsletter)).html
    assert "margin:0 0 17px" in second and "margin:0 0 17px" not in first


@pytest.mark.slow  # builds a 260,000-character issue twice
def test_a_huge_issue_is_neither_kept_parsed_nor_kept_built(newsletter: Path) -> None:
    """A long-lived process (the desk, preview) keeps the last few issues parsed and emails
    built; an issue of megabytes (the file cap is 10 MB) is built each time, not pinned."""
    import spark_mail.render as render
    from spark_mail.issue import KEPT_TEXT_LIMIT, parsed_issue

    body = "A paragraph of the issue that goes on.\n\n" * (KEPT_TEXT_LIMIT // 40 + 1)
    path = write_issue(newsletter, "2025-03-03-huge", "title: Huge\ndate: 2025-03-03", body)
    parsed_issue.cache_clear()  # what other tests left, which may fill both
    render._KEPT_HTML.clear()
    first = build(path, load_settings(newsletter))
    assert build(path, load_settings(newsletter)).html == first.html
    assert parsed_issue.cache_info().currsize == 0
    assert len(render._KEPT_HTML) == 0  # (not == {}: pytest would diff megabytes of keys)
    small = write_issue(newsletter, "2025-03-04-small", "title: Small\ndate: 2025-03-04", "Hi.")
    build(small, load_settings(newsletter))  # the guard: a small one is kept
    assert parsed_issue.cache_info().currsize == 1 and len(render._KEPT_HTML) == 1
