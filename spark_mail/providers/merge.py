"""The issue as an ESP merges it (Mailgun's recipient variables, SendGrid's substitutions):
sent ONCE per batch call with a merge tag wherever a reader's value goes, plus each reader's
values, already escaped by spark-mail for the place they go
(PersonalizedTemplate.rendered_values).

The tags are named after a nonce that appears nowhere in the built issue (subject, HTML,
text, headers), so no text an author writes can be read as one of our tags: the nonce comes
from the content and is drawn again until no part contains it.

    merged = merged_issue(template, lambda name: f"%recipient.{name}%")
    merged.html, merged.text, merged.headers         # once per call
    merged.values(template, reader)                   # {name: value} per reader
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spark_mail.audience import Reader
    from spark_mail.personalize import PersonalizedTemplate


@dataclass(frozen=True)
class MergedIssue:
    subject: str
    html: str
    text: str
    headers: dict[str, str]
    names: tuple[str, ...]  # the variable that carries rendered value n

    def values(self, template: PersonalizedTemplate, reader: Reader) -> dict[str, str]:
        """This reader's value of every variable."""
        return dict(zip(self.names, template.rendered_values(reader), strict=True))


def merged_issue(template: PersonalizedTemplate, tag: Callable[[str], str]) -> MergedIssue:
    """The issue with `tag(name)` where each reader's value goes (see the module doc)."""
    email = template.email
    parts = [email.subject, email.html, email.text, *email.headers.values()]
    prefix = f"spk{_nonce(email.content_hash, parts)}"
    names = tuple(f"{prefix}v{n}" for n in range(template.value_count))

    def tagged(number: int) -> str:
        return tag(names[number])

    html, text = template.merge_layout(tagged, _as_is)
    headers = template.merge_headers(tagged, _as_is)
    return MergedIssue(email.subject, html, text, headers, names)


def _as_is(text: str) -> str:
    return text


def _nonce(seed: str, parts: list[str]) -> str:
    """Eight hex digits that no part contains (in any case) after `spk`."""
    lowered = [part.lower() for part in parts]
    nonce = hashlib.sha256(seed.encode()).hexdigest()[:8]
    while any(f"spk{nonce}" in part for part in lowered):
        nonce = hashlib.sha256(nonce.encode()).hexdigest()[:8]
    return nonce
