"""SMTP: any relay (every ESP has one, and so does a mail server of your own).

SPARK_MAIL_SMTP_TLS picks the connection: `starttls` (port 587: plain, then STARTTLS before
anything secret is said), `ssl` (port 465: TLS from the first byte) or `none` (port 25, local
relays only). Certificates are verified against the system's trust store. One connection is
opened per send and reused for every message; own-list sending opens one per sending thread
(`batch_concurrency`, default 4) and reuses each for all its batches. A message is
multipart/alternative (text + HTML) with the issue's unsubscribe headers, its own Message-ID
and a Date.

No idempotency: a connection lost after DATA may or may not have delivered (`maybe_sent`).
"""

from __future__ import annotations

import functools
import smtplib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from email.message import EmailMessage
from email.utils import parseaddr
from typing import TYPE_CHECKING

from spark_mail.clock import SYSTEM_CLOCK, Clock
from spark_mail.config import Settings
from spark_mail.errors import ConfigError, EspError
from spark_mail.providers.base import (
    BatchResult,
    Capability,
    DeliveryOnlyProvider,
    SendResult,
    bare_address,
    deliver_each,
)
from spark_mail.providers.mime import mime_bytes, mime_for, needs_smtputf8, new_message_id
from spark_mail.render import RenderedEmail
from spark_mail.secrets import redact, shorten
from spark_mail.tls import system_context

if TYPE_CHECKING:
    from spark_mail.audience import Reader
    from spark_mail.personalize import PersonalizedTemplate
    from spark_mail.providers.recorder import DryRunRecorder

DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}


class SmtpProvider(DeliveryOnlyProvider):
    name = "smtp"
    capabilities = frozenset({Capability.TEST, Capability.BATCH})  # readers: own list only
    batch_size = 50  # readers per ledger transaction; each is its own SMTP transaction
    # batch_concurrency: DeliveryOnlyProvider's 4, one connection each
    unicode_local_parts = True  # SMTPUTF8, where the server offers it (checked on connect)

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        recorder: DryRunRecorder | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(settings, clock=clock, recorder=recorder)
        self.tls = (settings.smtp_tls or "starttls").lower()
        if self.tls not in DEFAULT_PORTS:
            raise ConfigError(
                f"SPARK_MAIL_SMTP_TLS={settings.smtp_tls!r} is not one of starttls, ssl, none",
                hint="use starttls (port 587), ssl (port 465) or none (local relay)",
            )
        if not settings.smtp_host:
            raise ConfigError("smtp: no server", hint="set SPARK_MAIL_SMTP_HOST (and _PORT)")
        self.host = settings.smtp_host
        self.port = settings.smtp_port or DEFAULT_PORTS[self.tls]
        self.ssl_context = ssl_context or system_context()
        self._local = threading.local()  # each sending thread has its own connection
        self._utf8: bool | None = None  # the server offers SMTPUTF8 (asked when needed)
        self._open: list[smtplib.SMTP] = []
        self._open_lock = threading.Lock()
        if self.dry_run is not None:
            self.dry_run.secrets.append(settings.smtp_password.reveal())

    def can_carry(self, address: str) -> bool:
        """A local part that is not ASCII needs the server's SMTPUTF8: asked once, on the
        first such address, so those readers are invalid before the send, not refused in
        the middle of it."""
        if address.rpartition("@")[0].isascii() or self.dry_run is not None:
            return True
        if self._utf8 is None:
            self._utf8 = bool(self.connect().has_extn("smtputf8"))
        return self._utf8

    @property
    def audience(self) -> str:
        return f"your subscriber list, through {self.host}:{self.port}"

    # -- the connection -------------------------------------------------------------------
    @property
    def _conn(self) -> smtplib.SMTP | None:
        return getattr(self._local, "conn", None)

    @_conn.setter
    def _conn(self, conn: smtplib.SMTP | None) -> None:
        with self._open_lock:
            old = getattr(self._local, "conn", None)
            if old is not None and old in self._open:
                self._open.remove(old)
            if conn is not None:
                self._open.append(conn)
        self._local.conn = conn

    def _fail(self, what: str, exc: BaseException, *, maybe_sent: bool = False) -> EspError:
        if isinstance(exc, smtplib.SMTPResponseException):
            detail = (
                exc.smtp_error.decode(errors="replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            text = f"smtp: {exc.smtp_code} {detail} [{what}]"
        else:
            text = f"smtp: {what} failed ({type(exc).__name__}: {exc})"
        return EspError(
            shorten(redact(text, [self.settings.smtp_password]), 300), maybe_sent=maybe_sent
        )

    def connect(self) -> smtplib.SMTP:
        conn = self._conn
        if conn is not None and getattr(conn, "sock", None) is not None:
            return conn
        timeout = self.settings.send_timeout
        conn = (
            smtplib.SMTP_SSL(timeout=timeout, context=self.ssl_context)
            if self.tls == "ssl"
            else smtplib.SMTP(timeout=timeout)
        )
        conn._host = self.host  # type: ignore[attr-defined]  # TLS checks this name
        try:
            with bounded(conn, timeout):  # a greeting dripped byte by byte ends too
                conn.connect(self.host, self.port)
                self._handshake(conn)
        except smtplib.SMTPAuthenticationError as exc:
            raise EspError(
                f"smtp: {exc.smtp_code} authentication failed for {self.settings.smtp_user!r}",
                hint="check SPARK_MAIL_SMTP_USER and SPARK_MAIL_SMTP_PASSWORD",
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            conn.close()
            error = self._fail(f"connect to {self.host}:{self.port}", exc)
            error.hint = "check SPARK_MAIL_SMTP_HOST, _PORT and _TLS"
            raise error from None
        self._conn = conn
        return conn

    def _handshake(self, conn: smtplib.SMTP) -> None:
        conn.ehlo()
        if self.tls == "starttls":
            if not conn.has_extn("starttls"):
                conn.close()
                raise ConfigError(
                    f"smtp: {self.host}:{self.port} does not offer STARTTLS",
                    hint="set SPARK_MAIL_SMTP_TLS=ssl (port 465), or none for a local relay",
                )
            conn.starttls(context=self.ssl_context)
            conn.ehlo()
        if self.settings.smtp_user:
            conn.login(self.settings.smtp_user, self.settings.smtp_password.reveal())

    def close(self) -> None:
        with self._open_lock:
            conns, self._open = self._open, []
        for conn in conns:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                conn.close()
        self._local = threading.local()

    def deliver(self, message: EmailMessage, recipients: list[str]) -> None:
        """Hand one message to the server (or to the dry run)."""
        if self.dry_run is not None:
            self.dry_run.record_message(recipients, message)
            return
        data = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        self.deliver_bytes(data, parseaddr(str(message["From"]))[1], recipients)

    def deliver_bytes(self, data: bytes, sender: str, recipients: list[str]) -> None:
        """Hand one message, already on the wire's bytes, to the server."""
        conn = self.connect()
        envelope = [bare_address(r) for r in recipients]
        options: tuple[str, ...] = ()
        if needs_smtputf8(envelope):
            if not conn.has_extn("smtputf8"):
                raise EspError(
                    f"smtp: {self.host} does not offer SMTPUTF8, so it cannot deliver to "
                    f"{', '.join(envelope)}",
                    code="refused",
                )
            options = ("SMTPUTF8", "BODY=8BITMIME")
        try:
            with bounded(conn, self.settings.send_timeout):
                conn.sendmail(sender, envelope, data, mail_options=options)
        except smtplib.SMTPRecipientsRefused as exc:
            if getattr(conn, "sock", None) is None:
                self._conn = None  # a 421 closed it: the next reader reconnects
            codes = [code for code, _ in exc.recipients.values()]
            refused = ", ".join(exc.recipients)
            if all(code >= 500 for code in codes):
                raise EspError(f"smtp: the server refused {refused}", code="refused") from None
            detail = "; ".join(f"{c} {r!r}" for c, r in exc.recipients.values())
            # A 4xx is "try again later" (RFC 5321): nothing was accepted.
            raise EspError(
                f"smtp: the server deferred {refused} ({detail[:200]})", code="deferred"
            ) from None
        except smtplib.SMTPServerDisconnected as exc:
            self._conn = None
            raise self._fail("send", exc, maybe_sent=True) from None
        except smtplib.SMTPResponseException as exc:
            raise self._fail("send", exc) from None
        except (smtplib.SMTPException, OSError) as exc:
            self._conn = None
            raise self._fail("send", exc, maybe_sent=True) from None

    # -- the protocol ---------------------------------------------------------------------
    def send_test(self, email: RenderedEmail, recipients: Sequence[str]) -> SendResult:
        self.deliver(mime_for(email, list(recipients)), list(recipients))
        return SendResult(requests=1, recipients=len(recipients))

    def batch_job(
        self, template: PersonalizedTemplate, readers: Sequence[Reader], key: str
    ) -> Callable[[], BatchResult]:
        """Each reader's copy over the sending thread's connection. A refused recipient is
        that reader's outcome; a lost connection stops the batch: the message in flight is
        uncertain, the ones after it were not sent.

        Every copy of the batch is built here, in the caller's thread, while earlier
        batches are on the wire: a sending thread's turn is only SMTP (it does not hold the
        GIL while other connections wait for their server's reply)."""
        if self.dry_run is not None:
            return functools.partial(deliver_each, readers, self._record_copy(template))
        sender = parseaddr(template.email.from_address)[1]
        built: dict[str, tuple[str, bytes]] = {}
        for reader in readers:
            copy = template.copy(reader).email(template.email)
            message_id = new_message_id(copy)
            built[reader.email] = (message_id, mime_bytes(copy, reader.email, message_id))

        def deliver_one(reader: Reader) -> str:
            message_id, data = built.pop(reader.email)
            self.deliver_bytes(data, sender, [reader.email])
            return message_id

        return functools.partial(deliver_each, readers, deliver_one)

    def _record_copy(self, template: PersonalizedTemplate) -> Callable[[Reader], str]:
        """A dry run keeps each reader's MIME message as it would go out."""

        def record(reader: Reader) -> str:
            message = mime_for(template.copy(reader).email(template.email), reader.email)
            self.deliver(message, [reader.email])
            return str(message["Message-ID"])

        return record


@contextmanager
def bounded(conn: smtplib.SMTP, seconds: float) -> Iterator[None]:
    """One exchange with the server takes at most `seconds` in all: smtplib's timeout
    bounds each read, so a server that drips its answer a byte at a time could hold a send
    for as long as it likes. Past the deadline the socket is shut, and the exchange ends
    with the error a dropped connection gives."""

    def expire() -> None:
        sock = getattr(conn, "sock", None)
        if sock is not None:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
