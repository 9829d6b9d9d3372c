"""Which provider sends: the one SPARK_MAIL_PROVIDER names (default: the outbox, so
everything works without an ESP account), built with the clock and, for dry runs, the
recorder that stands in for the network."""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

from spark_mail.clock import SYSTEM_CLOCK, Clock
from spark_mail.errors import ConfigError

if TYPE_CHECKING:
    from spark_mail.config import Settings
    from spark_mail.providers.base import Provider
    from spark_mail.providers.recorder import DryRunRecorder

# name -> "module:class", imported only when chosen (each pulls in what it needs).
BUILT_IN = {
    "outbox": "spark_mail.providers.outbox:OutboxProvider",
    "buttondown": "spark_mail.providers.buttondown:ButtondownProvider",
    "resend": "spark_mail.providers.resend:ResendProvider",
    "postmark": "spark_mail.providers.postmark:PostmarkProvider",
    "smtp": "spark_mail.providers.smtp:SmtpProvider",
}
PROVIDERS = tuple(BUILT_IN)


def provider_class(name: str, *, what: str = "SPARK_MAIL_PROVIDER") -> type[Provider]:
    """The provider class for `name`; `what` names where the name came from, for errors."""
    target = BUILT_IN.get(name.strip().lower())
    if target is None:
        close = difflib.get_close_matches(name.strip().lower(), PROVIDERS, n=1)
        raise ConfigError(
            f"{what}={name!r} is not a provider spark-mail knows",
            hint=f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(PROVIDERS)}",
        )
    module, _, cls = target.partition(":")
    provider: type[Provider] = getattr(importlib.import_module(module), cls)
    return provider


def get_provider(
    settings: Settings, *, clock: Clock = SYSTEM_CLOCK, recorder: DryRunRecorder | None = None
) -> Provider:
    """The configured provider; with a `recorder` it records instead of sending."""
    cls = provider_class(settings.provider or "outbox")
    return cls(settings, clock=clock, recorder=recorder)
