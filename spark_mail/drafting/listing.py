"""`spark-mail list`: every issue in issues/ with its state, size and offline check result.

A broken issue becomes an error row; it never stops the listing. The status comes from the
send ledger when one exists (it is never created here), else from the front matter:
"scheduled" when `send_at` is set (dispatch will send it), "draft" when not. An issue handed
to the ESP's own scheduler (`spark-mail schedule`) shows as "scheduled at ESP".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from spark_mail.config import Settings
from spark_mail.errors import SparkMailError, located, printable
from spark_mail.files import issue_files


@dataclass(frozen=True)
class IssueRow:
    path: Path
    slug: str
    date: str = ""
    number: int | None = None
    title: str = ""
    send_at: str | None = None
    status: str = ""
    html_bytes: int = 0
    check: str = ""  # the checks' summary: "clean" / "1 error, 2 warnings"
    errors: int = 0
    warnings: int = 0
    error: str = ""  # the issue could not be loaded or built

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


class LedgerStates:
    """slug -> ledger state, read from an existing ledger only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problem = ""
        self._ledger: Any = None

    def __enter__(self) -> LedgerStates:
        if self.path.is_file():
            from spark_mail.ledger import Ledger

            try:
                self._ledger = Ledger(self.path).open()
            except SparkMailError as exc:
                self.problem = str(exc)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._ledger is not None:
            self._ledger.close()

    def state(self, slug: str) -> str | None:
        if self._ledger is None:
            return None
        try:
            record = self._ledger.get(slug)
        except SparkMailError as exc:
            self.problem = str(exc)
            return None
        return None if record is None else str(record.state)


def issue_row(path: Path, settings: Settings, ledger: LedgerStates) -> IssueRow:
    from spark_mail.checks import run_checks
    from spark_mail.issue import load_issue
    from spark_mail.render import render_issue

    slug = printable(path.stem)  # shown only: a broken file's name may not be a slug
    date = slug[:10] if len(slug) >= 10 and slug[4:5] == "-" else ""
    try:
        issue = load_issue(path)
        email = render_issue(issue, settings)
    except SparkMailError as exc:
        # The row already names the file: keep the message short.
        message = str(exc).replace(located(path), located(path.name))
        return IssueRow(path=path, slug=slug, date=date, status="error", error=message)
    report = run_checks(email, settings, links=False)
    send_at = with_zone(issue.send_at, settings.timezone).isoformat() if issue.send_at else None
    slug = issue.slug
    state = ledger.state(slug)
    if state == "scheduled":  # the ledger's word for "handed to the ESP's scheduler"
        state = "scheduled at ESP"
    status = state or ("scheduled" if send_at else "draft")
    return IssueRow(
        path=path,
        slug=slug,
        date=issue.date.isoformat(),
        number=issue.number,
        title=issue.title,
        send_at=send_at,
        status=status,
        html_bytes=email.html_bytes,
        check=report.summary(),
        errors=len(report.errors),
        warnings=len(report.warnings),
    )


def with_zone(at: dt.datetime, timezone: str) -> dt.datetime:
    """A send_at written without an offset is in the newsletter's zone: show that offset
    (a zone that does not exist is left to `dispatch` to report)."""
    if at.tzinfo is not None:
        return at
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return at.replace(tzinfo=ZoneInfo(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        return at


@dataclass(frozen=True)
class Catalog:
    rows: list[IssueRow]
    notes: list[str]  # problems that did not stop the listing (an unreadable ledger)

    def to_json(self) -> dict[str, Any]:
        return {"issues": [r.to_json() for r in self.rows], "notes": self.notes}


def list_issues(settings: Settings) -> Catalog:
    """Every issues/*.md, oldest first (by date, then file name)."""
    folder = settings.issues_path
    paths = issue_files(folder)
    with LedgerStates(settings.ledger_file) as ledger:
        rows = [issue_row(path, settings, ledger) for path in paths]
    notes = []
    if ledger.problem:
        notes.append(f"send status from front matter only: {ledger.problem}")
    return Catalog(sorted(rows, key=lambda r: (r.date or "9999", r.slug)), notes)
