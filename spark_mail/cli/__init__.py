"""The `spark-mail` command: parse arguments, call the core, print, map errors to exits.

    app.py         the typer app, shared options, -C DIR, settings()
    init.py        init
    output.py      consoles, JSON, the text form of a SendReport, progress
    drafting.py    build, new, check, preview, list
    sending.py     send
    scheduling.py  dispatch, schedule, unschedule, status
    audience.py    audience check, audience suppressions
    desk.py        serve, poll results (the reader desk)
    site.py        site build (the web archive)

Only cli/ imports typer and rich's console. Core modules raise SparkMailError; `main()`
turns each into one line on stderr and its exit code, in this one place.
"""

from __future__ import annotations

import logging
import sys

from rich.markup import escape

from spark_mail.cli import (  # noqa: F401 (the commands register themselves)
    audience,
    desk,
    drafting,
    init,
    scheduling,
    sending,
    site,
)
from spark_mail.cli.app import app
from spark_mail.cli.output import StampedHandler, log
from spark_mail.errors import EXIT_FAILURE, SparkMailError

__all__ = ["app", "main"]


def main() -> None:
    library_log = logging.getLogger("spark_mail")
    library_log.addHandler(StampedHandler(logging.WARNING))
    library_log.propagate = False
    try:
        app()
    except SparkMailError as exc:
        log(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_FAILURE)
