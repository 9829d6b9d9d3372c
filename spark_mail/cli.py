"""The `spark-mail` command: parse arguments, call the core, print, map errors to exit codes.

Only this module and its output helpers (cli_output.py) import typer and rich's console.
Core modules raise SparkMailError; `main()` turns each into one line on stderr and its exit
code.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from spark_mail import __version__
from spark_mail.cli_output import (
    StampedHandler,
    console,
    err_console,
    grid,
    key_table,
    log,
    plural,
    print_table,
    stamp,
)
from spark_mail.errors import EXIT_FAILURE, SparkMailError

app = typer.Typer(
    name="spark-mail",
    help="Write a newsletter issue in Markdown, check it, test it, send it once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

IssueArg = Annotated[
    str,
    # Arguments are described in each command's help text: typer would print a Python type
    # name (<str>) next to them.
    typer.Argument(metavar="ISSUE", hidden=True, show_default=False),
]
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

    from spark_mail.errors import ConfigError

    global started_in
    started_in = Path.cwd()
    try:
        os.chdir(directory.expanduser())
    except FileNotFoundError:
        raise ConfigError(f"-C {directory}: no such folder", hint="check the path") from None
    except NotADirectoryError:
        raise ConfigError(
            f"-C {directory}: not a folder", hint="pass the newsletter's folder"
        ) from None
    except OSError as exc:
        raise ConfigError(f"-C {directory}: cannot enter it ({exc.strerror})") from None


def settings(
    issue: str | None = None, *, provider: str | None = None, required: bool = True
) -> Any:  # -> Settings
    """The newsletter's settings: found upward from the issue's folder when ISSUE is a path,
    else from the current folder; outside a newsletter, NotANewsletter (exit 2) unless not
    `required` (a command that also works on its own)."""
    from spark_mail.config import newsletter_settings
    from spark_mail.providers import provider_name

    if provider is not None:
        provider = provider_name(provider, "--provider")  # a typo is the flag's, not .env's
    return newsletter_settings(issue, overrides={"provider": provider}, required=required)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def kib(size: int) -> str:
    return f"{size / 1024:.1f} KB"


def flag(name: str, metavar: str, help: str) -> Any:
    """An option that takes a value shown as METAVAR in --help (not a Python type name)."""
    return typer.Option(name, metavar=metavar, help=help, show_default=False)


# -- init: a newsletter from an empty folder ------------------------------------------------


@app.command(
    epilog=example(
        'spark-mail init news --name "Tiny Big Spark" --from hello@news.example.com '
        '--postal-address "548 Market St, San Francisco, CA 94104" '
        "--url https://news.example.com"
    )
)
def init(
    directory: Annotated[
        Path | None, typer.Argument(metavar="DIR", hidden=True, show_default=False)
    ] = None,
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
    result = scaffold.create_newsletter(folder, spec)
    console.print(f"Created a newsletter in {escape(str(result.folder))}:")
    for created in result.created:
        console.print(f"  {escape(created)}")
    for note in [
        *result.notes,
        zone_note or f"time zone {spec.timezone}, this machine's (--timezone to change)",
    ]:
        err_console.print(f"[yellow]note:[/] {escape(note)}")
    console.print("Next:")
    today = dt.date.today().isoformat()
    for command in scaffold.next_commands(folder, started_in, today, scaffold.editor_address(spec)):
        console.print(f"  {escape(command)}")


def ask_missing(answers: dict[str, str | None]) -> dict[str, str | None]:
    """Prompt for the answers the flags left out, on a terminal only; without one, a usage
    error that names every missing flag."""
    import functools

    from spark_mail import init as scaffold

    missing = scaffold.missing_flags(answers)
    if missing and not sys.stdin.isatty():
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


@app.command(epilog=example(f"spark-mail build {SAMPLE}"))
def build(
    issue: IssueArg,
    out: Annotated[
        Path | None, typer.Option("--out", metavar="DIR", help="Output folder (default: dist/).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build an issue into DIR/<slug>/email.html, email.txt and email.eml.

    ISSUE: an issue file, or its slug in issues/. Given as a path, the newsletter's settings
    are found from the file's folder upward, so it works from any folder.
    """
    from spark_mail.files import write_build
    from spark_mail.issue import resolve_issue_path
    from spark_mail.render import GMAIL_CLIP_BYTES
    from spark_mail.render import build as build_issue

    cfg = settings(issue)
    path = resolve_issue_path(issue, cfg.issues_path)
    email = build_issue(path, cfg)
    files = write_build(email, (out or cfg.out_path).resolve())
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
    table = grid()
    table.add_row("Subject", escape(email.subject))
    table.add_row("Preheader", escape(email.preheader) or "[yellow](none)[/]")
    table.add_row(
        "HTML size",
        f"[{size_style}]{kib(email.html_bytes)}[/] of Gmail's "
        f"~{kib(GMAIL_CLIP_BYTES)} clipping limit ({share:.0%})",
    )
    table.add_row("Text size", kib(len(email.text.encode())))
    table.add_row("Sections", ", ".join(email.sections))
    for kind, file in files.items():
        table.add_row(kind.upper(), escape(str(file)))
    print_table(table)


# -- drafting: new, check, preview, list ------------------------------------------------------


@app.command(epilog=example('spark-mail new "Shipping small, often" --date 2025-02-03'))
def new(
    title: Annotated[str, typer.Argument(metavar="TITLE", hidden=True, show_default=False)],
    date: Annotated[
        str | None,
        typer.Option("--date", metavar="YYYY-MM-DD", help="Issue date (default: today)."),
    ] = None,
    edit: Annotated[bool, typer.Option("--edit", help="Open the new file in $EDITOR.")] = False,
) -> None:
    """Create issues/<date>-<slug>.md with every section stubbed, and print its path.

    TITLE: the issue's title, in quotes.
    """
    import datetime as dt

    from spark_mail.drafting.new_issue import new_issue

    try:
        day = dt.date.fromisoformat(date) if date else dt.date.today()
    except ValueError:
        raise typer.BadParameter(
            f"{date!r} is not a date; write YYYY-MM-DD", param_hint="--date"
        ) from None
    editor = find_editor() if edit else None  # before anything is written
    path = new_issue(settings(), title, day)
    console.print(escape(str(path)))
    err_console.print(
        "Every section is stubbed with TODO text: it builds now, and `spark-mail check` "
        "fails until you replace each TODO."
    )
    if editor:
        import subprocess

        subprocess.run([*editor, str(path)], check=False)


def find_editor() -> list[str]:
    """$VISUAL or $EDITOR as a command line; neither set is a usage error."""
    import os
    import shlex

    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
    if not editor:
        raise typer.BadParameter(
            "set $EDITOR (or $VISUAL) to use --edit, e.g. EDITOR=nano", param_hint="--edit"
        )
    return shlex.split(editor)


@app.command(epilog=example(f"spark-mail check {SAMPLE} --no-links"))
def check(
    issue: IssueArg,
    as_json: JsonOpt = False,
    no_links: Annotated[
        bool, typer.Option("--no-links", help="Skip the link check (offline work).")
    ] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail the check too.")] = False,
) -> None:
    """Build an issue and run the pre-send checks: exit 0 clean, 1 with errors.

    ISSUE: an issue file, or its slug in issues/. Given as a path, the newsletter's settings
    are found from the file's folder upward, so it works from any folder.
    """
    from spark_mail.checks import check_issue

    report = check_issue(issue, settings(issue), links=not no_links)
    if as_json:
        print_json({**report.to_json(), "strict": strict, "failed": report.failed(strict)})
    else:
        print_report(report)
    report.raise_for_failure(strict)


def print_report(report: Any) -> None:  # report: checks.Report
    if report.findings:
        table = key_table(
            "severity", "rule", "problem", "how to fix", keys=("severity", "rule"),
            title=f"Checks: {escape(report.slug)}", title_justify="left",
        )  # fmt: skip
        for f in report.findings:
            style = "red" if f.severity == "error" else "yellow"
            table.add_row(f"[{style}]{f.severity}[/]", f.rule_id, escape(f.message), escape(f.hint))
        print_table(table)
    moved = [link for link in report.links if link.redirects]
    if moved:
        table = key_table(
            "link", "ends at", "hops", keys=("link", "ends at"),
            title="Redirected links (followed)", title_justify="left",
        )  # fmt: skip
        for link in moved:
            table.add_row(escape(link.url), escape(link.final_url), str(link.redirects))
        print_table(table)
    links = (
        f"{plural(len(report.links), 'link')} checked"
        + (f" ({sum(1 for x in report.links if x.cached)} from the cache)" if report.links else "")
        if report.links_checked
        else "links not checked"
    )
    colour = "green" if not report.findings else "red" if report.errors else "yellow"
    console.print(
        f"[{colour}]{escape(report.slug)}: {report.summary()}[/] - "
        f"HTML {kib(report.html_bytes)}, {links}"
    )


@app.command(epilog=example(f"spark-mail preview {SAMPLE} --port 8031"))
def preview(
    issue: IssueArg,
    port: Annotated[
        int, typer.Option("--port", metavar="PORT", help="Port on 127.0.0.1 (0: any free).")
    ] = 8030,
    no_open: Annotated[bool, typer.Option("--no-open", help="Do not open a browser.")] = False,
) -> None:
    """Serve the built issue on 127.0.0.1, rebuilt and reloaded on every save.

    ISSUE: an issue file, or its slug in issues/. Given as a path, the newsletter's settings
    are found from the file's folder upward, so it works from any folder.
    """
    from spark_mail.drafting.preview import serve
    from spark_mail.issue import resolve_issue_path

    cfg = settings(issue)
    path = resolve_issue_path(issue, cfg.issues_path)

    def ready(url: str) -> None:
        err_console.print(f"Previewing {escape(str(path))} at {url} - Ctrl-C stops")
        if not no_open:
            import webbrowser

            webbrowser.open(url)

    serve(path, cfg, port=port, on_ready=ready, log=lambda m: err_console.print(escape(m)))
    err_console.print("Preview stopped.")


@app.command("list", epilog=example("spark-mail list --json"))
def list_command(as_json: JsonOpt = False) -> None:
    """List the issues in issues/: date, number, title, send time, status, size, checks."""
    from spark_mail.drafting.listing import list_issues

    listing = list_issues(settings())
    if as_json:
        print_json(listing.to_json())
        return
    for note in listing.notes:
        err_console.print(f"[yellow]warning:[/] {escape(note)}")
    rows = listing.rows
    table = key_table(
        "issue", "no.", "title", "send_at", "status", "HTML", "checks",
        keys=("issue", "no.", "send_at", "status", "HTML"),
    )  # fmt: skip
    for row in rows:
        if row.error:
            table.add_row(escape(row.slug), "", "", "", "[red]error[/]", "",
                          f"[red]{escape(row.error)}[/]")  # fmt: skip
            continue
        colour = "green" if row.check == "clean" else "red" if row.errors else "yellow"
        table.add_row(
            escape(row.slug),
            "" if row.number is None else str(row.number),
            escape(row.title),
            row.send_at or "",
            row.status,
            kib(row.html_bytes),
            f"[{colour}]{escape(row.check)}[/]",
        )
    if rows:
        print_table(table)
    else:
        console.print('No issues yet: `spark-mail new "TITLE"` starts one.')


audience_app = typer.Typer(
    help="Your own subscriber list (a CSV file with an email column).",
    no_args_is_help=True,
    epilog=example("spark-mail audience check subscribers.csv"),
)
app.add_typer(audience_app, name="audience")
AUDIENCE_SHOWN = 20  # problems printed per kind on a terminal; --json lists more


@audience_app.command("check", epilog=example("spark-mail audience check subscribers.csv"))
def audience_check(
    path: Annotated[
        Path | None,
        typer.Argument(metavar="FILE", hidden=True, show_default=False),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Count readers, list invalid rows and duplicates by line; exit 1 if any row is invalid.

    FILE: the subscribers CSV (default: the `audience` setting). Given a FILE, it works
    outside a newsletter too.
    """
    from spark_mail.audience import audience_paths, check_audience

    report = check_audience(*audience_paths(settings(required=path is None), path))
    if as_json:
        print_json(report.to_dict())
    else:
        table = grid()
        why = ", ".join(f"{n} {escape(reason)}" for reason, n in report.suppressed_by.items())
        table.add_row("File", escape(str(report.path)))
        table.add_row("Rows", f"{report.total:,}")
        table.add_row("Readers to send to", f"[green]{report.valid:,}[/]")
        table.add_row("Invalid", f"[red]{report.invalid:,}[/]" if report.invalid else "0")
        table.add_row("Duplicates (skipped)", f"{report.duplicates:,}")
        table.add_row("Suppressed", f"{report.suppressed:,}" + (f" ({why})" if why else ""))
        print_table(table)
        for title, count, problems in (
            ("Invalid rows", report.invalid, report.invalid_rows),
            ("Duplicates", report.duplicates, report.duplicate_rows),
        ):
            if not count:
                continue
            console.print(f"\n[bold]{title}[/]")
            for problem in problems[:AUDIENCE_SHOWN]:
                shown = f" {escape(problem.email)!r}" if problem.email else ""
                where = f"{escape(str(report.path))}:{problem.line}:"
                console.print(f"  {where}{shown} {escape(problem.reason)}")
            if count > AUDIENCE_SHOWN:
                console.print(f"  ... and {count - AUDIENCE_SHOWN:,} more (--json lists them)")
    if not report.ok:
        raise typer.Exit(EXIT_FAILURE)


@app.command(
    epilog=example(
        f"spark-mail send {SAMPLE} --test --to you@example.com",
        f"spark-mail send {SAMPLE} --dry-run",
        f"spark-mail send {SAMPLE}",
    )
)
def send(
    issue: IssueArg,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Write the exact requests to dist/<slug>/dry-run/ only."),
    ] = False,
    test: Annotated[
        bool, typer.Option("--test", help="Send a [TEST] copy to editors, never to readers.")
    ] = False,
    to: Annotated[
        list[str] | None,
        typer.Option(
            "--to",
            metavar="ADDR",
            help="Test recipient (repeatable); or SPARK_MAIL_TEST_RECIPIENTS.",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Send without asking (cron).")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Send even when checks find errors.")
    ] = False,
    check_links: Annotated[
        bool, typer.Option("--check-links", help="Also check every link before sending.")
    ] = False,
    resend_uncertain: Annotated[
        bool,
        typer.Option(
            "--resend-uncertain", help="Send an issue marked uncertain again (check the ESP first)."
        ),
    ] = False,
    provider: Annotated[
        str | None,
        typer.Option("--provider", metavar="NAME", help="Override SPARK_MAIL_PROVIDER."),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            metavar="N",
            min=1,
            help="Own list: send to the first N readers not yet sent (a canary); run again "
            "for the rest.",
        ),
    ] = None,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid", help="Own list: send to the valid readers despite invalid rows."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Send an issue: --dry-run (nothing leaves), --test (copies to editors) or for real, once.

    ISSUE: an issue file, or its slug in issues/. Given as a path, the newsletter's settings
    are found from the file's folder upward, so it works from any folder.
    """
    from spark_mail import publish

    if dry_run and test:
        raise typer.BadParameter("--dry-run and --test exclude each other")
    if to and not test:
        raise typer.BadParameter("--to goes with --test (a real send goes to the audience)")
    cfg = settings(issue, provider=provider)
    mode: Any = "dry-run" if dry_run else "test" if test else "send"
    email = publish.load_email(issue, cfg)
    if mode == "send" and not yes:
        publish.preflight(email, cfg, force=force, check_links=check_links)  # refuse before asking
        who, audience = publish.describe_audience(cfg)
        if not sys.stdin.isatty():
            err_console.print(
                "[bold red]error:[/] no terminal to confirm on: refusing to send - "
                "add --yes to send from a script or cron"
            )
            raise typer.Exit(2)
        question = f"Send {email.slug} ({email.subject!r}) to {audience} via {who}?"
        if not typer.confirm(question, default=False):
            err_console.print("not sent")
            raise typer.Exit(EXIT_FAILURE)
    if (limit or skip_invalid) and mode == "test":
        raise typer.BadParameter("--limit and --skip-invalid go with a send to your own list")
    progress = SendProgress(email.slug, cfg.progress_seconds)
    try:
        result = publish.send_issue(
            email,
            cfg,
            mode=mode,
            to=to,
            force=force,
            check_links=check_links,
            resend_uncertain=resend_uncertain,
            limit=limit,
            skip_invalid=skip_invalid,
            progress=progress,
        )
    except SparkMailError as exc:
        progress.close()
        summary = getattr(exc, "summary", None)  # own-list: how far the send got
        if summary is not None:
            if as_json:
                print_json({"slug": email.slug, "error": str(exc), "summary": summary.to_json()})
            else:
                print_bulk_summary(summary.to_json(), err_console)
        raise
    except KeyboardInterrupt:
        progress.close()
        log(f"[bold red]interrupted:[/] {escape(interrupted(email.slug, mode, progress.latest))}")
        raise typer.Exit(130) from None
    progress.close()
    if as_json:
        print_json(result.to_json())
    else:
        print_send_result(result)
    if result.refused:
        raise typer.Exit(EXIT_FAILURE)


def interrupted(slug: str, mode: str, summary: Any) -> str:
    """What a Ctrl-C left behind and how to go on (summary: the own-list BulkSummary)."""
    if mode != "send":
        return "nothing was recorded; run the command again"
    go_on = f"`spark-mail send {slug}` continues and sends nobody twice"
    if summary is None:
        return f"`spark-mail status {slug}` shows how far the send got; {go_on}"
    unsure = f", {plural(summary.uncertain, 'reader')} uncertain" if summary.uncertain else ""
    return (
        f"{summary.sent:,} of {plural(summary.readers, 'reader')} got {slug} before the stop"
        f"{unsure} (all recorded in the ledger); {go_on}"
    )


class SendProgress:
    """Own-list progress on stderr: a rich bar with rate and ETA on a terminal; without one
    (cron), one line every `every` seconds. Called with a bulk.BulkSummary."""

    def __init__(self, label: str, every: float = 5.0) -> None:
        self.label = label
        self.every = every
        self.bar: Any = None
        self.task: Any = None
        self.last = 0.0
        self.latest: Any = None  # the summary so far (what Ctrl-C reports)

    def __call__(self, summary: Any) -> None:
        self.latest = summary
        if err_console.is_terminal:
            self._bar(summary)
        elif summary.seconds - self.last >= self.every:
            self.last = summary.seconds
            sys.stderr.write(
                f"{stamp()}{self.label}: {summary.handled:,}/{summary.readers:,} readers, "
                f"{summary.sent:,} sent, {summary.failed + summary.uncertain:,} failed, "
                f"{summary.rate:,.0f}/s, {summary.seconds:.0f} s\n"
            )
            sys.stderr.flush()

    def _bar(self, summary: Any) -> None:
        if self.bar is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=err_console,
            )
            self.task = self.bar.add_task(escape(self.label), total=summary.readers, rate="")
            self.bar.start()
        self.bar.update(self.task, completed=summary.handled, rate=f"{summary.rate:,.0f} readers/s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def print_bulk_summary(summary: dict[str, Any], out: Console) -> None:
    """The own-list summary: who got it, who did not and why, time and rate."""
    table = grid()
    table.add_row(
        "Readers",
        f"[green]{summary['sent']:,} sent[/], {summary['refused']:,} refused, "
        f"{summary['failed']:,} failed, {summary['uncertain']:,} uncertain "
        f"(of {summary['readers']:,} in the list)",
    )
    table.add_row(
        "Skipped",
        f"{summary['already_sent']:,} already sent, {summary['held_uncertain']:,} uncertain "
        f"kept back, {summary['remaining']:,} left for a later run",
    )
    table.add_row(
        "List",
        f"{summary['suppressed']:,} suppressed, {summary['invalid']:,} invalid, "
        f"{summary['duplicates']:,} duplicates",
    )
    table.add_row(
        "Time",
        f"{summary['seconds']:.1f} s, {summary['rate']:,.0f} readers/s, "
        f"{plural(summary['batches'], 'batch', 'batches')}",
    )
    print_table(table, out)


def print_send_result(result: Any) -> None:  # result: publish.PublishResult
    for warning in result.warnings:
        log(f"[yellow]warning:[/] {escape(warning)}")
    titles = {
        "dry-run": "Dry run: nothing was sent",
        "tested": "Test copy sent",
        "sent": "Sent",
        "partial": "Sent to some readers; run again for the rest",
        "sent-earlier": "Already sent: an interrupted earlier send went out",
        "scheduled-earlier": "Already scheduled: an interrupted earlier schedule went through",
    }
    if result.provider == "outbox":  # it writes .eml files: never say "sent"
        titles["tested"] = "Test copy written to the outbox (no email was sent)"
        titles["sent"] = "Written to the outbox (no email was sent)"
    table = grid(title=titles.get(result.state, result.state), title_justify="left")
    table.add_row("Issue", escape(result.slug))
    table.add_row("Subject", escape(result.subject))
    table.add_row("Provider", escape(result.provider))
    who = result.recipients
    if isinstance(who, list) and who:
        table.add_row("To", escape(", ".join(who)))
    else:
        count = f" ({who:,} readers)" if isinstance(who, int) else ""
        table.add_row("Audience", escape(result.audience) + count)
    table.add_row("Size", f"HTML {kib(result.html_bytes)}, text {kib(result.text_bytes)}")
    table.add_row("Requests", str(result.requests))
    if result.summary:
        print_table(table)
        print_bulk_summary(result.summary, console)
        table = grid()
    if result.esp_ids:
        table.add_row("ESP ids", escape(", ".join(f"{k}={v}" for k, v in result.esp_ids.items())))
    if result.folder:
        table.add_row("Written to", escape(result.folder))
    print_table(table)
    for address, reason in list(result.refused.items())[:20]:
        err_console.print(f"[red]refused:[/] {escape(address)}: {escape(reason)}")
    if len(result.refused) > 20:
        more = len(result.refused) - 20
        err_console.print(f"[red]refused:[/] ... and {more} more (--json lists them)")


# -- scheduling: dispatch (cron), schedule / unschedule (the ESP's scheduler), status --------
NowOpt = Annotated[
    str | None,
    typer.Option(
        "--now",
        metavar="TIME",
        help="Take this as the time (ISO 8601; no offset: the newsletter's timezone).",
    ),
]
ProviderOpt = Annotated[
    str | None, typer.Option("--provider", metavar="NAME", help="Override SPARK_MAIL_PROVIDER.")
]
STATE_STYLES = {
    "sent": "green",
    "scheduled": "blue",
    "sending": "cyan",
    "failed": "red",
    "uncertain": "bold yellow",
    "interrupted": "bold yellow",
}


@app.command(
    "dispatch",
    epilog=example(
        "spark-mail dispatch --dry-run",
        "*/5 * * * * /path/to/spark-mail -C /path/to/newsletter dispatch "
        ">> /path/to/newsletter/.spark-mail/cron.log 2>&1",
    ),
)
def dispatch_command(
    now: NowOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what is due and write its requests; send none.")
    ] = False,
    catch_up: Annotated[
        bool, typer.Option("--catch-up", help="Also send issues due longer ago than the window.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Send every issue whose send_at has come, once each (run it from cron)."""
    from spark_mail import dispatch as scheduling

    cfg = settings()
    when = scheduling.parse_time(now, cfg) if now else None
    bars: list[SendProgress] = []

    def progress(slug: str) -> SendProgress:  # one at a time: rich shows one live bar
        for bar in bars:
            bar.close()
        bars.append(SendProgress(slug, cfg.progress_seconds))
        return bars[-1]

    try:
        report = scheduling.dispatch(
            cfg,
            when,
            dry_run=dry_run,
            catch_up=catch_up,
            on_item=None if as_json else print_dispatch_item,
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.close()
    if as_json:
        print_json(report.to_json())
    elif not report.items and console.is_terminal:
        console.print(f"nothing due at {report.now}")  # silent under cron
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def print_dispatch_item(item: Any) -> None:  # item: dispatch.DispatchItem
    slug, message = escape(item.slug), escape(item.message)
    if item.failed:
        named = item.message.startswith((item.slug, item.path))
        log(f"[bold red]error:[/] {message if named else f'{slug}: {message}'}")
    elif item.outcome == "late":
        log(f"[yellow]late:[/] {slug}: {message}")
    elif item.outcome == "sent":
        log(f"[green]sent[/] {slug} via {escape(item.provider)}: {message}", console)
    elif item.outcome == "dry-run":
        log(f"dry run {slug}: nothing sent, requests in dist/{slug}/dry-run/", console)
    elif item.outcome == "sent-earlier":
        log(f"{slug}: an interrupted earlier send went out; recorded as sent", console)
    elif item.outcome == "scheduled-earlier":
        log(f"{slug}: an interrupted `schedule` reached the ESP; it sends the issue", console)
    else:  # in-progress, already-sent: another run has it
        log(f"{slug}: {message}", console)


@app.command(epilog=example(f"spark-mail schedule {SAMPLE} --at 2025-01-20T07:00"))
def schedule(
    issue: IssueArg,
    at: Annotated[
        str | None,
        typer.Option(
            "--at", metavar="TIME", help="When (ISO 8601; no offset: the newsletter's timezone)."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Schedule even when checks find errors.")
    ] = False,
    provider: ProviderOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hand an issue to the ESP's own scheduler (Buttondown, Resend) for --at or its send_at.

    ISSUE: an issue file, or its slug in issues/. Given as a path, the newsletter's settings
    are found from the file's folder upward, so it works from any folder.
    """
    from spark_mail import dispatch as scheduling

    cfg = settings(issue, provider=provider)
    when = scheduling.parse_time(at, cfg, "--at") if at else None
    result = scheduling.schedule_issue(issue, cfg, at=when, force=force)
    if as_json:
        print_json(result.to_json())
        return
    ids = ", ".join(f"{k}={v}" for k, v in result.esp_ids.items())
    titles = {"scheduled": "Scheduled", "scheduled-earlier": "Already scheduled"}
    title = titles.get(result.state, "Already sent: an interrupted earlier send went out")
    console.print(
        f"{title}: {escape(result.slug)} with {escape(result.provider)} for "
        f"{escape(str(result.at))}" + (f" ({escape(ids)})" if ids else "")
    )


@app.command(epilog=example(f"spark-mail unschedule {SAMPLE}"))
def unschedule(
    issue: IssueArg,
    provider: ProviderOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Take an issue back from the ESP's scheduler.

    ISSUE: an issue file, or its slug in issues/. Given as a path, the newsletter's settings
    are found from the file's folder upward, so it works from any folder.
    """
    from spark_mail import dispatch as scheduling

    result = scheduling.unschedule_issue(issue, settings(issue, provider=provider))
    if as_json:
        print_json(result.to_json())
        return
    console.print(
        f"Unscheduled {escape(result.slug)} from {escape(result.provider)} "
        f"(was due {escape(str(result.at))})"
    )
    if result.note:
        err_console.print(f"[yellow]note:[/] {escape(result.note)}")


@app.command(epilog=example("spark-mail status", f"spark-mail status {SAMPLE} --json"))
def status(
    issue: Annotated[
        str | None,
        typer.Argument(metavar="ISSUE", hidden=True, show_default=False),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The send ledger: what was sent when, via which ESP, its ids, state and errors.

    ISSUE (optional): one issue, slug or file, with its history.
    """
    from spark_mail import dispatch as scheduling

    cfg = settings(issue)
    rows = scheduling.status(cfg, issue)
    if as_json:
        print_json({"ledger": str(cfg.ledger_file), "sends": [r.to_json() for r in rows]})
        return
    if not rows:
        what = f"for {issue}" if issue else "yet"
        console.print(f"no send recorded {escape(what)} (ledger: {escape(str(cfg.ledger_file))})")
        return
    table = key_table(
        "Issue", "State", "Provider", "When", "Tries", "ESP ids", "Last error",
        keys=("Issue", "State", "Provider", "When", "ESP ids"),
        title=f"Send ledger {escape(str(cfg.ledger_file))}", title_justify="left",
    )  # fmt: skip
    for row in rows:
        record = row.record
        when = record.sent_at or (
            f"for {record.scheduled_for}" if row.state == "scheduled" else record.updated_at
        )
        style = STATE_STYLES.get(row.state, "")
        table.add_row(
            escape(record.slug),
            f"[{style}]{row.state}[/]" if style else row.state,
            escape(record.provider),
            escape(str(when)),
            str(record.attempts),
            escape(", ".join(f"{k}={v}" for k, v in record.esp_ids.items())),
            escape(record.last_error or ""),
        )
    print_table(table)
    for row in rows:
        if row.state == "uncertain":
            err_console.print(
                f"[bold yellow]uncertain:[/] {escape(row.record.slug)} may have gone out - check "
                f"the ESP; if it did not: spark-mail send {escape(row.record.slug)} "
                "--resend-uncertain"
            )
        for event in row.history:
            console.print(
                f"  {escape(event.at)}  {escape(event.state)}"
                + (f"  {escape(event.detail)}" if event.detail else "")
            )


def main() -> None:
    library_log = logging.getLogger("spark_mail")
    library_log.addHandler(StampedHandler(logging.WARNING))
    library_log.propagate = False
    try:
        app()
    except SparkMailError as exc:
        # Exit code 0 errors are outcomes, not failures ("being sent by another process").
        prefix = "[bold red]error:[/]" if exc.exit_code else "[bold]note:[/]"
        log(f"{prefix} {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_FAILURE)
