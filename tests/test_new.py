"""`spark-mail new`: a stubbed issue that builds, never overwrites, opens $EDITOR on --edit."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from spark_mail.checks import run_checks
from spark_mail.config import load_settings
from spark_mail.drafting.new_issue import new_issue
from spark_mail.errors import IssueError
from spark_mail.issue import load_issue
from spark_mail.render import build

DAY = dt.date(2025, 2, 3)


def test_new_issue_builds_with_every_section(newsletter: Path) -> None:
    """The stub builds and has promo, poll, sponsor, share; the next number is taken."""
    settings = load_settings(newsletter, env={})
    path = new_issue(settings, "Shipping: small & often!", DAY)
    assert path == newsletter / "issues" / "2025-02-03-shipping-small-often.md"
    issue = load_issue(path)
    assert issue.title == "Shipping: small & often!" and issue.date == DAY
    assert issue.number == 43  # the sample issue is number 42
    assert issue.promo is not None and issue.poll is not None and issue.preheader
    email = build(path, settings)
    assert {"sponsor", "promo", "poll", "share"} <= set(email.sections)


def test_new_issue_stub_fails_check_on_todo_on_purpose(newsletter: Path) -> None:
    """The stub's TODO markers make the offline check fail until they are replaced."""
    settings = load_settings(newsletter, env={})
    report = run_checks(build(new_issue(settings, "Draft", DAY), settings), settings)
    assert [f.rule_id for f in report.errors] == ["content.placeholder"]


@pytest.mark.parametrize(
    ("title", "slug"),
    [("Über Café ☃", "uber-cafe"), ("Ünïcode Naïveté", "unicode-naivete"), ("☃ ☃", "issue")],
)
def test_new_keeps_the_letters_under_accents_in_the_file_name(
    newsletter: Path, title: str, slug: str
) -> None:
    """Accented letters lose the accent, not the letter ("Über" was "ber")."""
    settings = load_settings(newsletter, env={})
    path = new_issue(settings, title, DAY)
    assert path.name == f"2025-02-03-{slug}.md"
    assert load_issue(path).title == title


def test_new_refuses_to_overwrite(newsletter: Path) -> None:
    """A second `new` with the same title and date fails and leaves the file as it was."""
    settings = load_settings(newsletter, env={})
    path = new_issue(settings, "Once", DAY)
    path.write_text(path.read_text() + "\nmy words\n")
    with pytest.raises(IssueError, match="already exists"):
        new_issue(settings, "Once", DAY)
    assert path.read_text().endswith("my words\n")


def test_new_quotes_titles_that_would_break_yaml(newsletter: Path) -> None:
    """Colons, quotes and '#' in a title survive the front matter."""
    settings = load_settings(newsletter, env={})
    title = 'He said "ship it": #1 rule'
    assert load_issue(new_issue(settings, title, DAY)).title == title


def test_new_command_prints_path_and_warns_about_todo(newsletter: Path) -> None:
    """The command prints the new path on stdout and the TODO note on stderr."""
    result = run_cli("new", "Hello world", "--date", "2025-02-03", cwd=newsletter)
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path.name == "2025-02-03-hello-world.md" and path.is_file()
    assert "TODO" in result.stderr


def test_new_command_rejects_bad_date(newsletter: Path) -> None:
    """--date that is not YYYY-MM-DD: exit 2, nothing created."""
    result = run_cli("new", "Hello", "--date", "03/02/2025", cwd=newsletter)
    assert result.returncode == 2 and "YYYY-MM-DD" in result.stderr
    assert sorted(p.name for p in (newsletter / "issues").iterdir()) == [
        "2025-01-20-engineering-leadership.md"
    ]


def test_new_edit_opens_editor(newsletter: Path) -> None:
    """--edit runs $EDITOR with the new file (a fake editor records its argument)."""
    editor = newsletter / "fake_editor.py"
    record = newsletter / "edited.txt"
    editor.write_text(f"import sys; open({str(record)!r}, 'w').write(sys.argv[1])\n")
    result = run_cli(
        "new", "Edit me", "--date", "2025-02-03", "--edit",
        cwd=newsletter, env={"EDITOR": f"{sys.executable} {editor}", "VISUAL": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert record.read_text().endswith("2025-02-03-edit-me.md")


@pytest.mark.slow
def test_new_without_edit_never_opens_editor(newsletter: Path) -> None:
    """Without --edit, $EDITOR is not run."""
    editor = newsletter / "fake_editor.py"
    record = newsletter / "edited.txt"
    editor.write_text(f"open({str(record)!r}, 'w').write('ran')\n")
    result = run_cli(
        "new", "No edit", "--date", "2025-02-03",
        cwd=newsletter, env={"EDITOR": f"{sys.executable} {editor}"},
    )  # fmt: skip
    assert result.returncode == 0 and not record.exists()
