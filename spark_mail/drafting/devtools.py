"""Headless Chromium driven over its DevTools pipe, for snapshots without Playwright.

`chromium --remote-debugging-pipe` reads DevTools protocol commands from its file
descriptor 3 and writes answers and events to 4, each message JSON ended by a NUL byte
(the pipe Playwright and Puppeteer use). One Chromium process then takes every picture:
launching Chromium costs about a second, a picture a fraction of that.

    with DevTools(chromium, flags, timeout=60) as tools:
        page = tools.open_page()                 # a session id
        tools.call("Page.navigate", {"url": url}, page)
        tools.wait_for("Page.loadEventFired", page)

A command Chromium refuses, a Chromium that exits or a timeout: SnapshotError.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time
from collections.abc import Sequence
from typing import Any

from spark_mail.clock import SYSTEM_CLOCK
from spark_mail.errors import SnapshotError

CLOSE_SECONDS = 10


def failed(what: str) -> SnapshotError:
    return SnapshotError(
        f"headless Chromium failed: {what}",
        hint="check that chromium starts (`chromium --headless --version`)",
    )


def _read_to_the_end(fd: int, deadline: float) -> None:
    """Read and drop what comes on `fd` until it is closed at the other end or `deadline`."""
    while (left := deadline - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
        try:
            if not os.read(fd, 1 << 20):
                return
        except OSError:
            return


def _parse(raw: bytes, what: str) -> dict[str, Any]:
    """One message from Chromium: a JSON object, else SnapshotError (not a DevTools pipe)."""
    try:
        message = json.loads(raw)
    except ValueError:  # not JSON, not UTF-8
        message = None
    if not isinstance(message, dict):
        raise failed(f"what came back for {what} is not the DevTools protocol: {raw[:40]!r}")
    return message


class DevTools:
    """One headless Chromium process and the pipe to it (POSIX: descriptors 3 and 4)."""

    def __init__(self, chromium: str, flags: Sequence[str], *, timeout: float) -> None:
        import fcntl

        self.timeout = timeout
        self.next_id = 0
        self.pending = b""
        self.events: list[dict[str, Any]] = []
        self.pid = 0
        commands_read, self.commands = os.pipe()
        self.answers, answers_write = os.pipe()
        ends = (commands_read, answers_write)
        # Chromium's ends moved above 9 first, so that putting them on 3 and 4 in the child
        # never overwrites one with the other
        theirs = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in ends]
        os.close(commands_read)
        os.close(answers_write)
        quiet = (os.O_RDWR, 0)
        try:
            self.pid = os.posix_spawn(
                chromium,
                [chromium, *flags, "--remote-debugging-pipe"],
                os.environ,
                file_actions=[
                    *((os.POSIX_SPAWN_OPEN, fd, os.devnull, *quiet) for fd in (0, 1, 2)),
                    (os.POSIX_SPAWN_DUP2, theirs[0], 3),
                    (os.POSIX_SPAWN_DUP2, theirs[1], 4),
                ],
            )
        except OSError as exc:
            self.close()
            raise failed(f"{chromium} did not start ({exc.strerror})") from None
        finally:
            for fd in theirs:
                os.close(fd)

    def __enter__(self) -> DevTools:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ask Chromium to close (it then ends its helper processes itself); kill it when
        it has not within a few seconds, or when the wait is cut short (a second Ctrl-C)."""
        try:
            if self.pid:
                with contextlib.suppress(OSError):  # gone already
                    os.write(self.commands, b'{"id": 0, "method": "Browser.close"}\0')
                deadline = time.monotonic() + CLOSE_SECONDS
                _read_to_the_end(self.answers, deadline)  # its end closes as it exits
                while not os.waitpid(self.pid, os.WNOHANG)[0]:
                    if time.monotonic() > deadline:
                        break
                    SYSTEM_CLOCK.sleep(0.01)  # it ends just after its pipe: a moment at most
                else:
                    self.pid = 0
        finally:
            if self.pid:
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                self.pid = 0
            for fd in (self.commands, self.answers):
                with contextlib.suppress(OSError):
                    os.close(fd)

    def open_page(self) -> str:
        """A new blank page; the session id its commands go to."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        found = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})
        return str(found["sessionId"])

    def call(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        """Send one command; its result (SnapshotError when Chromium refuses it)."""
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self.commands, data) :]
        except OSError as exc:
            raise failed(f"Chromium stopped reading ({exc.strerror})") from None
        answer = self._receive(lambda m: m.get("id") == self.next_id, method)
        if "error" in answer:
            error = answer["error"]
            raise failed(
                f"{method}: {error.get('message', error) if isinstance(error, dict) else error}"
            )
        return answer.get("result", {})

    def wait_for(self, event: str, session: str = "") -> dict[str, Any]:
        """The next `event` of `session` (one that came while a command waited counts)."""

        def wanted(message: dict[str, Any]) -> bool:
            return message.get("method") == event and message.get("sessionId", "") == session

        for index, message in enumerate(self.events):
            if wanted(message):
                return self.events.pop(index)
        return self._receive(wanted, event)

    def _receive(self, wanted: Any, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self.pending:
                raw, self.pending = self.pending.split(b"\0", 1)
                message = _parse(raw, what)
                if wanted(message):
                    return dict(message)
                if "method" in message:
                    self.events.append(message)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.answers], [], [], left)[0]:
                raise failed(f"no answer to {what} within {self.timeout:g} s")
            chunk = os.read(self.answers, 1 << 20)
            if not chunk:
                raise failed(f"Chromium exited during {what}")
            self.pending += chunk
