"""Own-list sending: every reader of the subscribers file gets their own copy, in batches.

    BatchRun(template, provider, ledger, summary, ...).run(readers) -> BatchSummary

The readers stream from the subscribers file (already checked) and are cut into batches of
`provider.batch_size`. Each batch:

1. readers settled by an earlier run (sent, refused) are skipped; readers an interrupted
   run left in flight are regrouped into their batch, to be repeated under the same key;
2. the provider encodes it (`provider.batch_job`) while earlier batches are on the wire;
3. its readers are written to the ledger as `sending` with the batch number BEFORE the
   batch leaves (after a crash we know exactly who was in flight), in one transaction with
   the answers that came back since. Only the main thread touches SQLite;
4. a worker thread makes the call (`provider.concurrency` batches in flight at once).

Threads rather than asyncio: the providers' retry loop, rate limiter and SMTP connections
are synchronous and already serve single sends; sockets release the GIL.

A batch's idempotency key is derived from its number and its readers, so a repeat of the
same batch (a retry, or the next run after a crash) carries the same key. A batch that
fails as a whole stops the run (no new batches; those in flight finish). Its readers end by
the send lifecycle's fault rule: `failed` (clearly refused: the next run sends them),
`sending` (the ESP may have acted and can be asked or drops a repeat: the next run settles
them) or `uncertain`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

from spark_mail.audience.addresses import canonical_address
from spark_mail.clock import Clock
from spark_mail.errors import ProviderError
from spark_mail.ledger import Ledger, ReaderState
from spark_mail.ledger.deliveries import Answer

if TYPE_CHECKING:
    from spark_mail.audience import AudienceReport, Reader
    from spark_mail.personalize import PersonalizedTemplate
    from spark_mail.providers.base import BatchResult, Provider

LISTED = 20  # refused / uncertain readers named in a summary


@dataclass
class BatchSummary:
    """What one own-list run did; counts are readers."""

    readers: int = 0  # valid, unsuppressed, first-seen readers in the file
    seen: int = 0  # readers this run read from the file (fewer: it changed meanwhile)
    sent: int = 0  # this run
    refused: int = 0  # this run: the ESP refused these readers (not retried)
    failed: int = 0  # this run: their batch was clearly refused; the next run sends them
    uncertain: int = 0  # may have gone out: settled by the next run, or by a human
    already_sent: int = 0  # settled by an earlier run (sent or refused): skipped
    held_uncertain: int = 0  # uncertain from an earlier run, kept back
    remaining: int = 0  # not tried this run (--limit, or the run stopped on a failure)
    resent_batches: int = 0  # in flight at a crash, sent again under the same key
    suppressed: int = 0
    suppressed_during_run: int = 0  # unsubscribed while the send was running
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
            + self.suppressed_during_run
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


Progress = Callable[[BatchSummary], None]
# Readers to leave out of a batch at the last moment (unsubscribed meanwhile), by key.
StillWanted = Callable[[list[str]], set[str]]


@dataclass
class Batch:
    number: int
    readers: list[Reader]
    key: str
    repeat: bool = False  # in flight when an earlier run stopped: same readers, same key


def reader_key(reader: Reader) -> str:
    """The reader's row in the ledger: the canonical spelling of the address."""
    return canonical_address(reader.email)


def batch_key(template: PersonalizedTemplate, number: int, keys: Iterable[str]) -> str:
    """The idempotency key of a batch: the issue's content, the batch's number and its
    readers. A repeat of the same batch carries the same key; other readers never do."""
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:24]
    return f"{template.email.idempotency_key}:batch:{number}:{digest}"


class BatchRun:
    """One own-list run over the readers (see the module docstring). `ledger` None: a dry
    run, nothing read or written. `repeats`: batch number -> reader keys of batches an
    interrupted run left in flight, to send again under their key; `hold`: readers never
    sent this run (even with `resend_uncertain`). `on_maybe_sent` is the fault rule: what a
    batch that may have gone through leaves its readers as. A batch's readers are in the
    order of their keys, so the same readers always make the same request."""

    def __init__(
        self,
        template: PersonalizedTemplate,
        provider: Provider,
        ledger: Ledger | None,
        summary: BatchSummary,
        clock: Clock,
        *,
        limit: int | None = None,
        resend_uncertain: bool = False,
        repeats: dict[int, list[str]] | None = None,
        hold: set[str] | None = None,
        progress: Progress | None = None,
        still_wanted: StillWanted | None = None,
        on_maybe_sent: ReaderState = ReaderState.UNCERTAIN,
    ) -> None:
        self.template = template
        self.provider = provider
        self.ledger = ledger
        self.summary = summary
        self.clock = clock
        self.slug = template.email.slug
        self.budget = limit
        self.resend_uncertain = resend_uncertain
        self.progress = progress
        self.still_wanted = still_wanted
        self.on_maybe_sent = on_maybe_sent
        self.hold = hold or set()  # made uncertain this run: nobody has checked them yet
        # reader key -> batch number, and the readers gathered so far, of repeated batches
        self.repeat_of = {key: n for n, keys in (repeats or {}).items() for key in keys}
        self.repeat_sizes = {n: len(keys) for n, keys in (repeats or {}).items()}
        self.gathering: dict[int, list[Reader]] = {n: [] for n in self.repeat_sizes}
        self.next_number = ledger.next_batch(self.slug) if ledger is not None else 1
        self.resuming = self.next_number > 1  # an earlier run recorded readers
        self.stop = False
        self.started = 0.0
        self.last_tick = 0.0
        self.in_flight: dict[Future[BatchResult], Batch] = {}
        # Answers not yet in the ledger: written with the next batch's start, in ONE
        # transaction (each commit waits for the disk), or at the end.
        self.answered: list[Answer] = []

    # -- the run -------------------------------------------------------------------------
    def run(self, readers: Iterable[Reader]) -> BatchSummary:
        from spark_mail.providers.base import Capability

        self.provider.require(Capability.BATCH)
        self.provider.prepare_batches(self.template)  # set-up: before the clock starts
        self.started = self.clock.monotonic()
        concurrency = self.provider.concurrency
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="spark-send") as pool:
            try:
                for batch in self.plan(readers):
                    self.dispatch(batch, pool, concurrency)
                while self.in_flight:
                    self.settle(block=True)
            except BaseException:  # Ctrl-C, or an error before a batch could leave
                self.stop = True
                while self.in_flight:  # what is in flight finishes and is recorded
                    self.settle(block=True)
                raise
            finally:
                self.write()
                self.summary.seconds = self.clock.monotonic() - self.started
        self.settle_incomplete_repeats()
        return self.summary

    def dispatch(self, batch: Batch, pool: ThreadPoolExecutor, concurrency: int) -> None:
        """Encode the batch while others are on the wire, wait for a slot, drop whoever
        unsubscribed meanwhile, record its start and hand it to a worker; or count it as
        remaining once the run has stopped."""
        if self.stop or not batch.readers:
            self.summary.remaining += len(batch.readers)
            return
        job = self.provider.batch_job(self.template, batch.readers, batch.key)
        while len(self.in_flight) >= concurrency:
            self.settle(block=True)
        self.settle(block=False)
        if self.stop:  # a batch failed meanwhile: this one does not leave
            self.summary.remaining += len(batch.readers)
            return
        if self.still_wanted is not None:  # asked at the last moment: the batch leaves now
            wanted = self.drop_unwanted(batch)
            if wanted is not batch:
                batch = wanted
                if not batch.readers:
                    return
                job = self.provider.batch_job(self.template, batch.readers, batch.key)
        self.write(batch)  # before the batch leaves: after a crash we know who was in it
        if batch.repeat:
            self.summary.resent_batches += 1
        self.in_flight[pool.submit(job)] = batch

    def drop_unwanted(self, batch: Batch) -> Batch:
        """Readers who unsubscribed while the send ran get nothing. A repeated batch is
        never cut (the same key must carry the same readers): its readers stay as they were."""
        assert self.still_wanted is not None
        if batch.repeat:
            return batch
        gone = self.still_wanted([reader_key(r) for r in batch.readers])
        if not gone:
            return batch
        kept = [r for r in batch.readers if reader_key(r) not in gone]
        self.summary.suppressed_during_run += len(batch.readers) - len(kept)
        return self.batch(batch.number, kept)

    def batch(self, number: int, readers: list[Reader], repeat: bool = False) -> Batch:
        """A batch: its readers in key order, its key from its number and readers."""
        ordered = sorted(readers, key=reader_key)
        keys = [reader_key(r) for r in ordered]
        return Batch(number, ordered, batch_key(self.template, number, keys), repeat)

    # -- planning ------------------------------------------------------------------------
    def plan(self, readers: Iterable[Reader]) -> Iterator[Batch]:
        """Readers not yet settled, cut into batches (repeats complete in file order)."""
        current: list[Reader] = []
        size = self.provider.batch_size
        for chunk in _chunks(readers, size):
            self.summary.seen += len(chunk)
            states = self.known_states(chunk)
            for reader in chunk:
                ready = self.place(reader, states.get(reader_key(reader)), current)
                if ready is not None:
                    yield ready
                if len(current) == size:
                    yield self.new_batch(current)
                    current = []
            self.tick()
        if current:
            yield self.new_batch(current)

    def known_states(self, chunk: list[Reader]) -> dict[str, tuple[str, int | None]]:
        if self.ledger is None or not self.resuming:
            return {}
        return self.ledger.reader_states(self.slug, [reader_key(r) for r in chunk])

    def place(
        self, reader: Reader, known: tuple[str, int | None] | None, current: list[Reader]
    ) -> Batch | None:
        """Put one reader where it belongs; a repeated batch that is complete comes back."""
        state, number = known or (None, None)
        if state in (ReaderState.SENT, ReaderState.REFUSED):
            self.summary.already_sent += 1
            return None
        if state == ReaderState.SENDING and number in self.gathering:
            gathered = self.gathering[number]
            gathered.append(reader)
            if len(gathered) == self.repeat_sizes[number]:
                del self.gathering[number]
                return self.batch(number, gathered, repeat=True)
            return None
        held = state == ReaderState.SENDING or reader_key(reader) in self.hold
        if held or (state == ReaderState.UNCERTAIN and not self.resend_uncertain):
            # In flight and not repeated (settled by the recovery rule, never re-sent under
            # a new key), or uncertain and nobody said to send it again.
            self.summary.held_uncertain += 1
            return None
        if self.stop or self.budget == 0:
            self.summary.remaining += 1
            return None
        if self.budget is not None:
            self.budget -= 1
        current.append(reader)
        return None

    def new_batch(self, readers: list[Reader]) -> Batch:
        self.next_number += 1
        return self.batch(self.next_number - 1, readers)

    def settle_incomplete_repeats(self) -> None:
        """Batches an earlier run left in flight whose readers are no longer all in the
        file: a repeat would not be the same request, so they are uncertain now."""
        if self.gathering and self.ledger is not None:
            self.summary.uncertain += self.ledger.settle_in_flight(
                self.slug,
                ReaderState.UNCERTAIN,
                "in flight when a send was interrupted, and the subscribers file changed since",
                self.clock.now(),
                batches=list(self.gathering),
            )

    # -- answers -------------------------------------------------------------------------
    def settle(self, block: bool) -> None:
        done = [f for f in self.in_flight if f.done()]
        if block and not done:
            done = list(wait(list(self.in_flight), return_when=FIRST_COMPLETED)[0])
        for future in done:
            self.record(self.in_flight.pop(future), future)

    def record(self, batch: Batch, future: Future[BatchResult]) -> None:
        try:
            result = future.result()
            outcomes = result.outcomes
            self.summary.requests += result.requests
            self.summary.bytes_sent += result.bytes_sent
            if result.error is not None:
                self.stopped(str(result.error))
        except ProviderError as exc:
            self.stopped(str(exc))
            state = self.on_maybe_sent if exc.maybe_sent else ReaderState.FAILED
            if batch.repeat and exc.status == 409:
                # The key is known to the ESP with another request: what the first one did
                # cannot be told from here.
                state = ReaderState.UNCERTAIN
            outcomes = [(str(state), exc.message)] * len(batch.readers)
        self.summary.batches += 1
        for reader, (state_name, detail) in zip(batch.readers, outcomes, strict=True):
            self.count(reader, ReaderState(state_name), detail)
        self.tick(force=True)

    def stopped(self, error: str) -> None:
        self.stop = True
        self.summary.error = self.summary.error or error

    def count(self, reader: Reader, state: ReaderState, detail: str) -> None:
        sent = state == ReaderState.SENT
        self.answered.append(
            (reader_key(reader), state, detail if sent else None, None if sent else detail)
        )
        summary = self.summary
        if sent:
            summary.sent += 1
        elif state == ReaderState.REFUSED:
            summary.refused += 1
            if len(summary.refused_readers) < LISTED:
                summary.refused_readers[reader.email] = detail
        elif state == ReaderState.FAILED:
            summary.failed += 1
        else:  # uncertain, or in flight for the next run to settle
            summary.uncertain += 1
            if len(summary.uncertain_readers) < LISTED:
                summary.uncertain_readers.append(reader.email)

    def write(self, batch: Batch | None = None) -> None:
        if self.ledger is None or not (batch or self.answered):
            return
        start = [(reader_key(r), r.email) for r in batch.readers] if batch else []
        number = batch.number if batch else 0
        self.ledger.write_batches(
            self.slug,
            number,
            start,
            self.answered,
            self.clock.now(),
            provider=self.provider.name,
            key=batch.key if batch else None,
        )
        self.answered.clear()

    def tick(self, force: bool = False) -> None:
        """Progress at most five times a second (skipping 100,000 settled readers is fast)."""
        self.summary.seconds = self.clock.monotonic() - self.started
        if self.progress is not None and (force or self.summary.seconds - self.last_tick >= 0.2):
            self.last_tick = self.summary.seconds
            self.progress(self.summary)


def _chunks(items: Iterable[Reader], size: int) -> Iterator[list[Reader]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
