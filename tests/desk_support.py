"""Helpers for the reader desk's tests: settings with a signing secret, the exact links a
reader's own-list copy carries (made by the real personalisation), an in-process client
(httpx's ASGI transport) and a real `spark-mail serve` process."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import functools
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from waiting import answers, poll_until

from conftest import SAMPLE_SLUG, WARM_CLI, WarmProcess
from spark_mail.config import Settings, load_settings

SECRET = "desk-test-signing-secret-0123456789"
SITE = "https://tinybigspark.com"
HOST = "tinybigspark.com"
ISSUE_DAY = dt.datetime(2025, 1, 20, 12, 0, tzinfo=dt.UTC)  # the sample issue's date


def desk_settings(root: Path, **env: str) -> Settings:
    return load_settings(root, env={"SPARK_MAIL_SIGNING_SECRET": SECRET, **env})


@dataclass(frozen=True)
class ReaderLinks:
    unsubscribe: str
    polls: tuple[str, ...]  # one per option, in order


def _template(settings: Settings) -> Any:
    """The sample issue prepared for personal copies, shared by the tests whose newsletter
    folders hold the same settings and files: every test has a folder of its own, so the
    key leaves the folder's name out and holds what the copies are made of instead (the
    settings but their root, the issue's text and the folder's own layouts, if any)."""
    issue = settings.issues_path / f"{SAMPLE_SLUG}.md"
    layouts = settings.layout_dirs()[0]
    own_layouts = tuple(
        (str(path.relative_to(layouts)), path.read_bytes())
        for path in sorted(layouts.rglob("*"))
        if path.is_file()
    )
    key = (dataclasses.replace(settings, root=Path("/")), issue.read_bytes(), own_layouts)
    if key not in _PREPARED:
        from spark_mail.personalize import prepare

        if len(_PREPARED) >= 8:
            _PREPARED.pop(next(iter(_PREPARED)))  # the oldest
        _PREPARED[key] = prepare(issue, settings)
    return _PREPARED[key]


_PREPARED: dict[tuple[Any, ...], Any] = {}


def reader_links(settings: Settings, email: str) -> ReaderLinks:
    """The unsubscribe and poll links of `email`'s own copy, as spark-mail sends them."""
    from spark_mail.audience import Reader

    text = _template(settings).copy(Reader(email, {"email": email}, 2)).text
    unsubscribe = re.search(r"^Unsubscribe: (\S+)$", text, re.M)
    polls = re.findall(r"^- [^:\n]+: (https?://\S+)$", text, re.M)
    assert unsubscribe and polls, text
    return ReaderLinks(unsubscribe.group(1), tuple(polls))


def fast_links(settings: Settings, email: str, slug: str = SAMPLE_SLUG) -> ReaderLinks:
    """The same links, made without a render (for thousands of readers)."""
    from spark_mail.personalize import TokenSigner, reader_link
    from spark_mail.render import poll_link

    signer = TokenSigner(settings.signing_secret, slug)
    quoted = quote(email, safe="")
    unsubscribe = reader_link(settings.unsubscribe_url, slug, quoted, signer(email, "unsubscribe"))
    token = signer(email, "poll")
    polls = tuple(
        reader_link(poll_link(settings, slug, "", index), slug, quoted, token)
        for index in (1, 2, 3)
    )
    return ReaderLinks(unsubscribe, polls)


def path_of(url: str) -> str:
    """The path and query of a link (what a proxy passes on to the desk)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class InProcess:
    """The desk app driven in this process through httpx's ASGI transport."""

    def __init__(self, app: Any, client: str = "203.0.113.7", *, raise_errors: bool = True) -> None:
        self.app = app
        self.client = client
        self.raise_errors = raise_errors  # False: see the 500 page a reader would get

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(
                app=self.app,
                client=(self.client, 40000),
                raise_app_exceptions=self.raise_errors,
            )
            async with httpx.AsyncClient(transport=transport, base_url=SITE) as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(go())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


def form_of(page: str) -> tuple[str, dict[str, str]]:
    """(action, hidden fields) of the first form on a desk page."""
    action = re.search(r'<form method="post" action="([^"]+)"', page)
    assert action, page
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page))
    return action.group(1).replace("&amp;", "&"), fields


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@functools.cache
def local_client() -> httpx.Client:
    """One client for the tests' requests to servers on 127.0.0.1: httpx.get() makes a
    client per call, and each new one builds a TLS context (~50 ms of CPU), 20 times a
    second in a wait. No keep-alive: each request opens a connection of its own, as
    httpx.get() did. Its timeout only bounds a wait (httpx's 5 s ran out once for a
    webhook's answer beside four CPU hogs); a wait for a server to start asks for 1 s."""
    return httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))


def wait_until_healthy(
    base: str, process: subprocess.Popen[str] | WarmProcess, timeout: float = 30
) -> None:
    """Wait until `base` answers /healthz with 200. Until `serve` (or its first worker)
    listens, each look is a bare connect, refused at once: an HTTP client's request costs
    ~1.5 ms of CPU, 50 times a second for the seconds spawned workers take to start."""
    address = urlsplit(base)
    healthz = answers(
        lambda: local_client().get(f"{base}/healthz", timeout=1).status_code,
        httpx.TransportError,
    )

    def healthy() -> bool:
        try:
            socket.create_connection((address.hostname, address.port), timeout=1).close()
        except OSError:
            return False
        return healthz()

    poll_until(healthy, "serve answered /healthz", process=process, timeout=timeout)


@contextmanager
def serve_process(
    root: Path,
    *,
    workers: int = 1,
    env: dict[str, str] | None = None,
    logs: list[str] | None = None,
    warm: bool | None = None,
) -> Iterator[str]:
    """A real `spark-mail serve` on a free port; yields its base URL, stops it after (and
    puts what it printed into `logs`). Its own process, forked from conftest's warm
    interpreter (as run_cli's commands), or a fresh one when `env` sets PYTHON* variables
    (unless `warm`: they are then for its workers alone); its --workers are spawned fresh
    by uvicorn either way, with `env`."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_MAIL_")}
    full_env.update({"SPARK_MAIL_SIGNING_SECRET": SECRET, **(env or {})})
    args = ["serve", "--port", str(port), "--workers", str(workers)]
    process: subprocess.Popen[str] | WarmProcess
    if warm is None:
        warm = not any(name.startswith("PYTHON") for name in env or {})
    if not warm:
        process = subprocess.Popen(
            [sys.executable, "-m", "spark_mail", *args], cwd=root, env=full_env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    else:
        process = WARM_CLI.start(args, cwd=root, env=full_env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process)
    except BaseException as exc:
        process.kill()
        process.wait()
        if isinstance(exc, AssertionError) and isinstance(process, WarmProcess):
            # what it printed (poll_until tells only what a process printed to a pipe)
            raise AssertionError(f"{exc}: {process.communicate()}") from None
        raise
    try:
        yield base
    finally:
        process.terminate()
        try:
            printed = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            printed = process.communicate()
        if logs is not None:
            logs.extend(printed)
