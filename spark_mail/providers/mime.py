"""The MIME message a mail server gets (SMTP, the outbox), written the way mailboxes read it.

- Each copy gets its own Message-ID (mail clients drop a second message with a known id)
  and the time it leaves as its Date.
- Addresses go out with the domain in IDNA's ASCII form; only a local part that is not
  ASCII makes the message an SMTPUTF8 one (UTF-8 headers), never RFC 2047 inside `To:`.
- Lines are folded at 998 characters (RFC 5322's limit), not 78: the default policy turns a
  long unbreakable value such as a per-reader `List-Unsubscribe` URL into an RFC 2047
  encoded-word, which Gmail's and Yahoo's one-click unsubscribe cannot read. A header is
  folded only at its own spaces (between `<https://...>,` and `<mailto:...>`).
"""

from __future__ import annotations

import email.policy
import email.utils as email_utils
from email.message import EmailMessage

from spark_mail.audience.addresses import deliverable_address
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
    message["To"] = ", ".join(deliverable)
    domain = email_utils.parseaddr(email_.from_address)[1].rpartition("@")[2]
    del message["Message-ID"], message["Date"]
    message["Message-ID"] = email_utils.make_msgid(
        idstring=email_.slug[:40], domain=domain or "spark-mail.invalid"
    )
    message["Date"] = email_utils.formatdate(usegmt=True)
    return message
