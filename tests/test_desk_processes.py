"""The reader desk as readers meet it: a real `spark-mail serve` process on 127.0.0.1, a real
SQLite store, real `spark-mail send` / `poll results` processes reading it afterwards."""

from __future__ import annotations

import json
import os
import random
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from conftest import SAMPLE_SLUG, run_cli
from desk_support import (
    HOST,
    SECRET,
    desk_settings,
    fast_links,
    local_client,
    path_of,
    reader_links,
    serve_process,
)
from loadgen import http_request, run_load
from spark_mail.audience.suppressions import SuppressionStore, store_path

pytestmark = pytest.mark.slow
ENV = {"SPARK_MAIL_POLL_DAYS": "0", "SPARK_MAIL_DESK_RATE_LIMIT": "0"}  # the sample is old


def visit(base: str, link: str, method: str = "GET", **kwargs) -> httpx.Response:
    """Open a link of an email the way the proxy in front of the desk would pass it on."""
    return local_client().request(method, base + path_of(link), headers={"host": HOST}, **kwargs)


def poll_json(root: Path) -> dict:
    result = run_cli("poll", "results", SAMPLE_SLUG, "--json", cwd=root, env=ENV)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_one_click_unsubscribe_then_an_own_list_send_skips_that_reader(newsletter: Path):
    """RFC 8058 POST to a real serve: 200; the next own-list send leaves that reader out."""
    (newsletter / "subscribers.csv").write_text(
        "email\nanna@example.com\nbob@example.com\ncy@example.com\n"
    )
    env = {**ENV, "SPARK_MAIL_AUDIENCE": "subscribers.csv", "SPARK_MAIL_SIGNING_SECRET": SECRET}
    settings = desk_settings(newsletter, SPARK_MAIL_AUDIENCE="subscribers.csv")
    with serve_process(newsletter, env=env) as base:
        link = reader_links(settings, "Bob@Example.com").unsubscribe
        answer = visit(base, link, "POST", data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200
        assert answer.headers["referrer-policy"] == "no-referrer"
    sent = run_cli("send", SAMPLE_SLUG, "--yes", cwd=newsletter, env=env)
    assert sent.returncode == 0, sent.stderr
    outbox = sorted(p.name for p in (newsletter / "outbox" / SAMPLE_SLUG).glob("send-*.eml"))
    assert [name.rsplit("-", 1)[0] for name in outbox] == [
        "send-anna@example.com",
        "send-cy@example.com",
    ]


def test_a_stopped_serve_leaves_every_unsubscribe_in_the_store_file_itself(
    newsletter: Path, tmp_path: Path
):
    """When `serve` stops, its SQLite connections are closed: the store's write-ahead log is
    folded into readers.sqlite3 and removed, so a copy of that one file (a backup, a move to
    another machine) holds every unsubscribe the desk took. (The connections were closed by
    the last garbage collection at exit; `main()` now freezes the objects instead.)"""
    settings = desk_settings(newsletter)
    with serve_process(newsletter, env=ENV) as base:
        link = fast_links(settings, "bob@example.com").unsubscribe
        answer = visit(base, link, "POST", data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200
    store = store_path(settings)
    assert sorted(p.name for p in store.parent.glob(store.name + "-*")) == [
        "readers.sqlite3-writer"
    ]
    copy = tmp_path / "backup" / store.name
    copy.parent.mkdir()
    copy.write_bytes(store.read_bytes())  # the file alone
    with SuppressionStore(copy) as backup:
        assert backup.is_suppressed("bob@example.com")


def test_a_scanner_opening_every_link_of_an_email_changes_nothing(newsletter: Path):
    """Unsubscribe GET and every poll option within a second: no suppression, no vote."""
    settings = desk_settings(newsletter)
    links = reader_links(settings, "anna@example.com")
    with serve_process(newsletter, env=ENV) as base, httpx.Client(headers={"host": HOST}) as scan:
        for link in (links.unsubscribe, *links.polls):
            assert scan.get(base + path_of(link)).status_code == 200
    assert poll_json(newsletter)["votes"] == 0
    listed = run_cli("audience", "suppressions", "--json", cwd=newsletter, env=ENV)
    assert json.loads(listed.stdout)["count"] == 0


def test_a_readers_vote_and_change_of_vote_show_in_poll_results(newsletter: Path):
    """A click counts at once; a click on another option later changes it."""
    settings = desk_settings(newsletter)
    links = reader_links(settings, "anna@example.com")
    with serve_process(newsletter, env=ENV) as base:
        first = visit(base, links.polls[0])
        assert first.status_code == 200 and "your vote is in" in first.text
        assert [o["votes"] for o in poll_json(newsletter)["options"]] == [1, 0, 0]
        with SuppressionStore(store_path(settings)).transaction() as db:
            db.execute("UPDATE votes SET last_click = last_click - 60")  # a minute passes
        second = visit(base, links.polls[2])
        assert "your vote is changed" in second.text
    data = poll_json(newsletter)
    assert [o["votes"] for o in data["options"]] == [0, 0, 1] and data["votes"] == 1


def test_two_workers_take_2000_concurrent_votes_and_unsubscribes_and_lose_none(
    newsletter: Path,
):
    """2 workers, 2,000 requests over 64 connections (a tenth of them repeats): every
    vote and unsubscribe is stored once, the counts match, nothing is lost or doubled.

    2,000 requests, not 20,000: what is tested is the concurrency (2 worker processes
    writing one store, 64 requests in flight at once, a repeat racing its first click), not
    the volume. A repeat races its first click when both are in flight together, within 64
    places of each other in the shuffled order: 16 such pairs here, 14 with 20,000
    requests (the chance grows as the list shrinks); every connection still carries ~30
    requests in turn. Two workers, not four: two processes writing one store race as four
    do (four cost two more worker starts, ~0.6 s of CPU, on a 2-core machine). How many
    requests a second the desk takes is bench/desk.py's."""
    settings = desk_settings(newsletter)
    readers = [f"reader{n:05d}@example.com" for n in range(900)]
    expected = [0, 0, 0]
    requests = []
    for n, email in enumerate(readers):
        links = fast_links(settings, email)
        option = n % 3
        expected[option] += 1
        vote = http_request("GET", path_of(links.polls[option]), HOST)
        requests.append(vote)
        body = b"List-Unsubscribe=One-Click"
        requests.append(
            http_request(
                "POST", path_of(links.unsubscribe), HOST, body,
                Content_Type="application/x-www-form-urlencoded",
            )
        )  # fmt: skip
    requests += random.Random(7).sample(requests, 200)  # clicked twice: still once each
    random.Random(8).shuffle(requests)
    assert len(requests) == 2_000
    with serve_process(newsletter, workers=2, env=ENV) as base:
        port = urlsplit(base).port
        assert port is not None
        result = run_load("127.0.0.1", port, requests, connections=64)
    assert dict(result.statuses) == {200: 2_000}
    store = SuppressionStore(store_path(settings))
    assert store.read("SELECT COUNT(*) FROM suppressions") == [(900,)]
    assert store.read("SELECT COUNT(*) FROM suppression_events") == [(900,)]
    assert store.read("SELECT COUNT(*), COUNT(option) FROM votes") == [(900, 900)]
    counts = store.read("SELECT option, votes FROM poll_counts ORDER BY option")
    assert counts == [(1, expected[0]), (2, expected[1]), (3, expected[2])]


def test_serve_says_in_one_line_why_it_cannot_start(newsletter: Path):
    """No signing secret, or a port already taken: exit 2, one line, no traceback."""
    no_secret = run_cli("serve", "--port", "0", cwd=newsletter)
    assert no_secret.returncode == 2 and "SPARK_MAIL_SIGNING_SECRET" in no_secret.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = run_cli(
            "serve", "--port", port, cwd=newsletter, env={"SPARK_MAIL_SIGNING_SECRET": SECRET}
        )
    assert busy.returncode == 2 and "already in use" in busy.stderr
    for result in (no_secret, busy):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


# Spawned uvicorn workers (multiprocessing's "--multiprocessing-fork" children) start this
# much later than their parent, as on a machine where a worker's imports take that long.
SLOW_WORKER_START = """\
import sys
import time

if "--multiprocessing-fork" in sys.argv:
    time.sleep({seconds})
"""


def test_workers_slower_to_start_than_uvicorns_5_s_are_not_restarted_over_and_over(
    newsletter: Path, tmp_path: Path
):
    """`serve --workers 2` on a machine where a new worker needs 6 s to answer (a busy
    or slow machine, a Raspberry Pi): uvicorn's supervisor gave each 5 s, killed it, and
    started another that needed 6 s too, so the desk never answered. Right: the workers are
    given WORKER_SILENCE_SECONDS, start once and serve."""
    from spark_mail.desk.server import WORKER_SILENCE_SECONDS

    assert WORKER_SILENCE_SECONDS > 6
    slow = tmp_path / "slow-start"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(SLOW_WORKER_START.format(seconds=6))
    path = os.pathsep.join(p for p in (str(slow), os.environ.get("PYTHONPATH", "")) if p)
    logs: list[str] = []
    # `serve` itself forked warm: the slow start is its workers', spawned with this PYTHONPATH
    with serve_process(
        newsletter, workers=2, env={"PYTHONPATH": path}, logs=logs, warm=True
    ) as base:
        assert local_client().get(f"{base}/healthz").status_code == 200
    printed = "".join(logs)
    assert "died" not in printed, printed
    assert printed.count("Started server process") == 2, printed
