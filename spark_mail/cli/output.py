"""What the CLI prints (only cli/ prints): one console for results (stdout), one for
messages (stderr), JSON for scripts, and the text form of the one result type (SendReport).

- `console` (stdout) and `err_console` (stderr);
- log lines: `log()` prefixes the local ISO time when stdout is not a terminal, so a cron
  log says when each line happened; ESP retries logged by the library come the same way;
- tables that never cut ids, paths, slugs or times (`key_table`, `Grid`, `print_table`):
  at 80 columns (pipes, cron) or on a small terminal the lines run long instead.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
from typing import IO, TYPE_CHECKING, Any, cast

from spark_mail.cli.markup import escape, plain_text

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from spark_mail.sending.outcomes import SendReport


class DeferredConsole:
    """A rich Console made on first use. Importing rich is about a sixth of a start: `--help`
    never prints through it, and where the output is not a terminal (cron, a pipe, a script)
    a message is printed as its plain text (cli/markup.py) until something needs rich."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None
        # options under which rich prints a message as its text: no wrapping, no emoji, no
        # highlighting (and nothing else that could change it)
        self._plain_options = (
            options.keys() <= {"stderr", "highlight", "soft_wrap", "emoji"}
            and options.get("soft_wrap") is True
            and options.get("emoji") is False
            and options.get("highlight") is False
        )

    @property
    def made(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.made, name)

    @property
    def file(self) -> IO[str]:
        """The file rich writes to: the real one behind the proxy a rich progress bar puts
        in sys.stdout on a terminal; none (NullFile) when Python started with it closed."""
        file = sys.stderr if self._options.get("stderr") else sys.stdout
        file = getattr(file, "rich_proxied_file", file)
        return cast("IO[str]", NullFile()) if file is None else file

    @property
    def is_terminal(self) -> bool:
        if self._console is not None or any(v in os.environ for v in COLOUR_ENV):
            return self.made.is_terminal
        try:  # as rich asks
            return self.file.isatty()
        except ValueError:  # a closed file
            return False

    def print(self, *objects: Any, **options: Any) -> None:
        one_text = len(objects) <= 1 and all(isinstance(o, str) for o in objects)
        if one_text and not options and self.plain:
            text = plain_text(objects[0] if objects else "")
            if text is not None:
                try:
                    self.file.write(text + "\n")
                except UnicodeEncodeError:  # nothing written: rich raises it with a hint
                    self.made.print(*objects)
                    return
                self.file.flush()
                return
        self.made.print(*objects, **options)

    @property
    def plain(self) -> bool:
        """Whether rich would print a message as its text: plain options, no Console made
        yet, and no colour (not a terminal, nothing in the environment asking for it)."""
        return self._plain_options and self._console is None and not self.is_terminal


class NullFile(io.TextIOBase):
    """What rich writes to when there is no sys.stdout (or stderr): it takes everything."""

    def write(self, text: str) -> int:
        return len(text)


def real(out: Console) -> Console:
    """The rich Console behind `console` or `err_console`, for rich's own classes."""
    return out.made if isinstance(out, DeferredConsole) else out


# Set, they make rich colour (or not) whether or not the output is a terminal.
COLOUR_ENV = ("FORCE_COLOR", "TTY_COMPATIBLE")
# emoji=False: an issue's ":rocket:" is printed as written, never as a picture
console = cast("Console", DeferredConsole(highlight=False, soft_wrap=True, emoji=False))
err_console = cast(
    "Console", DeferredConsole(stderr=True, highlight=False, soft_wrap=True, emoji=False)
)


def plural(count: int, one: str, many: str = "") -> str:
    """ "1 link", "2 links", "1 batch", "3 batches" """
    return f"{count:,} {one if count == 1 else many or one + 's'}"


def stamp() -> str:
    """The prefix of a log line: the local time (ISO 8601) when stdout is not a terminal
    (cron, a log file), so a log says when each line happened; nothing on a terminal."""
    if console.is_terminal:
        return ""
    import datetime as dt

    return dt.datetime.now().astimezone().isoformat(timespec="seconds") + " "


def log(message: str, out: Console | None = None) -> None:
    """One log line (rich markup) on stderr, or on `out`, with its time under cron."""
    (out or err_console).print(escape(stamp()) + message)


class StampedHandler(logging.Handler):
    """Library log records (ESP retries) as log lines, with the same prefix. A line that
    cannot be written (a full disk under the log file, a closed pipe) is dropped like
    logging's own handlers drop it: a log line must never fail what it reports on."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            log(f"[yellow]{record.levelname.lower()}:[/] {escape(record.getMessage())}")
        except Exception:
            self.handleError(record)


def key_table(*columns: str, keys: tuple[str, ...] = (), **options: Any) -> Table:
    """A table whose `keys` columns (ids, paths, slugs, times) are never cut or wrapped, and
    whose other columns wrap (a word too long for them folds, never "…"); print it with
    print_table."""
    from rich.table import Table

    table = Table(**options)
    for name in columns:
        if name in keys:
            table.add_column(name, no_wrap=True)
        else:
            table.add_column(name, overflow="fold", min_width=len(name))
    return table


class Grid:
    """A two-column "name  value" table: names bold, padded to the longest; values (rich
    markup) never wrapped or cut. Printed line by line, as rich's Table printed it (without
    its trailing spaces): laying out two columns does not need rich's Table, which is about
    a thirtieth of a cold `spark-mail build` to import and lay out."""

    def __init__(self, title: str = "") -> None:
        self.title = title
        self.rows: list[tuple[str, str]] = []

    def add_row(self, name: str, value: str) -> None:
        self.rows.append((name, value))

    def print(self, out: Console) -> None:
        if self.title:
            out.print(f"[italic]{self.title}[/]")
        width = max((cells(name) for name, _ in self.rows), default=0)
        for name, value in self.rows:
            gap = " " * (width - cells(name) + 2)
            out.print(
                f"[bold]{escape(name)}[/]{gap}" + value.replace("\n", "\n" + " " * (width + 2))
            )


def cells(text: str) -> int:
    """The width of `text` on a terminal (a wide character takes two cells)."""
    if text.isascii():
        return len(text)
    from rich.cells import cell_len

    return cell_len(text)


def print_table(table: Table | Grid, out: Console | None = None) -> None:
    """Print a table without cutting its no_wrap columns: where the console is too narrow for
    them (80 columns in a pipe or under cron, a small terminal), the table takes the width it
    needs and the lines run long instead of losing characters."""
    out = out or console
    if isinstance(table, Grid):
        table.print(out)
        return
    from rich.segment import Segments
    from rich.text import Text

    for column in table.columns:
        if column.no_wrap:
            cells = [column.header, *column.cells]
            column.min_width = max(
                Text.from_markup(c, emoji=False).cell_len for c in cells if isinstance(c, str)
            )
    needed = table.__rich_measure__(out, out.options.update_width(100_000)).minimum
    if needed <= out.width:
        out.print(table)
        return
    # Rendered at the width it needs (print() would clamp it to the console's width).
    lines = out.render_lines(table, out.options.update_width(needed), pad=False, new_lines=True)
    out.print(Segments(s for line in lines for s in line), crop=False, soft_wrap=True, end="")


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
    console.file.write(json.dumps(data, indent=2, default=str) + "\n")  # the real stdout


def kib(size: int) -> str:
    return f"{size / 1024:.1f} KB"


def ids_text(esp_ids: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in esp_ids.items())


def interrupted(slug: str, mode: str, summary: Any) -> str:
    """What a Ctrl-C left behind and how to go on (summary: the own-list BatchSummary)."""
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
    (cron), one line every `every` seconds. Called with a sending.batches.BatchSummary."""

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
                console=real(err_console),
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
    table = Grid()
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
        f"{plural(summary['batches'], 'batch', 'batches')}",
    )
    print_table(table, out)


def print_send_report(result: SendReport) -> None:
    for warning in result.warnings:
        log(f"[yellow]warning:[/] {escape(warning)}")
    titles = dict(TITLES)
    if result.provider == "outbox":  # it writes .eml files: never say "sent"
        titles["tested"] = "Test copy written to the outbox (no email was sent)"
        titles["sent"] = "Written to the outbox (no email was sent)"
    table = Grid(title=titles.get(str(result.outcome), str(result.outcome)))
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
        table = Grid()
    if result.esp_ids:
        table.add_row("ESP ids", escape(ids_text(result.esp_ids)))
    if result.folder:
        table.add_row("Written to", escape(result.folder))
    print_table(table)
    for address, reason in list(result.refused.items())[:20]:
        err_console.print(f"[red]refused:[/] {escape(address)}: {escape(reason)}")
    if len(result.refused) > 20:
        more = len(result.refused) - 20
        err_console.print(f"[red]refused:[/] ... and {more} more (--json lists them)")


def print_site_refresh(site: str | None, problem: str | None) -> None:
    """After a send: where the web archive was rebuilt, or why it was not (a warning)."""
    if problem:
        log(f"[yellow]warning:[/] {escape(problem)}")
    elif site:
        log(f"web archive rebuilt in {escape(site)}")
