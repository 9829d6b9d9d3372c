"""Secrets (API keys, SMTP passwords, the signing secret): a type that never shows itself,
and the one function that takes them out of any text before it is shown or written."""

from __future__ import annotations

import re
from collections.abc import Iterable

MASK = "********"
# A secret shorter than this is masked only where it stands as a word of its own: masking
# every "k" of a message for a one-character key would make the message unreadable.
SHORT_SECRET = 8


class Secret:
    """A string that never shows itself: repr, str and format all print a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('********')" if self._value else "Secret('')"

    __str__ = __repr__


def redact(text: str, secrets: Iterable[Secret | str]) -> str:
    """`text` with every secret replaced by a mask. Mask first, cut afterwards: a message
    cut before masking could keep a secret's first characters."""
    for secret in sorted({_value(s) for s in secrets if s}, key=len, reverse=True):
        if len(secret) >= SHORT_SECRET:
            text = text.replace(secret, MASK)
        else:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", MASK, text)
    return text


def shorten(text: str, limit: int) -> str:
    """One line of at most `limit` characters (apply after `redact`)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _value(secret: Secret | str) -> str:
    return secret.reveal() if isinstance(secret, Secret) else secret
