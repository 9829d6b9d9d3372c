"""Group commit: the writes of many concurrent requests share one SQLite transaction.

An unsubscribe must reach the disk (fsync) before the desk answers 200; one fsync costs
milliseconds, so one transaction per request would cap a desk at a few hundred
unsubscribes a second, and the workers would queue on SQLite's write lock. Instead each
worker collects the writes its requests ask for while the previous batch commits, then
commits them together in one transaction on a writer thread: one fsync (and one turn at
the write lock) for the whole batch. The event loop keeps accepting and parsing requests
meanwhile, so batches grow with the load. Each request still waits for its own write to
be committed before it answers.

If the batch's transaction fails, every request in it gets the StoreError (a 503 page):
none of their writes was made.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from spark_mail.audience.suppressions import Operation, SuppressionStore

T = TypeVar("T")
MAX_BATCH = 500  # operations per transaction


class GroupCommit:
    """Runs operations on `store` (a connection of its own) from one writer thread."""

    def __init__(self, store: SuppressionStore) -> None:
        self.store = store
        self._pending: list[tuple[Operation[Any], bool, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, operation: Operation[T], *, durable: bool = False) -> T:
        """Run `operation` in the next batch; returns once that batch is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((operation, durable, future))
        if self._drainer is None:
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="spark-mail-store")
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                operations = [operation for operation, _, _ in batch]
                durable = any(durable for _, durable, _ in batch)
                try:
                    results = await loop.run_in_executor(
                        self._executor,
                        functools.partial(self.store.run, operations, durable=durable),
                    )
                except Exception as exc:  # every request of the batch learns it failed
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, _, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._drainer = None

    def close(self) -> None:
        """Wait for the writer thread's batch, then close the connection (at shutdown: the
        last connection to close folds the write-ahead log into the store's file)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self.store.close()
