"""The traps of mjml-python (MRML) and of CSS inlining, one test each, and layout errors."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_issue
from spark_mail.config import load_settings
from spark_mail.errors import LayoutError
from spark_mail.render import build
from spark_mail.render.inline import inline_css

HEAD = "<mj-head><mj-preview>{{ issue.preheader }}</mj-preview></mj-head>"


def custom_layout(root: Path, name: str, mjml: str) -> Path:
    folder = root / "layouts" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "email.mjml").write_text(mjml, encoding="utf-8")
    return folder


def issue_with_layout(root: Path, layout: str, body: str = "Hello.\n") -> Path:
    return write_issue(
        root, f"uses-{layout}", f"title: T\ndate: 2025-01-01\nlayout: {layout}", body
    )


def section(inner: str) -> str:
    return f"<mj-section><mj-column>{inner}</mj-column></mj-section>"


def test_mj_style_inline_is_inlined(newsletter: Path):
    """MRML ignores <mj-style inline="inline">; spark-mail inlines it itself."""
    custom_layout(
        newsletter,
        "inl",
        '<mjml><mj-head><mj-style inline="inline">.note p { color: #123456; }</mj-style></mj-head>'
        "<mj-body>" + section('<mj-text css-class="note"><p>x</p></mj-text>') + "</mj-body></mjml>",
    )
    email = build(issue_with_layout(newsletter, "inl"), load_settings())
    assert '<p style="color:#123456">x</p>' in email.html


def test_unknown_mjml_tag_is_an_error(newsletter: Path):
    """MRML silently copies unknown tags into the email; spark-mail refuses them."""
    folder = custom_layout(
        newsletter, "typo", f"<mjml><mj-body>{section('<mj-txt>x</mj-txt>')}</mj-body></mjml>"
    )
    with pytest.raises(LayoutError, match=r"unknown MJML tag <mj-txt>") as info:
        build(issue_with_layout(newsletter, "typo"), load_settings())
    assert str(folder / "email.mjml") in str(info.value)


def test_mj_html_attributes_fails_with_the_layout_named(newsletter: Path):
    """MRML fails on mj-html-attributes: the error names the layout file and the line."""
    folder = custom_layout(
        newsletter,
        "attrs",
        "<mjml>\n<mj-head>\n<mj-html-attributes></mj-html-attributes>\n</mj-head>\n"
        f"<mj-body>{section('<mj-text>x</mj-text>')}</mj-body>\n</mjml>",
    )
    with pytest.raises(LayoutError) as info:
        build(issue_with_layout(newsletter, "attrs"), load_settings())
    message = str(info.value)
    assert str(folder / "email.mjml") in message and "MJML error" in message
    assert "line 3 of the rendered MJML" in message


def test_unclosed_mjml_tag_is_an_error(newsletter: Path):
    """A broken MJML document names the layout, no traceback from MRML."""
    custom_layout(newsletter, "broken", "<mjml><mj-body><mj-section><mj-column></mj-body></mjml>")
    with pytest.raises(LayoutError, match="MJML error"):
        build(issue_with_layout(newsletter, "broken"), load_settings())


def test_comments_in_wrapper_do_not_leak(newsletter: Path):
    """A comment between sections in mj-wrapper must not reach the HTML (stray Outlook <tr><td>)."""
    wrapper = (
        "<mj-wrapper>" + section("<mj-text>one</mj-text>") + "<!-- between -->"
        + section("<mj-text>two</mj-text>") + "</mj-wrapper>"
    )  # fmt: skip
    custom_layout(newsletter, "wrap", f"<mjml><mj-body>{wrapper}</mj-body></mjml>")
    email = build(issue_with_layout(newsletter, "wrap"), load_settings())
    assert "between" not in email.html
    assert email.html.index("one") < email.html.index("two")


def test_no_network_for_fonts_links_or_imports(newsletter: Path, monkeypatch: pytest.MonkeyPatch):
    """Fonts, <link>s and @import in the CSS are never fetched while building."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    custom_layout(
        newsletter,
        "fonts",
        '<mjml><mj-head><mj-font name="Inter" href="https://fonts.googleapis.com/css?family=Inter" />'
        "<mj-style>@import url(https://fonts.googleapis.com/css2?family=Roboto); .a { color: red; }"
        "</mj-style>"
        '<mj-style inline="inline">@import url(https://example.com/x.css); .b p { color: blue; }'
        "</mj-style></mj-head>"
        "<mj-body>"
        + section('<mj-text font-family="Inter" css-class="b"><p>x</p></mj-text>')
        + "</mj-body></mjml>",
    )
    email = build(issue_with_layout(newsletter, "fonts"), load_settings())
    assert attempts == []
    assert '<p style="color:blue">x</p>' in email.html


def test_lowercase_doctype_is_kept():
    """MJML's lowercase <!doctype html> comes out as a doctype (premailer used to drop it)."""
    html = "<!doctype html><html><head></head><body><p>x</p></body></html>"
    assert inline_css(html, "p { color: red; }").startswith("<!DOCTYPE html>")


def test_important_survives_in_dark_mode_rules():
    """strip_important would strip !important from the kept dark-mode rules."""
    html = (
        "<!doctype html><html><head><style>@media (prefers-color-scheme: dark) "
        "{ h2 { color: #fff !important; } }</style></head><body><h2>x</h2></body></html>"
    )
    out = inline_css(html, "h2 { color: #111; }")
    assert "color: #fff !important" in out
    assert '<h2 style="color:#111">x</h2>' in out


def test_important_in_inlined_css_media_rules_is_kept():
    """@media rules in the inlined CSS are kept in <head>, with !important."""
    out = inline_css(
        "<html><head></head><body><p>x</p></body></html>",
        "p { color: red } @media (max-width: 480px) { p { font-size: 20px !important } }",
    )
    assert "@media (max-width: 480px)" in out and "!important" in out


@pytest.mark.parametrize(
    "tag",
    [
        "{{ unsubscribe_url }}",
        "{{{RESEND_UNSUBSCRIBE_URL}}}",
        "%recipient.unsubscribe%",
        "%unsubscribe_url%",
        "*|UNSUB|*",
    ],
)
def test_merge_tags_are_not_percent_encoded(tag: str):
    """lxml %-encodes {{ x }} in href; merge tags come out exactly as they went in."""
    html = f'<html><head></head><body><a href="{tag}">u</a><a href="https://x.example/?e={tag}">v</a></body></html>'
    out = inline_css(html, "a { color: red; }")
    assert f'href="{tag}"' in out
    assert f'href="https://x.example/?e={tag}"' in out


def test_merge_tag_unsubscribe_url_in_settings(newsletter: Path):
    """An ESP merge tag as unsubscribe_url reaches the HTML and the text untouched."""
    toml = newsletter / "spark-mail.toml"
    toml.write_text(
        toml.read_text().replace(
            'unsubscribe_url = "https://tinybigspark.com/unsubscribe"',
            'unsubscribe_url = "{{ unsubscribe_url }}"',
        )
    )
    email = build(write_issue(newsletter, "m", "title: T\ndate: 2025-01-01"), load_settings())
    assert '<a href="{{ unsubscribe_url }}"' in email.html
    assert "Unsubscribe: {{ unsubscribe_url }}" in email.text


def test_no_cssutils_warnings(
    newsletter: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
):
    """CSS a validating parser would not know (mso-, -webkit-) prints nothing."""
    caplog.set_level(logging.DEBUG)
    custom_layout(
        newsletter,
        "noisy",
        '<mjml><mj-head><mj-style inline="inline">.n p { mso-line-height-rule: exactly; '
        "-webkit-text-size-adjust: 100%; color: red; }</mj-style></mj-head>"
        "<mj-body>" + section('<mj-text css-class="n"><p>x</p></mj-text>') + "</mj-body></mjml>",
    )
    build(issue_with_layout(newsletter, "noisy"), load_settings())
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_long_code_and_wide_tables_wrap_on_phones(newsletter: Path):
    """Long code lines wrap (pre-wrap, word-break) and tables are fixed-width, not wider."""
    body = (
        "```\n"
        + "x" * 300
        + "\n```\n\n| "
        + " | ".join(f"column{i}" for i in range(12))
        + " |\n|"
        + "---|" * 12
        + "\n"
    )
    email = build(
        write_issue(newsletter, "wide", "title: T\ndate: 2025-01-01", body), load_settings()
    )
    pre = email.html[email.html.index("<pre") : email.html.index(">", email.html.index("<pre"))]
    pre = pre.replace(" ", "")
    assert "white-space:pre-wrap" in pre and "word-break:break-word" in pre
    content_table = re.search(r'<table style="([^"]*)"[^>]*>\s*<thead>', email.html)
    assert content_table, "the Markdown table keeps its inlined style"
    style = content_table.group(1).replace(" ", "")
    assert "table-layout:fixed" in style and "width:100%" in style
    cell = re.search(r'<th style="([^"]*)"[^>]*>column0</th>', email.html)
    assert cell and "word-break:break-word" in cell.group(1).replace(" ", "")


def test_unknown_layout_is_an_error(newsletter: Path):
    """An issue naming a layout that does not exist lists the ones that do."""
    with pytest.raises(LayoutError, match=r"unknown layout 'fancy'.*default"):
        build(issue_with_layout(newsletter, "fancy"), load_settings())


def test_jinja_syntax_error_names_file_and_line(newsletter: Path):
    """A Jinja syntax error names the layout file and line."""
    folder = custom_layout(
        newsletter, "jinja", "<mjml>\n<mj-body>\n{% if issue.title %}\n</mj-body></mjml>"
    )
    with pytest.raises(LayoutError) as info:
        build(issue_with_layout(newsletter, "jinja"), load_settings())
    assert f"{folder / 'email.mjml'}:" in str(info.value) and "template error" in str(info.value)


def test_undefined_value_fails_the_build(newsletter: Path):
    """StrictUndefined: a layout using a value that does not exist fails, naming the line."""
    folder = custom_layout(
        newsletter,
        "undef",
        f"<mjml>\n<mj-body>\n{section('<mj-text>{{ issue.author }}</mj-text>')}</mj-body></mjml>",
    )
    with pytest.raises(LayoutError, match="author") as info:
        build(issue_with_layout(newsletter, "undef"), load_settings())
    assert f"{folder / 'email.mjml'}:3" in str(info.value)


def test_custom_layout_reuses_default_partials(newsletter: Path):
    """A newsletter layout can include the default partials."""
    custom_layout(
        newsletter,
        "mine",
        "<mjml><mj-body>{% include 'partials/header.mjml' %}"
        + section("<mj-text>Mine!</mj-text>")
        + "{% include 'partials/footer.mjml' %}</mj-body></mjml>",
    )
    email = build(issue_with_layout(newsletter, "mine"), load_settings())
    assert "Mine!" in email.html and "548 Market St" in email.html


@pytest.mark.slow
def test_cli_import_stays_light():
    """`spark-mail --help` must not import premailer, httpx or mjml."""
    code = (
        "import sys, spark_mail.cli; "
        "print(sorted(m for m in ('premailer', 'httpx', 'mjml', 'lxml', 'cssutils') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
