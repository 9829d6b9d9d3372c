"""Times in the newsletter's zone: `send_at` without an offset, `--now`, `--at`."""

from __future__ import annotations

import datetime as dt

from spark_mail.config import Settings
from spark_mail.errors import ConfigError


def zone(settings: Settings) -> dt.tzinfo:
    """The newsletter's time zone (an IANA name), with a clear error for a wrong one."""
    return settings.tzinfo()


def in_zone(when: dt.datetime, settings: Settings) -> dt.datetime:
    """`when` with an offset: a naive time is read in the newsletter's time zone."""
    return when if when.tzinfo is not None else when.replace(tzinfo=zone(settings))


def parse_time(text: str, settings: Settings, what: str = "--now") -> dt.datetime:
    """An ISO 8601 date and time from the command line (no offset: the newsletter's zone)."""
    try:
        when = in_zone(dt.datetime.fromisoformat(text.strip()), settings)
        when.astimezone(dt.UTC)  # 9999-12-31T23:00-05:00 has no UTC time
    except (ValueError, OverflowError):
        raise ConfigError(
            f"{what}: {text!r} is not an ISO 8601 date and time spark-mail can use",
            hint="write it like 2025-01-20T07:00:00+01:00 (or without the offset for the "
            "newsletter's timezone)",
        ) from None
    return when


def ago(delta: dt.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"
