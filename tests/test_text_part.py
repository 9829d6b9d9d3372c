"""The plain-text part reads like a well-made text email: headings, lists, tables, code, footer."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SAMPLE_ISSUE, write_issue
from spark_mail.config import load_settings
from spark_mail.issue import load_issue
from spark_mail.render import build, plain_text
from spark_mail.render import markdown as md


@pytest.fixture
def text_of(newsletter: Path):
    def render(body: str) -> str:
        path = write_issue(newsletter, "t", "title: T\ndate: 2025-01-01", body)
        return build(path, load_settings()).text

    return render


def test_wrapped_heading_is_underlined_under_every_line(text_of) -> None:
    """A heading too long for one line is underlined as wide as its widest line."""
    heading = "The Power of People Management: Balancing Teams, Culture, and Productivity"
    text = text_of(f"## {heading}\n\nBody.\n")
    lines = text.splitlines()
    first = lines.index("The Power of People Management: Balancing Teams, Culture, and")
    assert lines[first + 1] == "Productivity"
    assert lines[first + 2] == "=" * len(lines[first])


def test_tight_list_items_follow_each_other(text_of) -> None:
    """A tight list has no blank lines between its items; a loose one keeps them."""
    text = text_of("Intro.\n\n- one\n- two\n  - nested\n- three\n\nAfter.\n\n1. a\n\n2. b\n")
    assert "Intro.\n\n- one\n- two\n   - nested\n- three\n\nAfter." in text
    assert "1. a\n\n2. b" in text


def test_table_rows_are_lines_with_a_header_rule(text_of) -> None:
    """Table rows are consecutive lines, aligned, with a rule under the header row."""
    text = text_of("| Team | Deploys |\n|---|---|\n| Payments | 12 |\n| Search | 30 |\n")
    assert "Team     | Deploys\n---------+--------\nPayments | 12\nSearch   | 30" in text


def test_long_code_lines_stay_within_78_columns(text_of) -> None:
    """A 200-character code line is continued on indented lines, none over 78 columns."""
    code = "run --flag " + " ".join(f"--option-{i}=value" for i in range(12))
    text = text_of(f"```\n{code}\n```\n")
    block = [line for line in text.splitlines() if line.startswith("    ")]
    assert len(block) > 1 and all(len(line) <= 78 for line in block)
    assert block[0].startswith("    run --flag") and block[1].startswith("      --option")
    assert " ".join(line.strip() for line in block) == code


def test_postal_address_line_names_the_newsletter(newsletter: Path) -> None:
    """The footer's address line says whose address it is, as the HTML footer does."""
    email = build(newsletter / "issues" / SAMPLE_ISSUE.name, load_settings())
    assert "Tiny Big Spark · 548 Market St #41620, San Francisco, CA 94104, USA" in email.text


def test_plain_text_matches_the_built_text_part(newsletter: Path) -> None:
    """render.plain_text (for other callers) says exactly what the build's text part says."""
    settings = load_settings()
    issue = load_issue(newsletter / "issues" / SAMPLE_ISSUE.name)
    blocks = md.split_blocks(md.parse(issue.body))
    assert plain_text(issue, settings, blocks) == build(issue.path, settings).text
