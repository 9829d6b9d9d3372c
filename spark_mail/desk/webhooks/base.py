"""What every ESP's webhook receiver shares: the protocol, refusals, and reading the JSON
and the times an ESP sends.

A receiver checks that a delivery comes from the ESP (a password, an HMAC, a signature)
BEFORE anything in it is acted on, and raises WebhookRefused otherwise (401: nothing is
recorded). Only then does it turn the body into EspEvents.
"""

from __future__ import annotations

import abc
import base64
import binascii
import datetime as dt
import email.utils as email_utils
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeGuard
from urllib.parse import unquote

from spark_mail.audience.events import EspEvent
from spark_mail.clock import Clock
from spark_mail.config import ENV_PREFIX, Settings
from spark_mail.errors import WebhookRefused

TOLERANCE_SECONDS = 300  # a signed timestamp this far from now is refused (replays)
ISSUE_IN_LINK = re.compile(r"[?&]issue=([^&>\s]+)")


@dataclass
class Delivery:
    """One webhook request, checked: its events, and what else the desk must do."""

    events: list[EspEvent] = field(default_factory=list)
    token: tuple[str, str] | None = None  # (provider, token) to accept only once
    confirm_url: str | None = None  # SNS: a subscription to confirm by fetching this


class Receiver(abc.ABC):
    """One ESP's webhook. `configured` is False until its setting is there (the route then
    answers 404: nobody can feed events into a store the operator did not set up)."""

    name: ClassVar[str]
    setting: ClassVar[str]  # the environment variable that switches it on

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock

    @property
    def configured(self) -> bool:
        """Its setting is there (the settings field `setting` fills, as config reads it); a
        receiver whose setting must also be well-formed says so itself."""
        return bool(getattr(self.settings, self.setting.removeprefix(ENV_PREFIX).lower()))

    @abc.abstractmethod
    async def receive(self, headers: Mapping[str, str], body: bytes) -> Delivery:
        """The checked delivery; WebhookRefused when it does not check out."""


def forged(what: str) -> WebhookRefused:
    """The refusal of a request that does not prove it comes from the ESP (401)."""
    return WebhookRefused(401, "Not accepted", what)


def unreadable(what: str) -> WebhookRefused:
    return WebhookRefused(400, "Unreadable", what)


def parse_json(body: bytes, shape: type = dict) -> Any:
    """The body as JSON of `shape` (dict or list); 400 otherwise."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise unreadable("the body is not UTF-8 JSON") from None
    if not isinstance(value, shape):
        raise unreadable(f"the body is not a JSON {shape.__name__}")
    return value


def b64(text: str) -> bytes:
    """Base64 (padding optional) or b""."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return b""


def check_timestamp(value: str, now: float, what: str) -> None:
    """A signed timestamp (seconds since 1970) within TOLERANCE_SECONDS of now."""
    try:
        moment = float(value)
    except ValueError:
        raise forged(f"{what} is not a timestamp") from None
    if not abs(now - moment) <= TOLERANCE_SECONDS:
        raise forged(f"{what} is more than {TOLERANCE_SECONDS // 60} minutes from now")


def parse_time(value: object, default: dt.datetime) -> dt.datetime:
    """An ESP's time: ISO 8601, an HTTP date or seconds since 1970; `default` otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        except (OverflowError, OSError, ValueError):
            return default
    if not isinstance(value, str) or not value.strip():
        return default
    text = value.strip()
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = email_utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return default
    try:  # in UTC, or the default when that falls outside the calendar (year 1, 9999)
        return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
    except (OverflowError, ValueError):
        return default


def text(value: object) -> str:
    """A string field of the ESP's JSON ("" for anything else)."""
    return value.strip() if isinstance(value, str) else ""


def mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def issue_in_link(link: str) -> str:
    """The issue of a spark-mail reader link (List-Unsubscribe carries one): `issue=<slug>`."""
    found = ISSUE_IN_LINK.search(link)
    return unquote(found.group(1)) if found else ""


def addressed(address: object) -> TypeGuard[str]:
    """An address an event can be about (one @, no spaces)."""
    return (
        isinstance(address, str)
        and address.count("@") == 1
        and not any(c.isspace() for c in address.strip())
    )
