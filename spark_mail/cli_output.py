"""Output helpers of the `spark-mail` command (part of the CLI: only the CLI prints).

- `console` (stdout) and `err_console` (stderr);
- log lines: `log()` prefixes the local ISO time when stdout is not a terminal, so a cron
  log says when each line happened; ESP retries logged by the library come the same way;
- tables that never cut ids, paths, slugs or times (`key_table`, `grid`, `print_table`):
  at 80 columns (pipes, cron) or on a small terminal the lines run long instead.
"""

from __future__ import annotations

import logging
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.segment import Segments
from rich.table import Table
from rich.text import Text

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


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
    """Library log records (ESP retries) as log lines, with the same prefix."""

    def emit(self, record: logging.LogRecord) -> None:
        log(f"[yellow]{record.levelname.lower()}:[/] {escape(record.getMessage())}")


def key_table(*columns: str, keys: tuple[str, ...] = (), **options: Any) -> Table:
    """A table whose `keys` columns (ids, paths, slugs, times) are never cut or wrapped, and
    whose other columns wrap (a word too long for them folds, never "…"); print it with
    print_table."""
    table = Table(**options)
    for name in columns:
        if name in keys:
            table.add_column(name, no_wrap=True)
        else:
            table.add_column(name, overflow="fold", min_width=len(name))
    return table


def grid(**options: Any) -> Table:
    """A two-column "name  value" table; values are never wrapped or cut."""
    table = Table(show_header=False, box=None, pad_edge=False, **options)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(no_wrap=True)
    return table


def print_table(table: Table, out: Console | None = None) -> None:
    """Print a table without cutting its no_wrap columns: where the console is too narrow for
    them (80 columns in a pipe or under cron, a small terminal), the table takes the width it
    needs and the lines run long instead of losing characters."""
    out = out or console
    for column in table.columns:
        if column.no_wrap:
            cells = [column.header, *column.cells]
            column.min_width = max(
                Text.from_markup(c).cell_len for c in cells if isinstance(c, str)
            )
    needed = table.__rich_measure__(out, out.options.update_width(100_000)).minimum
    if needed <= out.width:
        out.print(table)
        return
    # Rendered at the width it needs (print() would clamp it to the console's width).
    lines = out.render_lines(table, out.options.update_width(needed), pad=False, new_lines=True)
    out.print(Segments(s for line in lines for s in line), crop=False, soft_wrap=True, end="")
