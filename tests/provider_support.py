"""What the provider tests share: the sample issue built, rendered once for per-reader
copies, readers to send it to, batches cut small, and a hung request ended soon after the
fake ESP has acted."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpcore
import pytest

from conftest import SAMPLE_ISSUE
from esp_server import FakeEsp, settings_for
from spark_mail.audience import Reader
from spark_mail.personalize import PersonalizedTemplate, prepare
from spark_mail.render import RenderedEmail, build


def sample_email(root: Path) -> RenderedEmail:
    """The sample issue as built for the newsletter in `root`."""
    from spark_mail.config import load_settings

    return build(SAMPLE_ISSUE, load_settings(root, env={}))


def sample_template(esp: FakeEsp, root: Path, provider: str, **env: str) -> PersonalizedTemplate:
    """The sample issue rendered once for per-reader copies, sent through `provider`."""
    return prepare(root / "issues" / SAMPLE_ISSUE.name, settings_for(esp, root, provider, **env))


def sample_readers(count: int, first_name: str = "") -> list[Reader]:
    fields = {"first_name": first_name} if first_name else {}
    return [
        Reader(f"r{i}@example.com", {"email": f"r{i}@example.com", **fields}, i + 2)
        for i in range(count)
    ]


def batches_of(monkeypatch: pytest.MonkeyPatch, provider: str, size: int) -> None:
    """`provider` cuts its batches at `size` readers, below its API's limit (Resend 100,
    Postmark 500, Mailgun 1,000, ...): a test about several batches needs several batches,
    not the thousands of readers the API's own limit would take to make them."""
    from spark_mail.providers.registry import provider_class

    monkeypatch.setattr(provider_class(provider), "batch_size", size)


# The request the fake ESP acts on and then leaves hanging (or drips its answer into) can
# only end by its deadline, and waiting out send_timeout for it was most of these cases' time
# (1 s each). So once the fake ESP has acted and begun to hang or drip on a connection, what
# is left of that one request's deadline is cut to SPOILT_DEADLINE s: it still ends as the
# deadline ends it (spark_mail/providers/deadline.py), after the ESP acted, and a drip still
# has several bytes arrive each within its read's timeout. Every other request keeps
# send_timeout, however busy the machine.
SPOILT_DEADLINE = 0.2
LOOK_EVERY = 0.02  # how often a waiting read looks whether its answer began to hang or drip


def spoilt_requests_end(esp: FakeEsp, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads wait in LOOK_EVERY slices while the deadline lasts; a read whose connection the
    fake ESP marked spoilt gets the cut deadline, then reads as it would."""
    from spark_mail.providers import deadline as module

    read = module._DeadlineStream.read

    def watched(stream: Any, max_bytes: int, timeout: float | None = None) -> bytes:
        address = tuple(stream.get_extra_info("client_addr")[:2])
        while True:
            end = getattr(module._local, "deadline", None)  # http.py sets it per request
            began = esp.spoilt.get(address)
            if end is None or began is not None or time.monotonic() >= end:
                if end is not None and began is not None:
                    module._local.deadline = min(end, began + SPOILT_DEADLINE)
                return read(stream, max_bytes, timeout)  # a deadline passed: its ReadTimeout
            try:
                return read(stream, max_bytes, min(timeout or LOOK_EVERY, LOOK_EVERY))
            except httpcore.ReadTimeout:  # a slice ended (or the deadline, seen above)
                continue

    monkeypatch.setattr(module._DeadlineStream, "read", watched)
