"""The `spark-mail` command: parse arguments, call the core, print, map errors to exits.

    app.py         the typer app, shared options, settings()
    output.py      consoles, JSON, the text form of a SendReport, progress
    drafting.py    build, new, check, preview, list
    sending.py     send
    scheduling.py  dispatch, schedule, unschedule, status
    audience.py    audience check, audience suppressions
    desk.py        serve, poll results (the reader desk)

Only cli/ imports typer and rich's console. Core modules raise SparkMailError; `main()`
turns each into one line on stderr and its exit code, in this one place.
"""

from __future__ import annotations

import sys

from rich.markup import escape

from spark_mail.cli import audience, desk, drafting, scheduling, sending  # noqa: F401 (commands)
from spark_mail.cli.app import app
from spark_mail.cli.output import err_console
from spark_mail.errors import EXIT_FAILURE, SparkMailError

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except SparkMailError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_FAILURE)
