"""The reader store's file: which file a connection has open, and what a failure of it
means for the operator (one line: a full disk, a folder it may not write, a lock, or a
damaged file are each fixed in a different way)."""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
from pathlib import Path

from spark_mail.errors import StoreError


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`, None when there is none."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


class WriterTurns:
    """Writers of the store take turns on an flock of `<store>-writer`, held for one
    transaction. SQLite's own wait for its write lock sleeps and retries (1, 2, 5, 10 ...
    100 ms): two desk workers committing back to back left the loser asleep while the
    winner took the lock again, and the p99 of an unsubscribe went past 100 ms. A blocked
    flock wakes the moment the holder lets go. Writers that do not take a turn (another
    program) still meet SQLite's busy timeout."""

    def __init__(self, store: Path) -> None:
        self.path = store.with_name(store.name + "-writer")
        self._fd: int | None = None
        self._pid = 0

    def acquire(self) -> None:
        """Wait for this process's turn to write (OSError when the lock file cannot be made)."""
        if self._fd is None or self._pid != os.getpid():  # a forked child needs its own
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None


def quietly(db: sqlite3.Connection, statement: str) -> None:
    """A clean-up statement whose own failure must not hide the error being raised."""
    try:
        if statement != "ROLLBACK" or db.in_transaction:
            db.execute(statement)
    except sqlite3.Error:
        pass


def store_failure(exc: sqlite3.Error | OSError) -> str:
    """What kind of failure: "locked", "full", "read-only", "io" or "damaged"."""
    if isinstance(exc, OSError):
        kinds = {errno.ENOSPC: "full", errno.EACCES: "read-only", errno.EPERM: "read-only"}
        kinds[errno.EROFS] = "read-only"
        return kinds.get(exc.errno or 0, "io")
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text or "busy" in text:
        return "locked"
    if name == "SQLITE_FULL" or "is full" in text:
        return "full"
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")) or (
        "readonly" in text
    ):
        return "read-only"
    if name.startswith("SQLITE_IOERR") or "disk I/O error" in text:
        return "io"
    return "damaged"


def store_error(path: Path, exc: sqlite3.Error | OSError) -> StoreError:
    """One line that says what went wrong and what to do: a full disk, a folder it may
    not write, a lock, or a damaged file are fixed in different ways."""
    text = str(exc.strerror if isinstance(exc, OSError) else exc)
    kind = store_failure(exc)
    lines = {
        "locked": (
            f"the reader store is locked by another process ({text})",
            "try again; if it stays locked, look for a stuck spark-mail process",
        ),
        "full": (
            f"the disk is full, the reader store cannot grow ({text})",
            "free some space on the disk of the state folder",
        ),
        "read-only": (
            f"the reader store cannot be written here ({text})",
            "let this user write the state folder and its files (systemd: ReadWritePaths=)",
        ),
        "io": (
            f"the reader store cannot be read or written ({text})",
            "check the disk of the state folder (space, errors, permissions)",
        ),
    }
    what, hint = lines.get(
        kind,
        (
            f"the reader store is unreadable ({text})",
            "restore it from a backup (see 'Deploying the reader desk' in the README)",
        ),
    )
    return StoreError(f"{path}: {what}", hint=hint)
