"""The MIME message a mail server gets (SMTP, the outbox), written the way mailboxes read it.

- Each copy gets its own Message-ID (mail clients drop a second message with a known id)
  and the time it leaves as its Date.
- Addresses go out with the domain in IDNA's ASCII form (the sender's in `From:` and
  `Reply-To:` too, its display name encoded as RFC 2047 allows); only a local part that is
  not ASCII makes the message an SMTPUTF8 one (UTF-8 headers), never RFC 2047 inside an
  address.
- Lines are folded at 998 characters (RFC 5322's limit), not 78: the default policy turns a
  long unbreakable value such as a per-reader `List-Unsubscribe` URL into an RFC 2047
  encoded-word, which Gmail's and Yahoo's one-click unsubscribe cannot read. A header is
  folded only at its own spaces (between `<https://...>,` and `<mailto:...>`).

`mime_bytes` is the same message as bytes for the wire (CRLF), built for own-list sends where
every reader gets one: the email package's pure-Python quoted-printable encoder took most of
the ~15 ms a copy cost, so the headers and the multipart skeleton come from the email package
(tiny bodies) and the two bodies are encoded by binascii (C), the same way.
"""

from __future__ import annotations

import binascii
import dataclasses
import email.policy
import email.utils as email_utils
import re
import threading
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

from spark_mail.audience.addresses import deliverable_address
from spark_mail.providers.base import sender
from spark_mail.render import RenderedEmail

ASCII_POLICY = email.policy.SMTP.clone(max_line_length=998)
UTF8_POLICY = email.policy.SMTPUTF8.clone(max_line_length=998)


def needs_smtputf8(addresses: list[str]) -> bool:
    return any(not address.rpartition("@")[0].isascii() for address in addresses)


def mime_for(email_: RenderedEmail, to: str | list[str]) -> EmailMessage:
    """The message one send hands to a mail server, `to` being its recipients (or a group
    such as `undisclosed-recipients:;`)."""
    recipients = [to] if isinstance(to, str) else list(to)
    deliverable = [deliverable_address(r) if "@" in r else r for r in recipients]
    message = email_.to_mime()
    message.policy = UTF8_POLICY if needs_smtputf8(deliverable) else ASCII_POLICY
    for name, value in (("From", email_.from_address), ("Reply-To", email_.reply_to)):
        if value:  # the sender's domain in IDNA too (a display name is encoded as it may be)
            _set_sender(message, name, value)
    message["To"] = ", ".join(deliverable)
    del message["Message-ID"], message["Date"]
    message["Message-ID"] = new_message_id(email_)
    message["Date"] = email_utils.formatdate(usegmt=True)
    return message


def _set_sender(message: EmailMessage, name: str, value: str) -> None:
    """`From` / `Reply-To` with the address's domain in IDNA; as written when the address
    is no plain one (the email package then says what it can)."""
    display, address = sender(value)
    try:
        header = Address(display_name=display, addr_spec=address)
    except ValueError:  # no domain, a local part that is not ASCII: left as it was
        return
    del message[name]
    message[name] = header


def new_message_id(email_: RenderedEmail) -> str:
    """A Message-ID of its own for one copy, in the sender's domain."""
    domain = sender(email_.from_address)[1].rpartition("@")[2] if email_.from_address else ""
    return email_utils.make_msgid(idstring=email_.slug[:40], domain=domain or "spark-mail.invalid")


# Stand-ins for the two bodies in the skeleton: letters only, so QP leaves them as they are.
TEXT_SLOT = "spkmimetextbodyx"
HTML_SLOT = "spkmimehtmlbodyx"
PER_READER = ("To", "Date", "Message-ID")  # never in the cached skeleton
PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")
_skeletons: dict[tuple[str, ...], tuple[bytes, bytes, bytes]] = {}
_skeletons_lock = threading.Lock()


def mime_bytes(email_: RenderedEmail, to: str, message_id: str) -> bytes:
    """`mime_for(email_, to)` as it goes on the wire (CRLF line ends), built fast for one
    reader (see the module docstring). What every copy shares (From, Reply-To, Subject, the
    MIME structure) is built once per issue by the email package; each copy adds its To,
    Date, Message-ID and its own headers, and its two bodies encoded by binascii."""
    address = deliverable_address(to)
    utf8 = needs_smtputf8([address])
    key = (email_.slug, email_.subject, email_.from_address, email_.reply_to, str(utf8))
    with _skeletons_lock:
        if key not in _skeletons:
            if len(_skeletons) > 16:
                _skeletons.clear()
            _skeletons[key] = _skeleton(email_, utf8)
        head, middle, tail = _skeletons[key]
    policy = UTF8_POLICY if utf8 else ASCII_POLICY
    lines = [
        _header(policy, "To", address, plain=bool(PLAIN_ADDRESS.fullmatch(address))),
        _header(policy, "Date", email_utils.formatdate(usegmt=True), plain=True),
        _header(policy, "Message-ID", message_id, plain=True),
        *(_header(policy, name, value) for name, value in email_.headers.items()),
    ]
    return b"".join((*lines, head, _qp(email_.text), middle, _qp(email_.html), tail))


def _skeleton(email_: RenderedEmail, utf8: bool) -> tuple[bytes, bytes, bytes]:
    """The shared headers and the multipart structure, cut around the two bodies."""
    shell = dataclasses.replace(email_, text=TEXT_SLOT, html=HTML_SLOT, headers={})
    message = mime_for(shell, "x@example.com" if not utf8 else "é@example.com")
    for name in PER_READER:
        del message[name]
    raw = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
    head, _, rest = raw.partition(TEXT_SLOT.encode() + b"\r\n")
    middle, _, tail = rest.partition(HTML_SLOT.encode() + b"\r\n")
    return head, middle, tail


def _header(
    policy: email.policy.EmailPolicy[Any], name: str, value: str, plain: bool = False
) -> bytes:
    """One header line: as it is when it needs nothing (ASCII, one line, nothing that reads
    as an encoded word), else folded by the email package."""
    if plain or (value.isascii() and "=?" not in value and value.isprintable()):
        line = f"{name}: {value}\r\n"
        if len(line) <= 1000:
            return line.encode("utf-8" if policy.utf8 else "ascii")
    wire = policy.clone(linesep="\r\n")
    folded: str = wire.header_factory(name, value).fold(policy=wire)
    return folded.encode("utf-8" if policy.utf8 else "ascii", "surrogateescape")


def _qp(text: str) -> bytes:
    """A text body as the email package's set_content(cte="quoted-printable") encodes it:
    UTF-8, its line breaks normalised and a final one added, lines of at most 76."""
    data = b"\n".join(text.encode("utf-8").splitlines()) + b"\n"
    return binascii.b2a_qp(data, quotetabs=False, istext=True).replace(b"\n", b"\r\n")
