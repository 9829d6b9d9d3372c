"""Own-list sending: every reader of the subscribers file gets their own copy, in batches.

    send_to_readers(template, provider, readers, ledger, ...) -> BulkSummary

The readers stream from the subscribers file (spark_mail.audience, already checked) and
are cut into batches of `provider.batch_size` (Postmark 500, Resend 100). Each batch:

1. the provider encodes it (`provider.batch_job`) while earlier batches are on the wire;
2. its readers are written to the ledger as `sending` with the batch number, BEFORE the
   batch leaves (after a crash we know exactly who was in flight), in one transaction with
   the answers that came back since: sent / refused / failed / uncertain, message by
   message. Only the main thread touches SQLite;
3. a worker thread makes the call (`provider.concurrency` batches in flight at once;
   retries, the rate limit and 429s are base.py's business).

Threads rather than asyncio: the providers' retry loop, rate limiter and SMTP connections
are synchronous and already serve the single sends; sockets release the GIL, so a few
threads keep several batch calls in flight without a second, async copy of that code.

Readers the ledger already lists as sent or refused are skipped, so a run after a crash,
Ctrl-C or `--limit N` continues with the rest. Readers left `sending` by a dead run are
settled by recovery.settle_in_flight_readers before this runs: the batches it keeps
(an ESP that honours idempotency keys) are rebuilt from the same readers in the same order
and sent again under the same key, so the ESP drops them if they arrived the first time.
The first batch that fails as a whole stops the run (no new batches; those in flight
finish); what was not sent is `remaining` and goes out on the next run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

from spark_mail.audience.addresses import canonical_address
from spark_mail.errors import ProviderError
from spark_mail.ledger import Ledger, ReaderState

if TYPE_CHECKING:
    from spark_mail.audience import AudienceReport, Reader
    from spark_mail.personalize import PersonalizedTemplate
    from spark_mail.providers.base import BatchResult, Provider

LISTED = 20  # refused / uncertain readers named in a summary


class BulkSendFailed(ProviderError):
    """A batch failed as a whole and the run stopped; `summary` says how far it got."""

    summary: BulkSummary


@dataclass
class BulkSummary:
    """What one own-list run did; counts are readers."""

    readers: int = 0  # valid, unsuppressed, first-seen readers in the file
    sent: int = 0  # this run
    refused: int = 0  # this run: the ESP refused these readers (not retried)
    failed: int = 0  # this run: their batch failed; the next run sends them
    uncertain: int = 0  # may have gone out; only --resend-uncertain sends them again
    already_sent: int = 0  # settled by an earlier run (sent or refused): skipped
    held_uncertain: int = 0  # uncertain from an earlier run, kept back
    remaining: int = 0  # not tried this run (--limit, or the run stopped on a failure)
    resent_batches: int = 0  # in flight at a crash, sent again under the same key
    suppressed: int = 0
    invalid: int = 0
    duplicates: int = 0
    batches: int = 0
    requests: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0
    refused_readers: dict[str, str] = field(default_factory=dict)
    uncertain_readers: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def handled(self) -> int:
        """Readers this run has dealt with, skipped ones included (progress)."""
        return (
            self.sent
            + self.refused
            + self.failed
            + self.uncertain
            + self.already_sent
            + self.held_uncertain
            + self.remaining
        )

    @property
    def rate(self) -> float:
        """Readers per second sent (or refused) by this run."""
        return (self.sent + self.refused) / self.seconds if self.seconds > 0 else 0.0

    def add_audience(self, report: AudienceReport) -> None:
        self.readers = report.valid
        self.suppressed = report.suppressed
        self.invalid = report.invalid
        self.duplicates = report.duplicates

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["rate"] = round(self.rate, 1)
        data["seconds"] = round(self.seconds, 3)
        return data


Progress = Callable[[BulkSummary], None]


@dataclass
class _Batch:
    number: int
    readers: list[Reader]
    key: str
    repeat: bool = False  # in flight at a crash: same readers, same key


def batch_key(template: PersonalizedTemplate, number: int) -> str:
    """The Idempotency-Key of batch `number` of this issue's content."""
    return f"{template.email.idempotency_key}:batch:{number}"


def reader_key(reader: Reader) -> str:
    """The reader's row in the ledger: the canonical spelling of the address."""
    return canonical_address(reader.email)


def send_to_readers(
    template: PersonalizedTemplate,
    provider: Provider,
    readers: Iterable[Reader],
    ledger: Ledger | None,
    summary: BulkSummary,
    *,
    limit: int | None = None,
    resend_uncertain: bool = False,
    repeat_batches: dict[int, int] | None = None,
    progress: Progress | None = None,
) -> BulkSummary:
    """Send `readers` their copies through `provider` (see the module docstring).

    `ledger` None: a dry run (nothing read or written). `repeat_batches`: batch number ->
    reader count of batches a crashed run left in flight, to send again under their key.
    KeyboardInterrupt stops new batches, waits for those in flight and records them.
    """
    from spark_mail.providers.base import Capability

    provider.require(Capability.BATCH)
    slug = template.email.slug
    provider.prepare_batches(template)  # set-up, not sending: before the clock starts
    started = time.monotonic()
    repeats = dict(repeat_batches or {})
    gathering: dict[int, list[Reader]] = {n: [] for n in repeats}
    next_number = ledger.next_batch(slug) if ledger is not None else 1
    resuming = next_number > 1  # an earlier run recorded readers: look each one up
    budget = limit
    stop = False
    last_tick = 0.0

    def tick(force: bool = False) -> None:
        """Progress at most five times a second (skipping 100,000 settled readers is fast)."""
        nonlocal last_tick
        summary.seconds = time.monotonic() - started
        if progress is not None and (force or summary.seconds - last_tick >= 0.2):
            last_tick = summary.seconds
            progress(summary)

    def plan() -> Iterator[_Batch]:
        """Readers not yet settled, cut into batches (repeats complete in file order)."""
        nonlocal next_number, budget
        current: list[Reader] = []
        size = provider.batch_size
        for chunk in _chunks(readers, size):
            states = (
                ledger.reader_states(slug, [reader_key(r) for r in chunk])
                if ledger is not None and resuming
                else {}
            )
            for reader in chunk:
                state, number = states.get(reader_key(reader), (None, None))
                if state in (ReaderState.SENT, ReaderState.REFUSED):
                    summary.already_sent += 1
                    continue
                if state == ReaderState.SENDING and number in gathering:
                    gathering[number].append(reader)
                    if len(gathering[number]) == repeats[number]:
                        yield _Batch(
                            number, gathering.pop(number), batch_key(template, number), True
                        )
                    continue
                if state in (ReaderState.UNCERTAIN, ReaderState.SENDING) and not resend_uncertain:
                    summary.held_uncertain += 1
                    continue
                if stop or budget == 0:
                    summary.remaining += 1
                    continue
                if budget is not None:
                    budget -= 1
                current.append(reader)
                if len(current) == size:
                    yield _Batch(next_number, current, batch_key(template, next_number))
                    next_number, current = next_number + 1, []
            tick()
        if current:
            yield _Batch(next_number, current, batch_key(template, next_number))
            next_number += 1

    def record(batch: _Batch, future: Future[BatchResult]) -> None:
        nonlocal stop
        try:
            result = future.result()
            outcomes = result.outcomes
            summary.requests += result.requests
            summary.bytes_sent += result.bytes_sent
            if result.error is not None:
                stop = True
                summary.error = summary.error or str(result.error)
        except ProviderError as exc:
            stop = True
            summary.error = summary.error or str(exc)
            if exc.maybe_sent and provider.idempotent:
                # The same key next run: the ESP drops it if this one arrived.
                state = ReaderState.SENDING
            elif exc.maybe_sent:
                state = ReaderState.UNCERTAIN
            else:
                state = ReaderState.FAILED
            outcomes = [(str(state), exc.message)] * len(batch.readers)
        summary.batches += 1
        rows = []
        for reader, (state_name, detail) in zip(batch.readers, outcomes, strict=True):
            state = ReaderState(state_name)
            sent = state == ReaderState.SENT
            rows.append(
                (reader_key(reader), state, detail if sent else None, None if sent else detail)
            )
            if sent:
                summary.sent += 1
            elif state == ReaderState.REFUSED:
                summary.refused += 1
                if len(summary.refused_readers) < LISTED:
                    summary.refused_readers[reader.email] = detail
            elif state == ReaderState.FAILED:
                summary.failed += 1
            else:  # uncertain, or in flight for the next run's repeat
                summary.uncertain += 1
                if len(summary.uncertain_readers) < LISTED:
                    summary.uncertain_readers.append(reader.email)
        answered.extend(rows)
        tick(force=True)

    concurrency = provider.concurrency
    in_flight: dict[Future[BatchResult], _Batch] = {}
    # Answers not yet in the ledger: written with the next batch's start, in ONE
    # transaction (each commit waits for the disk), or at the end.
    answered: list[tuple[str, ReaderState, str | None, str | None]] = []

    def settle(block: bool) -> None:
        done = [f for f in in_flight if f.done()]
        if block and not done:
            done = list(wait(list(in_flight), return_when=FIRST_COMPLETED)[0])
        for future in done:
            record(in_flight.pop(future), future)

    def write(batch: _Batch | None = None) -> None:
        if ledger is None or not (batch or answered):
            return
        start = [(reader_key(r), r.email) for r in batch.readers] if batch else []
        ledger.write_batches(slug, batch.number if batch else 0, start, answered)
        answered.clear()

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="spark-send") as pool:
        try:
            for batch in plan():
                if stop:
                    summary.remaining += len(batch.readers)
                    continue
                # Encode it while the batches in flight wait for the ESP, then wait for a slot.
                job = provider.batch_job(template, batch.readers, batch.key)
                while len(in_flight) >= concurrency:
                    settle(block=True)
                settle(block=False)
                if stop:  # a batch failed meanwhile: this one does not leave
                    summary.remaining += len(batch.readers)
                    continue
                write(batch)  # before the batch leaves: after a crash we know who was in it
                if batch.repeat:
                    summary.resent_batches += 1
                in_flight[pool.submit(job)] = batch
            while in_flight:
                settle(block=True)
        except KeyboardInterrupt:
            stop = True
            while in_flight:  # what is in flight finishes and is recorded
                settle(block=True)
            raise
        finally:
            write()
            summary.seconds = time.monotonic() - started
    # Batches a crash left in flight whose readers are no longer all in the file: the
    # repeat would not be the same request, so they are uncertain now.
    if gathering and ledger is not None:
        summary.uncertain += ledger.settle_in_flight(
            slug,
            ReaderState.UNCERTAIN,
            "in flight when a send was interrupted, and the subscribers file changed since",
            batches=list(gathering),
        )
    return summary


def _chunks(items: Iterable[Reader], size: int) -> Iterator[list[Reader]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
