"""The typer app, the options several commands share, `-C DIR`, and where settings come
from (one helper, so every command that needs a newsletter gets NotANewsletter outside
one)."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from spark_mail import __version__
from spark_mail.cli.output import console

if TYPE_CHECKING:
    from spark_mail.config import Settings

app = typer.Typer(
    name="spark-mail",
    help="Write a newsletter issue in Markdown, check it, test it, send it once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def argument(metavar: str) -> Any:
    """A positional argument shown as METAVAR in usage lines. Arguments are described in each
    command's help text: typer would print a Python type name (<str>) next to them."""
    return typer.Argument(metavar=metavar, hidden=True, show_default=False)


IssueArg = Annotated[str, argument("ISSUE")]
OptionalIssueArg = Annotated[str | None, argument("ISSUE")]  # left out: every issue
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]
SAMPLE = "2025-01-20-engineering-leadership"  # the issue the --help examples name


def example(*commands: str) -> str:
    """A --help epilog with example command lines ("\\b": the lines are kept as written)."""
    return "\b\nExample:\n" + "\n".join(f"  {command}" for command in commands)


def _version(value: bool) -> None:
    if value:
        console.print(f"spark-mail {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = None,
    directory: Annotated[
        Path | None,
        typer.Option(
            "-C",
            metavar="DIR",
            help="Run as if started in DIR (the newsletter's folder; for cron).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """spark-mail: a terminal-first publishing tool for email newsletters."""
    if directory is not None:
        enter_folder(directory)


started_in = Path(".")  # where the command was started (before -C DIR moved it)


def enter_folder(directory: Path) -> None:
    """`-C DIR`, as `git -C` and `make -C`: everything after it runs as if started in DIR."""
    import os

    from spark_mail.errors import ConfigError, printable

    global started_in
    started_in = Path.cwd()
    full = started_in / directory.expanduser()  # as given when absolute
    named = f"-C {printable(str(directory))}" + (
        "" if directory.is_absolute() else f" ({printable(str(full))})"
    )  # a relative DIR: where it was looked for (cron starts in $HOME or /)
    try:
        os.chdir(full)
    except FileNotFoundError:
        raise ConfigError(f"{named}: no such folder", hint="check the path") from None
    except NotADirectoryError:
        raise ConfigError(f"{named}: not a folder", hint="pass the newsletter's folder") from None
    except OSError as exc:
        raise ConfigError(f"{named}: cannot enter it ({exc.strerror})") from None


def settings(
    issue: str | None = None, *, provider: str | None = None, required: bool = True
) -> "Settings":
    """The newsletter's settings: found upward from the issue's folder when ISSUE is a path,
    else from the current folder; outside a newsletter, NotANewsletter (exit 2) unless not
    `required` (a command that also works on its own)."""
    from spark_mail.config import newsletter_settings

    if provider is not None:
        from spark_mail.providers import provider_name  # reads the installed entry points

        provider = provider_name(provider, "--provider")  # a typo is the flag's, not .env's
    return newsletter_settings(issue, overrides={"provider": provider}, required=required)


def flag(name: str, metavar: str, help: str) -> Any:
    """An option that takes a value shown as METAVAR in --help (not a Python type name)."""
    return typer.Option(name, metavar=metavar, help=help, show_default=False)


ProviderOpt = Annotated[
    str | None, typer.Option("--provider", metavar="NAME", help="Override SPARK_MAIL_PROVIDER.")
]
SkipInvalidOpt = Annotated[
    bool,
    typer.Option(
        "--skip-invalid", help="Own list: send to the valid readers despite invalid rows."
    ),
]
NowOpt = Annotated[
    str | None,
    typer.Option(
        "--now",
        metavar="TIME",
        help="Take this as the time (ISO 8601; no offset: the newsletter's timezone); later "
        "than the real time only with --dry-run.",
    ),
]
