"""The provider protocol: what every ESP adapter implements, and what it answers.

A provider takes a RenderedEmail and delivers it:

    send_test(email, recipients)            a copy to editors; never the audience
    send(email, on_ids, known)              the real send to the audience the ESP keeps, once
    schedule(email, at, on_ids, known)      hand it to the ESP's own scheduler
    unschedule(esp_ids) / lookup(esp_ids) -> DeliveryState
    send_batch(template, readers, key)      own list: each reader their copy, one ESP call
    lookup_batch(template, readers, key)    own list: what became of a batch that may have left

`on_ids(ids)` is called with every id the ESP hands out (a Buttondown draft, a Resend
broadcast) BEFORE the request that actually sends leaves, so the caller writes it to the
ledger first. `known` holds the ids an earlier, interrupted attempt recorded: a provider
resumes with them (sends the same draft) instead of creating a second one.

Each provider lists its `capabilities`; asking for another raises UnsupportedOperation.
`idempotent` says that the ESP drops a repeated request carrying the same idempotency key,
so a request that may have gone through can be repeated without sending twice.

Own-list batches (spark_mail/sending/batches.py) are called from several threads at once
(`concurrency`): a provider keeps what it shares (an httpx client, SMTP connections)
thread-safe.
"""

from __future__ import annotations

import abc
import datetime as dt
import email.utils as email_utils
import functools
import hashlib
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

from spark_mail.clock import SYSTEM_CLOCK, Clock
from spark_mail.config import Settings
from spark_mail.errors import ConfigError, EspError, UnsupportedOperation
from spark_mail.render import RenderedEmail

if TYPE_CHECKING:
    from spark_mail.audience import Reader
    from spark_mail.personalize import PersonalizedTemplate
    from spark_mail.providers.recorder import DryRunRecorder

__all__ = [
    "BatchResult",
    "Capability",
    "DeliveryOnlyProvider",
    "DeliveryState",
    "EspError",
    "Known",
    "OnIds",
    "Outcome",
    "Provider",
    "SendResult",
    "bare_address",
    "batch_tag",
    "check_addresses",
    "deliver_each",
    "iso_utc",
    "key_for_test_send",
]

ADDRESS_RE = re.compile(r"^[^@\s<>(),;:\"\[\]\\]+@[^@\s<>(),;:\"\[\]\\]+\.[^@\s<>(),;:\"\[\]\\]+$")


class Capability(StrEnum):
    TEST = "test"
    SEND = "send"
    SCHEDULE = "schedule"
    LOOKUP = "lookup"
    BATCH = "batch"
    BATCH_LOOKUP = "batch-lookup"


class DeliveryState(StrEnum):
    """What the ESP says became of a send (the answer of `lookup`)."""

    SENT = "sent"
    NOT_SENT = "not_sent"
    SCHEDULED = "scheduled"
    UNKNOWN = "unknown"


@dataclass
class SendResult:
    esp_ids: dict[str, str] = field(default_factory=dict)
    requests: int = 0
    recipients: int | None = None  # None: the ESP's audience, size unknown to us
    refused: dict[str, str] = field(default_factory=dict)  # address -> the ESP's reason


OnIds = Callable[[dict[str, str]], object]
# What an interrupted earlier attempt recorded: its ESP ids, and "content" (its content hash).
Known = dict[str, str]

# What became of one message of a batch: (sent | refused | failed | uncertain, detail), the
# detail being the ESP's message id when sent, else the reason. Same words as the ledger's
# ReaderState.
Outcome = tuple[str, str]


@dataclass
class BatchResult:
    """One batch's answer, message by message, in the order of the readers given."""

    outcomes: list[Outcome]
    requests: int = 0
    bytes_sent: int = 0
    # Set when the connection or server failed part-way (SMTP): stop sending more batches.
    error: EspError | None = None


def deliver_each(readers: Sequence[Reader], deliver: Callable[[Reader], str]) -> BatchResult:
    """A batch sent one message per request (SMTP, SES): `deliver` returns the message's
    id. A reader the server refuses (EspError code "refused") or defers ("deferred") is that
    reader's outcome; any other failure stops the batch: the message in flight is uncertain
    when it may have gone out (else failed), and the ones after it were not sent."""
    outcomes: list[Outcome] = []
    for number, reader in enumerate(readers):
        try:
            outcomes.append(("sent", deliver(reader)))
        except EspError as exc:
            if exc.code in ("refused", "deferred"):  # about that reader only: the rest go on
                # Deferred (an SMTP 4xx: try later): nothing was accepted, a later run sends.
                outcomes.append(("refused" if exc.code == "refused" else "failed", exc.message))
                continue
            outcomes.append(("uncertain" if exc.maybe_sent else "failed", exc.message))
            outcomes += [("failed", f"not sent: {exc.message}")] * (len(readers) - number - 1)
            return BatchResult(outcomes, requests=number + 1, error=exc)
    return BatchResult(outcomes, requests=len(readers))


def check_addresses(addresses: Iterable[str], what: str) -> list[str]:
    """Validate recipients before anything is sent: one address each, no CR/LF, no lists."""
    checked = []
    for raw in addresses:
        address = raw.strip()
        if "\r" in raw or "\n" in raw:
            raise ConfigError(
                f"{what}: {raw!r} contains a line break", hint="one address per entry"
            )
        parsed = email_utils.getaddresses([address])
        addr = parsed[0][1] if len(parsed) == 1 else ""
        if not addr or not ADDRESS_RE.match(addr):
            raise ConfigError(
                f"{what}: {address!r} is not an email address",
                hint="write it as name@example.com",
            )
        checked.append(address)
    if not checked:
        raise ConfigError(f"{what}: no recipients", hint="give at least one address")
    return checked


def bare_address(recipient: str) -> str:
    """A recipient as an envelope or an API's `to` takes it: the address alone (a display
    name dropped), its domain in IDNA's ASCII form."""
    from spark_mail.audience.addresses import deliverable_address

    return deliverable_address(email_utils.parseaddr(recipient)[1] or recipient)


def key_for_test_send(email: RenderedEmail, recipients: Sequence[str]) -> str:
    """Idempotency key of one test send: the retries of THIS call reuse it, while the next
    test send (a fresh nonce) still goes out, even with the same content and recipients."""
    digest = hashlib.sha256("\n".join(sorted(recipients)).encode()).hexdigest()[:12]
    return f"{email.idempotency_key}:test:{digest}:{uuid.uuid4().hex[:12]}"


def batch_tag(key: str) -> str:
    """A batch's key as a short tag an ESP stores with each message (Postmark metadata,
    Mailgun user variables, SendGrid custom args), to find the batch again."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def iso_utc(at: dt.datetime) -> str:
    if at.tzinfo is None:
        raise ConfigError(f"schedule time {at.isoformat()} has no time zone", hint="add an offset")
    return at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


WHAT = {
    Capability.TEST: "send test copies",
    Capability.SEND: "send to the newsletter's audience",
    Capability.SCHEDULE: "schedule a send on its side",
    Capability.LOOKUP: "tell whether a send went out",
    Capability.BATCH: "send to your own subscriber list (it keeps the audience itself)",
    Capability.BATCH_LOOKUP: "tell whether a batch went out",
}
HINTS = {
    Capability.SCHEDULE: "give the issue a `send_at` and run `spark-mail dispatch` from cron",
    Capability.SEND: "set `audience` to your subscribers file (own-list sending), "
    "or use buttondown / resend",
    Capability.BATCH: "remove the `audience` setting (SPARK_MAIL_AUDIENCE) to send to the "
    "ESP's own list, or use postmark, mailgun, sendgrid, ses, resend, smtp or outbox for "
    "your subscribers file",
}


class Provider(abc.ABC):
    name: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]]
    # The ESP drops a repeated request with the same idempotency key (a retry of a request
    # that may have gone through cannot send twice).
    idempotent: ClassVar[bool] = False
    # The ESP keeps the subscriber list (Buttondown, Resend); otherwise `send` needs readers.
    owns_audience: ClassVar[bool] = True
    # Own-list sending: readers per batch call, and batch calls in flight at once.
    batch_size: ClassVar[int] = 0
    batch_concurrency: ClassVar[int] = 1
    # The transport carries addresses whose local part is not ASCII (SMTPUTF8 / EAI).
    unicode_local_parts: ClassVar[bool] = False

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = SYSTEM_CLOCK,
        recorder: DryRunRecorder | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.dry_run = recorder

    @property
    def concurrency(self) -> int:
        """Batch calls in flight at once: the `send_concurrency` setting, else our default."""
        return max(1, self.settings.send_concurrency or self.batch_concurrency)

    def limit_test_recipients(self, recipients: Sequence[str], limit: int) -> None:
        """ESPs take at most `limit` addresses in one message's `To`."""
        if len(recipients) > limit:
            raise ConfigError(
                f"{self.name}: {len(recipients)} test recipients; a message takes at most {limit}",
                hint="send test copies to fewer editors",
            )

    @classmethod
    def require(cls, capability: Capability) -> None:
        if capability not in cls.capabilities:
            raise UnsupportedOperation(
                f"{cls.name}: cannot {WHAT[capability]}", hint=HINTS.get(capability)
            )

    @property
    def audience(self) -> str:
        """Who an audience send reaches, for summaries."""
        return f"the {self.name} audience"

    def can_carry(self, address: str) -> bool:
        """Whether this transport can deliver to `address` at all (checked before a send)."""
        local = address.rpartition("@")[0]
        return local.isascii() or self.unicode_local_parts

    @abc.abstractmethod
    def send_test(self, email: RenderedEmail, recipients: Sequence[str]) -> SendResult: ...

    def send(self, email: RenderedEmail, on_ids: OnIds, known: Known | None = None) -> SendResult:
        """Send to the audience the ESP keeps (own lists go through `send_batch`)."""
        self.require(Capability.SEND)
        raise NotImplementedError

    def schedule(
        self, email: RenderedEmail, at: dt.datetime, on_ids: OnIds, known: Known | None = None
    ) -> SendResult:
        self.require(Capability.SCHEDULE)
        raise NotImplementedError

    def unschedule(self, esp_ids: dict[str, str]) -> None:
        self.require(Capability.SCHEDULE)
        raise NotImplementedError

    def check_batch_schedule(self, at: dt.datetime) -> None:
        """Own list: refuse a time the ESP cannot schedule batches for (ConfigError), before
        the send is claimed; a provider that cannot schedule batches at all says so."""
        raise UnsupportedOperation(
            f"{self.name}: cannot schedule a send to your own subscriber list on its side",
            hint=HINTS[Capability.SCHEDULE],
        )

    def schedule_batches(self, at: dt.datetime, on_ids: OnIds, known: dict[str, str]) -> None:
        """Own list: every batch from now on asks the ESP to deliver at `at` (Mailgun
        `o:deliverytime`, SendGrid `send_at`). Ids the schedule needs (SendGrid's batch id)
        go to `on_ids` before any batch leaves; `known` holds those an interrupted schedule
        recorded, to go on with."""
        self.check_batch_schedule(at)

    def lookup(self, esp_ids: dict[str, str]) -> DeliveryState:
        self.require(Capability.LOOKUP)
        raise NotImplementedError

    def send_batch(
        self, template: PersonalizedTemplate, readers: Sequence[Reader], key: str
    ) -> BatchResult:
        """Send each reader its own copy; `key` names this batch for idempotency."""
        self.require(Capability.BATCH)
        raise NotImplementedError

    def lookup_batch(self, key: str, reader_keys: list[str]) -> dict[str, str]:
        """For a batch that may have gone out (`key`, its readers' canonical addresses): the
        readers the ESP shows as sent, with their message ids. A reader it does not show is
        NOT proven unsent (a search index can lag)."""
        self.require(Capability.BATCH_LOOKUP)
        raise NotImplementedError

    def batch_job(
        self, template: PersonalizedTemplate, readers: Sequence[Reader], key: str
    ) -> Callable[[], BatchResult]:
        """The batch as a call for a worker thread. A provider may do the CPU work (encoding
        every message) here, in the caller's thread, while earlier batches are on the wire,
        so a worker's turn is only the request."""
        return functools.partial(self.send_batch, template, readers, key)

    def prepare_batches(self, template: PersonalizedTemplate) -> None:
        """Set-up once before the first batch (a connection, a template stored at the ESP),
        so it is not charged to the batches. Most providers need none."""
        return None

    def require_audience(self) -> None:
        """For providers without an ESP-side list: `send` was called without readers."""
        raise ConfigError(
            f"{self.name}: delivers to your own subscriber list, and none was given",
            hint='set `audience = "subscribers.csv"` in spark-mail.toml (or SPARK_MAIL_AUDIENCE)',
        )

    def close(self) -> None:  # most providers hold nothing to close
        return None

    def __enter__(self) -> Provider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DeliveryOnlyProvider(Provider):
    """An ESP or server that delivers what it is given (Postmark, SendGrid, Mailgun, SES,
    SMTP): the subscriber list is your own, sent in batches with several calls in flight,
    and no idempotency keys to repeat a request under."""

    idempotent = False
    owns_audience = False
    batch_concurrency = 4

    def send_batch(
        self, template: PersonalizedTemplate, readers: Sequence[Reader], key: str
    ) -> BatchResult:
        """The batch's job, run now: these providers build a batch in `batch_job` (so a
        subclass overrides that, or this)."""
        return self.batch_job(template, readers, key)()
