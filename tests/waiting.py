"""Waiting on another process's state: a file it writes, a server it starts answering.

The one place the tests poll. Nothing outside those processes announces these states (an
event to wait on would have to be added to spark-mail for the tests' sake), so a wait looks
every `interval` until `ready()` holds, and fails when the process ends first or when the
deadline passes. The deadline only bounds the wait: a busy machine makes it slower, never
wrong.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def poll_until(
    ready: Callable[[], bool],
    what: str,
    *,
    process: subprocess.Popen[Any] | None = None,
    timeout: float = 30,
    interval: float = 0.02,
) -> None:
    """Return once `ready()`; AssertionError when `process` ends first (with what it
    printed, where its output is piped) or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if process is not None and process.poll() is not None:
            output = process.communicate() if process.stdout or process.stderr else ""
            raise AssertionError(f"exited {process.returncode} before {what}: {output}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)  # another process's state: see the module's docstring


def answers(get: Callable[[], int], *errors: type[Exception]) -> Callable[[], bool]:
    """A `ready` that holds once `get()` (a request's status) is 200; `errors` (connection
    refused while the server starts) count as not yet."""

    def ready() -> bool:
        try:
            return get() == 200
        except errors:
            return False

    return ready


@contextmanager
def reaped(process: subprocess.Popen[Any]) -> Iterator[subprocess.Popen[Any]]:
    """`process` for the block; still running at its end (the test failed half-way), it is
    killed and waited for, so no test leaves a process behind."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
