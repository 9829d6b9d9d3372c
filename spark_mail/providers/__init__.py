"""Email service providers: one module per ESP behind the protocol in `base.py`.

`get_provider(settings)` picks the one SPARK_MAIL_PROVIDER names; with none configured it is
the outbox (`.eml` files in outbox/), so everything works without an account.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spark_mail.errors import ConfigError

if TYPE_CHECKING:
    import httpx

    from spark_mail.config import Settings
    from spark_mail.providers.base import Provider

PROVIDERS = ("outbox", "buttondown", "resend", "postmark", "smtp")


def get_provider(settings: Settings, transport: httpx.BaseTransport | None = None) -> Provider:
    """The configured provider. `transport` replaces the network for HTTP providers (a
    DryRunTransport makes every provider record instead of send)."""
    name = (settings.provider or "outbox").strip().lower()
    if name == "buttondown":
        from spark_mail.providers.buttondown import ButtondownProvider

        return ButtondownProvider(settings, transport)
    if name == "resend":
        from spark_mail.providers.resend import ResendProvider

        return ResendProvider(settings, transport)
    if name == "postmark":
        from spark_mail.providers.postmark import PostmarkProvider

        return PostmarkProvider(settings, transport)
    if name == "smtp":
        from spark_mail.providers.smtp import SmtpProvider

        return SmtpProvider(settings, transport)
    if name == "outbox":
        from spark_mail.providers.outbox import OutboxProvider

        return OutboxProvider(settings, transport)
    import difflib

    close = difflib.get_close_matches(name, PROVIDERS, n=1)
    raise ConfigError(
        f"SPARK_MAIL_PROVIDER={settings.provider!r} is not a provider spark-mail knows",
        hint=f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(PROVIDERS)}",
    )
