"""Which newsletter a command works on: the current folder or above, `-C DIR`, the folder of
an issue given by path; and a loud error outside any newsletter (a cron line with the wrong
`cd` must not pass silently)."""

from __future__ import annotations

import pytest

from conftest import SAMPLE_SLUG, run_cli
from spark_mail.config import load_settings
from spark_mail.errors import NotANewsletter


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ["dispatch"],
        ["send", SAMPLE_SLUG, "--yes"],
        ["list"],
        ["check", SAMPLE_SLUG, "--no-links"],
        ["status"],
        ["new", "Hello"],
        ["build", SAMPLE_SLUG],
        ["audience", "check"],
    ],
    ids=lambda command: command[0] if command[0] != "audience" else "audience-check",
)
def test_commands_outside_a_newsletter_fail_loudly(tmp_path, command) -> None:
    """From an empty folder every command that needs settings says so (exit 2) and writes
    nothing; `dispatch` used to print nothing and exit 0."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(*command, cwd=empty)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert (
        f"no spark-mail.toml in {empty} or any folder above - run `spark-mail init`, or pass -C DIR"
    ) in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert list(empty.iterdir()) == []


def test_settings_are_required_only_when_asked(tmp_path) -> None:
    """load_settings(require_file=True) raises NotANewsletter (exit 2); without it, the
    defaults (library use)."""
    with pytest.raises(NotANewsletter) as caught:
        load_settings(tmp_path, env={}, require_file=True)
    assert caught.value.exit_code == 2
    assert load_settings(tmp_path, env={}).root == tmp_path.resolve()


@pytest.mark.slow
def test_dash_c_runs_the_command_in_the_newsletter_folder(newsletter, tmp_path) -> None:
    """`spark-mail -C DIR list` from another folder lists DIR's issues (as git -C)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_cli("-C", str(newsletter), "list", "--json", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert SAMPLE_SLUG in result.stdout
    assert list(elsewhere.iterdir()) == []


@pytest.mark.slow
def test_dash_c_to_a_missing_folder_is_one_clear_error(tmp_path) -> None:
    """-C to a folder that does not exist: one line naming it, exit 2."""
    result = run_cli("-C", str(tmp_path / "nope"), "dispatch", cwd=tmp_path)
    assert result.returncode == 2
    assert f"-C {tmp_path / 'nope'}: no such folder" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_an_issue_path_finds_its_newsletter_from_any_folder(newsletter, tmp_path) -> None:
    """`spark-mail build /path/to/news/issues/x.md` from elsewhere uses that newsletter's
    settings and writes into its dist/."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    issue = newsletter / "issues" / f"{SAMPLE_SLUG}.md"
    result = run_cli("build", str(issue), "--json", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    assert (newsletter / "dist" / SAMPLE_SLUG / "email.html").is_file()
    assert list(elsewhere.iterdir()) == []
    check = run_cli("check", str(issue), "--no-links", cwd=elsewhere)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.slow
def test_audience_check_of_a_given_file_works_anywhere(tmp_path) -> None:
    """`audience check FILE` needs no newsletter: it only reads the file."""
    (tmp_path / "list.csv").write_text("email\na@example.com\n")
    result = run_cli("audience", "check", "list.csv", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"valid": 1' in result.stdout
