"""A small HTTP/1.1 load generator: many keep-alive connections, prepared requests, the
latency of each. Raw asyncio streams (uvloop when installed), not an HTTP client library,
so the generator costs little of the CPU it shares with the server it measures.

    result = run_load("127.0.0.1", 8040, requests, connections=64)
    result.statuses, result.rate, result.percentile(99)

`requests` are complete request bytes (see `http_request`); each is sent once, in order,
by whichever connection is free.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


def http_request(method: str, target: str, host: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class LoadResult:
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Latency in milliseconds at percentile p."""
        ordered = sorted(self.latencies)
        if not ordered:
            return 0.0
        return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 response off a keep-alive connection: its head (the body is read and
    dropped, by Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return head


async def _connection(
    host: str, port: int, requests: Sequence[bytes], cursor: list[int], result: LoadResult
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while cursor[0] < len(requests):
            request = requests[cursor[0]]
            cursor[0] += 1
            started = time.perf_counter()
            writer.write(request)
            head = await read_response(reader)
            result.latencies.append(time.perf_counter() - started)
            result.statuses[int(head[9:12])] += 1
            if b"connection: close" in head.lower():
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
    finally:
        writer.close()


async def _run(host: str, port: int, requests: Sequence[bytes], connections: int) -> LoadResult:
    result = LoadResult()
    cursor = [0]
    started = time.perf_counter()
    await asyncio.gather(
        *(_connection(host, port, requests, cursor, result) for _ in range(connections))
    )
    result.seconds = time.perf_counter() - started
    return result


def run_load(host: str, port: int, requests: Sequence[bytes], connections: int = 32) -> LoadResult:
    return run_fast(_run(host, port, requests, connections))


def run_fast(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main), on uvloop when it is installed (uvicorn[standard] brings it): a
    load client's CPU, which the server shares the cores with, is then about a third less."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)
