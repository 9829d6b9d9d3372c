"""Email service providers: one module per ESP behind the protocol in `base.py`.

`get_provider(settings)` picks the one SPARK_MAIL_PROVIDER names; with none configured it is
the outbox (`.eml` files in outbox/), so everything works without an account.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from spark_mail.errors import ConfigError

if TYPE_CHECKING:
    import httpx

    from spark_mail.config import Settings
    from spark_mail.providers.base import Capability, Provider

# name -> "module:class", imported only when chosen (each pulls in its own client code)
PROVIDERS = {
    "outbox": "spark_mail.providers.outbox:OutboxProvider",
    "buttondown": "spark_mail.providers.buttondown:ButtondownProvider",
    "resend": "spark_mail.providers.resend:ResendProvider",
    "postmark": "spark_mail.providers.postmark:PostmarkProvider",
    "smtp": "spark_mail.providers.smtp:SmtpProvider",
}


def provider_name(value: str, source: str = "SPARK_MAIL_PROVIDER") -> str:
    """The provider `value` names (default: the outbox); a name spark-mail does not know is
    blamed on where it came from (`source`: the variable or the flag)."""
    name = (value or "outbox").strip().lower()
    if name in PROVIDERS:
        return name
    import difflib

    close = difflib.get_close_matches(name, PROVIDERS, n=1)
    shown = f"{source} {value!r}" if source.startswith("-") else f"{source}={value!r}"
    raise ConfigError(
        f"{shown} is not a provider spark-mail knows",
        hint=f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(PROVIDERS)}",
    )


def get_provider(
    settings: Settings,
    transport: httpx.BaseTransport | None = None,
    need: Capability | None = None,
) -> Provider:
    """The configured provider. `transport` replaces the network for HTTP providers (a
    DryRunTransport makes every provider record instead of send). `need`: a provider that
    cannot do it is refused before it is set up (before it asks for an API key)."""
    module, _, attribute = PROVIDERS[provider_name(settings.provider)].partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module), attribute)
    if need is not None:
        cls.require(need)
    return cls(settings, transport)
