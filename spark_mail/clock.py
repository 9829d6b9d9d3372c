"""Time, behind one seam: "now", a monotonic reading, and sleeping.

Retries, rate limits, the late window, scanner detection on the reader desk: everything
that asks what time it is or waits goes through a Clock, so tests run on a FakeClock that
advances only when told (or when code sleeps on it) and never waits for real.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back (for durations)."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait this long (a FakeClock just moves forward)."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """A clock for tests: starts at `start`, moves only by `advance` or `sleep` (which
    returns at once), and records every sleep so a test can assert on the waits."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self._now = start or dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        self._monotonic = 1000.0
        self._lock = threading.Lock()
        self.sleeps: list[float] = []

    def now(self) -> dt.datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += dt.timedelta(seconds=seconds)
            self._monotonic += seconds

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds > 0:
            self.advance(seconds)
