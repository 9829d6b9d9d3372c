"""Own-list sends and what came back: the guard that refuses a send while the last one's
complaint or hard-bounce rate is over the line, and a send that is already running
leaving out a reader who unsubscribes between two batches (a real SMTP server)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from conftest import SAMPLE_SLUG, run_cli, write_issue
from desk_support import InProcess, desk_settings, free_port, path_of, reader_links
from spark_mail.audience import canonical_address
from spark_mail.audience.events import EspEvent, EventKind, record_events
from spark_mail.audience.suppressions import SuppressionStore, store_path
from spark_mail.config import Settings
from spark_mail.desk.app import create_app
from spark_mail.errors import ReputationAtRisk
from spark_mail.ledger import ReaderState, open_ledger
from spark_mail.sending import SendRequest, prepare_send, send_issue
from spark_mail.sending.reputation import last_send_health

NEXT = "2025-02-03-next-issue"
LAST = "2025-01-27-last-issue"


def readers(count: int) -> list[str]:
    return [f"reader{n:04}@example.com" for n in range(count)]


def write_list(root: Path, addresses: list[str]) -> None:
    (root / "subscribers.csv").write_text("email\n" + "\n".join(addresses) + "\n")


def guard_settings(root: Path) -> Settings:
    write_issue(root, NEXT, 'title: "Next"\ndate: 2025-02-03')
    write_list(root, readers(1000))
    return desk_settings(root, SPARK_MAIL_AUDIENCE="subscribers.csv")


def record_last_send(
    settings: Settings, slug: str, addresses: list[str], days_ago: int = 0
) -> None:
    """The ledger of an own-list send of `slug` that reached `addresses`."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
    keys = [(canonical_address(a), a) for a in addresses]
    with open_ledger(settings) as ledger:
        ledger.claim(slug, "content-hash", "postmark", "send", now)
        ledger.write_batches(slug, 1, keys, [], now)
        answers = [(key, ReaderState.SENT, f"id-{key}", None) for key, _ in keys]
        ledger.write_batches(slug, 0, [], answers, now)
        ledger.mark_sent(slug, now)


def report(settings: Settings, kind: EventKind, addresses: list[str], issue: str = LAST) -> None:
    """What an ESP's webhook would record: one event per address."""
    events = [
        EspEvent("postmark", f"{kind}-{a}-{issue}", kind, a, dt.datetime.now(dt.UTC), issue)
        for a in addresses
    ]
    with SuppressionStore(store_path(settings)) as store:
        store.run([record_events(events, dt.datetime.now(dt.UTC))], durable=True)


def prepare(settings: Settings, force: bool = False) -> None:
    prepare_send(NEXT, settings, SendRequest(mode="send", force=force)).close()


@pytest.mark.parametrize(
    ("complaints", "bounces", "refused"),
    [(3, 0, False), (4, 0, True), (0, 20, False), (0, 21, True), (3, 20, False)],
    ids=["0.3%-complaints", "0.4%-complaints", "2.0%-bounces", "2.1%-bounces", "both-at-line"],
)
def test_guard_refuses_only_over_the_lines(
    newsletter: Path, complaints: int, bounces: int, refused: bool
):
    """1,000 readers: 3 complaints (0.3%) or 20 hard bounces (2%) pass; one more refuses."""
    settings = guard_settings(newsletter)
    sent = readers(1000)
    record_last_send(settings, LAST, sent)
    report(settings, EventKind.COMPLAINT, sent[:complaints])
    report(settings, EventKind.HARD_BOUNCE, sent[100 : 100 + bounces])
    if not refused:
        prepare(settings)
        return
    with pytest.raises(ReputationAtRisk) as caught:
        prepare(settings)
    message = str(caught.value)
    assert f"{NEXT}: not sent - the last own-list send ({LAST}, 1,000 readers)" in message
    assert f"{complaints} spam complaints ({complaints / 1000:.2%}" in message
    assert f"{bounces} hard bounces ({bounces / 1000:.2%}" in message
    assert f"spark-mail send {NEXT} --force" in message and "dispatch never overrides" in message
    prepare(settings, force=True)  # --force sends anyway


@pytest.mark.slow
def test_guard_counts_only_the_last_send_and_its_readers(newsletter: Path):
    """Events of an older issue do not count; an event without its issue counts when it is
    about a reader of the last send; soft bounces and unsubscribes are not complaints."""
    settings = guard_settings(newsletter)
    sent = readers(1000)
    record_last_send(settings, "2025-01-20-older", sent, days_ago=7)
    report(settings, EventKind.COMPLAINT, sent[:50], issue="2025-01-20-older")
    record_last_send(settings, LAST, sent)
    report(settings, EventKind.COMPLAINT, sent[:2], issue="")  # readers of LAST: count
    report(settings, EventKind.COMPLAINT, ["stranger@example.com"] * 1, issue="")
    report(settings, EventKind.SOFT_BOUNCE, sent[200:260])
    report(settings, EventKind.UNSUBSCRIBE, sent[300:360])
    health = last_send_health(settings)
    assert health is not None
    assert (health.slug, health.sent, health.complaints, health.hard_bounces) == (LAST, 1000, 2, 0)
    prepare(settings)
    report(settings, EventKind.COMPLAINT, sent[2:4], issue="")  # 4 readers of 1,000: over
    with pytest.raises(ReputationAtRisk):
        prepare(settings)


def test_no_earlier_send_means_no_guard(newsletter: Path):
    """A first own-list send has nothing to be judged by."""
    settings = guard_settings(newsletter)
    assert last_send_health(settings) is None
    prepare(settings)


@pytest.mark.slow
def test_send_and_dispatch_refuse_with_the_figures(newsletter: Path):
    """The real commands: `send --yes` exits 1 with the figures and the way out, sends
    nothing; `dispatch` reports the issue failed with the same words; `--force` sends.
    The figures are the last send's (1,000 readers in its ledger); the list the next issue
    goes to is its first 100 readers (the guard reads only the ledger), so the forced
    send writes 91 copies, not 991 (~10 ms each)."""
    settings = guard_settings(newsletter)
    write_issue(newsletter, NEXT, 'title: "Next"\ndate: 2025-02-03\nsend_at: 2025-02-03T08:00:00Z')
    sent = readers(1000)
    record_last_send(settings, LAST, sent)
    write_list(newsletter, sent[:100])
    report(settings, EventKind.COMPLAINT, sent[:9])
    env = {"SPARK_MAIL_SIGNING_SECRET": settings.signing_secret.reveal(),
           "SPARK_MAIL_AUDIENCE": "subscribers.csv"}  # fmt: skip
    refused = run_cli("send", NEXT, "--yes", cwd=newsletter, env=env)
    assert refused.returncode == 1, refused.stderr
    assert "9 spam complaints (0.90%; the limit is 0.3%)" in refused.stderr
    assert "Traceback" not in refused.stderr and not (newsletter / "outbox" / NEXT).exists()
    cron = run_cli("dispatch", "--now", "2025-02-03T09:00:00Z", cwd=newsletter, env=env)
    assert cron.returncode == 1 and "9 spam complaints" in cron.stdout + cron.stderr
    forced = run_cli("send", NEXT, "--yes", "--force", cwd=newsletter, env=env)
    assert forced.returncode == 0, forced.stderr
    assert len(list((newsletter / "outbox" / NEXT).glob("*.eml"))) == 100 - 9


# -- a reader who unsubscribes while the send runs ---------------------------------------------
class HeldSink:
    """An SMTP server's handler that keeps the first message of the send back (its batch
    stays on the wire) until the test says so, and remembers every recipient."""

    def __init__(self) -> None:
        self.recipients: list[str] = []
        self.first_arrived = threading.Event()
        self.release = threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if not self.first_arrived.is_set():
            self.first_arrived.set()
            await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        self.recipients.extend(envelope.rcpt_tos)
        return "250 OK"


@pytest.fixture
def held_smtp() -> Iterator[tuple[HeldSink, int]]:
    sink = HeldSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield sink, controller.port
    sink.release.set()
    controller.stop()


@pytest.mark.slow
def test_a_reader_who_unsubscribes_between_batches_gets_no_copy(newsletter: Path, held_smtp: Any):
    """60 readers in SMTP batches of 50, one batch at a time: while batch 1 is held on the
    wire, reader 55 unsubscribes on the desk (one-click); batch 2 leaves without them and
    the summary counts them as unsubscribed during the send."""
    sink, port = held_smtp
    addresses = readers(60)
    write_list(newsletter, addresses)
    settings = desk_settings(
        newsletter,
        SPARK_MAIL_AUDIENCE="subscribers.csv",
        SPARK_MAIL_PROVIDER="smtp",
        SPARK_MAIL_SMTP_HOST="127.0.0.1",
        SPARK_MAIL_SMTP_PORT=str(port),
        SPARK_MAIL_SMTP_TLS="none",
        SPARK_MAIL_SEND_CONCURRENCY="1",
    )
    leaving = addresses[55]
    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            outcome["report"] = send_issue(SAMPLE_SLUG, settings, SendRequest(mode="send"))
        except Exception as exc:  # the assertion below shows it
            outcome["error"] = exc

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert sink.first_arrived.wait(30), "batch 1 never reached the SMTP server"
        desk = InProcess(create_app(settings))
        link = path_of(reader_links(settings, leaving).unsubscribe)
        answer = desk.post(link, data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200
    finally:
        sink.release.set()
        sender.join(60)
    assert "error" not in outcome, outcome.get("error")
    summary = outcome["report"].summary
    assert summary["sent"] == 59 and summary["suppressed_during_run"] == 1
    assert leaving not in sink.recipients and len(sink.recipients) == 59
