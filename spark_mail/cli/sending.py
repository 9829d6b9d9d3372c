"""`send`: dry run, test copies, or the real send, once."""

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from spark_mail.cli.app import (
    SAMPLE,
    IssueArg,
    JsonOpt,
    ProviderOpt,
    SkipInvalidOpt,
    app,
    example,
    settings,
)
from spark_mail.cli.output import (
    SendProgress,
    err_console,
    escape,
    interrupted,
    log,
    print_bulk_summary,
    print_json,
    print_send_report,
    print_site_refresh,
)
from spark_mail.errors import (
    EXIT_FAILURE,
    EXIT_USAGE,
    BatchSendFailed,
    SendNotDone,
    SparkMailError,
)

if TYPE_CHECKING:
    from spark_mail.config import Settings
    from spark_mail.sending import PreparedSend, SendRequest


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
    provider: ProviderOpt = None,
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
    skip_invalid: SkipInvalidOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Send an issue: --dry-run (nothing leaves), --test (copies to editors) or for real, once.

    ISSUE: an issue file, or its slug in issues/. Given as a path, the newsletter's settings
    are found from the file's folder upward, so it works from any folder.
    """
    from spark_mail.sending import SendRequest

    if dry_run and test:
        raise typer.BadParameter("--dry-run and --test exclude each other")
    if to and not test:
        raise typer.BadParameter("--to goes with --test (a real send goes to the audience)")
    if (limit or skip_invalid) and test:
        raise typer.BadParameter("--limit and --skip-invalid go with a send to your own list")
    cfg = settings(issue, provider=provider)
    request = SendRequest(
        mode="dry-run" if dry_run else "test" if test else "send",
        to=to,
        force=force,
        check_links=check_links,
        resend_uncertain=resend_uncertain,
        limit=limit,
        skip_invalid=skip_invalid,
        progress=SendProgress(Path(issue).stem, cfg.progress_seconds),
    )
    run_send(issue, cfg, request, confirm=request.mode == "send" and not yes, as_json=as_json)


def run_send(
    issue: str, cfg: "Settings", request: "SendRequest", *, confirm: bool, as_json: bool
) -> None:
    """Prepare (render and check once), confirm on a terminal, execute, report."""
    from spark_mail.sending import execute, prepare_send

    prepared = prepare_send(issue, cfg, request)
    if confirm:
        ask_to_send(prepared)
    progress = request.progress
    assert isinstance(progress, SendProgress)
    try:
        report = execute(prepared)
    except SparkMailError as exc:
        progress.close()
        summary = exc.summary if isinstance(exc, SendNotDone | BatchSendFailed) else None
        if summary is not None:
            if as_json:
                print_json({"slug": prepared.slug, "error": str(exc), "summary": summary.to_json()})
            else:
                print_bulk_summary(summary.to_json(), err_console)
        raise
    except KeyboardInterrupt:
        progress.close()
        told = interrupted(prepared.slug, request.mode, progress.latest)
        log(f"[bold red]interrupted:[/] {escape(told)}")
        raise typer.Exit(130) from None
    progress.close()
    if as_json:
        print_json(report.to_json())
    else:
        print_send_report(report)
    print_site_refresh(report.site, report.site_problem)
    if report.refused:
        raise typer.Exit(EXIT_FAILURE)


def ask_to_send(prepared: "PreparedSend") -> None:
    """The confirmation question on a terminal; without one, refuse (cron needs --yes)."""
    if not sys.stdin.isatty():
        prepared.close()
        log(
            "[bold red]error:[/] no terminal to confirm on: refusing to send - "
            "add --yes to send from a script or cron"
        )
        raise typer.Exit(EXIT_USAGE)
    email = prepared.email
    question = (
        f"Send {email.slug} ({email.subject!r}) to {prepared.audience} via "
        f"{prepared.provider.name}?"
    )
    if not typer.confirm(question, default=False):
        prepared.close()
        err_console.print("not sent")
        raise typer.Exit(EXIT_FAILURE)
