"""Running the desk: uvicorn, one process or several workers sharing one socket.

Each worker opens its own connection to the store (SQLite serialises their writes); the
store is created and migrated once here, before the workers start, so they never race on
the schema. uvicorn's access log is off: a desk URL holds a reader's address and token,
and they have no place in a log.

uvicorn waits for a request's headers as long as the client likes, so a few thousand
connections that never finish their headers (slowloris) would take every one of a
worker's MAX_CONNECTIONS and leave readers with 503s. DeskProtocol closes a connection
whose request headers have not all arrived HEADER_SECONDS after it began, and lets one
client address hold at most MAX_CONNECTIONS_PER_ADDRESS connections (this machine's are
not limited: behind a proxy they are everyone's). The body's own deadline is the
guard's (spark_mail/desk/guard.py).
"""

from __future__ import annotations

import asyncio
import collections
import errno
import os
import signal
import socket
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from spark_mail.audience.suppressions import SuppressionStore
from spark_mail.config import Settings
from spark_mail.desk.guard import counted
from spark_mail.errors import ConfigError
from spark_mail.personalize import require_secret

MAX_CONNECTIONS = 2048  # per worker; uvicorn answers 503 beyond
HEADER_SECONDS = 10.0  # from a request's first byte (or the connection's start) to its blank line
MAX_CONNECTIONS_PER_ADDRESS = 64  # per worker; a browser opens 6
# uvicorn's supervisor restarts a worker that answers no ping for this long. Its 5 s also
# ran out while a new worker was still importing (a busy or slow machine: a Raspberry Pi,
# a send on the same cores), and the worker that replaced it was restarted in turn.
WORKER_SILENCE_SECONDS = 60
TOO_SLOW = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class DeskProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with a deadline for request headers and a cap on the
    connections of one client address (see the module docstring)."""

    open_by_address: ClassVar[collections.Counter[str]] = collections.Counter()  # per worker

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.header_deadline: asyncio.TimerHandle | None = None
        client = self.client[0] if self.client else "unknown"
        self.address = client if counted(client) else ""
        if self.address:
            self.open_by_address[self.address] += 1
            if self.open_by_address[self.address] > MAX_CONNECTIONS_PER_ADDRESS:
                transport.close()
                return
        self.arm_header_deadline()

    def arm_header_deadline(self) -> None:
        if self.header_deadline is None:
            self.header_deadline = self.loop.call_later(HEADER_SECONDS, self.headers_too_slow)

    def disarm_header_deadline(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def headers_too_slow(self) -> None:
        self.header_deadline = None
        if not self.transport.is_closing():
            self.transport.write(TOO_SLOW)
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.arm_header_deadline()

    def on_headers_complete(self) -> None:
        self.disarm_header_deadline()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm_header_deadline()
        if self.address:
            self.open_by_address[self.address] -= 1
            if self.open_by_address[self.address] <= 0:
                del self.open_by_address[self.address]
        super().connection_lost(exc)


def raise_open_files_limit(wanted: int) -> None:
    """Let a worker hold MAX_CONNECTIONS sockets: raise the soft limit of open files
    towards the hard one (often 1024 soft by default, which uvicorn would hit first)."""
    try:
        import resource
    except ImportError:  # not on this system (Windows): nothing to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def check_port(host: str, port: int) -> None:
    """Fail early, in one line, when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"{host}:{port} is already in use", hint="stop the other server or pick --port"
                ) from None
            raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror})") from None


def prepare(settings: Settings, host: str, port: int, workers: int) -> None:
    """Everything that can fail before uvicorn starts: the secret, the webhook settings,
    the store, the port."""
    from spark_mail.clock import SYSTEM_CLOCK
    from spark_mail.desk.app import site_folder
    from spark_mail.desk.webhooks import receivers

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}")
    require_secret(settings)
    site_folder(settings)  # not the newsletter's own folder
    receivers(settings, SYSTEM_CLOCK)  # a webhook key that cannot work stops us here
    with SuppressionStore.for_settings(settings) as store:
        store.check()  # create and migrate it now, once, before any worker
    check_port(host, port)


def worker_app() -> Any:
    """The app of one worker process (uvicorn's factory): the same settings the `serve`
    command found, from the same folder and environment it inherited."""
    from spark_mail.config import load_settings
    from spark_mail.desk.app import create_app

    follow_parent()
    return create_app(load_settings())


def follow_parent() -> None:
    """Stop this worker (SIGTERM: a graceful shutdown) when the `serve` process that
    started it is gone. Killed with -9, it cannot stop its workers itself, and they would
    go on answering on its port with its old settings, and keep a restart from binding it.
    (A worker may start after its parent died: the parent's sentinel says so at once.)"""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None:
        return  # not a worker process

    def watch() -> None:
        parent.join()  # returns when the parent is gone
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="spark-mail-parent", daemon=True).start()


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8040,
    workers: int = 1,
    proxy_headers: bool = False,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve the desk until Ctrl-C / SIGTERM. Raises ConfigError before starting when the
    signing secret, the store or the address is not usable."""
    import uvicorn

    from spark_mail.desk.app import create_app

    prepare(settings, host, port, workers)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "proxy_headers": proxy_headers,
        "access_log": False,
        "server_header": False,
        "log_level": "info",
        "limit_concurrency": MAX_CONNECTIONS,
        "timeout_graceful_shutdown": 10,
        "timeout_worker_healthcheck": WORKER_SILENCE_SECONDS,
        "http": f"{__name__}:DeskProtocol",
    }
    raise_open_files_limit(MAX_CONNECTIONS + 256)
    if on_ready:
        on_ready()
    if workers > 1:
        uvicorn.run("spark_mail.desk.server:worker_app", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)
