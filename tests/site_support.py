"""Helpers for the web archive tests: a newsletter with several issues, sends recorded in a
real ledger, and the built folder served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import functools
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import SAMPLE_SLUG, write_issue
from spark_mail.config import Settings, load_settings
from spark_mail.ledger import open_ledger

SITE_URL = "https://news.example.com"
SECOND = "2025-02-03-shipping-small"
DRAFT = "2025-02-10-draft-issue"


def add_issues(root: Path) -> None:
    """Two more issues beside the sample: one to send (a wide table, a long code line, a
    sponsor, a poll), one that stays a draft."""
    write_issue(
        root,
        SECOND,
        """title: Shipping small, often
date: 2025-02-03
number: 43
subtitle: Small batches, fast feedback
preheader: Why the teams that ship daily break production less often than the rest.
tags: [engineering, Delivery]
promo:
  title: A workshop on delivery
  image: https://news.example.com/promo.png
  image_alt: Three people at a whiteboard
  cta_text: Book a seat
  cta_url: https://news.example.com/workshop
poll:
  question: How often do you ship?
  options: [Daily, Weekly, Monthly]""",
        "## Ship small\n\nOne change at a time.\n\n"
        "```\n" + "x = 1  # " + "long-line-" * 30 + "\n```\n\n"
        "| " + " | ".join(f"column {i}" for i in range(12)) + " |\n"
        "|" + "---|" * 12 + "\n| " + " | ".join(str(i) * 12 for i in range(12)) + " |\n\n"
        "::: sponsor Acme\nAcme ships [tools](https://acme.example.com).\n:::\n",
    )
    write_issue(
        root,
        DRAFT,
        "title: Not out yet\ndate: 2025-02-10\nnumber: 44\ntags: [drafts]",
        "Secret plans.\n",
    )


def set_site_url(root: Path, site_url: str = SITE_URL, base_url: str | None = None) -> None:
    """Point the settings at a site (base_url then defaults to /issues/{slug}/ under it)."""
    lines = [
        line
        for line in (root / "spark-mail.toml").read_text(encoding="utf-8").splitlines()
        if not line.startswith(("base_url", "poll_url", "unsubscribe_url"))
    ]
    extra = [f'site_url = "{site_url}"'] + ([f'base_url = "{base_url}"'] if base_url else [])
    (root / "spark-mail.toml").write_text("\n".join(extra + lines) + "\n", encoding="utf-8")


def settings_for(root: Path) -> Settings:
    return load_settings(root, env={})


def mark_sent(root: Path, slug: str, when: str) -> None:
    """Record `slug` as sent at `when` (ISO 8601) in the newsletter's ledger."""
    settings = settings_for(root)
    at = dt.datetime.fromisoformat(when)
    with open_ledger(settings) as ledger:
        ledger.claim(slug, "test", "outbox", "send", at)
        ledger.mark_sent(slug, at)


def send_two(root: Path) -> None:
    """The sample issue and SECOND sent, DRAFT not."""
    add_issues(root)
    mark_sent(root, SAMPLE_SLUG, "2025-01-20T12:00:00+00:00")
    mark_sent(root, SECOND, "2025-02-03T12:00:00+00:00")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """A static file server for `folder` on 127.0.0.1 (as any static host serves a site:
    a folder's index.html, a redirect from /p/x to /p/x/); yields its base URL."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
