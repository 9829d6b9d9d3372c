"""Messages printed without rich where the output is not a terminal (cli/markup.py).

rich itself is the reference: for any markup, spark-mail's plain text must be exactly what a
rich Console made like spark-mail's writes without colour, or None (rich then prints it);
spark-mail's escape must be rich's escape.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.errors import MarkupError
from rich.markup import escape as rich_escape
from test_start_up import NEWSLETTER, SAMPLE_ISSUE, start

from spark_mail.cli.markup import escape, plain_text

PIECES = st.sampled_from(
    ["[", "]", "\\", "/", "=", "@", "#", "bold", "red", " ", "a", "[/]", "[bold]", "[/bold]",
     "[bold red]", "[/red bold]", "[RED]", "[/red]", "[link=https://x/?a=[1]]", "[/link]",
     "[@click]", "[@click=f(1)]", "[#ff0000]", "[/ bold ]", "[1, 2]", "[]", "[x]", "[/x]",
     "\t", "\r", "\x07", "\x08", "\x0b", "\x0c", "\x1b[31m", "\n", "é", "中", ":rocket:",
     "\u200b", "  "]
)  # fmt: skip
MARKUP = st.lists(st.one_of(PIECES, st.text(max_size=3)), max_size=12).map("".join)


def rich_prints(markup: str) -> str | None:
    """What rich writes for `markup` on a non-terminal console made as spark-mail makes its
    consoles; None when it refuses the markup."""
    out = io.StringIO()
    console = Console(file=out, highlight=False, soft_wrap=True, emoji=False)
    try:
        console.print(markup)
    except MarkupError:
        return None
    return out.getvalue()


@pytest.mark.slow  # 400 generated examples (~1.6 s): the whole suite runs them
@settings(max_examples=400, deadline=None)
@given(MARKUP)
@example("[bold]Issue[/]  x")
@example("[bold red]a[/red bold]b")  # rich matches parsed styles; spark-mail leaves it to rich
@example("x\\")
@example("\\\\[bold]a[/]")
@example("a\tb")
def test_plain_text_is_what_rich_prints_or_none(markup: str) -> None:
    plain = plain_text(markup)
    expected = rich_prints(markup)
    if plain is not None:
        assert plain + "\n" == expected
    # markup spark-mail writes (escaped text in fixed tags) is always read without rich
    text = markup.replace("\t", " ")
    message = f"[yellow]warning:[/] {escape(text)} [bold]{escape(text)}[/]"
    assert plain_text(message) is not None
    assert plain_text(message) + "\n" == rich_prints(message)


@pytest.mark.slow  # 400 generated examples (~1.1 s)
@settings(max_examples=400, deadline=None)
@given(MARKUP)
@example("x\\")
@example("\\[bold]")
def test_escape_is_richs_escape(text: str) -> None:
    assert escape(text) == rich_escape(text)


@pytest.mark.slow  # real spark-mail processes
def test_a_build_into_a_pipe_loads_no_rich_and_prints_what_rich_printed(tmp_path: Path) -> None:
    """Into a pipe (cron, a script) the summary is plain text without rich; FORCE_COLOR
    still makes rich colour it, as before."""
    args = ["build", str(SAMPLE_ISSUE), "--out", str(tmp_path / "out")]
    out, loaded = start(args, ["rich", "rich.console", "rich.markup"], tmp_path)
    assert loaded == []
    assert "Subject    Engineering Leadership" in out
    assert "[bold]" not in out and "\x1b[" not in out

    env = {**os.environ, "FORCE_COLOR": "1", "TMPDIR": str(tmp_path)}
    coloured = subprocess.run(
        [sys.executable, "-m", "spark_mail", *args],
        cwd=NEWSLETTER, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert coloured.returncode == 0, coloured.stderr
    assert "\x1b[1mSubject\x1b[0m" in coloured.stdout
