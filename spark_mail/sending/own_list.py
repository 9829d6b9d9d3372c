"""Own-list sending: the issue to every reader of the subscribers file, each their own copy.

1. `prepare_own_list`: everything that can refuse the send runs before the ledger or the
   ESP is touched: the provider can batch, the last own-list send came back clean enough
   (complaint and hard-bounce rates, spark_mail/sending/reputation.py; `force` overrides),
   the subscribers file is usable (invalid rows stop the send unless `skip_invalid`, and
   so does an address the provider cannot carry), the layout personalises (signing
   secret, unsubscribe link). The issue is rendered ONCE here, with reader markers, and
   the checks run on a reader's copy: what readers get.
2. `send_own_list`: the send lifecycle claims the issue; readers an interrupted run left in
   flight are settled by the recovery rule (asked about, repeated under the same key, or
   uncertain); BatchRun sends everyone not yet settled; the issue's row follows from its
   readers: `sent` only when nobody is left. Before each batch leaves, its readers are
   looked up in the reader desk's store: who unsubscribed (or bounced) meanwhile gets
   nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from spark_mail.audience import (
    AudiencePaths,
    AudienceReport,
    Reader,
    audience_paths,
    check_audience,
    iter_readers,
)
from spark_mail.audience.suppressions import SuppressionStore
from spark_mail.errors import (
    AudienceError,
    BatchSendFailed,
    ProviderError,
    SendUncertain,
    SendUnconfirmed,
)
from spark_mail.ledger import ReaderState, SendRecord
from spark_mail.providers.base import Capability, Provider
from spark_mail.sending.batches import BatchRun, BatchSummary, Progress, StillWanted
from spark_mail.sending.lifecycle import Recovery, SendLifecycle, parse_stamp, recovery_action

if TYPE_CHECKING:
    from spark_mail.config import Settings
    from spark_mail.personalize import PersonalizedTemplate
    from spark_mail.render import RenderedEmail


# The esp_ids key of an own-list schedule: the readers the ESP holds for the time.
SCHEDULED_READERS = "readers_scheduled"


@dataclass
class OwnList:
    """A checked subscribers file and the issue rendered once for personalisation."""

    template: PersonalizedTemplate
    report: AudienceReport
    paths: AudiencePaths  # subscribers file, suppression file, the reader desk's store
    can_carry: Callable[[str], bool]

    def readers(self) -> Iterator[Reader]:
        """The readers to send to, streamed (suppressions from the check pass reused)."""
        return iter_readers(
            *self.paths, suppressed_keys=self.report.suppressed_keys, can_carry=self.can_carry
        )

    def first_readers(self, count: int) -> list[Reader]:
        return list(islice(self.readers(), count))

    def sample_copy(self) -> RenderedEmail:
        """The first reader's copy: what the checks look at, since it is what readers get."""
        first = self.first_readers(1)
        return self.template.copy(first[0]).email(self.template.email)


@dataclass
class OwnListOptions:
    limit: int | None = None
    skip_invalid: bool = False
    resend_uncertain: bool = False
    progress: Progress | None = None
    still_wanted: StillWanted | None = None
    # Hand every batch to the ESP's scheduler for this time (Mailgun, SendGrid): readers
    # are recorded as accepted, the issue as `scheduled` (spark_mail/scheduling/esp.py).
    deliver_at: dt.datetime | None = None


def own_list_wanted(settings: Settings, provider: Provider) -> bool:
    """Send to our own subscribers file: one is set, or the ESP keeps no list of its own."""
    return bool(settings.audience) or not provider.owns_audience


def prepare_own_list(
    issue: Path, settings: Settings, provider: Provider, skip_invalid: bool, force: bool = False
) -> OwnList:
    """Check the subscribers file and render the issue once (see the module docstring)."""
    from spark_mail.personalize import prepare
    from spark_mail.sending.reputation import check_reputation

    provider.require(Capability.BATCH)
    if not settings.audience:
        provider.require_audience()
    if not force:
        check_reputation(settings, issue.stem)
    paths = audience_paths(settings)
    report = check_audience(*paths, can_carry=provider.can_carry)
    path = paths[0]
    if report.invalid and not skip_invalid:
        listed = "; ".join(f"line {p.line}: {p.reason}" for p in report.invalid_rows[:3])
        more = f" (and {report.invalid - 3:,} more)" if report.invalid > 3 else ""
        raise AudienceError(
            f"{path}: {report.invalid:,} invalid row{'s' * (report.invalid > 1)}, nothing was "
            f"sent - {listed}{more}",
            hint="fix them (`spark-mail audience check` lists every one), or add "
            "--skip-invalid to send to the valid readers only",
        )
    if report.valid == 0:
        raise AudienceError(
            f"{path}: no readers to send to ({report.total:,} rows: {report.invalid:,} invalid, "
            f"{report.suppressed:,} suppressed, {report.duplicates:,} duplicates)",
            hint="check the file with `spark-mail audience check`",
        )
    return OwnList(prepare(issue, settings), report, paths, provider.can_carry)


def send_own_list(
    own: OwnList,
    life: SendLifecycle,
    options: OwnListOptions,
    warnings: list[str],
) -> tuple[str, BatchSummary]:
    """Claim, settle what an interrupted run left in flight, send (or, with `deliver_at`,
    hand every copy to the ESP's scheduler), settle the issue's row. Returns ("sent" |
    "scheduled" | "partial", summary); raises AlreadySent, BatchSendFailed, SendUnconfirmed
    or SendUncertain."""
    mode = "send" if options.deliver_at is None else "schedule"
    begun = life.begin(
        mode, allow_uncertain=options.resend_uncertain, scheduled_for=options.deliver_at
    )
    if begun.outcome is not None:
        return str(begun.outcome), BatchSummary()
    repeats, held = settle_in_flight(life, begun.resumed, own.template)
    if options.deliver_at is not None:
        known = dict(begun.record.esp_ids) if begun.record else {}
        try:  # the schedule's ids (SendGrid's batch_id) are recorded before any batch
            life.provider.schedule_batches(options.deliver_at, life.record_ids, known)
        except ProviderError as err:
            life.fail(err)
    summary = BatchSummary()
    summary.add_audience(own.report)
    maybe_sent, _ = life.unsettled_action(
        can_ask=Capability.BATCH_LOOKUP in life.provider.capabilities
    )
    store = SuppressionStore(own.paths.store) if own.paths.store else None
    run = BatchRun(
        own.template,
        life.provider,
        life.ledger,
        summary,
        life.clock,
        limit=options.limit,
        resend_uncertain=options.resend_uncertain,
        repeats=repeats,
        hold=held,
        progress=options.progress,
        still_wanted=options.still_wanted or (store.suppressed if store else None),
        on_maybe_sent=ReaderState.UNCERTAIN
        if maybe_sent == Recovery.UNCERTAIN
        else ReaderState.SENDING,
    )
    try:
        run.run(own.readers())
    except KeyboardInterrupt:
        life.ledger.mark_partial(
            life.slug,
            f"interrupted after {summary.sent:,} readers this run: run again to continue",
            life.clock.now(),
        )
        raise
    except ProviderError as err:  # before any batch left (a template, a connection)
        life.fail(BatchSendFailed(str(err), summary=summary) if not err.maybe_sent else err)
    finally:
        if store is not None:
            store.close()
    return settle_issue(life, summary, warnings, options.deliver_at), summary


def settle_in_flight(
    life: SendLifecycle, before: SendRecord | None, template: PersonalizedTemplate
) -> tuple[dict[int, list[str]], set[str]]:
    """Readers an interrupted run left `sending`, batch by batch, by the recovery rule:
    batches to repeat under their key (number -> reader keys), and the readers that became
    `uncertain` here (this run holds them, even with --resend-uncertain: nobody has checked
    them yet). Readers the ESP shows as sent are recorded sent."""
    from spark_mail.sending.batches import batch_key

    repeats: dict[int, list[str]] = {}
    held: set[str] = set()
    for number, batch in life.ledger.in_flight(life.slug).items():
        key = batch_key(template, number, batch.readers)
        action, reason = recovery_action(
            life.provider,
            earlier_provider=batch.provider or (before.provider if before else ""),
            same_content=batch.key == key if batch.key else _same_content(life, before),
            started=parse_stamp(batch.first_at),
            now=life.clock.now(),
            can_ask=Capability.BATCH_LOOKUP in life.provider.capabilities and bool(batch.key),
        )
        if action == Recovery.REPEAT:
            repeats[number] = batch.readers
            continue
        left = batch.readers
        if action == Recovery.ASK:
            left = ask_about_batch(life, batch.key or key, batch.readers)
            reason = f"{life.provider.name} does not show them as sent (its search may lag)"
        life.ledger.settle_in_flight(
            life.slug,
            ReaderState.UNCERTAIN,
            f"in flight when a send was interrupted; {reason}",
            life.clock.now(),
            batches=[number],
        )
        held.update(left)
    return repeats, held


def _same_content(life: SendLifecycle, before: SendRecord | None) -> bool:
    return before is None or before.content_hash == life.content_hash


def ask_about_batch(life: SendLifecycle, key: str, readers: list[str]) -> list[str]:
    """ASK the ESP about one batch in flight: readers it shows as sent are recorded; the
    others are returned. An ESP that cannot be asked now leaves it for the next run."""
    try:
        found = life.provider.lookup_batch(key, readers)
    except ProviderError as exc:
        life.could_not_ask(
            f"could not ask {life.provider.name} about a batch in flight: {exc.message}"
        )
    answers = [(k, ReaderState.SENT, esp_id, None) for k, esp_id in found.items() if k in readers]
    if answers:
        life.ledger.write_batches(life.slug, 0, [], answers, life.clock.now())
    return [k for k in readers if k not in found]


def settle_issue(
    life: SendLifecycle,
    summary: BatchSummary,
    warnings: list[str],
    deliver_at: dt.datetime | None = None,
) -> str:
    """The issue's row from its readers: `sent` (or `scheduled` for `deliver_at`) only when
    nobody is left. Returns "sent", "scheduled" or "partial"; raises BatchSendFailed,
    SendUnconfirmed or SendUncertain with the summary."""
    ledger, slug, now = life.ledger, life.slug, life.clock.now()
    counts = ledger.reader_counts(slug)
    in_doubt = counts.get(ReaderState.SENDING, 0)
    uncertain = counts.get(ReaderState.UNCERTAIN, 0)
    unsent = counts.get(ReaderState.FAILED, 0) + summary.remaining
    sent = counts.get(ReaderState.SENT, 0)
    progress = f"{sent:,} of {summary.readers:,} readers sent"
    if summary.seen < summary.readers and not summary.error:
        summary.error = (
            f"the subscribers file changed during the send: it had {summary.readers:,} readers "
            f"when checked, the send read {summary.seen:,}"
        )
    if in_doubt:
        reason = (
            f"{in_doubt:,} readers were in batches that may have gone out ({summary.error}); "
            f"{progress}"
        )
        ledger.mark_unconfirmed(slug, reason, now)
        raise SendUnconfirmed(
            f"{slug}: {reason}",
            hint=f"run `spark-mail send {slug}` again: it settles those readers first "
            f"({life.provider.name} is asked, or the batch is repeated under its key), then "
            "sends the rest",
            slug=slug,
            summary=summary,
        )
    if uncertain:
        examples = ", ".join(a for a, _ in ledger.readers_in(slug, ReaderState.UNCERTAIN, 3))
        reason = (
            f"{uncertain:,} readers were in batches that may have gone out ({examples}"
            f"{', ...' if uncertain > 3 else ''}); {progress}"
            + (f"; {unsent:,} left for the next run" if unsent else "")
        )
        if unsent:
            # Readers clearly not sent must not wait for a human (SMTP, SES: the messages
            # after an uncertain one): the row stays sendable, the next run sends them and
            # holds the uncertain ones back, then the issue ends uncertain.
            ledger.mark_failed(slug, reason, now)
        else:
            ledger.mark_uncertain(slug, reason, now)
        raise SendUncertain(slug, reason, summary=summary)
    if summary.error:
        message = f"{summary.error} ({progress}; {unsent:,} left for the next run)"
        ledger.mark_failed(slug, message, now)
        raise BatchSendFailed(
            message, hint=f"run `spark-mail send {slug}` again to send the rest", summary=summary
        )
    if unsent:
        ledger.mark_partial(slug, f"{progress}; {unsent:,} left for a later run", now)
        warnings.append(f"{unsent:,} readers not sent yet: run `spark-mail send {slug}` again")
        return "partial"
    if deliver_at is not None:
        life.scheduled(deliver_at, {SCHEDULED_READERS: str(sent)})
        return "scheduled"
    life.sent({"readers_sent": str(sent)}, note=progress)
    return "sent"
