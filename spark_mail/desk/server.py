"""Running the desk: uvicorn, one process or several workers sharing one socket.

Each worker opens its own connection to the store (SQLite serialises their writes); the
store is created and migrated once here, before the workers start, so they never race on
the schema. uvicorn's access log is off: a desk URL holds a reader's address and token,
and they have no place in a log.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

from spark_mail.audience.suppressions import SuppressionStore
from spark_mail.config import Settings
from spark_mail.errors import ConfigError
from spark_mail.personalize import require_secret

MAX_CONNECTIONS = 2048  # per worker; uvicorn answers 503 beyond


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
    from spark_mail.desk.webhooks import receivers

    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}")
    require_secret(settings)
    receivers(settings, SYSTEM_CLOCK)  # a webhook key that cannot work stops us here
    with SuppressionStore.for_settings(settings) as store:
        store.check()  # create and migrate it now, once, before any worker
    check_port(host, port)


def worker_app() -> Any:
    """The app of one worker process (uvicorn's factory): the same settings the `serve`
    command found, from the same folder and environment it inherited."""
    from spark_mail.config import load_settings
    from spark_mail.desk.app import create_app

    return create_app(load_settings())


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
    }
    if on_ready:
        on_ready()
    if workers > 1:
        uvicorn.run("spark_mail.desk.server:worker_app", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(settings), **options)
