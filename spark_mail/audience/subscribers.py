"""Your own subscriber list: a CSV file, streamed, validated, deduplicated and suppressed.

The file needs an `email` column; any other column (`first_name`, ...) becomes a reader
field a layout can use. Column names are matched loosely: `Email`, ` E-mail ` and `email`
are the same column (lowercase, runs of other characters become `_`).

One pass reads the file row by row (`csv` over a text file, so a 100,000-reader
list costs the memory of one row plus an 8-byte hash per address). Every row ends up in
exactly one bucket of the `AudienceReport`:

- invalid: the row is malformed (too many fields, an unclosed quote), is not UTF-8, or its
  address is not a syntactically valid address (email-validator rules, no DNS lookup);
- suppressed: its `unsubscribed` or `bounced` column is set, or the address is listed in
  the suppression file or was unsubscribed on the reader desk (`readers.sqlite3` in the
  state folder), or another row of the same address is suppressed. Suppression
  always wins, which is why the file is read twice when it has those columns: a reader who
  unsubscribed on line 90,000 must not get mail from line 12;
- duplicate: the address (compared case-insensitively) was already on an earlier row; the
  first row is kept;
- valid: everything else; these rows are yielded as `Reader`s.

Files that cannot be used at all (missing, no `email` column, no rows) raise AudienceError.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from spark_mail.audience.addresses import AddressValidator, address_key
from spark_mail.audience.suppression_lists import (
    load_desk_suppressed,
    load_suppressed,
)
from spark_mail.config import ENV_PREFIX, Settings
from spark_mail.errors import AudienceError, ConfigError

EMAIL_COLUMN = "email"
SUPPRESSION_COLUMNS = ("unsubscribed", "bounced")
# An unknown value in a suppression column suppresses: sending to someone who asked not to
# get mail is worse than skipping someone whose export says "2024-05-01" under `bounced`.
FALSE_VALUES = frozenset({"", "0", "no", "n", "false", "f", "off"})
MAX_LISTED = 1000  # problems kept per kind for the report; the counts stay exact
DELIMITERS = ",;\t"

HEADER_CHARS_RE = re.compile(r"[^a-z0-9]+")
NOT_UTF8_RE = re.compile(r"[\udc80-\udcff]")  # what surrogateescape makes of a bad byte


@dataclass(frozen=True, slots=True)
class Reader:
    """One valid, unsuppressed, first-seen subscriber."""

    email: str  # as normalised by the validator (domain lowercased)
    fields: dict[str, str]  # the row's columns by normalised name, values as written
    line: int  # the file line the row starts on


@dataclass(frozen=True, slots=True)
class RowProblem:
    line: int
    reason: str
    email: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "email": self.email, "reason": self.reason}


@dataclass
class AudienceReport:
    """Counts for every row of the file; problems listed (up to MAX_LISTED per kind)."""

    path: Path
    suppression_file: Path | None = None
    total: int = 0
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    suppressed: int = 0
    suppressed_by: Counter[str] = field(default_factory=Counter)
    invalid_rows: list[RowProblem] = field(default_factory=list)
    duplicate_rows: list[RowProblem] = field(default_factory=list)
    columns: tuple[str, ...] = ()
    # Keys of every suppressed address (suppression file + rows marked unsubscribed/bounced),
    # so a second pass over the same file (the send after the check) need not find them again.
    suppressed_keys: frozenset[int] = field(default_factory=frozenset, repr=False)

    @property
    def ok(self) -> bool:
        return self.invalid == 0

    def add_invalid(self, problem: RowProblem) -> None:
        self.invalid += 1
        if len(self.invalid_rows) < MAX_LISTED:
            self.invalid_rows.append(problem)

    def add_duplicate(self, problem: RowProblem) -> None:
        self.duplicates += 1
        if len(self.duplicate_rows) < MAX_LISTED:
            self.duplicate_rows.append(problem)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "suppression_file": str(self.suppression_file) if self.suppression_file else None,
            "columns": list(self.columns),
            "total": self.total,
            "valid": self.valid,
            "invalid": self.invalid,
            "duplicates": self.duplicates,
            "suppressed": self.suppressed,
            "suppressed_by": dict(self.suppressed_by),
            "invalid_rows": [p.to_dict() for p in self.invalid_rows],
            "duplicate_rows": [p.to_dict() for p in self.duplicate_rows],
            "listed_limit": MAX_LISTED,
        }


# -- reading the file ------------------------------------------------------------------


def normalise_column(name: str) -> str:
    return HEADER_CHARS_RE.sub("_", name.strip().lower()).strip("_")


def is_set(value: str | None) -> bool:
    """A suppression column's value: anything but empty / 0 / no / false counts."""
    return value is not None and value.strip().lower() not in FALSE_VALUES


class _LineCounter:
    """Feeds lines to csv and remembers which physical line it is on and which lines held
    bytes that are not UTF-8 (surrogateescape turns them into lone surrogates)."""

    def __init__(self, fh: TextIO) -> None:
        self._fh = fh
        self.line = 0
        self.row_start = 0  # first non-empty line since the last take_row_start()
        self.bad_bytes: dict[int, str] = {}

    def take_row_start(self) -> int:
        start, self.row_start = self.row_start, 0
        return start

    def __iter__(self) -> Iterator[str]:
        for text in self._fh:
            self.line += 1
            if not self.row_start and text != "\n" and text != "\r\n":
                self.row_start = self.line  # csv skips empty lines between rows silently
            if not text.isascii():
                match = NOT_UTF8_RE.search(text)
                if match:
                    byte = ord(match.group()) - 0xDC00
                    self.bad_bytes[self.line] = f"byte 0x{byte:02X} at column {match.start() + 1}"
            yield text


def _open_text(path: Path, what: str) -> TextIO:
    try:
        # utf-8-sig: spreadsheet exports start with a byte order mark.
        return path.open(encoding="utf-8-sig", errors="surrogateescape", newline="")
    except FileNotFoundError:
        raise AudienceError(
            f"{path}: {what} not found",
            hint="check the path (settings: audience / suppression_file)",
        ) from None
    except IsADirectoryError:
        raise AudienceError(f"{path}: {what} is a folder, not a CSV file") from None
    except OSError as exc:
        raise AudienceError(f"{path}: cannot read the {what} ({exc.strerror})") from None


def _delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


CSV_MESSAGES = {
    "unexpected end of data": "a quoted value is never closed (the row runs on to the end of "
    "the file) - close the quote",
    "expected after": 'a quote inside a quoted value must be doubled ("") - fix the quoting',
}


def _csv_reason(exc: csv.Error) -> str:
    text = str(exc)
    for needle, reason in CSV_MESSAGES.items():
        if needle in text:
            return reason
    return f"malformed CSV row ({text})"


_Row = tuple[int, "dict[str, str] | None", str]  # (line, row or None, problem)


class _CsvRows:
    """The rows of a subscribers file as (start line, row dict, problem) triples."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = _open_text(path, "subscribers file")
        self._counter = _LineCounter(self._fh)
        first = self._fh.readline()
        self._fh.seek(0)
        self._reader = csv.reader(self._counter, delimiter=_delimiter(first), strict=True)
        try:
            raw = next(self._reader, None)
        except csv.Error as exc:
            self.close()
            raise AudienceError(f"{path}:1: the header row is malformed ({exc})") from None
        if not raw:
            self.close()
            raise AudienceError(
                f"{path}: the file is empty - no readers to send to",
                hint="add a header row with an 'email' column and one row per reader",
            )
        if 1 in self._counter.bad_bytes:
            self.close()
            raise AudienceError(
                f"{path}:1: the header is not UTF-8 ({self._counter.bad_bytes[1]})",
                hint="save the file as UTF-8 (CSV UTF-8 in a spreadsheet)",
            )
        columns = [normalise_column(name) for name in raw]
        repeated = sorted({c for c in columns if c and columns.count(c) > 1})
        if repeated:
            self.close()
            raise AudienceError(
                f"{path}:1: column {repeated[0]!r} appears more than once",
                hint="rename or remove one of them",
            )
        if EMAIL_COLUMN not in columns:
            self.close()
            raise AudienceError(
                f"{path}:1: no 'email' column (columns: {', '.join(raw)})",
                hint="name the column with the addresses 'email' in the header row",
            )
        self.columns = tuple(c for c in columns if c)
        self._columns = columns
        self._unnamed = "" in columns  # a column without a name is not a field
        self._names = [c for c in columns if c]

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> _CsvRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _bad_bytes(self, start: int, end: int) -> tuple[int, str] | None:
        """The first line of start..end that held a non-UTF-8 byte (forgetting them all)."""
        bad = self._counter.bad_bytes
        if not bad:
            return None
        found = [(n, bad.pop(n)) for n in range(start, end + 1) if n in bad]
        return found[0] if found else None

    def __iter__(self) -> Iterator[_Row]:
        reader, counter, columns = self._reader, self._counter, self._columns
        width = len(columns)
        counter.take_row_start()
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                start, last = counter.take_row_start() or counter.line, counter.line
                self._bad_bytes(start, last)
                yield start, None, _csv_reason(exc)
                continue
            start, last = counter.take_row_start() or counter.line, counter.line
            if counter.bad_bytes:
                bad = self._bad_bytes(start, last)
                if bad:
                    yield bad[0], None, f"not UTF-8 ({bad[1]}) - save the file as UTF-8"
                    continue
            if len(values) > width:
                problem = (
                    f"{len(values)} fields but the header has {width} - quote values "
                    "that contain the delimiter"
                )
                yield start, None, problem
                continue
            # Fewer fields than columns: the missing ones are absent from the row.
            if self._unnamed:
                values = [v for c, v in zip(columns, values, strict=False) if c]
            yield start, dict(zip(self._names, values, strict=False)), ""


def _suppressed_in_file(path: Path) -> set[int]:
    """Keys of addresses that some row marks unsubscribed/bounced (the first pass)."""
    keys: set[int] = set()
    with _CsvRows(path) as rows:
        columns = [c for c in SUPPRESSION_COLUMNS if c in rows.columns]
        if not columns:
            return keys
        for _, row, _problem in rows:
            if row is not None and any(is_set(row.get(c)) for c in columns):
                keys.add(address_key(row.get(EMAIL_COLUMN, "")))
    return keys


def iter_readers(
    path: Path | str,
    suppression_file: Path | str | None = None,
    store: Path | None = None,
    *,
    report: AudienceReport | None = None,
    suppressed_keys: frozenset[int] | None = None,
    can_carry: Callable[[str], bool] | None = None,
) -> Iterator[Reader]:
    """Yield the readers to send to, streaming; fill `report` with every row's fate.

    `store`: the reader desk's store (`readers.sqlite3`); its unsubscribes are suppressed.
    `suppressed_keys` (from an earlier pass's report) skips reading the suppression file, the
    store and the first pass over this one; the reason of a suppression is then not told apart.
    `can_carry`: the sending provider's test of an address it can deliver to at all; the
    others are invalid rows (found before the send, not failures in the middle of it).

    Raises AudienceError (before yielding anything) when the file cannot be used at all:
    missing, unreadable, no `email` column, no rows.
    """
    path = Path(path)
    report = report if report is not None else AudienceReport(path)
    report.path = path
    suppression = Path(suppression_file) if suppression_file else None
    report.suppression_file = suppression
    listed: AbstractSet[int]
    marked: AbstractSet[int]
    desk: dict[int, str] = {}
    if suppressed_keys is None:
        listed = load_suppressed(suppression) if suppression else set()
        desk = load_desk_suppressed(store)
        marked = _suppressed_in_file(path)
    else:
        listed, marked = frozenset(), suppressed_keys
    report.suppressed_keys = frozenset(listed | desk.keys() | marked)
    validator = AddressValidator()
    first_line: dict[int, int] = {}  # address key -> line of its first valid row
    with _CsvRows(path) as rows:
        report.columns = rows.columns
        columns = [c for c in SUPPRESSION_COLUMNS if c in rows.columns]
        for line, row, problem in rows:
            report.total += 1
            address = _address_of(line, row, problem, validator, can_carry, report)
            if address is None or row is None:
                continue
            key = address_key(address)
            reason = next((c for c in columns if is_set(row.get(c))), "") if columns else ""
            reason = reason or _listed_reason(key, listed, desk, marked)
            if reason:
                report.suppressed += 1
                report.suppressed_by[reason] += 1
                continue
            first = first_line.get(key)
            if first is not None:
                written = row.get(EMAIL_COLUMN, "").strip()
                report.add_duplicate(
                    RowProblem(line, f"duplicate of line {first} (the first is kept)", written)
                )
                continue
            first_line[key] = line
            report.valid += 1
            yield Reader(address, row, line)
    if report.total == 0:
        raise AudienceError(
            f"{path}: no readers (the file has a header but no rows)",
            hint="add one row per reader below the header",
        )


def _address_of(
    line: int,
    row: dict[str, str] | None,
    problem: str,
    validator: AddressValidator,
    can_carry: Callable[[str], bool] | None,
    report: AudienceReport,
) -> str | None:
    """The row's normalised address, or None with the row counted as invalid (or, for a
    blank row, not counted at all)."""
    if row is None:
        report.add_invalid(RowProblem(line, problem))
        return None
    written = row.get(EMAIL_COLUMN, "").strip()
    if not written:
        if not any(v.strip() for v in row.values()):
            report.total -= 1  # a blank row (spreadsheets leave ",,,," at the end)
            return None
        report.add_invalid(RowProblem(line, "no email address in the 'email' column"))
        return None
    try:
        address = validator.normalise(written)
    except ValueError as exc:
        report.add_invalid(RowProblem(line, f"invalid address: {exc}", written))
        return None
    if can_carry is not None and not can_carry(address):
        problem = "the part before the @ is not ASCII and the provider cannot carry it"
        report.add_invalid(RowProblem(line, problem, written))
        return None
    return address


def _listed_reason(
    key: int, listed: AbstractSet[int], desk: Mapping[int, str], marked: AbstractSet[int]
) -> str:
    """Why an address is suppressed by a list (not by its own row), or "" (the desk's store
    says why it suppressed each address: an unsubscribe, a bounce, a complaint)."""
    if key in listed:
        return "suppression file"
    if key in desk:
        return desk[key]
    if key in marked:
        return "suppressed on another row"
    return ""


def check_audience(
    path: Path | str,
    suppression_file: Path | str | None = None,
    store: Path | None = None,
    *,
    can_carry: Callable[[str], bool] | None = None,
) -> AudienceReport:
    """Read the whole file and report on it (nothing is kept but the counts and problems)."""
    report = AudienceReport(Path(path))
    for _reader in iter_readers(path, suppression_file, store, report=report, can_carry=can_carry):
        pass
    return report


class AudiencePaths(NamedTuple):
    """Where the audience is read from; `iter_readers(*paths)` / `check_audience(*paths)`."""

    subscribers: Path
    suppression_file: Path | None
    store: Path | None  # the reader desk's store (suppressions), read when it exists


def audience_paths(settings: Settings, path: Path | str | None = None) -> AudiencePaths:
    """The subscribers file (an explicit path, else the `audience` setting), the
    suppression file and the reader desk's store, resolved against the newsletter's root."""
    from spark_mail.audience.suppressions import store_path

    chosen = str(path) if path else settings.audience
    if not chosen:
        raise ConfigError(
            "no subscribers file given",
            hint=f'pass a path, or set audience = "subscribers.csv" in spark-mail.toml '
            f"(or {ENV_PREFIX}AUDIENCE)",
        )
    audience = Path(chosen) if path else settings.path(chosen)
    suppression = settings.path(settings.suppression_file) if settings.suppression_file else None
    return AudiencePaths(audience, suppression, store_path(settings))
