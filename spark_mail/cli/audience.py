"""Your own subscriber list: `audience check`, `audience suppressions`, `audience sync`."""

from pathlib import Path
from typing import Annotated

import typer

from spark_mail.cli.app import JsonOpt, ProviderOpt, app, argument, example, settings
from spark_mail.cli.output import (
    Grid,
    console,
    err_console,
    escape,
    key_table,
    print_json,
    print_table,
)
from spark_mail.errors import EXIT_FAILURE

audience_app = typer.Typer(
    help="Your own subscriber list (a CSV file with an email column).",
    no_args_is_help=True,
    epilog=example("spark-mail audience check subscribers.csv"),
)
app.add_typer(audience_app, name="audience")
AUDIENCE_SHOWN = 20  # problems printed per kind on a terminal; --json lists more


@audience_app.command("check", epilog=example("spark-mail audience check subscribers.csv"))
def audience_check(
    path: Annotated[Path | None, argument("FILE")] = None,
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
        table = Grid()
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
                shown = f" {escape(repr(problem.email))}" if problem.email else ""
                where = f"{escape(str(report.path))}:{problem.line}:"
                console.print(f"  {where}{shown} {escape(problem.reason)}")
            if count > AUDIENCE_SHOWN:
                console.print(f"  ... and {count - AUDIENCE_SHOWN:,} more (--json lists them)")
    if not report.ok:
        raise typer.Exit(EXIT_FAILURE)


@audience_app.command(
    "suppressions", epilog=example("spark-mail audience suppressions --export unsubscribed.csv")
)
def audience_suppressions(
    as_json: JsonOpt = False,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            metavar="FILE",
            help="Write them to this CSV file (usable as suppression_file).",
        ),
    ] = None,
) -> None:
    """Who gets no more mail, and why: unsubscribed on the desk, bounced, complained."""
    from spark_mail.audience.suppressions import SuppressionStore

    with SuppressionStore.for_settings(settings()) as store:
        rows = store.suppressions()
        if export is not None:
            count = store.export_csv(export)
            err_console.print(f"{count:,} suppressions written to {escape(str(export))}")
    if as_json:
        print_json({"suppressions": [r.to_dict() for r in rows], "count": len(rows)})
        return
    if export is not None:
        return
    if not rows:
        console.print("Nobody is suppressed: no unsubscribes, bounces or complaints yet.")
        return
    table = key_table("address", "when", "reason", keys=("address", "when"))
    for row in rows:
        table.add_row(escape(row.address), row.at, escape(row.reason))
    print_table(table)


@audience_app.command("sync", epilog=example("spark-mail audience sync"))
def audience_sync(provider: ProviderOpt = None, as_json: JsonOpt = False) -> None:
    """Copy the ESP's own suppression list (bounces, complaints, unsubscribes) in here."""
    from spark_mail.audience.sync import sync_suppressions

    report = sync_suppressions(settings(provider=provider))
    if as_json:
        print_json(report.to_json())
        return
    added = sum(report.added.values())
    why = ", ".join(f"{n:,} {how}" for how, n in sorted(report.added.items()))
    console.print(
        f"{report.provider}: {report.listed:,} addresses on its suppression list; "
        f"{added:,} newly suppressed here"
        + (f" ({why})" if why else "")
        + f", {report.already:,} already were"
    )
