"""The answers `spark-mail init` makes a newsletter from, each checked before anything is
written: one line of text without control characters (they would end up raw in the
settings file), email addresses, the public https site (no spaces, no port out of range, no
user or password: it is written into the committed settings and every email), a time zone,
a layout name; and this machine's time zone, the default.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from spark_mail.errors import ConfigError
from spark_mail.safe_text import describe, forbidden_character

LAYOUT_NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
# Characters no web address holds as they are (RFC 3986 leaves them out; whitespace and
# control characters are checked besides).
NOT_IN_URLS = set('"<>\\^`{|}')


def one_line(flag: str) -> Callable[[str], str]:
    def clean(value: str) -> str:
        text = " ".join(value.split())
        if not text or "\n" in value or "\r" in value:
            raise ConfigError(f"{flag}: give one line of text, not {value!r}")
        refuse_control_characters(flag, text)
        return text

    return clean


def refuse_control_characters(flag: str, text: str) -> None:
    """A control character (an escape sequence, NUL, DEL) would go raw into the settings
    file, which every later command would then refuse: refused here, naming the flag."""
    bad = forbidden_character(text)
    if bad is not None:
        raise ConfigError(
            f"{flag} {text!r} contains {describe(bad)}",
            hint="type the text without it",
        )


def clean_address(value: str, flag: str = "--reply-to") -> str:
    """One email address (email-validator's syntax rules, no DNS lookup)."""
    from spark_mail.audience import AddressValidator

    try:
        return AddressValidator().normalise(value.strip())
    except ValueError as exc:
        raise ConfigError(
            f"{flag} {value!r} is not an email address ({exc})", hint="e.g. hello@example.com"
        ) from None


def clean_sender(value: str) -> str:
    """`--from`: an address, or `Name <address>`."""
    from email.utils import formataddr, parseaddr

    refuse_control_characters("--from", value)
    name, address = parseaddr(value)
    if "\n" not in value and "\r" not in value:
        with contextlib.suppress(ConfigError):
            return formataddr((name, clean_address(address, "--from")))
    raise ConfigError(
        f"--from {value!r} is not an email address",
        hint='e.g. hello@news.example.com or "My News <hello@news.example.com>"',
    )


def clean_site_url(value: str) -> str:
    """`--url`: the newsletter's public https site; a bare host gets https://."""
    from urllib.parse import urlsplit

    text = value.strip()
    if text and "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if "@" in parts.netloc:  # said without repeating the value: it holds a password
        raise ConfigError(
            "--url: a site address carries no user name or password (it would be written "
            "into spark-mail.toml and every email)",
            hint="give the public address only, e.g. https://news.example.com",
        )
    problem = next(
        (f": {c!r} cannot stand in one" for c in text
         if c.isspace() or c in NOT_IN_URLS or not c.isprintable()),
        "",
    )  # fmt: skip
    try:
        parts.port  # noqa: B018 (a port that is no port raises here)
    except ValueError:
        problem = problem or ": its port is not a number from 0 to 65535"
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment or problem:
        raise ConfigError(
            f"--url {value!r} is not an https site address{problem}",
            hint="e.g. https://news.example.com (mail clients and the checks refuse http links)",
        )
    return text.rstrip("/")


def clean_timezone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"--timezone {value!r} is not a time zone", hint="use an IANA name: Europe/Paris"
        ) from None
    return value


def clean_layout(value: str) -> str:
    if not LAYOUT_NAME_RE.fullmatch(value):
        raise ConfigError(
            f"--layout {value!r} is not a folder name", hint="use letters, digits, - and _"
        )
    return value


@dataclass(frozen=True)
class Question:
    """A required answer: its flag, the prompt on a terminal, and its check."""

    flag: str
    prompt: str
    clean: Callable[[str], str]


QUESTIONS = (
    Question("--name", "The newsletter's name", one_line("--name")),
    Question("--from", "Sender address (e.g. hello@news.example.com)", clean_sender),
    Question(
        "--postal-address",
        "Postal address (the law wants it in every email)",
        one_line("--postal-address"),
    ),
    Question("--url", "Its public site (e.g. https://news.example.com)", clean_site_url),
)


def missing_flags(answers: Mapping[str, str | None]) -> list[str]:
    return [q.flag for q in QUESTIONS if not (answers.get(q.flag) or "").strip()]


def missing_error(missing: list[str]) -> ConfigError:
    """Without a terminal to ask on: name every missing flag in one line."""
    named = ", ".join(missing[:-1]) + (" and " if len(missing) > 1 else "") + missing[-1]
    return ConfigError(
        f"init needs {named} (there is no terminal to ask on)",
        hint='e.g. spark-mail init --name "My News" --from hello@news.example.com '
        '--postal-address "1 Main St, Springfield" --url https://news.example.com',
    )


@dataclass(frozen=True)
class NewsletterSpec:
    """The checked answers a newsletter is made from."""

    name: str
    from_address: str
    postal_address: str
    site_url: str
    reply_to: str = ""
    timezone: str = "UTC"
    layout: str = ""


def newsletter_spec(
    answers: Mapping[str, str | None],
    *,
    reply_to: str | None = None,
    timezone: str = "UTC",
    layout: str | None = None,
) -> NewsletterSpec:
    """Check every answer (ConfigError naming the flag) before anything is written."""
    missing = missing_flags(answers)
    if missing:
        raise missing_error(missing)
    values = {q.flag: q.clean(str(answers[q.flag])) for q in QUESTIONS}
    name, sender = values["--name"], values["--from"]
    if "<" not in sender:  # a bare address: readers see the newsletter's name as the sender
        from email.utils import formataddr

        sender = formataddr((name, sender))
    return NewsletterSpec(
        name=name,
        from_address=sender,
        postal_address=values["--postal-address"],
        site_url=values["--url"],
        reply_to=clean_address(reply_to) if reply_to else "",
        timezone=clean_timezone(timezone),
        layout=clean_layout(layout) if layout else "",
    )


def machine_timezone(
    tz: str | None,
    localtime: Path = Path("/etc/localtime"),
    timezone_file: Path = Path("/etc/timezone"),
) -> tuple[str, str]:
    """(IANA zone of this machine, a note when it could not be told and UTC is used).

    `tz`: the TZ environment variable (the CLI passes it); then /etc/localtime's link into
    the zoneinfo tree; then /etc/timezone (Debian)."""
    candidates: list[str] = []
    if tz:
        candidates.append(tz.lstrip(":"))
    with contextlib.suppress(OSError):
        target = str(localtime.resolve(strict=True)) if localtime.is_symlink() else ""
        if "/zoneinfo/" in target:
            zone = target.split("/zoneinfo/", 1)[1]
            candidates.append(zone.removeprefix("posix/").removeprefix("right/"))
    with contextlib.suppress(OSError, UnicodeDecodeError):
        candidates.append(timezone_file.read_text(encoding="utf-8").strip())
    for candidate in candidates:
        with contextlib.suppress(ConfigError):
            if candidate and not candidate.startswith("/"):
                return clean_timezone(candidate), ""
    return "UTC", "could not tell this machine's time zone: using UTC (--timezone to change)"
