"""The reader store's file: which file a connection has open, and what a failure of it
means for the operator (one line: a full disk, a folder it may not write, a lock, or a
damaged file are each fixed in a different way)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import stat
import threading
import weakref
from pathlib import Path

from spark_mail.errors import StoreError


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at `path`, None when there is none."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def open_lock_file(path: Path, store: Path) -> int:
    """A descriptor of the lock file `path`, made when missing with the store's mode and,
    when root makes it, the store's owner (as SQLite makes its -wal and -shm): a lock file
    `sudo spark-mail ...` left behind as root's 0600 locked the desk's own user out. Read
    only: an flock needs no more. Not blocking: a FIFO put there would wait for a writer."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        return regular_file(os.open(path, flags))
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it just now
        return regular_file(os.open(path, flags))
    try:
        found = os.stat(store)
        os.fchmod(fd, found.st_mode & 0o666)  # whatever the umask
        if os.geteuid() == 0:
            os.fchown(fd, found.st_uid, found.st_gid)
    except OSError:
        os.close(fd)
        raise
    return fd


def regular_file(fd: int) -> int:
    """`fd`, or OSError when it is not a plain file (a directory, a FIFO, a device)."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a plain file: remove it")
    return fd


class LockFile:
    """One open file description of the lock file (an flock belongs to it); closed when
    collected, so a store dropped without close() leaves no descriptor behind."""

    def __init__(self, path: Path, store: Path) -> None:
        self.fd = -1  # collected even when the open fails
        self.fd = open_lock_file(path, store)

    def unlock_and_close(self) -> None:
        with contextlib.suppress(OSError):
            fcntl.flock(self.fd, fcntl.LOCK_UN)  # even if a forked child has a copy
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    __del__ = close


class Waiter:
    """A thread blocked in flock on a lock file of its own, for a writer that may stop
    waiting (an flock cannot time out). Given up, it lets the turn go the moment it gets it."""

    def __init__(self, turns: WriterTurns) -> None:
        self.file = LockFile(turns.path, turns.store)
        self.wanted = True
        self.done = threading.Event()
        self.error: OSError | None = None
        thread = threading.Thread(
            target=turns.wait, args=(self,), name="spark-mail-writer-turn", daemon=True
        )
        thread.start()


class WriterTurns:
    """Writers of the store take turns on an flock of `<store>-writer`, held for one
    transaction. SQLite's own wait for its write lock sleeps and retries (1, 2, 5, 10 ...
    100 ms): two desk workers committing back to back left the loser asleep while the
    winner took the lock again, and the p99 of an unsubscribe went past 100 ms. A blocked
    flock wakes the moment the holder lets go. Writers that do not take a turn (another
    program) still meet SQLite's busy timeout.

    A wait is bounded (acquire's `timeout`, the store's busy timeout): a writer stopped
    mid-transaction (kill -STOP, a debugger) makes the others answer "locked", as SQLite's
    busy timeout did, instead of hanging. A wait given up stays pending (one thread, one
    descriptor) and the next acquire waits on it again. A forked child closes its copies of
    the descriptors (the flock would outlive a parent killed mid-transaction)."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.path = store.with_name(store.name + "-writer")
        self._file: LockFile | None = None
        self._held: LockFile | None = None
        self._waiter: Waiter | None = None
        self._mutex = threading.Lock()
        ALL_TURNS.add(self)

    def acquire(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for this process's turn to write: False when it did
        not come (OSError when the lock file cannot be opened)."""
        with self._mutex:
            waiter = self._waiter
            if waiter is None:
                if self._file is None:
                    self._file = LockFile(self.path, self.store)
                try:
                    fcntl.flock(self._file.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    waiter = self._waiter = Waiter(self)
                else:
                    self._held = self._file
                    return True
            waiter.wanted = True
        waiter.done.wait(timeout)
        with self._mutex:
            if not waiter.done.is_set():
                waiter.wanted = False  # it lets the turn go when it comes
                return False
        if waiter.error is not None:
            waiter.file.close()
            raise waiter.error
        self._held = waiter.file
        return True

    def wait(self, waiter: Waiter) -> None:
        """The waiter's thread."""
        try:
            fcntl.flock(waiter.file.fd, fcntl.LOCK_EX)
        except OSError as exc:
            waiter.error = exc
        with self._mutex:
            if self._waiter is waiter:
                self._waiter = None
            if waiter.wanted:
                waiter.done.set()
                return
        waiter.file.unlock_and_close()

    def release(self) -> None:
        held, self._held = self._held, None
        if held is self._file and held is not None:
            fcntl.flock(held.fd, fcntl.LOCK_UN)
        elif held is not None:
            held.unlock_and_close()  # a waiter's own file

    def close(self) -> None:
        with self._mutex:
            if self._waiter is not None:
                self._waiter.wanted = False
                self._waiter = None
        self.release()
        if self._file is not None:
            self._file.close()
            self._file = None

    def forked(self) -> None:
        """In a forked child: close the copies, never unlock (that would free the parent's turn)."""
        for file in {id(f): f for f in (self._file, self._held) if f is not None}.values():
            file.close()
        self._file = self._held = self._waiter = None
        self._mutex = threading.Lock()


ALL_TURNS: weakref.WeakSet[WriterTurns] = weakref.WeakSet()


def forget_turns_in_child() -> None:
    for turns in list(ALL_TURNS):
        turns.forked()


os.register_at_fork(after_in_child=forget_turns_in_child)


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
