"""The typer app, the options several commands share, and where settings come from."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from spark_mail import __version__

if TYPE_CHECKING:
    from spark_mail.config import Settings

app = typer.Typer(
    name="spark-mail",
    help="Write a newsletter issue in Markdown, check it, test it, send it once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

IssueArg = Annotated[
    str, typer.Argument(help="Issue file, or its slug in issues/.", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]
ProviderOpt = Annotated[
    str | None, typer.Option("--provider", help="Override SPARK_MAIL_PROVIDER.")
]
NowOpt = Annotated[
    str | None,
    typer.Option(
        "--now",
        help="Take this as the time (ISO 8601; no offset: the newsletter's timezone); "
        "later than now only with --dry-run.",
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"spark-mail {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = None,
) -> None:
    """spark-mail: a terminal-first publishing tool for email newsletters."""


def settings(**overrides: Any) -> Settings:
    """The newsletter's settings (config is imported lazily to keep --help fast)."""
    from spark_mail.config import load_settings

    return load_settings(overrides=overrides)
