"""What the provider tests share: the sample issue built, rendered once for per-reader
copies, readers to send it to, and batches cut small."""

from __future__ import annotations

from pathlib import Path

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
