"""An httpx transport whose every request has a deadline for the WHOLE exchange.

httpx's timeouts bound each connect, write and read on its own, so a server that drips one
byte every half second keeps a request alive indefinitely under a 2 s read timeout. Here
each socket operation gets at most what is left of the request's deadline (set by the
caller around the request, per thread), and the first operation after it raises a
timeout: the request takes at most `deadline` seconds, however the server behaves.

Every transport shares the process's one TLS context (spark_mail.tls).
"""

from __future__ import annotations

import ssl
import threading
import time
import typing
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import httpcore
import httpx

from spark_mail.tls import https_context

_local = threading.local()


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Bound every request this thread makes inside the block to `seconds` in all."""
    _local.deadline = time.monotonic() + seconds
    try:
        yield
    finally:
        _local.deadline = None


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    end = getattr(_local, "deadline", None)
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise error("the whole request took longer than its deadline")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        upgraded = self._inner.start_tls(
            ssl_context, server_hostname, _bounded(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(upgraded)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(
            host, port, _bounded(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._inner.connect_unix_socket(
            path, _bounded(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's own transport (TLS verified against the system's store, HTTPS_PROXY from
    the environment honoured), on the deadline-aware network backend."""

    def __init__(self, base_url: str) -> None:
        context = https_context()
        super().__init__(verify=context)  # its own pool is replaced below; no second context
        backend = _DeadlineBackend()
        proxy = _proxy_for(base_url)
        if proxy:
            url = httpx.URL(proxy)
            self._pool = httpcore.HTTPProxy(
                proxy_url=httpcore.URL(
                    scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
                ),
                ssl_context=context,
                network_backend=backend,
            )
        else:
            self._pool = httpcore.ConnectionPool(ssl_context=context, network_backend=backend)


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for this URL (HTTPS_PROXY, NO_PROXY), as httpx and
    urllib read them."""
    host = httpx.URL(url).host
    if urllib.request.proxy_bypass(host):
        return None
    return urllib.request.getproxies().get(httpx.URL(url).scheme)
