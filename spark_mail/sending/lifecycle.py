"""The send lifecycle: the one home of claiming an issue, settling what an interrupted run
left behind, and recording how a send ended. `send`, `dispatch`, `schedule` and own-list
batches all go through it.

    with SendLifecycle(ledger, provider, email, clock) as life:
        begun = life.begin("send")           # lock + claim, or settle an interrupted send
        if begun.outcome is not None:        # sent-earlier, scheduled-earlier, in-progress
            return ...
        try:
            result = provider.send(email, life.record_ids, begun.known_ids)
        except SparkMailError as err:
            life.fail(err)                   # raises: failed / unconfirmed / uncertain
        life.sent(result.esp_ids)
                                             # leaving the block releases the issue's lock

THE FAULT RULE. `failed` means the ESP clearly refused (a 4xx that says why, a connection
refused before anything was sent): safe to send again. Any other failure after the request
may have left (a timeout, a reset, a 5xx, an answer that cannot be read) means the ESP may
have acted, and nothing is sent again before it is found out, by THE RECOVERY RULE
(`recovery_action`), in this order:

1. the provider changed since: nobody can tell -> uncertain;
2. ASK: the ESP can be asked by an id recorded before the sending request left (Resend
   broadcast, Buttondown email; Postmark's message search for own-list batches): its answer
   is recorded (sent / scheduled), or the send resumes with the same draft (not sent);
3. REPEAT: the ESP honours an idempotency key, the issue is unchanged and the key is under
   24 hours old: the same request is repeated under the same key, and the ESP drops it if
   the first one arrived;
4. otherwise uncertain: a human checks the ESP and runs `send --resend-uncertain`.

A failure that the rule can settle later (ASK, REPEAT) leaves the row `sending` and the
run reports `unconfirmed`; the next run settles it before anything else. The rule is
applied to a whole send and to each own-list batch alike.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import NoReturn, Protocol

from spark_mail.clock import Clock
from spark_mail.errors import (
    AlreadySent,
    LedgerError,
    ProviderError,
    SendUncertain,
    SendUnconfirmed,
    SparkMailError,
)
from spark_mail.ledger import Ledger, SendRecord, SendState
from spark_mail.ledger.locks import owner_alive, process_id, sending_as
from spark_mail.providers.base import Capability, DeliveryState, Provider
from spark_mail.providers.registry import provider_name
from spark_mail.sending.outcomes import Outcome

ESP, OWN = "esp", "own"  # the two paths an issue can take: the ESP's list, your own list
OUTBOX = "outbox"  # writes .eml files: a send there reached no reader


def outbox_rehearsal(ledger: Ledger, record: SendRecord | None, provider: str) -> bool:
    """The issue went only to the outbox (the default before a real provider is set up) and
    a real provider sends now: nobody has it, so it is sent for real instead of `already
    sent` keeping it from every reader. Only when no other provider ever took any part of
    it (a send half done through an ESP and finished to the outbox stays sent). `provider`:
    the provider sending now, as named in the settings ("" is the outbox)."""
    if record is None or record.provider != OUTBOX:
        return False  # the usual case, settled without reading anything more
    if provider_name(provider) == OUTBOX:
        return False
    return ledger.providers_used(record.slug) <= {OUTBOX}


# How long an ESP is trusted to remember an idempotency key (Resend documents 24 h).
IDEMPOTENCY_WINDOW = dt.timedelta(hours=24)


class Recovery(StrEnum):
    ASK = "ask"
    REPEAT = "repeat"
    UNCERTAIN = "uncertain"


def recovery_action(
    provider: Provider,
    *,
    earlier_provider: str,
    same_content: bool,
    started: dt.datetime | None,
    now: dt.datetime,
    can_ask: bool,
) -> tuple[Recovery, str]:
    """THE RECOVERY RULE (module docstring): how to find out what became of a request
    that may have gone through, and why when nobody can."""
    if earlier_provider != provider.name:
        return Recovery.UNCERTAIN, (
            f"it went via {earlier_provider}, and the provider is now {provider.name}, "
            "which cannot know about it"
        )
    if can_ask:
        return Recovery.ASK, ""
    if not provider.idempotent:
        return Recovery.UNCERTAIN, (
            f"{provider.name} can neither be asked whether it went out nor drop a repeated send"
        )
    if not same_content:
        return Recovery.UNCERTAIN, (
            "the issue changed since, so a repeat would carry a new idempotency key"
        )
    if started is not None and now - started > IDEMPOTENCY_WINDOW:
        return Recovery.UNCERTAIN, (
            f"it was more than {IDEMPOTENCY_WINDOW.total_seconds() / 3600:.0f} h ago: the ESP "
            "may have forgotten the idempotency key"
        )
    return Recovery.REPEAT, ""


class Sendable(Protocol):
    """What the lifecycle needs of the thing being sent (a RenderedEmail)."""

    @property
    def slug(self) -> str: ...

    @property
    def content_hash(self) -> str: ...


@dataclass
class Begun:
    """How `begin` ended: `outcome` None means go ahead and send."""

    outcome: Outcome | None = None
    # ids an earlier, interrupted attempt recorded, and under "content" the content hash
    # it sent (16 characters): the provider resumes with them
    known_ids: dict[str, str] = field(default_factory=dict)
    # own list: the row an interrupted run left, whose in-flight readers are settled next
    resumed: SendRecord | None = None
    record: SendRecord | None = None


class SendLifecycle:
    def __init__(
        self,
        ledger: Ledger,
        provider: Provider,
        email: Sendable,
        clock: Clock,
        *,
        own_list: bool = False,
        source: Path | None = None,
    ) -> None:
        self.ledger = ledger
        self.provider = provider
        self.slug = email.slug
        self.content_hash = email.content_hash
        self.clock = clock
        self.own_list = own_list
        self.owner = process_id()
        self.source_hash = file_hash(source)

    def __enter__(self) -> SendLifecycle:
        self._alive = sending_as(self.owner)
        self._alive.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._alive.__exit__(None, None, None)
        self.ledger.locks.release(self.slug)  # settled, failed or interrupted: let go

    # -- beginning ---------------------------------------------------------------------------
    def begin(
        self,
        mode: str = "send",
        *,
        allow_uncertain: bool = False,
        scheduled_for: dt.datetime | None = None,
    ) -> Begun:
        """Take the issue's lock and claim its row, settling an interrupted send first.
        Raises AlreadySent (sent, scheduled, uncertain, sent on the other path),
        SendUncertain, SendUnconfirmed."""
        if not self.ledger.locks.try_acquire(self.slug):
            return Begun(Outcome.IN_PROGRESS)
        before = self.ledger.get(self.slug)
        if outbox_rehearsal(self.ledger, before, self.provider.name) and before is not None:
            reason = f"went only to the outbox (state: {before.state}): sent via "
            self.ledger.forget(self.slug, reason + self.provider.name, self.clock.now())
            before = None
        self._refuse_other_path(before)
        sending = before is not None and before.state == SendState.SENDING
        if sending and before is not None and owner_alive(before.owner):
            return Begun(Outcome.IN_PROGRESS)  # a live sender whose lock file was removed
        claim = self.ledger.claim(
            self.slug,
            self.content_hash,
            self.provider.name,
            mode,
            self.clock.now(),
            # Own list: an uncertain issue still sends the readers who certainly got
            # nothing; its uncertain readers are held (reader by reader, in the ledger).
            allow_uncertain=allow_uncertain or (self.own_list and self.path_of(before) == OWN),
            scheduled_for=scheduled_for,
            path=OWN if self.own_list else ESP,
            owner=self.owner,
            source_hash=self.source_hash,
        )
        if claim.stale is None:
            return Begun(record=claim.record, resumed=before if self.own_list else None)
        if self.own_list and self.path_of(claim.stale) == ESP:
            settled = self._reconcile(claim.stale)  # the ESP-list send is settled first
            if settled.outcome is not None:
                return settled
        if self.own_list:
            resumed = self._resume("interrupted mid-send: resuming with the readers not yet sent")
            return Begun(resumed=claim.stale, record=resumed)
        return self._reconcile(claim.stale)

    @staticmethod
    def path_of(record: SendRecord | None) -> str | None:
        """Which path a row took: recorded, or (older ledgers) told by its ids."""
        if record is None:
            return None
        if record.path:
            return record.path
        return OWN if "readers_sent" in record.esp_ids else ESP if record.esp_ids else None

    def _refuse_other_path(self, before: SendRecord | None) -> None:
        """An issue is finished on the path it started on: readers of your own list already
        have it, so the ESP's audience must not get it too (and the other way round, an
        interrupted ESP-list send is settled before own-list copies go out)."""
        if self.own_list or before is None or before.state == SendState.SENT:
            return
        readers = sum(
            n for state, n in self.ledger.reader_counts(self.slug).items() if state != "failed"
        )
        if self.path_of(before) == OWN or readers:
            raise AlreadySent(
                f"{self.slug}: was sent to {readers:,} readers of your own list (state: "
                f"{before.state}); it is not sent to {self.provider.name}'s audience as well",
                hint="finish it on your own list: set `audience` again and run "
                f"`spark-mail send {self.slug}`",
                slug=self.slug,
            )

    def _resume(self, note: str) -> SendRecord:
        """Take over the row an interrupted run left (its ids kept), `note` in its history."""
        return self.ledger.resume(
            self.slug,
            self.content_hash,
            note,
            self.clock.now(),
            keep_ids=True,
            provider=self.provider.name,
            owner=self.owner,
        )

    def _reconcile(self, stale: SendRecord) -> Begun:
        """Settle a row an interrupted run left `sending`, by the recovery rule."""
        ids = describe_ids(stale.esp_ids)
        action, reason = self._rule(stale, can_ask=self._can_ask(stale.esp_ids))
        asked = ""
        if action == Recovery.ASK:
            begun = self._ask(stale, ids)
            if begun is not None:
                return begun
            asked = f" ({self.provider.name} could not say)"
            action, reason = self._rule(stale, can_ask=False)
        if action == Recovery.REPEAT:
            record = self._resume(
                f"interrupted ({ids}){asked}: retried with the same idempotency key"
            )
            return Begun(known_ids=known(stale), record=record)
        self._uncertain(f"interrupted mid-send ({ids}){asked}; {reason}")

    def _ask(self, stale: SendRecord, ids: str) -> Begun | None:
        """ASK the ESP about the interrupted send; None when it could not say."""
        name = self.provider.name
        try:
            state = self.provider.lookup(stale.esp_ids)
        except ProviderError as exc:
            self.could_not_ask(
                f"could not ask {name} about the interrupted send ({ids}): {exc.message}"
            )
        now = self.clock.now()
        if state == DeliveryState.SCHEDULED and stale.mode == "schedule":
            record = self.ledger.mark_scheduled(self.slug, stale.scheduled_for or "", {}, now)
            return Begun(Outcome.SCHEDULED_EARLIER, record=record)
        if state in (DeliveryState.SENT, DeliveryState.SCHEDULED):
            # Queued at the ESP counts as sent: sending again would reach readers twice.
            note = f"interrupted; {name} says it went out ({ids})"
            return Begun(
                Outcome.SENT_EARLIER, record=self.ledger.mark_sent(self.slug, now, note=note)
            )
        if state == DeliveryState.NOT_SENT:
            record = self.ledger.resume(
                self.slug,
                self.content_hash,
                f"interrupted; {name} says it was not sent ({ids}): sending again",
                now,
                keep_ids=True,
                provider=self.provider.name,
                owner=self.owner,
            )
            return Begun(known_ids=known(stale), record=record)
        return None

    def _rule(self, earlier: SendRecord, *, can_ask: bool) -> tuple[Recovery, str]:
        return recovery_action(
            self.provider,
            earlier_provider=earlier.provider,
            same_content=earlier.content_hash == self.content_hash,
            started=parse_stamp(earlier.key_since) or last_attempt(self.ledger, earlier),
            now=self.clock.now(),
            can_ask=can_ask,
        )

    def _can_ask(self, esp_ids: dict[str, str]) -> bool:
        return Capability.LOOKUP in self.provider.capabilities and bool(esp_ids)

    # -- during the send ---------------------------------------------------------------------
    def record_ids(self, esp_ids: dict[str, str]) -> None:
        """Ids the ESP handed out, written before the request that sends leaves."""
        self.ledger.record_ids(self.slug, esp_ids, self.clock.now())

    # -- ending ------------------------------------------------------------------------------
    def sent(self, esp_ids: dict[str, str], *, note: str | None = None) -> SendRecord:
        try:
            return self.ledger.mark_sent(self.slug, self.clock.now(), esp_ids, note=note)
        except LedgerError as exc:
            raise self._not_recorded(exc, esp_ids, "sent") from None

    def scheduled(self, when: dt.datetime, esp_ids: dict[str, str]) -> SendRecord:
        try:
            return self.ledger.mark_scheduled(self.slug, when, esp_ids, self.clock.now())
        except LedgerError as exc:
            raise self._not_recorded(exc, esp_ids, "scheduled") from None

    def _not_recorded(
        self, exc: LedgerError, esp_ids: dict[str, str], what: str
    ) -> SendUnconfirmed:
        """Accepted, and the row still says `sending`: what the next run settles (ask or
        repeat under the key), so `unconfirmed`, never `failed`."""
        ids = describe_ids(esp_ids)
        return SendUnconfirmed(
            f"{self.slug}: {self.provider.name} accepted it ({what}; {ids}), but the ledger "
            f"could not record that: {exc.message}",
            hint="do NOT send it again by hand: fix the ledger's problem (free disk space), "
            "then run `spark-mail status`; the next run asks the ESP or repeats the request "
            "under the same key, so it cannot go out twice",
            slug=self.slug,
        )

    def fail(self, error: SparkMailError) -> NoReturn:
        """Record a failed send by THE FAULT RULE and raise what the caller reports."""
        now = self.clock.now()
        if not isinstance(error, ProviderError) or not error.maybe_sent:
            self.ledger.mark_failed(self.slug, str(error), now)
            raise error
        record = self.ledger.get(self.slug)
        ids = record.esp_ids if record else {}
        action, reason = self.unsettled_action(can_ask=self._can_ask(ids))
        if action == Recovery.UNCERTAIN:
            self._uncertain(f"{error.message}; {reason}")
        self.ledger.mark_unconfirmed(self.slug, error.message, now)
        how = (
            f"spark-mail asks {self.provider.name} whether it went out"
            if action == Recovery.ASK
            else "spark-mail repeats it under the same idempotency key, which the ESP drops "
            "if the first one arrived"
        )
        raise SendUnconfirmed(
            f"{self.slug}: {error.message} - it may have gone out",
            hint=f"run the same command again: {how}, so it cannot go out twice",
            slug=self.slug,
        )

    def unsettled_action(self, *, can_ask: bool) -> tuple[Recovery, str]:
        """The recovery rule for a request of THIS run that may have gone through."""
        return recovery_action(
            self.provider,
            earlier_provider=self.provider.name,
            same_content=True,
            started=None,
            now=self.clock.now(),
            can_ask=can_ask,
        )

    def could_not_ask(self, reason: str) -> NoReturn:
        """The ESP could not say what became of a send in flight: nothing goes out until it
        can (the next run asks again)."""
        self.ledger.mark_unconfirmed(self.slug, reason, self.clock.now())
        raise SendUnconfirmed(
            f"{self.slug}: {reason}",
            hint="run again later: spark-mail asks again before sending anything",
            slug=self.slug,
        ) from None  # raised while handling the ESP's error: that error is in `reason`

    def _uncertain(self, reason: str) -> NoReturn:
        self.ledger.mark_uncertain(self.slug, reason, self.clock.now())
        raise SendUncertain(self.slug, reason)


def known(stale: SendRecord) -> dict[str, str]:
    """What a provider resumes an interrupted send with: its ids and its content."""
    return {**stale.esp_ids, "content": stale.content_hash[:16]}


def file_hash(path: Path | None) -> str:
    """The issue file's text, hashed ("" without a readable file)."""
    if path is None:
        return ""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def describe_ids(esp_ids: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(esp_ids.items())) or "no ids"


def last_attempt(ledger: Ledger, record: SendRecord) -> dt.datetime | None:
    """When the interrupted attempt started: its idempotency key is at most this old."""
    claims = [e.at for e in ledger.history(record.slug) if e.state == SendState.SENDING]
    return parse_stamp(claims[-1] if claims else record.updated_at)


def parse_stamp(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
