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

import contextlib
import errno
import gc
import logging
import os
import sys
from typing import NoReturn

from typer.main import get_command_name

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
from spark_mail.cli.output import StampedHandler, escape, log
from spark_mail.errors import EXIT_FAILURE, SparkMailError

__all__ = ["app", "main"]


def main() -> None:
    library_log = logging.getLogger("spark_mail")
    library_log.addHandler(StampedHandler(logging.WARNING))
    library_log.propagate = False
    everything = app.registered_commands, app.registered_groups
    try:
        only_the_command_named(sys.argv[1:])
        app()
    except SparkMailError as exc:
        log(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_FAILURE)
    except OSError as exc:
        if exc.filename is not None or exc.errno not in OUTPUT_ERRNOS:
            raise  # not the output: a bug, whose traceback says where
        output_failed(exc)
    finally:
        app.registered_commands, app.registered_groups = everything
        # The process ends next. Its last garbage collection would walk every object the
        # imports made (lxml, jinja2, typer, ...) only to find they vanish with it: ~0.1 s of
        # a cold build's ~0.6 s, ~0.08 s of `--help`. Frozen, they are left to the exit.
        gc.freeze()


# Writing to stdout/stderr fails this way under a redirect to a full disk or over a quota.
OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


def output_failed(exc: OSError) -> NoReturn:
    """The output could not be written: one line on stderr (if it still takes one), exit 1,
    and nothing more for Python to flush into the same full file at exit."""
    with contextlib.suppress(OSError):
        sys.stderr.write(f"error: cannot write the output: {exc.strerror}\n")
        sys.stderr.flush()
    with contextlib.suppress(OSError, ValueError, AttributeError):  # stdout closed or None
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(EXIT_FAILURE)


def only_the_command_named(args: list[str]) -> None:
    """Typer turns every registered command into a click command (signatures, type hints,
    options) on each start: a twentieth of a cold `spark-mail build`. When the command line
    names a command, only that one is built. `--help`, a mistyped name (click suggests the
    right one) and shell completion still see them all."""
    if any(key.startswith("_") and key.endswith("_COMPLETE") for key in os.environ):
        return
    name = None
    words = iter(args)
    for word in words:
        if word == "-C":
            next(words, None)  # the global option's DIR
        elif word == "--":
            return
        elif not word.startswith("-"):
            name = word
            break
    commands = [
        command
        for command in app.registered_commands
        if (command.name or get_command_name(command.callback.__name__)) == name  # type: ignore[union-attr]
    ]
    groups = [group for group in app.registered_groups if group.name == name]
    if commands or groups:
        app.registered_commands, app.registered_groups = commands, groups
