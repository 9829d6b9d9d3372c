"""Reader polls: the issues' questions, one vote per reader per issue, and the results.

A click on an option counts at once. A later click on another option changes the vote,
unless it comes within SCANNER_SECONDS of the previous click: a link scanner (Microsoft
Defender, a corporate gateway) opens every option of an email within a few seconds, so a
burst of different options counts for none of them. A click more than SCANNER_SECONDS
after the last one is a reader changing their mind, and counts.

`poll_counts` is kept in the same transaction as `votes`, so results are one small read
however many readers voted. Times come from a Clock (wall time, shared by every worker).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from spark_mail.audience.suppressions import Operation, SuppressionStore, iso
from spark_mail.config import Settings
from spark_mail.desk.links import SLUG_RE
from spark_mail.errors import IssueError, SparkMailError
from spark_mail.files import issue_files

SCANNER_SECONDS = 5.0
COMMENT_CHARS = 280


class Outcome(StrEnum):
    COUNTED = "counted"  # a first vote
    CHANGED = "changed"  # another option, later than SCANNER_SECONDS: a change of mind
    UNCHANGED = "unchanged"  # the same option again
    VOID = "void"  # different options within seconds: a scanner, none counts


@dataclass(frozen=True)
class PollInfo:
    """One issue's poll, as its file says now."""

    slug: str
    title: str
    date: dt.date
    question: str
    options: tuple[str, ...]


@dataclass
class Results:
    slug: str
    question: str
    options: tuple[str, ...]
    counts: list[int]
    comments: list[dict[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def shares(self) -> list[int]:
        """Each option's share of the votes, in whole percent (for the bars)."""
        total = self.total
        return [round(100 * n / total) if total else 0 for n in self.counts]

    def to_json(self) -> dict[str, Any]:
        return {
            "issue": self.slug,
            "question": self.question,
            "options": [
                {"label": label, "votes": votes}
                for label, votes in zip(self.options, self.counts, strict=True)
            ],
            "votes": self.total,
            "comments": self.comments,
        }


class PollBook:
    """The polls of the issues folder, read from each file and kept until it changes."""

    def __init__(self, issues_dir: Path) -> None:
        self.issues_dir = issues_dir
        self._cache: dict[str, tuple[tuple[int, int], PollInfo | None]] = {}
        self._lock = threading.Lock()

    def get(self, slug: str) -> PollInfo | None:
        """The issue's poll; None for an unknown or broken issue, or one without a poll."""
        if not SLUG_RE.fullmatch(slug) or ".." in slug:
            return None
        path = self.issues_dir / f"{slug}.md"
        try:
            stat = path.stat()
        except OSError:
            return None
        stamp = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._cache.get(slug)
        if cached and cached[0] == stamp:
            return cached[1]
        info = self._load(path)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[slug] = (stamp, info)
        return info

    @staticmethod
    def _load(path: Path) -> PollInfo | None:
        from spark_mail.issue import load_issue

        try:
            issue = load_issue(path)
        except SparkMailError:
            return None  # a broken issue file has no poll to answer
        if issue.poll is None:
            return None
        poll = issue.poll
        return PollInfo(issue.slug, issue.title, issue.date, poll.question, poll.options)

    def all(self) -> list[PollInfo]:
        polls = (self.get(path.stem) for path in issue_files(self.issues_dir))
        return [p for p in polls if p is not None]


def is_closed(info: PollInfo, poll_days: float, now: dt.datetime) -> bool:
    """Votes are taken until `poll_days` after the issue's date (0: always)."""
    if poll_days <= 0:
        return False
    opened = dt.datetime.combine(info.date, dt.time(), tzinfo=dt.UTC)
    return now - opened > dt.timedelta(days=poll_days)


def _count(db: sqlite3.Connection, slug: str, option: int | None, step: int) -> None:
    if option is None:
        return
    db.execute(
        "INSERT INTO poll_counts (issue, option, votes) VALUES (?, ?, ?) "
        "ON CONFLICT (issue, option) DO UPDATE SET votes = votes + excluded.votes",
        (slug, option, step),
    )


def vote(slug: str, voter: str, option: int, now: dt.datetime) -> Operation[Outcome]:
    """The operation that records one click on `option` (1-based) and says what it did."""
    clicked = now.timestamp()

    def operation(db: sqlite3.Connection) -> Outcome:
        row = db.execute(
            "SELECT option, last_option, last_click FROM votes WHERE issue = ? AND voter = ?",
            (slug, voter),
        ).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO votes (issue, voter, option, last_option, last_click, voted_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (slug, voter, option, option, clicked, iso(now)),
            )
            _count(db, slug, option, 1)
            return Outcome.COUNTED
        counted, last_option, last_click = row
        burst = clicked - last_click <= SCANNER_SECONDS
        if option == last_option and (counted == option or burst):
            outcome, new = Outcome.UNCHANGED if counted == option else Outcome.VOID, counted
        elif burst:
            outcome, new = Outcome.VOID, None
        else:  # seconds later: the reader's choice (after a void burst it counts anew)
            outcome = Outcome.COUNTED if counted is None else Outcome.CHANGED
            new = option
        if new != counted:
            _count(db, slug, counted, -1)
            _count(db, slug, new, 1)
        db.execute(
            "UPDATE votes SET option = ?, last_option = ?, last_click = ?, voted_at = ? "
            "WHERE issue = ? AND voter = ?",
            (new, option, clicked, iso(now), slug, voter),
        )
        return outcome

    return operation


def record_vote(
    store: SuppressionStore, slug: str, voter: str, option: int, now: dt.datetime
) -> Outcome:
    """Record one click on `option` in its own transaction."""
    return store.run([vote(slug, voter, option, now)])[0]


def comment(slug: str, voter: str, text: str, now: dt.datetime) -> Operation[bool]:
    """The operation that keeps one comment per voter (a later one replaces it); False
    when the voter never voted."""

    def operation(db: sqlite3.Connection) -> bool:
        return bool(
            db.execute(
                "UPDATE votes SET comment = ?, commented_at = ? WHERE issue = ? AND voter = ?",
                (text, iso(now), slug, voter),
            ).rowcount
        )

    return operation


def record_comment(
    store: SuppressionStore, slug: str, voter: str, text: str, now: dt.datetime
) -> bool:
    return store.run([comment(slug, voter, text, now)])[0]


def clean_comment(text: str) -> str:
    """One line, at most COMMENT_CHARS characters, no control characters."""
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return line[:COMMENT_CHARS]


def results(store: SuppressionStore, info: PollInfo, *, comments: bool = False) -> Results:
    """The votes per option. Votes for an option the issue no longer has (its file was
    edited after the send) are kept as "option N (gone from the issue)": never dropped."""
    rows = store.read("SELECT option, votes FROM poll_counts WHERE issue = ?", (info.slug,))
    found_options = dict(rows)
    top = max((n for n, votes in found_options.items() if votes), default=0)
    options = info.options + tuple(
        f"option {n} (gone from the issue)" for n in range(len(info.options) + 1, top + 1)
    )
    counts = [found_options.get(n, 0) for n in range(1, len(options) + 1)]
    found = Results(info.slug, info.question, options, counts)
    if comments:
        found.comments = [
            {"text": text, "at": at}
            for text, at in store.read(
                "SELECT comment, commented_at FROM votes WHERE issue = ? AND comment != '' "
                "ORDER BY commented_at, voter",
                (info.slug,),
            )
        ]
    return found


def voted_issues(store: SuppressionStore) -> list[str]:
    """Slugs with at least one vote recorded (their issue file may be gone)."""
    return [row[0] for row in store.read("SELECT DISTINCT issue FROM poll_counts ORDER BY issue")]


def poll_report(settings: Settings, issue: str | None = None) -> list[Results]:
    """Results of one issue's poll (with comments), or of every poll with votes or in the
    issues folder. IssueError for an unknown issue or one without a poll."""
    from spark_mail.issue import load_issue, resolve_issue_path

    book = PollBook(settings.issues_path)
    with SuppressionStore.for_settings(settings) as store:
        if issue is not None:
            path = resolve_issue_path(issue, settings.issues_path)
            info = book.get(path.stem)
            if info is None and path.exists():
                load_issue(path)  # a broken file says so (IssueError), in one line
            info = info or _orphan(store, path.stem, _missing(path))
            if info is None:
                what = "has no poll" if path.exists() else "no such issue"
                raise IssueError(path, what, hint="`spark-mail poll results` lists the polls")
            return [results(store, info, comments=True)]
        known = {info.slug: info for info in book.all()}
        for slug in voted_issues(store):
            if slug not in known:
                orphan = _orphan(store, slug, _missing(settings.issues_path / f"{slug}.md"))
                if orphan is not None:
                    known[slug] = orphan
        return [results(store, known[slug], comments=True) for slug in sorted(known)]


def _missing(path: Path) -> str:
    """Why the votes of this issue have no poll to go with (the question shown instead)."""
    if not path.exists():
        return "(the issue file is gone)"
    return "(the issue file has no poll any more, or cannot be read)"


def _orphan(store: SuppressionStore, slug: str, question: str) -> PollInfo | None:
    """A poll whose issue has no poll to show but whose votes remain (options by number)."""
    rows = store.read("SELECT MAX(option) FROM poll_counts WHERE issue = ?", (slug,))
    top = rows[0][0] if rows else None
    if not top:
        return None
    options = tuple(f"option {n}" for n in range(1, top + 1))
    return PollInfo(slug, slug, dt.date(1970, 1, 1), question, options)
