"""Attacks on messages printed without rich (cli/markup.py, DeferredConsole): a closed stdout,
an output that cannot take the text, a rich progress bar on the terminal while stdout goes
to a file, and closing tags rich matches differently from the written names.

The reference is what rich printed before (commit 27212d3 sent every message through rich).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.errors import MarkupError

from conftest import REPO, SAMPLE_ISSUE, run_cli, run_on_terminal, write_issue
from spark_mail.cli.markup import plain_text


def rich_prints(markup: str) -> str | None:
    """What rich writes for `markup` on a console made as spark-mail's (None: it refuses)."""
    out = io.StringIO()
    try:
        Console(file=out, highlight=False, soft_wrap=True, emoji=False).print(markup)
    except MarkupError:
        return None
    return out.getvalue()


@pytest.mark.parametrize(
    "markup",
    [
        "[x  y]a[/x y]",  # names rich cannot parse: compared as written (stripped, lowered)
        "[link HTTP://X]a[/link http://x]",  # a link's URL keeps its case in rich
        "[b]a[red]b[bold]c[/b]d[/]e[/red]f",  # "/b" closes the last "bold": [red] is gone
        "[bold]a[RED]b[/red]c[/]",  # still right where rich matches: left to rich or equal
    ],
)
def test_a_closing_tag_rich_matches_otherwise_goes_to_rich(markup: str) -> None:
    """An invalid row of `audience check` can carry such tags (its email is escaped, then
    repr() doubles the escaping backslash): rich raised a MarkupError for the first three,
    spark-mail's reader printed "a", "a" and "abcdef"."""
    plain = plain_text(markup)
    assert plain is None or plain + "\n" == rich_prints(markup)


# names rich matches otherwise than as written: synonyms, case, inner spaces, URLs, newlines
NAMES = st.sampled_from(
    ["b", "bold", "BOLD", " bold ", "bold  red", "red bold", "red", "RED", "x", "X", "x  y",
     "x y", "x\ny", "link HTTP://X", "link http://x", "link=HTTP://X", "not bold", "on red",
     "#ff0000", "#FF0000", "é", "É", "\u0130", "i\u0307"]
)  # fmt: skip
TAGS = st.one_of(
    NAMES.map("[{}]".format), NAMES.map("[/{}]".format), st.sampled_from(["[/]", "a", "\\"])
)


@pytest.mark.slow  # ~4 s: 1000 examples find "[x  y][/x y]" each run (300 did not)
@settings(max_examples=1000, deadline=None)
@given(st.lists(TAGS, max_size=8).map("".join))
def test_tags_are_closed_as_rich_closes_them_or_left_to_rich(markup: str) -> None:
    plain = plain_text(markup)
    assert plain is None or plain + "\n" == rich_prints(markup)


def closed_fd(fd: int) -> Callable[[], None]:
    return lambda: os.close(fd)


@pytest.mark.slow  # real spark-mail processes
@pytest.mark.parametrize(
    ("args", "closed", "code"),
    [
        (["status"], 1, 0),  # cron: `spark-mail status >&-`
        (["status", "--json"], 1, 0),  # JSON written to no file: nothing, not a traceback
        (["build", str(SAMPLE_ISSUE), "--out", "{tmp}/out"], 1, 0),
        (["check", "no-such-issue"], 2, 2),  # the error line goes nowhere; the exit code stays
    ],
)
def test_a_closed_output_takes_nothing_as_rich_wrote_nothing(
    newsletter: Path, tmp_path: Path, args: list[str], closed: int, code: int
) -> None:
    """Started with stdout (or stderr) closed, Python has no sys.stdout: rich wrote the
    messages nowhere and the command went on; spark-mail's reader wrote to None."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_MAIL_")}
    result = subprocess.run(
        [sys.executable, "-m", "spark_mail", *args],
        cwd=newsletter, env=env, stdin=subprocess.DEVNULL,
        stdout=None if closed == 1 else subprocess.PIPE,
        stderr=None if closed == 2 else subprocess.PIPE,
        preexec_fn=closed_fd(closed), timeout=120,
    )  # fmt: skip
    other = result.stderr if closed == 1 else result.stdout
    assert result.returncode == code, other
    assert b"Traceback" not in (other or b"")


@pytest.mark.slow  # a real spark-mail process
def test_an_output_without_the_characters_gets_richs_hint(newsletter: Path) -> None:
    """PYTHONIOENCODING=ascii and a subject with "é": rich raised UnicodeEncodeError with
    "*** You may need to add PYTHONIOENCODING=utf-8 to your environment ***"."""
    write_issue(newsletter, "2025-02-01-cafe", 'title: "Café"\ndate: 2025-02-01')
    result = run_cli(
        "build", "2025-02-01-cafe", "--out", str(newsletter / "out"),
        cwd=newsletter, env={"PYTHONIOENCODING": "ascii"},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert "UnicodeEncodeError" in result.stderr
    assert "You may need to add PYTHONIOENCODING=utf-8 to your environment" in result.stderr


def own_list_due(root: Path) -> None:
    """An issue due now, sent to a two-reader list through the outbox (progress is shown)."""
    shutil.copy(REPO / "spark-mail.toml", root / "spark-mail.toml")
    write_issue(root, "issue-1", 'title: "Issue one"\ndate: 2025-01-20\nsend_at: 2025-01-20T07:00')
    (root / "subscribers.csv").write_text("email\nann@example.com\nbob@example.com\n")
    (root / ".env").write_text(
        "SPARK_MAIL_PROVIDER=outbox\nSPARK_MAIL_AUDIENCE=subscribers.csv\n"
        "SPARK_MAIL_SIGNING_SECRET=attack-plain-signing-secret-0123456789\n"
    )


@pytest.mark.slow  # a real spark-mail process on a pseudo-terminal
def test_dispatch_into_a_file_from_a_terminal_writes_its_lines_to_the_file(
    newsletter: Path,
) -> None:
    """`spark-mail dispatch >> dispatch.log` typed on a terminal: the progress bar (stderr, the
    terminal) puts rich's proxy in sys.stdout while it runs; rich wrote "sent ..." to the
    proxied file, the log; spark-mail's reader wrote it into the proxy: onto the terminal."""
    own_list_due(newsletter)
    log_file = newsletter / "dispatch.log"
    with log_file.open("wb") as out:
        code, printed = run_on_terminal(
            "dispatch", "--now", "2025-01-20T07:00",
            cwd=newsletter, answers=[], env={"COLUMNS": "100"}, stdout=out,
        )  # fmt: skip
    assert code == 0, printed
    assert "2/2" in printed  # the bar ran
    assert "sent issue-1" not in printed
    assert "sent issue-1 via outbox: Issue one\n" in log_file.read_text()
