"""The lists that suppress readers besides their own row: the suppression file you keep, and
the reader desk's store (unsubscribes, and what an ESP reported).

A suppression file is read the way people and tools write it: a CSV whose header names an
email column (`email`, `Email Address` as Mailchimp exports it, `E-mail`, ...), or one
address per line as `addr`, `<addr>`, `Name <addr>`, `mailto:addr`, `addr,`, with `#`
starting a comment. A line that holds something but no address stops the send, with the
file and the line: an opt-out is never dropped in silence.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from email.utils import parseaddr
from pathlib import Path

from spark_mail.audience.addresses import address_key
from spark_mail.errors import AudienceError

EMAIL_COLUMNS = ("email", "email_address", "e_mail", "e_mail_address", "mail", "address")
DESK_REASON = "unsubscribed on the reader desk"
# Why the desk's store suppresses an address (its `how`), as `audience check` counts it.
STORE_REASONS = {
    "bounce": "bounced (reported by the ESP)",
    "soft-bounces": "soft-bounced 3 times in a row",
    "complaint": "marked as spam (reported by the ESP)",
    "esp-unsubscribe": "unsubscribed at the ESP",
}
MAILTO_RE = re.compile(r"^mailto:", re.I)


def load_suppressed(path: Path) -> set[int]:
    """Address keys from a suppression file (see the module docstring)."""
    return {address_key(address) for _, address in read_suppression_file(path)}


def read_suppression_file(path: Path) -> Iterator[tuple[int, str]]:
    """(line, address) of every address in the file; AudienceError for a line that holds
    something but no address."""
    from spark_mail.audience.subscribers import _delimiter, _open_text, normalise_column

    with _open_text(path, "suppression file") as fh:
        lines = list(fh)
    if not lines:
        return
    delimiter = _delimiter(lines[0])
    header = [normalise_column(c) for c in next(csv.reader([lines[0]], delimiter=delimiter), [])]
    column = next((header.index(c) for c in EMAIL_COLUMNS if c in header), None)
    if column is None:
        column = next((n for n, c in enumerate(header) if "email" in c), None)
    if column is not None:
        rows = csv.reader(lines[1:], delimiter=delimiter)
        for number, row in enumerate(rows, start=2):
            cell = row[column] if len(row) > column else ""
            if cell.strip() or any(v.strip() for v in row):
                yield number, _address(path, number, cell)
        return
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if text:
            yield number, _address(path, number, text)


def _address(path: Path, line: int, text: str) -> str:
    """The address a line or cell names, however it is written."""
    cleaned = MAILTO_RE.sub("", text.strip().strip(",;").strip()).split("?", 1)[0]
    address = parseaddr(cleaned)[1] if "<" in cleaned or " " in cleaned else cleaned
    address = address.strip().strip("<>").strip()
    if address.count("@") != 1 or any(c.isspace() for c in address) or "," in address:
        raise AudienceError(
            f"{path}:{line}: cannot read an address in {text[:80]!r}, and a suppression is "
            "never skipped - nothing was sent",
            hint="write one address per line (or a CSV with an email column)",
        )
    return address


def load_desk_suppressed(store: Path | None) -> dict[int, str]:
    """Address keys the reader desk's store suppresses, with why (none when it does not
    exist): an unsubscribe on the desk, or what an ESP reported (STORE_REASONS)."""
    if store is None or not store.exists():
        return {}
    from spark_mail.audience.suppressions import SuppressionStore

    with SuppressionStore(store) as desk:
        return {
            address_key(address): STORE_REASONS.get(how, DESK_REASON)
            for address, how in desk.read("SELECT address, how FROM suppressions")
        }
