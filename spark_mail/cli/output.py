"""What the CLI prints: one console for results (stdout), one for messages (stderr), JSON
for scripts, and the text form of the one result type (SendReport) and its summaries.

Core modules are imported lazily everywhere in cli/, so `spark-mail --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from spark_mail.sending.outcomes import SendReport

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

TITLES = {
    "dry-run": "Dry run: nothing was sent",
    "tested": "Test copy sent",
    "sent": "Sent",
    "partial": "Sent to some readers; run again for the rest",
    "sent-earlier": "Already sent: an interrupted earlier send went out",
    "scheduled-earlier": "Already scheduled: an interrupted earlier schedule went through",
    "scheduled": "Scheduled",
    "in-progress": "Not sent here: another spark-mail process is sending it right now",
}


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def kib(size: int) -> str:
    return f"{size / 1024:.1f} KB"


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def key_value_table(title: str | None = None) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False, title=title, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    return table


def ids_text(esp_ids: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in esp_ids.items())


def print_bulk_summary(summary: dict[str, Any], out: Console) -> None:
    """The own-list summary: who got it, who did not and why, time and rate."""
    table = key_value_table()
    table.add_row(
        "Readers",
        f"[green]{summary['sent']:,} sent[/], {summary['refused']:,} refused, "
        f"{summary['failed']:,} failed, {summary['uncertain']:,} uncertain "
        f"(of {summary['readers']:,} in the list)",
    )
    table.add_row(
        "Skipped",
        f"{summary['already_sent']:,} already sent, {summary['held_uncertain']:,} uncertain "
        f"kept back, {summary['remaining']:,} left for a later run"
        + (
            f", {summary['suppressed_during_run']:,} unsubscribed during the send"
            if summary.get("suppressed_during_run")
            else ""
        ),
    )
    table.add_row(
        "List",
        f"{summary['suppressed']:,} suppressed, {summary['invalid']:,} invalid, "
        f"{summary['duplicates']:,} duplicates",
    )
    table.add_row(
        "Time",
        f"{summary['seconds']:.1f} s, {summary['rate']:,.0f} readers/s, "
        f"{plural(summary['batches'], 'batch').replace('batchs', 'batches')}",
    )
    out.print(table)


def print_send_report(report: SendReport) -> None:
    """A send's outcome as a table: what went where, through whom."""
    for warning in report.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")
    table = key_value_table(TITLES.get(str(report.outcome), str(report.outcome)))
    table.add_row("Issue", escape(report.slug))
    table.add_row("Subject", escape(report.subject))
    table.add_row("Provider", escape(report.provider))
    who = report.recipients
    if isinstance(who, list) and who:
        table.add_row("To", escape(", ".join(who)))
    else:
        count = f" ({who:,} readers)" if isinstance(who, int) else ""
        table.add_row("Audience", escape(report.audience) + count)
    table.add_row("Size", f"HTML {kib(report.html_bytes)}, text {kib(report.text_bytes)}")
    table.add_row("Requests", str(report.requests))
    if report.summary:
        console.print(table)
        print_bulk_summary(report.summary, console)
        table = key_value_table()
    if report.esp_ids:
        table.add_row("ESP ids", escape(ids_text(report.esp_ids)))
    if report.folder:
        table.add_row("Written to", escape(report.folder))
    console.print(table)
    for address, reason in list(report.refused.items())[:20]:
        err_console.print(f"[red]refused:[/] {escape(address)}: {escape(reason)}")
    if len(report.refused) > 20:
        more = len(report.refused) - 20
        err_console.print(f"[red]refused:[/] ... and {more} more (--json lists them)")


class SendProgress:
    """Own-list progress on stderr: a rich bar with rate and ETA on a terminal; without one
    (cron), one line every `every` seconds. Called with a sending.batches.BatchSummary."""

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
