"""Which provider sends: the one SPARK_MAIL_PROVIDER names (default: the outbox, so
everything works without an ESP account), built with the clock and, for dry runs, the
recorder that stands in for the network.

Providers are the built-in ones below and those other packages add through the entry point
group `spark_mail.providers` (name = "module:Class", a Provider subclass; see the README's
"Writing a provider"). A package's provider whose name is a built-in one is ignored with a
warning: the built-in one wins, so installing a package cannot silently change where mail
goes. Each is imported only when chosen.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import logging
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from spark_mail.clock import SYSTEM_CLOCK, Clock
from spark_mail.errors import ConfigError

if TYPE_CHECKING:
    from spark_mail.config import Settings
    from spark_mail.providers.base import Capability, Provider
    from spark_mail.providers.recorder import DryRunRecorder

log = logging.getLogger("spark_mail.providers")
ENTRY_POINT_GROUP = "spark_mail.providers"

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


@functools.cache
def installed() -> dict[str, EntryPoint]:
    """Providers other packages add (entry point group `spark_mail.providers`), by name;
    read once per process."""
    found: dict[str, EntryPoint] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        name = point.name.strip().lower()
        package = point.dist.name if point.dist is not None else point.value
        if name in BUILT_IN:
            log.warning(
                "the provider %r of the package %s is ignored: spark-mail has a built-in "
                "provider of that name",
                name,
                package,
            )
        elif name in found:
            log.warning(
                "the provider %r of the package %s is ignored: another has it", name, package
            )
        else:
            found[name] = point
    return found


def known_providers() -> tuple[str, ...]:
    return PROVIDERS + tuple(sorted(installed()))


def provider_name(value: str, source: str = "SPARK_MAIL_PROVIDER") -> str:
    """The provider `value` names (default: the outbox); a name spark-mail does not know is
    blamed on where it came from (`source`: the variable, or the flag)."""
    name = (value or "outbox").strip().lower()
    known = known_providers()
    if name in known:
        return name
    close = difflib.get_close_matches(name, known, n=1)
    shown = f"{source} {value!r}" if source.startswith("-") else f"{source}={value!r}"
    raise ConfigError(
        f"{shown} is not a provider spark-mail knows",
        hint=f"did you mean {close[0]!r}?" if close else f"use one of {', '.join(known)}",
    )


def provider_class(name: str) -> type[Provider]:
    from spark_mail.providers.base import Provider

    name = provider_name(name)
    if name in BUILT_IN:
        module, _, cls = BUILT_IN[name].partition(":")
        built_in: type[Provider] = getattr(importlib.import_module(module), cls)
        return built_in
    point = installed()[name]
    try:
        loaded = point.load()
    except Exception as exc:  # a third-party package: whatever it raises is one line
        raise ConfigError(
            f"provider {name!r} ({point.value}) cannot be loaded: {type(exc).__name__}: {exc}",
            hint="reinstall the package that provides it, or choose another SPARK_MAIL_PROVIDER",
        ) from None
    if not (isinstance(loaded, type) and issubclass(loaded, Provider)):
        raise ConfigError(
            f"provider {name!r} ({point.value}) is not a spark_mail Provider class",
            hint="its entry point must name a subclass of spark_mail.providers.base.Provider",
        )
    return loaded


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
