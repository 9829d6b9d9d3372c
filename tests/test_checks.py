"""Pre-send rules: each fires on a fixture made to trip it, none fires on the clean fixture."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from conftest import run_cli
from spark_mail.checks import Finding, Report, Severity, run_checks
from spark_mail.checks.html import Anchor, Box, Image, parse_html
from spark_mail.checks.rules import allowed_merge_tags, url_problem
from spark_mail.config import Settings
from spark_mail.errors import ChecksFailed
from spark_mail.render import GMAIL_CLIP_BYTES, RenderedEmail, build

FIXTURES = Path(__file__).parent / "fixtures" / "checks"
ADDRESS = "Tiny Big Spark, 548 Market St #41620, San Francisco, CA 94104, USA"


def newsletter_settings(root: Path, **changes: object) -> Settings:
    base = Settings(
        root=root,
        name="Tiny Big Spark",
        from_address="Tiny Big Spark <hello@example.com>",
        postal_address=ADDRESS,
        base_url="https://example.com/p/{slug}",
        unsubscribe_url="https://example.com/unsubscribe",
        unsubscribe_mailto="unsubscribe@example.com",
        poll_url="https://example.com/poll/{slug}?answer={index}",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return newsletter_settings(tmp_path)


def built(name: str, settings: Settings) -> RenderedEmail:
    return build(FIXTURES / f"{name}.md", settings)


def rule_ids(report: Report) -> set[str]:
    """The rules that found a problem (info notes, e.g. clients.* fallbacks, left out)."""
    return {f.rule_id for f in report.problems}


def test_clean_fixture_passes_every_rule(settings: Settings) -> None:
    """The clean fixture has no finding at all, so every rule below has a negative case."""
    report = run_checks(built("clean", settings), settings)
    assert report.problems == [], report.problems
    assert report.ok and not report.failed(strict=True)


@pytest.mark.parametrize(
    ("fixture", "rule_id", "severity"),
    [
        ("placeholder-todo", "content.placeholder", "error"),
        ("placeholder-tbd", "content.placeholder", "error"),
        ("placeholder-lorem", "content.placeholder", "error"),
        ("template-braces", "template.unresolved", "error"),
        ("template-recipient", "template.unresolved", "error"),
        ("template-block", "template.unresolved", "error"),
        ("image-no-alt", "image.alt", "error"),
        ("promo-image-no-alt", "image.alt", "error"),
        ("url-relative", "url.unsafe", "error"),
        ("url-http", "url.unsafe", "error"),
        ("url-file", "url.unsafe", "error"),
        ("url-localhost", "url.unsafe", "error"),
        ("url-image-relative", "url.unsafe", "error"),
        ("subject-long", "subject.length", "warning"),
        ("subject-caps", "subject.caps", "warning"),
        ("preheader-missing", "preheader.missing", "warning"),
        ("preheader-short", "preheader.length", "warning"),
        ("preheader-long", "preheader.length", "warning"),
        ("preheader-repeats", "preheader.repeats-subject", "warning"),
        ("sponsor-unlabelled", "block.label", "warning"),
        ("promo-unlabelled", "block.label", "warning"),
        ("many-links", "links.count", "warning"),
    ],
)
def test_rule_fires_on_its_fixture(
    settings: Settings, fixture: str, rule_id: str, severity: str
) -> None:
    """Each fixture trips exactly the rule it was made for, with its severity and a hint."""
    report = run_checks(built(fixture, settings), settings)
    assert rule_ids(report) == {rule_id}, report.findings
    finding = report.findings[0]
    assert finding.severity == severity
    assert finding.hint and finding.message


def test_placeholder_points_at_the_issue_line(settings: Settings) -> None:
    """A TODO is reported with the line of the issue file where it stands."""
    report = run_checks(built("placeholder-todo", settings), settings)
    (finding,) = report.errors
    lines = (FIXTURES / "placeholder-todo.md").read_text().splitlines()
    line = next(n for n, text in enumerate(lines, start=1) if "TODO" in text)
    assert f"line {line}" in finding.message


def test_html_over_gmail_limit_is_an_error(settings: Settings) -> None:
    """Final HTML over ~102 KB is an error, measured on the HTML that is sent."""
    email = built("clean", settings)
    # hidden: black filler text straight in <body> would also fail a11y.contrast in dark mode
    filler = '<p style="display:none">' + "x" * (GMAIL_CLIP_BYTES - email.html_bytes + 10) + "</p>"
    big = dataclasses.replace(email, html=email.html.replace("</body>", filler + "</body>"))
    assert rule_ids(run_checks(big, settings)) == {"size.clipped"}


def test_html_size_counts_utf8_bytes_not_characters(settings: Settings) -> None:
    """Size is UTF-8 bytes: 2-byte characters under the limit in characters still clip."""
    email = built("clean", settings)
    chars = (GMAIL_CLIP_BYTES - email.html_bytes) // 2 + 100  # fewer chars than bytes left
    big = dataclasses.replace(email, html=email.html.replace("</body>", "é" * chars + "</body>"))
    assert len(big.html) < GMAIL_CLIP_BYTES < big.html_bytes
    assert "size.clipped" in rule_ids(run_checks(big, settings))


def test_html_over_90_kb_is_a_warning(settings: Settings) -> None:
    """Between 90 KB and the clipping limit: a warning, not an error."""
    email = built("clean", settings)
    filler = '<p style="display:none">' + "x" * (91 * 1024 - email.html_bytes) + "</p>"
    near = dataclasses.replace(email, html=email.html.replace("</body>", filler + "</body>"))
    report = run_checks(near, settings)
    assert rule_ids(report) == {"size.near-clip"} and report.ok and report.failed(strict=True)


def test_no_unsubscribe_url_fails_link_and_headers(tmp_path: Path) -> None:
    """Without unsubscribe settings there is no visible link and no List-Unsubscribe."""
    settings = newsletter_settings(tmp_path, unsubscribe_url="", unsubscribe_mailto="")
    report = run_checks(built("clean", settings), settings)
    assert rule_ids(report) == {"unsubscribe.link", "headers.list-unsubscribe"}


def test_mailto_only_unsubscribe_misses_one_click_post_header(tmp_path: Path) -> None:
    """A mailto-only List-Unsubscribe has no List-Unsubscribe-Post: an error."""
    settings = newsletter_settings(tmp_path, unsubscribe_url="")
    report = run_checks(built("clean", settings), settings)
    header = [f for f in report.findings if f.rule_id == "headers.list-unsubscribe"]
    assert len(header) == 1 and "List-Unsubscribe-Post" in header[0].message
    assert "List-Unsubscribe and" not in header[0].message


def test_unsubscribe_link_needs_visible_text(settings: Settings) -> None:
    """A link to the unsubscribe URL whose text does not say so does not count."""
    email = built("clean", settings)
    hidden = dataclasses.replace(email, html=email.html.replace(">Unsubscribe<", ">Manage<"))
    assert "unsubscribe.link" in rule_ids(run_checks(hidden, settings))


def test_missing_postal_address_setting_is_an_error(tmp_path: Path) -> None:
    """No postal_address setting: the CAN-SPAM rule fires."""
    settings = newsletter_settings(tmp_path, postal_address="")
    assert rule_ids(run_checks(built("clean", settings), settings)) == {"postal-address"}


def test_postal_address_dropped_by_layout_is_an_error(settings: Settings) -> None:
    """A layout that leaves the address out of the HTML is caught (text part still has it)."""
    email = built("clean", settings)
    stripped = dataclasses.replace(email, html=email.html.replace("548 Market St", ""))
    report = run_checks(stripped, settings)
    assert rule_ids(report) == {"postal-address"}
    assert "HTML part" in report.errors[0].message


def test_sponsor_box_without_its_marker_is_a_warning(settings: Settings) -> None:
    """A layout that drops the sponsor-box class hides the label from the check: warn."""
    email = built("clean", settings)
    unmarked = dataclasses.replace(email, html=email.html.replace("sponsor-box", "box"))
    report = run_checks(unmarked, settings)
    assert rule_ids(report) == {"block.label"}
    assert "not marked" in report.warnings[0].message


def test_settings_merge_tags_are_not_unresolved_template(tmp_path: Path) -> None:
    """Buttondown's {{ unsubscribe_url }} from the settings is allowed; others are not."""
    settings = newsletter_settings(tmp_path, unsubscribe_url="{{ unsubscribe_url }}")
    assert allowed_merge_tags(settings) == {"{{ unsubscribe_url }}"}
    clean = run_checks(built("clean", settings), settings)
    assert clean.problems == []
    other = run_checks(built("template-braces", settings), settings)
    assert rule_ids(other) == {"template.unresolved"}
    assert "first_name" in other.errors[0].message


def test_decorative_image_may_have_empty_alt(settings: Settings) -> None:
    """alt="" is right for an image marked role=presentation; missing alt never is."""
    email = built("clean", settings)
    decorative = '<img src="https://example.com/line.png" alt="" role="presentation">'
    no_alt = '<img src="https://example.com/line.png">'
    ok = dataclasses.replace(email, html=email.html.replace("</body>", decorative + "</body>"))
    bad = dataclasses.replace(email, html=email.html.replace("</body>", no_alt + "</body>"))
    assert run_checks(ok, settings).problems == []
    assert rule_ids(run_checks(bad, settings)) == {"image.alt"}


FACTS_HTML = """<!DOCTYPE html>
<html lang="en"><head><title>TODO title</title><style>.x { color: red }</style></head>
<body>
<p>Hello <b>bold</b> world<!-- a note -->after</p>
<div class="card sponsor-box"><span> </span><p>SPONSORED <i>by</i> Acme</p></div>
<a href=" https://example.com/a ">Un<b>sub</b>scribe<!-- c --> now</a>
<a name="top">no href</a>
<img src="https://example.com/i.png" alt="">
<img src=" https://example.com/d.png " alt="" role="presentation">
<img src="https://example.com/n.png" aria-hidden="true">
<div class="promo-box">
</div><p>PROMO &amp; more</p>
<script>var todo = 1;</script>tail text
</body></html>
"""


def test_links_images_text_and_boxes_read_from_the_html() -> None:
    """What the offline rules read: a link's text across tags and comments, images with and
    without alt, a box's label (the first text after it starts), the visible text (each text
    run apart, <title>, <style> and <script> left out). The values html.parser gave."""
    page = parse_html(FACTS_HTML)
    assert page.anchors == [Anchor("https://example.com/a", "Unsubscribe now")]
    assert page.images == [
        Image("https://example.com/i.png", "", decorative=False),
        Image("https://example.com/d.png", "", decorative=True),
        Image("https://example.com/n.png", None, decorative=True),
    ]
    assert page.boxes == [Box("sponsor", "SPONSORED"), Box("promo", "PROMO & more")]
    assert page.visible_text == (
        "Hello bold world after SPONSORED by Acme Un sub scribe now no href PROMO & more tail text"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://example.com/a", None),
        ("mailto:someone@example.com", None),
        ("/relative", "is relative"),
        ("#top", "is relative"),
        ("http://example.com", "uses http:, not https:"),
        ("file:///tmp/x", "a file on your computer"),
        ("https://localhost/x", "points to localhost"),
        ("https://127.0.0.1:8000/", "points to 127.0.0.1"),
        ("https://app.localhost/", "points to app.localhost"),
        ("javascript:alert(1)", "the javascript: scheme"),
        ("", "is empty"),
    ],
)
def test_url_problem_says_what_is_wrong_with_each_url(url: str, problem: str | None) -> None:
    """Only absolute https (and mailto/tel) URLs that readers can reach pass; the others are
    told apart by why they fail."""
    found = url_problem(url)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found


def test_report_contract_for_the_sending_code(settings: Settings) -> None:
    """errors/warnings/ok/failed(strict)/to_json behave as publish.py relies on."""
    report = Report(
        slug="x",
        findings=[Finding("subject.caps", Severity.WARNING, "m", "h")],
    )
    assert report.ok and not report.failed(strict=False) and report.failed(strict=True)
    assert report.errors == [] and len(report.warnings) == 1
    data = json.loads(json.dumps(report.to_json()))
    assert data["findings"][0] == {
        "rule_id": "subject.caps",
        "severity": "warning",
        "message": "m",
        "hint": "h",
    }
    with pytest.raises(ChecksFailed):
        report.raise_for_failure(strict=True)
    report.raise_for_failure(strict=False)


def test_offline_checks_never_touch_the_network(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """links=False opens no socket (the sending code relies on it)."""
    import socket

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network used with links=False")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    report = run_checks(built("clean", settings), settings, links=False)
    assert not report.links_checked and report.links == []


# -- the command ------------------------------------------------------------------------------


def test_check_command_clean_issue_exits_0(newsletter: Path) -> None:
    """The sample issue passes `check --no-links` with exit 0 and a summary line."""
    result = run_cli("check", "2025-01-20-engineering-leadership", "--no-links", cwd=newsletter)
    assert result.returncode == 0, result.stderr
    assert "clean" in result.stdout


@pytest.mark.slow
def test_check_command_errors_exit_1_with_json_report(newsletter: Path) -> None:
    """Errors: exit 1, one JSON report on stdout, one error line on stderr."""
    target = newsletter / "issues" / "todo.md"
    target.write_text((FIXTURES / "placeholder-todo.md").read_text())
    result = run_cli("check", str(target), "--no-links", "--json", cwd=newsletter)
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["failed"] is True
    problems = [f["rule_id"] for f in data["findings"] if f["severity"] != "info"]
    assert problems == ["content.placeholder"]
    assert "checks failed" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_check_command_strict_fails_on_warnings(newsletter: Path) -> None:
    """Warnings alone exit 0, and 1 with --strict."""
    target = newsletter / "issues" / "caps.md"
    target.write_text((FIXTURES / "subject-caps.md").read_text())
    relaxed = run_cli("check", str(target), "--no-links", cwd=newsletter)
    strict = run_cli("check", str(target), "--no-links", "--strict", cwd=newsletter)
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr
    assert "subject.caps" in relaxed.stdout
    assert strict.returncode == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        ("---\ntitle: x\ndate: 2025-01-01\n", "front matter is never closed"),
        ("---\ntitle: [x\ndate: 2025-01-01\n---\nHi\n", "not valid YAML"),
    ],
)
def test_check_command_bad_input_exits_2_in_one_line(
    newsletter: Path, content: str | None, expected: str
) -> None:
    """A missing file or broken front matter: exit 2, one line naming the file, no traceback."""
    target = newsletter / "issues" / "broken.md"
    if content is not None:
        target.write_text(content)
    result = run_cli("check", str(target), "--no-links", cwd=newsletter)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "broken.md" in lines[0]
