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

IssueArg = Annotated[
    str, typer.Argument(help="Issue file, or its slug in issues/.", show_default=False)
]
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
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: dist/).")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Build an issue into DIR/<slug>/email.html, email.txt and email.eml."""
    from spark_mail.files import write_build
    from spark_mail.issue import resolve_issue_path
    from spark_mail.render import GMAIL_CLIP_BYTES
    from spark_mail.render import build as build_issue

    cfg = settings()
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
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
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
    console.print(table)


# -- drafting: new, check, preview, list ------------------------------------------------------


@app.command()
def new(
    title: Annotated[str, typer.Argument(help="The issue's title.", show_default=False)],
    date: Annotated[
        str | None, typer.Option("--date", help="Issue date, YYYY-MM-DD (default: today).")
    ] = None,
    edit: Annotated[bool, typer.Option("--edit", help="Open the new file in $EDITOR.")] = False,
) -> None:
    """Create issues/<date>-<slug>.md with every section stubbed, and print its path."""
    import datetime as dt

    from spark_mail.drafting.new_issue import new_issue

    try:
        day = dt.date.fromisoformat(date) if date else dt.date.today()
    except ValueError:
        raise typer.BadParameter(
            f"{date!r} is not a date; write YYYY-MM-DD", param_hint="--date"
        ) from None
    path = new_issue(settings(), title, day)
    console.print(escape(str(path)))
    err_console.print(
        "Every section is stubbed with TODO text: it builds now, and `spark-mail check` "
        "fails until you replace each TODO."
    )
    if edit:
        import os
        import shlex
        import subprocess

        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR")
        if not editor:
            raise typer.BadParameter("set $EDITOR (or $VISUAL) to use --edit", param_hint="--edit")
        subprocess.run([*shlex.split(editor), str(path)], check=False)


@app.command()
def check(
    issue: IssueArg,
    as_json: JsonOpt = False,
    no_links: Annotated[
        bool, typer.Option("--no-links", help="Skip the link check (offline work).")
    ] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail the check too.")] = False,
    clients: Annotated[
        str | None,
        typer.Option(
            "--clients",
            help="Mail clients the clients.* rules look at, e.g. gmail,outlook "
            "(gmail, outlook, apple-mail, yahoo, or one client such as outlook-windows).",
        ),
    ] = None,
    notes: Annotated[
        bool, typer.Option("--notes", help="List the info notes in full, not only their ids.")
    ] = False,
) -> None:
    """Build an issue and run the pre-send checks: exit 0 clean, 1 with errors."""
    from spark_mail.checks import check_issue
    from spark_mail.checks.caniemail import resolve_clients

    try:
        chosen = resolve_clients(clients)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--clients") from None
    report = check_issue(issue, settings(), links=not no_links, clients=chosen)
    if as_json:
        print_json({**report.to_json(), "strict": strict, "failed": report.failed(strict)})
    else:
        print_report(report, notes=notes)
    report.raise_for_failure(strict)


def print_report(report: Any, notes: bool = False) -> None:  # report: checks.Report
    shown = report.findings if notes else report.problems
    if shown:
        table = Table(title=f"Checks: {escape(report.slug)}", title_justify="left")
        table.add_column("severity")
        table.add_column("rule", overflow="fold")  # an id the reader may grep for: never cut
        table.add_column("problem")
        table.add_column("how to fix")
        for f in shown:
            style = {"error": "red", "warning": "yellow"}.get(f.severity, "blue")
            table.add_row(f"[{style}]{f.severity}[/]", f.rule_id, escape(f.message), escape(f.hint))
        console.print(table)
    if report.notes and not notes:
        ids = ", ".join(f.rule_id for f in report.notes)
        console.print(f"[blue]{len(report.notes)} notes[/] (info, --notes lists them): {ids}")
    moved = [link for link in report.links if link.redirects]
    if moved:
        table = Table(title="Redirected links (followed)", title_justify="left")
        for name in ("link", "ends at", "hops"):
            table.add_column(name)
        for link in moved:
            table.add_row(escape(link.url), escape(link.final_url), str(link.redirects))
        console.print(table)
    links = (
        f"{len(report.links)} links checked"
        + (f" ({sum(1 for x in report.links if x.cached)} from the cache)" if report.links else "")
        if report.links_checked
        else "links not checked"
    )
    colour = "green" if not report.problems else "red" if report.errors else "yellow"
    console.print(
        f"[{colour}]{escape(report.slug)}: {report.summary()}[/] - "
        f"HTML {kib(report.html_bytes)}, {links}"
    )


@app.command()
def preview(
    issue: IssueArg,
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free).")] = 8030,
    no_open: Annotated[bool, typer.Option("--no-open", help="Do not open a browser.")] = False,
    snapshot: Annotated[
        bool,
        typer.Option(
            "--snapshot",
            help="Write PNGs (375 and 600 px, light and dark) through headless Chromium into "
            "DIR (default: dist/<slug>/snapshots) and exit: `preview ISSUE --snapshot [DIR]`.",
        ),
    ] = False,
    snapshot_dir: Annotated[
        Path | None, typer.Argument(metavar="[DIR]", help="With --snapshot: where the PNGs go.")
    ] = None,
) -> None:
    """Serve the built issue on 127.0.0.1, rebuilt and reloaded on every save."""
    from spark_mail.drafting.preview import serve
    from spark_mail.issue import resolve_issue_path

    cfg = settings()
    path = resolve_issue_path(issue, cfg.issues_path)
    if snapshot_dir is not None and not snapshot:
        raise typer.BadParameter("a folder goes with --snapshot", param_hint="DIR")
    if snapshot:
        from spark_mail.drafting.snapshot import snapshot_issue

        for png in snapshot_issue(path, cfg, snapshot_dir):
            console.print(escape(str(png)))
        return

    def ready(url: str) -> None:
        err_console.print(f"Previewing {escape(str(path))} at {url} - Ctrl-C stops")
        if not no_open:
            import webbrowser

            webbrowser.open(url)

    serve(path, cfg, port=port, on_ready=ready, log=lambda m: err_console.print(escape(m)))
    err_console.print("Preview stopped.")


@app.command("list")
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
    table = Table()
    for name in ("date", "no.", "title", "send_at", "status", "HTML", "checks"):
        table.add_column(name)
    for row in rows:
        if row.error:
            table.add_row(row.date, "", escape(row.slug), "", "[red]error[/]", "",
                          f"[red]{escape(row.error)}[/]")  # fmt: skip
            continue
        colour = "green" if row.check == "clean" else "red" if row.errors else "yellow"
        table.add_row(
            row.date,
            "" if row.number is None else str(row.number),
            escape(row.title),
            row.send_at or "",
            row.status,
            kib(row.html_bytes),
            f"[{colour}]{escape(row.check)}[/]",
        )
    console.print(table if rows else "No issues yet: `spark-mail new TITLE` starts one.")


audience_app = typer.Typer(
    help="Your own subscriber list (a CSV file with an email column).", no_args_is_help=True
)
app.add_typer(audience_app, name="audience")
AUDIENCE_SHOWN = 20  # problems printed per kind on a terminal; --json lists more


@audience_app.command("check")
def audience_check(
    path: Annotated[
        Path | None,
        typer.Argument(
            help="Subscribers CSV (default: the `audience` setting).", show_default=False
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Count readers, list invalid rows and duplicates by line; exit 1 if any row is invalid."""
    from spark_mail.audience import audience_paths, check_audience

    report = check_audience(*audience_paths(settings(), path))
    if as_json:
        print_json(report.to_dict())
    else:
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
        why = ", ".join(f"{n} {escape(reason)}" for reason, n in report.suppressed_by.items())
        table.add_row("File", escape(str(report.path)))
        table.add_row("Rows", f"{report.total:,}")
        table.add_row("Readers to send to", f"[green]{report.valid:,}[/]")
        table.add_row("Invalid", f"[red]{report.invalid:,}[/]" if report.invalid else "0")
        table.add_row("Duplicates (skipped)", f"{report.duplicates:,}")
        table.add_row("Suppressed", f"{report.suppressed:,}" + (f" ({why})" if why else ""))
        console.print(table)
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


@app.command()
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
        typer.Option("--to", help="Test recipient (repeatable); or SPARK_MAIL_TEST_RECIPIENTS."),
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
        str | None, typer.Option("--provider", help="Override SPARK_MAIL_PROVIDER.")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
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
    """Send an issue: --dry-run (nothing leaves), --test (copies to editors) or for real, once."""
    from spark_mail import publish

    if dry_run and test:
        raise typer.BadParameter("--dry-run and --test exclude each other")
    if to and not test:
        raise typer.BadParameter("--to goes with --test (a real send goes to the audience)")
    cfg = settings(provider=provider)
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
    progress.close()
    if as_json:
        print_json(result.to_json())
    else:
        print_send_result(result)
    if result.refused:
        raise typer.Exit(EXIT_FAILURE)


class SendProgress:
    """Own-list progress on stderr: a rich bar with rate and ETA on a terminal; without one
    (cron), one line every `every` seconds. Called with a bulk.BulkSummary."""

    def __init__(self, label: str, every: float = 5.0) -> None:
        self.label = label
        self.every = every
        self.bar: Any = None
        self.task: Any = None
        self.last = 0.0

    def __call__(self, summary: Any) -> None:
        if err_console.is_terminal:
            self._bar(summary)
        elif summary.seconds - self.last >= self.every:
            self.last = summary.seconds
            sys.stderr.write(
                f"{self.label}: {summary.handled:,}/{summary.readers:,} readers, "
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
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
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
        f"{summary['batches']:,} batches",
    )
    out.print(table)


def print_send_result(result: Any) -> None:  # result: publish.PublishResult
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")
    titles = {
        "dry-run": "Dry run: nothing was sent",
        "tested": "Test copy sent",
        "sent": "Sent",
        "partial": "Sent to some readers; run again for the rest",
        "sent-earlier": "Already sent: an interrupted earlier send went out",
        "scheduled-earlier": "Already scheduled: an interrupted earlier schedule went through",
    }
    table = Table(
        show_header=False,
        box=None,
        pad_edge=False,
        title=titles.get(result.state, result.state),
        title_justify="left",
    )
    table.add_column(style="bold")
    table.add_column()
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
        console.print(table)
        print_bulk_summary(result.summary, console)
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
    if result.esp_ids:
        table.add_row("ESP ids", escape(", ".join(f"{k}={v}" for k, v in result.esp_ids.items())))
    if result.folder:
        table.add_row("Written to", escape(result.folder))
    console.print(table)
    for address, reason in list(result.refused.items())[:20]:
        err_console.print(f"[red]refused:[/] {escape(address)}: {escape(reason)}")
    if len(result.refused) > 20:
        more = len(result.refused) - 20
        err_console.print(f"[red]refused:[/] ... and {more} more (--json lists them)")


# -- scheduling: dispatch (cron), schedule / unschedule (the ESP's scheduler), status --------
NowOpt = Annotated[
    str | None,
    typer.Option(
        "--now", help="Take this as the time (ISO 8601; no offset: the newsletter's timezone)."
    ),
]
ProviderOpt = Annotated[
    str | None, typer.Option("--provider", help="Override SPARK_MAIL_PROVIDER.")
]
STATE_STYLES = {
    "sent": "green",
    "scheduled": "blue",
    "sending": "cyan",
    "failed": "red",
    "uncertain": "bold yellow",
    "interrupted": "bold yellow",
}


@app.command("dispatch")
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
        err_console.print(f"[bold red]error:[/] {message if named else f'{slug}: {message}'}")
    elif item.outcome == "late":
        err_console.print(f"[yellow]late:[/] {slug}: {message}")
    elif item.outcome == "sent":
        console.print(f"[green]sent[/] {slug} via {escape(item.provider)}: {message}")
    elif item.outcome == "dry-run":
        console.print(f"dry run {slug}: nothing sent, requests in dist/{slug}/dry-run/")
    elif item.outcome == "sent-earlier":
        console.print(f"{slug}: an interrupted earlier send went out; recorded as sent")
    elif item.outcome == "scheduled-earlier":
        console.print(f"{slug}: an interrupted `schedule` reached the ESP; it sends the issue")
    else:  # in-progress, already-sent: another run has it
        console.print(f"{slug}: {message}")


@app.command()
def schedule(
    issue: IssueArg,
    at: Annotated[
        str | None,
        typer.Option("--at", help="When (ISO 8601; no offset: the newsletter's timezone)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Schedule even when checks find errors.")
    ] = False,
    provider: ProviderOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Hand an issue to the ESP's own scheduler (Buttondown, Resend) for --at or its send_at."""
    from spark_mail import dispatch as scheduling

    cfg = settings(provider=provider)
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


@app.command()
def unschedule(
    issue: IssueArg,
    provider: ProviderOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Take an issue back from the ESP's scheduler."""
    from spark_mail import dispatch as scheduling

    result = scheduling.unschedule_issue(issue, settings(provider=provider))
    if as_json:
        print_json(result.to_json())
        return
    console.print(
        f"Unscheduled {escape(result.slug)} from {escape(result.provider)} "
        f"(was due {escape(str(result.at))})"
    )
    if result.note:
        err_console.print(f"[yellow]note:[/] {escape(result.note)}")


@app.command()
def status(
    issue: Annotated[
        str | None, typer.Argument(help="One issue (slug or file): with its history.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The send ledger: what was sent when, via which ESP, its ids, state and errors."""
    from spark_mail import dispatch as scheduling

    cfg = settings()
    rows = scheduling.status(cfg, issue)
    if as_json:
        print_json({"ledger": str(cfg.ledger_file), "sends": [r.to_json() for r in rows]})
        return
    if not rows:
        what = f"for {issue}" if issue else "yet"
        console.print(f"no send recorded {escape(what)} (ledger: {escape(str(cfg.ledger_file))})")
        return
    table = Table(title=f"Send ledger {escape(str(cfg.ledger_file))}", title_justify="left")
    for column in ("Issue", "State", "Provider", "When", "Tries", "ESP ids", "Last error"):
        table.add_column(column, overflow="fold")
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
    console.print(table)
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
    try:
        app()
    except SparkMailError as exc:
        # Exit code 0 errors are outcomes, not failures ("being sent by another process").
        prefix = "[bold red]error:[/]" if exc.exit_code else "[bold]note:[/]"
        err_console.print(f"{prefix} {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(EXIT_FAILURE)
