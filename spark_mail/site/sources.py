"""Which issue files the archive publishes, read from the ledger and the issues folder.

- Sent issues (the ledger's `sent` rows), dated by their send. A sent issue whose file was
  renamed since is found by its text (the ledger keeps the file's hash, as it does to
  refuse a second send of a renamed file) and stays at the address its emails carry.
- With `include_unsent`, every other issue file too (a preview).
- Files are read as every command reads an issue file (files.read_issue_file): a FIFO or
  a device under an issue's name is refused, never waited on.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from spark_mail.config import Settings
from spark_mail.errors import IssueError
from spark_mail.files import issue_files, read_issue_file
from spark_mail.ledger import SendRecord, SendState, open_ledger


@dataclass(frozen=True)
class Source:
    """An issue file to publish: its content's hash and, once sent, when. `slug` is the
    issue's name in the ledger and its address (the file's name, unless renamed since)."""

    path: Path
    slug: str
    digest: str
    sent_at: str | None  # None: not sent (a preview with --include-unsent)


def file_digest(path: Path) -> str:
    return hashlib.sha256(read_issue_file(path)).hexdigest()


def find_sources(settings: Settings, include_unsent: bool) -> tuple[list[Source], list[str]]:
    """The issue files to publish, and warnings about sent issues whose file is gone."""
    with open_ledger(settings) as ledger:
        sent = {r.slug: r for r in ledger.all() if r.state == SendState.SENT}
    files = {path.stem: path for path in issue_files(settings.issues_path)}
    moved = renamed_files(sent, files)
    warnings = [
        f"{slug} was sent but {settings.issues_path / slug}.md is gone: it is not in the archive"
        for slug in sorted(sent.keys() - files.keys() - moved.keys())
    ]
    published = {slug: path for slug, path in files.items() if slug in sent} | moved
    sources = [
        Source(path, slug, file_digest(path), sent_time(sent[slug]))
        for slug, path in published.items()
    ]
    if include_unsent:
        taken = set(moved.values())  # a renamed sent issue is not also a draft
        sources += [
            Source(path, slug, file_digest(path), None)
            for slug, path in files.items()
            if slug not in sent and path not in taken
        ]
    return sources, warnings


def sent_time(record: SendRecord) -> str:
    return record.sent_at or record.updated_at


def renamed_files(sent: dict[str, SendRecord], files: dict[str, Path]) -> dict[str, Path]:
    """Sent issue -> the file it was renamed to: a file no send names, with the very text
    the ledger recorded for a sent issue whose own file is gone."""
    lost = {r.source_hash: slug for slug, r in sent.items() if slug not in files and r.source_hash}
    found: dict[str, Path] = {}
    for slug, path in files.items():
        if not lost:
            break
        if slug in sent:
            continue
        try:
            digest = file_digest(path)
        except IssueError:  # a file that cannot be read is not the renamed issue
            continue
        if digest in lost:
            found[lost.pop(digest)] = path
    return found
