"""Scheduling: dispatch (cron), schedule / unschedule (the ESP's scheduler), status."""

from typing import TYPE_CHECKING, Annotated

import typer

from spark_mail.cli.app import (
    SAMPLE,
    IssueArg,
    JsonOpt,
    NowOpt,
    OptionalIssueArg,
    ProviderOpt,
    SkipInvalidOpt,
    app,
    example,
    settings,
)
from spark_mail.cli.output import (
    SendProgress,
    console,
    err_console,
    escape,
    ids_text,
    key_table,
    log,
    print_json,
    print_site_refresh,
    print_table,
)

if TYPE_CHECKING:
    from spark_mail.sending.outcomes import SendReport

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
    skip_invalid: SkipInvalidOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Send every issue whose send_at has come, once each (run it from cron)."""
    from spark_mail.scheduling.cron import dispatch
    from spark_mail.scheduling.times import parse_time

    cfg = settings()
    when = parse_time(now, cfg) if now else None
    bars: list[SendProgress] = []

    def progress(slug: str) -> SendProgress:  # one at a time: rich shows one live bar
        for bar in bars:
            bar.close()
        bars.append(SendProgress(slug, cfg.progress_seconds))
        return bars[-1]

    try:
        report = dispatch(
            cfg,
            when,
            dry_run=dry_run,
            catch_up=catch_up,
            skip_invalid=skip_invalid,
            on_item=None if as_json else print_dispatch_item,
            progress=progress,
        )
    finally:
        for bar in bars:
            bar.close()
    print_site_refresh(report.site, report.site_problem)
    if as_json:
        print_json(report.to_json())
    elif not report.items and console.is_terminal:
        console.print(f"nothing due at {report.now}")  # silent under cron
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def print_dispatch_item(item: "SendReport") -> None:
    slug, message = escape(item.slug), escape(item.message)
    if item.failed:
        named = item.message.startswith((item.slug, item.path))
        label = "error" if item.outcome == "failed" else str(item.outcome)
        log(f"[bold red]{label}:[/] {message if named else f'{slug}: {message}'}")
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
    elif item.outcome == "in-progress":
        log(f"{slug}: is being sent by another spark-mail process", console)
    else:  # already-sent, partial: another run has it, or a later run finishes it
        log(f"{slug}: {message or item.outcome}", console)


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
    from spark_mail.scheduling.esp import schedule_issue
    from spark_mail.scheduling.times import parse_time

    cfg = settings(issue, provider=provider)
    when = parse_time(at, cfg, "--at") if at else None
    result = schedule_issue(issue, cfg, at=when, force=force)
    if as_json:
        print_json(result.to_json())
        return
    ids = ids_text(result.esp_ids)
    titles = {"scheduled": "Scheduled", "scheduled-earlier": "Already scheduled"}
    title = titles.get(str(result.outcome), "Already sent: an interrupted earlier send went out")
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
    from spark_mail.scheduling.esp import unschedule_issue

    result = unschedule_issue(issue, settings(issue, provider=provider))
    if as_json:
        print_json(result.to_json())
        return
    console.print(
        f"Unscheduled {escape(result.slug)} from {escape(result.provider)} "
        f"(was due {escape(str(result.at))})"
    )
    if result.message:
        err_console.print(f"[yellow]note:[/] {escape(result.message)}")


@app.command(epilog=example("spark-mail status", f"spark-mail status {SAMPLE} --json"))
def status(
    issue: OptionalIssueArg = None,
    as_json: JsonOpt = False,
) -> None:
    """The send ledger: what was sent when, via which ESP, its ids, state and errors.

    ISSUE (optional): one issue, slug or file, with its history.
    """
    from spark_mail.scheduling.status import status as ledger_status

    cfg = settings(issue)
    rows = ledger_status(cfg, issue)
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
            escape(ids_text(record.esp_ids)),
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
