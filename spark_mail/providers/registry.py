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
    from spark_mail.providers.base import Capability, Provider
    from spark_mail.providers.recorder import DryRunRecorder

# name -> "module:class", imported only when chosen (each pulls in what it needs).
BUILT_IN = {
    "outbox": "spark_mail.providers.outbox:OutboxProvider",
    "buttondown": "spark_mail.providers.buttondown:ButtondownProvider",
    "resend": "spark_mail.providers.resend:ResendProvider",
    "postmark": "spark_mail.providers.postmark:PostmarkProvider",
    "smtp": "spark_mail.providers.smtp:SmtpProvider",
    "mailgun": "spark_mail.providers.mailgun:MailgunProvider",
    "sendgrid": "spark_mail.providers.sendgrid:SendgridProvider",
    "ses": "spark_mail.providers.ses:SesProvider",
}
PROVIDERS = tuple(BUILT_IN)


def provider_name(value: str, source: str = "SPARK_MAIL_PROVIDER") -> str:
    """The provider `value` names (default: the outbox); a name spark-mail does not know is
    blamed on where it came from (`source`: the variable, or the flag)."""
    name = (value or "outbox").strip().lower()
    if name in BUILT_IN:
        return name
    close = difflib.get_close_matches(name, PROVIDERS, n=1)
    shown = f"{source} {value!r}" if source.startswith("-") else f"{source}={value!r}"
    raise ConfigError(
        f"{shown} is not a provider spark-mail knows",
        hint=f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(PROVIDERS)}",
    )


def provider_class(name: str) -> type[Provider]:
    module, _, cls = BUILT_IN[provider_name(name)].partition(":")
    provider: type[Provider] = getattr(importlib.import_module(module), cls)
    return provider


def get_provider(
    settings: Settings,
    *,
    clock: Clock = SYSTEM_CLOCK,
    recorder: DryRunRecorder | None = None,
    need: Capability | None = None,
) -> Provider:
    """The configured provider; with a `recorder` it records instead of sending. `need`: a
    provider that cannot do it is refused before it is set up (before it asks for a key)."""
    cls = provider_class(settings.provider or "outbox")
    if need is not None:
        cls.require(need)
    return cls(settings, clock=clock, recorder=recorder)
