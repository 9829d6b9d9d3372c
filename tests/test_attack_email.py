"""Attacks on the email's quality checks and parts (issue 14): odd colours and CSS, odd
`--clients`, UTM on odd links, custom layouts' paddings, the text part, `--snapshot` paths."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import REPO, run_cli, write_issue
from spark_mail.checks import run_checks
from spark_mail.config import load_settings
from spark_mail.render import build

PREHEADER = "preheader: A preheader that is long enough to pass the length rule okay"


def attack_issue(root: Path, name: str, body: str, front: str = "") -> Path:
    lines = f"title: Attack\ndate: 2025-02-03\n{PREHEADER}\n{front}"
    return write_issue(root, name, lines, body + "\n")


def one_error_line(stderr: str) -> None:
    assert "Traceback" not in stderr
    assert len([line for line in stderr.splitlines() if line.strip()]) == 1, stderr


def contrast_messages(path: Path) -> str:
    report = run_checks(build(path, load_settings()), load_settings())
    return " ".join(f.message for f in report.findings if f.rule_id == "a11y.contrast")


# -- a11y.contrast: colours it could not read crashed `check`, or fooled it ------------------


@pytest.mark.parametrize(
    "style",
    ["color: rgba(0,0,0,1.5.5)", "color: rgba(0, 0, 0, .)", "font-weight: ²"],
)
def test_odd_inline_css_does_not_crash_check(newsletter: Path, style: str):
    attack_issue(newsletter, "odd-css", f'Some <span style="{style}">styled words</span> here.')
    done = run_cli("check", "odd-css", "--no-links", cwd=newsletter)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    "color",
    ["whitesmoke", "hsl(0, 0%, 98%)", "rgb(250 250 250)", "#fafafaff", "#FAFF", "ivory"],
)
def test_contrast_reads_every_opaque_css_colour(newsletter: Path, color: str):
    """Near-white text on the white card is 1.04:1, whichever way the colour is written."""
    path = attack_issue(newsletter, "faint", f'Hi <span style="color: {color}">faint text</span>')
    assert "faint text" in contrast_messages(path)


def test_half_transparent_text_is_not_guessed(newsletter: Path):
    path = attack_issue(newsletter, "alpha", 'Hi <span style="color: #00000080">grey text</span>')
    assert "grey text" not in contrast_messages(path)


def test_unreadable_brand_colour_is_one_settings_error(newsletter: Path):
    toml = newsletter / "spark-mail.toml"
    toml.write_text(toml.read_text().replace('"#e8590c"', '"rgba(1,2,3,1.5.5)"'))
    done = run_cli("build", "2025-01-20-engineering-leadership", cwd=newsletter)
    assert done.returncode == 2
    one_error_line(done.stderr)
    assert "accent_color" in done.stderr and "spark-mail.toml" in done.stderr
    assert not (newsletter / "dist").exists()


def test_hsl_brand_colour_is_darkened_for_text_like_a_hex_one(newsletter: Path):
    toml = newsletter / "spark-mail.toml"
    toml.write_text(toml.read_text().replace('"#e8590c"', '"hsl(22, 90%, 48%)"'))
    path = newsletter / "issues" / "2025-01-20-engineering-leadership.md"
    assert contrast_messages(path) == ""


# -- --clients ---------------------------------------------------------------------------


@pytest.mark.parametrize("names", [",", " , ,"])
def test_clients_option_naming_no_client_is_refused(newsletter: Path, names: str):
    """`--clients ,` used to check no client at all and say the email was clean."""
    done = run_cli(
        "check", "2025-01-20-engineering-leadership", "--no-links", "--clients", names,
        cwd=newsletter,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout
    assert "Traceback" not in done.stderr and "--clients" in done.stderr


# -- UTM --------------------------------------------------------------------------------


def test_utm_param_written_in_other_case_is_not_doubled(newsletter: Path):
    toml = newsletter / "spark-mail.toml"
    toml.write_text('utm_source = "tbs"\n' + toml.read_text())
    path = attack_issue(newsletter, "utm", "[a](https://example.com/x?UTM_Source=mine#frag)")
    email = build(path, load_settings())
    tagged = "https://example.com/x?UTM_Source=mine&amp;utm_medium=email&amp;utm_campaign=utm"
    assert tagged + "&amp;utm_content=body#frag" in email.html
    assert "utm_source=tbs&amp;utm_medium=email&amp;utm_campaign=utm&amp;" not in email.html
    assert tagged.replace("&amp;", "&") in email.text


# -- layout.outlook-width ---------------------------------------------------------------


@pytest.mark.parametrize("padding", ["8px 3em", "8px 10%", "8px 2rem", "8px 36pt"])
def test_outlook_width_counts_padding_in_other_units(newsletter: Path, padding: str):
    """MJML sizes Outlook's column table as if the padding were not there (3em -> 3 px),
    while Outlook pads the cell by 48 px a side: the email widens."""
    layout = newsletter / "layouts" / "roomy"
    shutil.copytree(REPO / "layouts" / "default", layout)
    mjml = layout / "email.mjml"
    old = '<mj-section css-class="card" padding="8px 0px">'
    assert old in mjml.read_text()
    mjml.write_text(mjml.read_text().replace(old, old.replace("8px 0px", padding)))
    path = attack_issue(newsletter, "roomy", "Hello", front="layout: roomy")
    report = run_checks(build(path, load_settings()), load_settings())
    found = [f for f in report.findings if f.rule_id == "layout.outlook-width"]
    assert found and "'card'" in found[0].message


# -- the plain-text part ----------------------------------------------------------------


def test_heading_of_wide_characters_is_underlined_as_wide_as_it_shows(newsletter: Path):
    path = attack_issue(newsletter, "cjk", "## 日本語の見出し🎉\n\nText.")
    lines = build(path, load_settings()).text.splitlines()
    at = lines.index("日本語の見出し🎉")
    assert lines[at + 1] == "=" * 16


def test_table_of_wide_characters_stays_aligned(newsletter: Path):
    path = attack_issue(newsletter, "cjk-table", "| 名前 | x |\n|---|---|\n| ab | y |")
    lines = build(path, load_settings()).text.splitlines()
    assert "名前 | x" in lines and "ab   | y" in lines


# -- preview --snapshot -----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("where", ["a-file.png", "a-file.png/inside"])
def test_snapshot_into_a_file_is_one_error_line(newsletter: Path, where: str):
    (newsletter / "a-file.png").write_bytes(b"not a folder")
    done = run_cli(
        "preview", "2025-01-20-engineering-leadership", "--snapshot", where, cwd=newsletter
    )
    assert done.returncode == 1
    one_error_line(done.stderr)
    assert "a-file.png" in done.stderr
    assert (newsletter / "a-file.png").read_bytes() == b"not a folder"


# -- deeply nested HTML -----------------------------------------------------------------


def test_html_nested_too_deep_is_refused_not_cut(newsletter: Path):
    """lxml's HTML parser stops at 256 levels and silently drops the rest of the email: the
    footer with its unsubscribe link and postal address went missing from the build."""
    attack_issue(newsletter, "deep", "<div>" * 300 + "deep" + "</div>" * 300)
    done = run_cli("build", "deep", cwd=newsletter)
    assert done.returncode == 2
    one_error_line(done.stderr)
    assert "deep.md" in done.stderr and "nested" in done.stderr
    assert not (newsletter / "dist" / "deep").exists()


# -- body image widths ------------------------------------------------------------------


def test_image_whose_alt_text_says_width_still_gets_the_column_width(newsletter: Path):
    """The filter looked for ` width=` anywhere in the tag, alt text included: this image
    kept no width, so desktop Outlook showed it at its natural size, wider than the email."""
    path = attack_issue(newsletter, "img", "![a wall width= 3m](https://example.com/big.png)")
    html = build(path, load_settings()).html
    tag = html[html.rindex("<img", 0, html.index("big.png")) :].split(">", 1)[0]
    assert 'width="552"' in tag


@pytest.mark.slow
def test_snapshot_without_chromium_says_what_to_install_and_leaves_old_pngs(newsletter: Path):
    """Playwright installed but no browser for it and no chromium on PATH: the error said
    'check that chromium starts', and the folder was made (empty) all the same."""
    slug = "2025-01-20-engineering-leadership"
    old = newsletter / "shots" / f"{slug}-375-light.png"
    old.parent.mkdir()
    old.write_bytes(b"last week's picture")
    env = {"PATH": str(newsletter / "no-bin"), "PLAYWRIGHT_BROWSERS_PATH": str(newsletter / "pw")}
    for where in ("shots", "new-shots"):
        done = run_cli("preview", slug, "--snapshot", where, cwd=newsletter, env=env)
        assert done.returncode == 1
        one_error_line(done.stderr)
        assert "install chromium" in done.stderr
    assert sorted(p.name for p in old.parent.iterdir()) == [old.name]
    assert old.read_bytes() == b"last week's picture"
    assert not (newsletter / "new-shots").exists()


# -- a11y.link-text and the background shorthand ----------------------------------------


@pytest.mark.parametrize("text", ["Click here…", "Read more »", "“Here”", "More ›"])
def test_vague_link_text_with_typographic_marks_is_found(newsletter: Path, text: str):
    path = attack_issue(newsletter, "vague", f"See [{text}](https://example.com/a) today.")
    report = run_checks(build(path, load_settings()), load_settings())
    found = [f.message for f in report.findings if f.rule_id == "a11y.link-text"]
    assert found and repr(text) in found[0]


def test_background_colour_after_an_image_in_the_shorthand_is_read(newsletter: Path):
    """`background: url(...) no-repeat #000` was read as no colour: white text on it was
    reported as white on white."""
    body = (
        '<div style="background: url(https://example.com/bg.png) no-repeat #000000; '
        'color: #ffffff">White on black</div>'
    )
    assert "White on black" not in contrast_messages(attack_issue(newsletter, "bg", body))


# -- merge tags inside link addresses ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "url", ["https://example.com/?id=%recipient.id%", "https://example.com/?id={{subscriber.id}}"]
)
def test_merge_tag_in_a_link_address_is_not_hidden_by_url_encoding(newsletter: Path, url: str):
    """The Markdown parser percent-encodes a link's `%` and `{`: `%25recipient.id%25` and
    `%7B%7B...` went out literally (no ESP replaces them) and check said clean."""
    attack_issue(newsletter, "merge", f"[Your page]({url})")
    done = run_cli("check", "merge", "--no-links", "--json", cwd=newsletter)
    assert done.returncode == 1, done.stdout
    assert "template.unresolved" in done.stdout


def test_code_indented_with_tabs_stays_within_78_columns(newsletter: Path):
    """Code lines were measured in characters: a tab counted one column, not up to eight."""
    code = "\t\t\t\t\t\tcall_something(argument_one, argument_two, argument_three)"
    path = attack_issue(newsletter, "tabs", f"```\n{code}\n```")
    text = build(path, load_settings()).text
    code_lines = [line for line in text.splitlines() if "argument" in line or "call_" in line]
    assert code_lines and all(len(line.expandtabs()) <= 78 for line in code_lines), code_lines


def test_utm_never_on_the_unsubscribe_page_written_with_another_case_or_port(newsletter: Path):
    """The skip list was compared as text: the same page with the host in capitals, or
    with its default port, got UTM tags."""
    toml = newsletter / "spark-mail.toml"
    toml.write_text('utm_source = "tbs"\n' + toml.read_text())
    body = (
        "[Leave](HTTPS://TinyBigSpark.com/unsubscribe?list=news) "
        "[Leave too](https://tinybigspark.com:443/unsubscribe)"
    )
    email = build(attack_issue(newsletter, "utm-desk", body), load_settings())
    assert "utm_" not in email.html.split("Leave</a>")[0].rsplit("<a", 1)[1]
    assert "utm_" not in email.html.split("Leave too</a>")[0].rsplit("<a", 1)[1]
