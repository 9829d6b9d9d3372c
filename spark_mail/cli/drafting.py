"""Drafting: build, new, check, preview, list."""

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from spark_mail.cli.app import SAMPLE, IssueArg, JsonOpt, app, argument, example, settings
from spark_mail.cli.output import (
    Grid,
    console,
    err_console,
    escape,
    key_table,
    kib,
    plural,
    print_json,
    print_table,
)

if TYPE_CHECKING:
    from spark_mail.checks import Report


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
    table = Grid()
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
    title: Annotated[str, argument("TITLE")],
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
    clients: Annotated[
        str | None,
        typer.Option(
            "--clients",
            metavar="NAMES",
            help="Mail clients the clients.* rules look at, e.g. gmail,outlook "
            "(gmail, outlook, apple-mail, yahoo, or one client such as outlook-windows).",
        ),
    ] = None,
    notes: Annotated[
        bool, typer.Option("--notes", help="List the info notes in full, not only their ids.")
    ] = False,
) -> None:
    """Build an issue and run the pre-send checks: exit 0 clean, 1 with errors.

    ISSUE: an issue file, or its slug in issues/. Given as a path, the newsletter's settings
    are found from the file's folder upward, so it works from any folder.
    """
    from spark_mail.checks import check_issue
    from spark_mail.checks.caniemail import resolve_clients

    try:
        chosen = resolve_clients(clients)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--clients") from None
    report = check_issue(issue, settings(issue), links=not no_links, clients=chosen)
    if as_json:
        print_json({**report.to_json(), "strict": strict, "failed": report.failed(strict)})
    else:
        print_report(report, notes=notes)
    report.raise_for_failure(strict)


def print_report(report: "Report", notes: bool = False) -> None:
    shown = report.findings if notes else report.problems
    if shown:
        table = key_table(
            "severity", "rule", "problem", "how to fix", keys=("severity", "rule"),
            title=f"Checks: {escape(report.slug)}", title_justify="left",
        )  # fmt: skip
        for f in shown:
            style = {"error": "red", "warning": "yellow"}.get(f.severity, "blue")
            table.add_row(f"[{style}]{f.severity}[/]", f.rule_id, escape(f.message), escape(f.hint))
        print_table(table)
    if report.notes and not notes:
        ids = ", ".join(f.rule_id for f in report.notes)
        console.print(
            f"[blue]{plural(len(report.notes), 'note')}[/] (info, --notes lists them): {ids}"
        )
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
    colour = "green" if not report.problems else "red" if report.errors else "yellow"
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
    snapshot: Annotated[
        bool,
        typer.Option(
            "--snapshot",
            help="Write PNGs (375 and 600 px, light and dark) through headless Chromium into "
            "DIR (default: dist/<slug>/snapshots) and exit: `preview ISSUE --snapshot [DIR]`.",
        ),
    ] = False,
    snapshot_dir: Annotated[Path | None, argument("[DIR]")] = None,
) -> None:
    """Serve the built issue on 127.0.0.1, rebuilt and reloaded on every save.

    ISSUE: an issue file, or its slug in issues/. Given as a path, the newsletter's settings
    are found from the file's folder upward, so it works from any folder.
    """
    from spark_mail.drafting.preview import serve
    from spark_mail.issue import resolve_issue_path

    cfg = settings(issue)
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
