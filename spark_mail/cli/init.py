"""`init`: a newsletter from an empty folder."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from spark_mail.cli import app as app_module
from spark_mail.cli.app import app, argument, example, flag
from spark_mail.cli.output import console, err_console, escape, log
from spark_mail.errors import SparkMailError, printable


@app.command(
    epilog=example(
        'spark-mail init news --name "Tiny Big Spark" --from hello@news.example.com '
        '--postal-address "548 Market St, San Francisco, CA 94104" '
        "--url https://news.example.com"
    )
)
def init(
    directory: Annotated[Path | None, argument("DIR")] = None,
    name: Annotated[str | None, flag("--name", "TEXT", "The newsletter's name.")] = None,
    from_: Annotated[
        str | None, flag("--from", "ADDRESS", 'Sender: an address or "Name <address>".')
    ] = None,
    postal_address: Annotated[
        str | None, flag("--postal-address", "TEXT", "Postal address (in every email).")
    ] = None,
    url: Annotated[
        str | None, flag("--url", "URL", "The public site: web copies, unsubscribe, poll.")
    ] = None,
    reply_to: Annotated[str | None, flag("--reply-to", "ADDRESS", "Where replies go.")] = None,
    timezone: Annotated[
        str | None, flag("--timezone", "ZONE", "IANA zone (default: this machine's).")
    ] = None,
    layout: Annotated[
        str | None, flag("--layout", "NAME", "Copy the default layout to layouts/NAME/.")
    ] = None,
) -> None:
    """Start a newsletter in DIR (default: here): settings, issues/, .env, .gitignore.

    DIR: the folder (created if missing). On a terminal it asks for what the flags leave
    out; without one, --name, --from, --postal-address and --url are needed. A folder that
    already has a spark-mail.toml is left alone.
    """
    import datetime as dt
    import os

    from spark_mail import init as scaffold

    folder = scaffold.check_folder(directory or Path.cwd())  # refuse before asking anything
    answers = ask_missing(
        {"--name": name, "--from": from_, "--postal-address": postal_address, "--url": url}
    )
    zone, zone_note = (
        (timezone, "") if timezone else scaffold.machine_timezone(os.environ.get("TZ"))
    )
    spec = scaffold.newsletter_spec(answers, reply_to=reply_to, timezone=zone, layout=layout)
    try:
        result = scaffold.create_newsletter(folder, spec)
    except KeyboardInterrupt:  # typer would exit 130 without a word
        log(f"interrupted: nothing was changed in {escape(printable(str(folder)))}")
        raise typer.Exit(130) from None
    console.print(f"Created a newsletter in {escape(printable(str(result.folder)))}:")
    for created in result.created:
        console.print(f"  {escape(created)}")
    if not timezone:
        zone_note = zone_note or f"time zone {spec.timezone}, this machine's (--timezone to change)"
    for note in [*result.notes, *filter(None, [zone_note])]:
        err_console.print(f"[yellow]note:[/] {escape(note)}")
    console.print("Next:")
    today = dt.date.today().isoformat()
    for command in scaffold.next_commands(
        folder, app_module.started_in, today, scaffold.editor_address(spec)
    ):
        console.print(f"  {escape(printable(command))}")


def ask_missing(answers: dict[str, str | None]) -> dict[str, str | None]:
    """Prompt for the answers the flags left out, on a terminal only; without one, a usage
    error that names every missing flag."""
    import functools

    from spark_mail import init as scaffold

    missing = scaffold.missing_flags(answers)
    if missing and (sys.stdin is None or not sys.stdin.isatty()):  # None: stdin closed
        raise scaffold.missing_error(missing)
    for question in scaffold.QUESTIONS:
        if question.flag in missing:
            answers[question.flag] = typer.prompt(
                question.prompt, value_proc=functools.partial(checked, question.clean)
            )
    return answers


def checked(clean: Any, value: str) -> str:
    """A prompt's answer through its check; a bad one is asked again."""
    try:
        return str(clean(value))
    except SparkMailError as exc:
        raise typer.BadParameter(str(exc)) from None
