"""The per-issue OS lock: one live process sends an issue at a time.

`<ledger>.locks/<slug>.lock`, taken with flock without waiting and held until the caller
releases it explicitly (the send lifecycle does, when the send is settled). The OS drops
it when its holder dies, even by SIGKILL, so a lock never outlives its process.
"""

from __future__ import annotations

import fcntl
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from spark_mail.errors import LedgerError
from spark_mail.files import make_folder
from spark_mail.ledger.db import LEDGER_SETTINGS


class IssueLocks:
    def __init__(self, ledger_path: Path) -> None:
        self.folder = ledger_path.with_name(ledger_path.name + ".locks")
        self._held: dict[str, int] = {}  # slug -> fd of the held lock file

    def path(self, slug: str) -> Path:
        from spark_mail.issue import slug_problem

        problem = slug_problem(slug)
        if problem is not None:
            raise LedgerError(f"{slug!r} is not a usable issue name for a lock file: {problem}")
        return self.folder / f"{slug}.lock"

    def holds(self, slug: str) -> bool:
        return slug in self._held

    def try_acquire(self, slug: str) -> bool:
        """Take the issue's lock without waiting; False while another live process has it."""
        if slug in self._held:
            return True
        path = self.path(slug)
        make_folder(path.parent, LEDGER_SETTINGS)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LedgerError(
                f"{path}: cannot create the issue's lock file ({exc.strerror})",
                hint="check that the state folder is writable",
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._held[slug] = fd
        return True

    def held_elsewhere(self, slug: str) -> bool:
        """True while another live process holds the issue's lock (it is sending right now).
        The probe takes the lock for an instant; a claim racing with it finds it taken and
        the next run sends."""
        if slug in self._held:
            return False
        path = self.path(slug)
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a lock we may have taken
        return False

    def release(self, slug: str) -> None:
        fd = self._held.pop(slug, None)
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def release_all(self) -> None:
        for slug in list(self._held):
            self.release(slug)


# Owners (see process_id) sending in this process right now: two sends in one process are
# told apart too (a library user's threads, or a test).
_ACTIVE: set[str] = set()


def process_id() -> str:
    """A sender as the ledger records it: host, pid, the pid's start time (a pid the OS
    reuses later is not taken for this process) and a token of this one send."""
    token = uuid.uuid4().hex[:12]
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}:{token}"


@contextmanager
def sending_as(owner: str) -> Iterator[None]:
    """While the block runs, `owner` counts as alive (for this process's other sends)."""
    _ACTIVE.add(owner)
    try:
        yield
    finally:
        _ACTIVE.discard(owner)


def owner_alive(owner: str | None) -> bool:
    """Whether the process recorded as `owner` still runs (on this host). A live owner
    means the issue is being sent, even if its lock file was removed under it."""
    if not owner:
        return False
    host, pid_text, started, *_ = [*owner.split(":"), "", "", ""]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return owner in _ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return _start_time(pid) == started


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), "" where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]
