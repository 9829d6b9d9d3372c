"""The smaller things a new user meets: help and completion, wording, error order and
"did you mean", tables that never cut ids, paths, slugs or times, and timestamps in cron logs."""

from __future__ import annotations

import ast
import datetime as dt
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import REPO, SAMPLE_SLUG, run_cli, run_on_terminal, write_issue
from spark_mail import cli
from spark_mail.checks.links import LinkResult
from spark_mail.checks.report import Report
from spark_mail.cli.drafting import print_report
from spark_mail.cli.output import console, print_bulk_summary
from spark_mail.config import load_settings
from spark_mail.drafting.new_issue import new_issue
from spark_mail.errors import ConfigError, LayoutError, UnsupportedOperation
from spark_mail.providers import get_provider
from spark_mail.render import build
from spark_mail.scheduling.esp import schedule_issue

ISO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"
LONG_SLUG = "2025-01-20-a-rather-long-issue-title-that-makes-a-long-slug"


def commands() -> list[list[str]]:
    """Every command and sub-command of the CLI, as argument lists."""
    found = [[c.name or c.callback.__name__] for c in cli.app.registered_commands]  # type: ignore[union-attr]
    for group in cli.app.registered_groups:
        found += [[group.name, c.name] for c in group.typer_instance.registered_commands]  # type: ignore[list-item,union-attr]
    return found


# -- --help and completion ----------------------------------------------------------------


def test_every_command_help_has_an_example_and_no_python_type_names() -> None:
    """`spark-mail X --help` ends with an example and never shows <str>, <int>, <list[str]>."""
    runner = CliRunner()
    assert len(commands()) >= 12
    for command in commands():
        result = runner.invoke(cli.app, [*command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Example:" in result.output, command
        assert f"spark-mail {' '.join(command)}" in result.output.split("Example:")[1], command
        assert not re.search(r"<(str|int|float|bool|path|list|[a-z]+ range)\b", result.output), (
            command,
            result.output,
        )


@pytest.mark.slow
def test_completion_installs_and_completes_commands(tmp_path: Path) -> None:
    """`spark-mail --install-completion bash` writes the script into ~/.bashrc's reach, and
    the script's protocol answers `spark-mail di<TAB>` with dispatch."""
    env = {"HOME": str(tmp_path), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    script = Path(sys.executable).with_name("spark-mail")
    import subprocess

    installed = subprocess.run(
        [str(script), "--install-completion", "bash"], env=env, capture_output=True, text=True
    )
    assert installed.returncode == 0, installed.stderr
    assert "spark-mail" in (tmp_path / ".bashrc").read_text()
    completed = subprocess.run(
        [str(script)],
        env={**env, "_SPARK_MAIL_COMPLETE": "complete_bash", "COMP_WORDS": "spark-mail di",
             "COMP_CWORD": "1"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert "dispatch" in completed.stdout.split()


@pytest.mark.slow
def test_every_declared_dependency_is_imported() -> None:
    """No dependency is declared and left unused (watchfiles was)."""
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~\[ ]", d, maxsplit=1)[0].lower() for d in declared}
    imported: set[str] = set()
    for path in (REPO / "spark_mail").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    by_distribution = importlib.metadata.packages_distributions()
    used = {dist.lower() for module in imported for dist in by_distribution.get(module, [])}
    # Imported by another dependency at run time, never by name (and that one is used).
    companions = {"httptools": "uvicorn", "uvloop": "uvicorn", "python-multipart": "starlette"}
    assert {c for c, host in companions.items() if host in used} == set(companions)
    assert names - used - set(companions) == set()


# -- errors in a useful order, with "did you mean" -------------------------------------------


@pytest.mark.parametrize(
    ("args", "built"),
    [
        (["build", "x.md"], {"build"}),
        (["-C", "build", "check", "--json"], {"check"}),  # -C's DIR may be named like a command
        (["--version", "audience", "check"], {"audience"}),
        (["biuld"], None),  # a typo: click's "did you mean" needs every name
        (["--help"], None),
        (["--", "build"], None),
    ],
)
def test_a_start_builds_only_the_command_it_runs(args: list[str], built: set[str] | None) -> None:
    """Typer builds every command's options at each start; main() keeps only the one the
    command line names (a cold build is faster by that), and puts them all back after."""
    everything = list(cli.app.registered_commands), list(cli.app.registered_groups)
    names = {c.callback.__name__ for c in everything[0]} | {g.name for g in everything[1]}
    try:
        cli.only_the_command_named(args)
        kept = {c.callback.__name__ for c in cli.app.registered_commands}
        kept |= {g.name for g in cli.app.registered_groups}
        assert kept == (built if built is not None else names)
    finally:
        cli.app.registered_commands, cli.app.registered_groups = everything


def test_main_builds_only_the_named_command_and_puts_them_all_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """main() itself filters (not only the helper): typer is handed just `build`, and every
    command is registered again afterwards."""
    import typer.main

    built: list[set[str]] = []

    def get_command(typer_app: object) -> object:
        built.append({c.callback.__name__ for c in cli.app.registered_commands})
        raise SystemExit(0)

    monkeypatch.setattr(typer.main, "get_command", get_command)
    monkeypatch.setattr(sys, "argv", ["spark-mail", "build", "x.md"])
    everything = list(cli.app.registered_commands)
    with pytest.raises(SystemExit):
        cli.main()
    assert built == [{"build"}]
    assert cli.app.registered_commands == everything


def test_main_leaves_what_the_process_made_to_its_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process ends after main(): what it made is frozen out of the garbage collector's
    last pass, which would only walk objects about to vanish (~0.1 s of a cold build)."""
    import gc

    import typer.main

    def get_command(typer_app: object) -> object:
        raise SystemExit(0)

    monkeypatch.setattr(typer.main, "get_command", get_command)
    monkeypatch.setattr(sys, "argv", ["spark-mail", "--help"])
    gc.unfreeze()  # (conftest froze what collection imported)
    assert gc.get_freeze_count() == 0
    with pytest.raises(SystemExit):
        cli.main()
    assert gc.get_freeze_count() > 10_000


def test_a_mistyped_command_is_still_offered_the_right_one(tmp_path: Path) -> None:
    done = run_cli("biuld", cwd=tmp_path)
    assert done.returncode == 2
    assert "Did you mean 'build'?" in done.stderr
    done = run_cli("-C", str(REPO), "audience", "chek", cwd=tmp_path)
    assert done.returncode == 2 and "Did you mean 'check'?" in done.stderr


def test_a_setting_below_brand_is_told_to_move_above_it(newsletter: Path) -> None:
    """`audience = ...` appended after [brand] lands in that table: say to move it up."""
    toml = newsletter / "spark-mail.toml"
    toml.write_text(toml.read_text() + 'audience = "subscribers.csv"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(newsletter, env={})
    assert "unknown [brand] key 'audience'" in str(caught.value)
    assert "move it above the [brand] line" in str(caught.value)


@pytest.mark.slow
def test_a_provider_typo_is_blamed_on_where_it_came_from(newsletter: Path) -> None:
    """--provider postmrk names the flag; SPARK_MAIL_PROVIDER=postmrk names the variable."""
    flag = run_cli("send", SAMPLE_SLUG, "--dry-run", "--provider", "postmrk", cwd=newsletter)
    assert flag.returncode == 2
    assert "--provider 'postmrk' is not a provider" in flag.stderr
    assert "did you mean 'postmark'?" in flag.stderr and "SPARK_MAIL_PROVIDER" not in flag.stderr
    with pytest.raises(ConfigError, match="SPARK_MAIL_PROVIDER='postmrk'"):
        get_provider(load_settings(newsletter, env={"SPARK_MAIL_PROVIDER": "postmrk"}))


def test_a_provider_that_cannot_schedule_says_so_before_asking_for_a_key(
    newsletter: Path,
) -> None:
    """schedule with Postmark and no API key: "cannot schedule", not "no API key"."""
    settings = load_settings(newsletter, env={"SPARK_MAIL_PROVIDER": "postmark"})
    at = dt.datetime(2030, 1, 1, 7, tzinfo=dt.UTC)
    with pytest.raises(UnsupportedOperation, match="postmark: cannot schedule"):
        schedule_issue(SAMPLE_SLUG, settings, at=at)


@pytest.mark.slow
def test_a_mistyped_issue_gets_a_did_you_mean(newsletter: Path) -> None:
    """check 2025-01-20-engineering-leadershp: exit 2 and the right slug suggested."""
    result = run_cli("check", "2025-01-20-engineering-leadershp", cwd=newsletter)
    assert result.returncode == 2
    assert f"did you mean {SAMPLE_SLUG}?" in result.stderr


@pytest.mark.slow
def test_preview_of_a_missing_issue_starts_no_server(newsletter: Path) -> None:
    """preview of a typo: exit 2 at once (a server would run until killed)."""
    result = run_cli(
        "preview", "no-such-issue", "--no-open", "--port", "0", cwd=newsletter, timeout=30
    )
    assert result.returncode == 2
    assert "no such file" in result.stderr and "Previewing" not in result.stderr


def test_unknown_layout_error_names_the_issue_file_and_line(newsletter: Path) -> None:
    """layout: fancy on line 4 of the issue: the error starts with that file:line."""
    path = write_issue(newsletter, "fancy", "title: T\ndate: 2025-01-01\nlayout: fancy")
    with pytest.raises(LayoutError) as caught:
        build(path, load_settings(newsletter, env={}))
    assert str(caught.value).startswith(f"{path}:4: unknown layout 'fancy'")


# -- new -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_new_edit_without_an_editor_writes_nothing(newsletter: Path) -> None:
    """--edit with neither $VISUAL nor $EDITOR: exit 2 before the file is written."""
    result = run_cli("new", "Unsaved", "--edit", cwd=newsletter, env={"EDITOR": "", "VISUAL": ""})
    assert result.returncode == 2 and "$EDITOR" in result.stderr
    assert [p.name for p in (newsletter / "issues").iterdir()] == [f"{SAMPLE_SLUG}.md"]


def test_the_first_issue_of_a_newsletter_is_number_one(newsletter: Path) -> None:
    """An empty issues/ folder: the new issue gets number: 1."""
    (newsletter / "issues" / f"{SAMPLE_SLUG}.md").unlink()
    path = new_issue(load_settings(newsletter, env={}), "First", dt.date(2025, 2, 3))
    assert "\nnumber: 1\n" in path.read_text()


# -- wording ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_outbox_test_send_of_a_draft_warns_and_says_it_wrote_a_file(newsletter: Path) -> None:
    """send --test of a stub with TODOs: a warning per finding, and "written", not "sent"."""
    made = run_cli("new", "Draft", "--date", "2025-02-03", cwd=newsletter)
    slug = Path(made.stdout.strip()).stem
    result = run_cli("send", slug, "--test", "--to", "ed@example.com", cwd=newsletter)
    assert result.returncode == 0, result.stderr
    assert "warning: content.placeholder" in result.stderr
    assert "a real send is refused until the check errors are fixed" in result.stderr
    assert "Test copy written to the outbox (no email was sent)" in result.stdout
    assert "Test copy sent" not in result.stdout


def test_one_link_and_one_batch_are_singular() -> None:
    """ "1 link checked", "1 batch": no "1 links", "1 batches"."""
    report = Report(slug="x", links_checked=True, links=[LinkResult(url="https://a.example")])
    with console.capture() as captured:
        print_report(report)
        print_bulk_summary(
            {"sent": 1, "refused": 0, "failed": 0, "uncertain": 0, "readers": 1,
             "already_sent": 0, "held_uncertain": 0, "remaining": 0, "suppressed": 0,
             "invalid": 0, "duplicates": 0, "seconds": 0.1, "rate": 10, "batches": 1},
            console,
        )  # fmt: skip
    text = captured.get()
    assert "1 link checked" in text and "1 batch" in text
    assert "1 links" not in text and "1 batches" not in text


@pytest.mark.slow
def test_the_send_question_gives_the_number_of_readers(newsletter: Path) -> None:
    """On a terminal, `send` asks "... to the 2 readers in subscribers.csv ..."; no: nothing
    is sent."""
    (newsletter / "subscribers.csv").write_text("email\na@example.com\nb@example.com\n")
    env = {"SPARK_MAIL_AUDIENCE": "subscribers.csv", "SPARK_MAIL_SIGNING_SECRET": "s" * 32}
    code, printed = run_on_terminal(
        "send", SAMPLE_SLUG, cwd=newsletter, env=env, answers=[("[y/N]", "n")]
    )
    assert "to the 2 readers in subscribers.csv via outbox?" in printed
    assert code == 1 and "not sent" in printed
    assert not (newsletter / "outbox").exists()


# -- cron logs and tables --------------------------------------------------------------------


def due_issue(root: Path, slug: str) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    write_issue(
        root, slug,
        f"title: A long one\ndate: 2025-01-20\nsend_at: {(now - dt.timedelta(minutes=5)).isoformat()}\n"
        "preheader: A preheader that is long enough to please the checks, surely.",
    )  # fmt: skip


@pytest.mark.slow
def test_cron_log_lines_start_with_their_time(newsletter: Path) -> None:
    """stdout not a terminal (cron): each dispatch line starts with an ISO time; errors too."""
    due_issue(newsletter, LONG_SLUG)
    result = run_cli("dispatch", cwd=newsletter)
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(rf"{ISO_TIME} sent {LONG_SLUG} via outbox: .*\n", result.stdout)
    outside = run_cli("dispatch", cwd=newsletter.parent)
    assert re.match(rf"{ISO_TIME} error: no spark-mail.toml in ", outside.stderr)


@pytest.mark.slow
def test_tables_in_a_pipe_keep_slugs_paths_and_times_whole(newsletter: Path) -> None:
    """80 columns, not a terminal: status and list print every slug, path and time uncut,
    and a send_at with the newsletter's zone offset."""
    due_issue(newsletter, LONG_SLUG)
    assert run_cli("dispatch", cwd=newsletter).returncode == 0
    status = run_cli("status", cwd=newsletter, env={"COLUMNS": "80"})
    sent_file = newsletter / "outbox" / LONG_SLUG / "send.eml"
    assert LONG_SLUG in status.stdout and f"file={sent_file}" in status.stdout
    assert re.search(rf" {ISO_TIME} ", status.stdout)
    listing = run_cli("list", cwd=newsletter, env={"COLUMNS": "80"})
    assert LONG_SLUG in listing.stdout and SAMPLE_SLUG in listing.stdout
    assert re.search(rf" {ISO_TIME} ", listing.stdout)
    assert "…" not in status.stdout + listing.stdout


@pytest.mark.slow  # real processes
@pytest.mark.parametrize(
    "args",
    [
        ["list"],
        ["list", "--json"],
        ["build", "issues/2025-01-20-engineering-leadership.md", "--out", "{out}"],
    ],
)
def test_output_to_a_full_disk_is_one_line_not_a_traceback(args: list[str], tmp_path: Path):
    """`spark-mail list > file` on a full disk (here /dev/full) ended in an OSError
    traceback. Right: one line on stderr saying the output could not be written, exit 1."""
    import subprocess

    full = Path("/dev/full")
    if not full.exists():
        pytest.skip("no /dev/full here")
    with full.open("w") as stdout:
        result = subprocess.run(
            [sys.executable, "-m", "spark_mail", *(a.format(out=tmp_path) for a in args)],
            cwd=REPO, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr[-500:]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "cannot write the output" in line and "No space left on device" in line
