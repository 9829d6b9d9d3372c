"""The `spark-mail` command: parse arguments, call the core, print, map errors to exit codes.

Only this module imports typer and rich's console. Core modules raise SparkMailError;
`main()` turns each into one line on stderr and its exit code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from spark_mail import __version__
from spark_mail.errors import EXIT_FAILURE, SparkMailError

app = typer.Typer(
    name="spark-mail",
    help="Write a newsletter issue in Markdown, check it, test it, send it once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

IssueArg = Annotated[str, typer.Argument(help="Issue file, or its slug in issues/.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document for scripts.")]


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
) -> None:
    """spark-mail: a terminal-first publishing tool for email newsletters."""


def settings(**overrides: Any):  # -> Settings; config is imported lazily to keep --help fast
    from spark_mail.config import load_settings

    return load_settings(overrides=overrides)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def kib(size: int) -> str:
    return f"{size / 1024:.1f} KB"


@app.command()
def build(
    issue: IssueArg,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: dist/).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build an issue into DIR/<slug>/email.html, email.txt and email.eml."""
    from spark_mail.artifacts import write_build
    from spark_mail.issue import resolve_issue_path
    from spark_mail.render import GMAIL_CLIP_BYTES
    from spark_mail.render import build as build_issue

    cfg = settings()
    path = resolve_issue_path(issue, cfg.issues_path)
    email = build_issue(path, cfg)
    files = write_build(email, out or cfg.out_path)
    if as_json:
        print_json(
            {
                "slug": email.slug,
                "subject": email.subject,
                "preheader": email.preheader,
                "html_bytes": email.html_bytes,
                "text_bytes": len(email.text.encode()),
                "gmail_clip_bytes": GMAIL_CLIP_BYTES,
                "sections": list(email.sections),
                "files": {k: str(v) for k, v in files.items()},
            }
        )
        return
    share = email.html_bytes / GMAIL_CLIP_BYTES
    size_style = "red" if share > 1 else "yellow" if share > 0.88 else "green"
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Subject", escape(email.subject))
    table.add_row("Preheader", escape(email.preheader) or "[yellow](none)[/]")
    table.add_row(
        "HTML size",
        f"[{size_style}]{kib(email.html_bytes)}[/] of Gmail's ~{kib(GMAIL_CLIP_BYTES)} clipping limit "
        f"({share:.0%})",
    )
    table.add_row("Text size", kib(len(email.text.encode())))
    table.add_row("Sections", ", ".join(email.sections))
    for kind, file in files.items():
        table.add_row(kind.upper(), escape(str(file)))
    console.print(table)


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
