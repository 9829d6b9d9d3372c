"""Attacks on the send lifecycle: a hostile user and a misbehaving ESP against the promise
"every reader gets each issue exactly once, and an address that opted out gets nothing".

Each test is one attack that breaks the promise on today's code: its docstring says the
attack and the right behaviour, and it judges by the fake ESP's own record (or the SMTP
sink), not by what spark-mail says about itself. Real servers on 127.0.0.1 throughout; a
test that bends the fake ESP's behaviour (an ESP that lies) does so with monkeypatch,
on that test only.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_faults import copies  # per reader, as the ESP's own record says

import esp_server
from conftest import SAMPLE_SLUG, write_issue
from esp_server import FakeEsp, settings_for
from provider_support import batches_of
from spark_mail.audience.suppressions import SuppressionStore
from spark_mail.clock import FakeClock
from spark_mail.config import Settings
from spark_mail.errors import SparkMailError
from spark_mail.ledger import ReaderState, SendState, open_ledger
from spark_mail.scheduling.cron import dispatch
from spark_mail.sending import SendRequest, send_issue
from spark_mail.sending.batches import BatchSummary

DUE = dt.datetime(2025, 1, 20, 12, 0, tzinfo=dt.UTC)
SEND_AT = "send_at: 2025-01-20T07:00:00-05:00"  # = DUE


# -- helpers ---------------------------------------------------------------------------------
def quick(settings: Settings, **changes: Any) -> Settings:
    """Short timeouts, few attempts: a fault ends an attempt fast."""
    values = {"send_timeout": 1.0, "send_attempts": 2, "send_backoff": 0.01, **changes}
    return dataclasses.replace(settings, **values)


def due_issue(root: Path, name: str, body: str = "Hello, readers.\n") -> None:
    write_issue(root, name, f'title: "Due"\ndate: 2025-01-20\n{SEND_AT}', body)


def readers(count: int, prefix: str = "r") -> list[str]:
    return [f"{prefix}{n:04d}@example.com" for n in range(count)]


def write_list(root: Path, addresses: list[str]) -> None:
    lines = ["email,first_name"] + [f"{a},Reader {n}" for n, a in enumerate(addresses)]
    (root / "subscribers.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def own_list(esp: FakeEsp, root: Path, provider: str, count: int, **extra: str) -> Settings:
    """A subscribers file of `count` readers, sent through `provider` one batch at a time."""
    write_list(root, readers(count))
    env = {
        "SPARK_MAIL_AUDIENCE": "subscribers.csv",
        "SPARK_MAIL_SEND_CONCURRENCY": "1",
        "SPARK_MAIL_SEND_RATE": "100",
        **extra,
    }
    # A generous timeout: the fake ESP checks 500 messages against Postmark's schema.
    return quick(settings_for(esp, root, provider, **env), send_attempts=1, send_timeout=30.0)


def twice(esp: FakeEsp) -> list[str]:
    return sorted(a for a, n in copies(esp).items() if n > 1)


def attempt(run: Callable[[], Any]) -> str:
    """A run's outcome, or the name of what it raised."""
    try:
        return str(run().outcome)
    except SparkMailError as exc:
        return type(exc).__name__


def send(settings: Settings, clock: FakeClock, **request: Any) -> str:
    return attempt(
        lambda: send_issue(SAMPLE_SLUG, settings, SendRequest(mode="send", **request), clock=clock)
    )


def row(settings: Settings, slug: str = SAMPLE_SLUG) -> Any:
    with open_ledger(settings) as ledger:
        return ledger.get(slug)


def reader_states(settings: Settings, keys: list[str]) -> dict[str, str]:
    with open_ledger(settings) as ledger:
        return {k: s for k, (s, _) in ledger.reader_states(SAMPLE_SLUG, keys).items()}


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    yield FakeClock(DUE)


# -- the ESP's list ----------------------------------------------------------------------------
@pytest.mark.slow
def test_resend_send_acted_then_502_and_a_failing_lookup_is_not_a_clear_refusal(
    esp: FakeEsp, newsletter: Path
) -> None:
    """Resend sends the broadcast and answers 502; the retry of /send is refused ("already
    sent") and the GET that would say so fails (500s). The run records `failed`, and the
    next dispatch creates and sends a SECOND broadcast to the whole audience. Right: the
    first attempt may have acted, so the send stays unconfirmed with its broadcast id, and
    the next run asks Resend about that broadcast: one broadcast in all."""
    due_issue(newsletter, "issue-1")
    settings = quick(settings_for(esp, newsletter, "resend", SPARK_MAIL_SEND_RATE="100"))
    esp.act_then(status=502, path="/send", method="POST")
    esp.fail(500, times=2, path="/broadcasts/", method="GET")
    first = attempt(lambda: send_issue("issue-1", settings, mode="send", clock=FakeClock(DUE)))
    report = dispatch(settings, DUE, clock=FakeClock(DUE))
    outcomes = [first, *(str(i.outcome) for i in report.items)]
    assert len(esp.audience_sends) == 1, (outcomes, row(settings, "issue-1"))


# -- your own list: opting out ------------------------------------------------------------------
@pytest.mark.slow
def test_reader_who_unsubscribes_on_the_desk_during_a_send_gets_nothing(
    esp: FakeEsp, newsletter: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 25-reader send goes out in batches of 10; after the first batch, the last reader
    unsubscribes on the reader desk (the one-click link of an earlier issue). Her batch has
    not left yet, but she still gets the issue: the send only knows the suppressions it read
    before it started (the per-batch check, `still_wanted`, is wired to nothing). Right: a
    batch leaves without the readers the desk suppressed meanwhile (README: the desk's
    unsubscribes are honoured "at once")."""
    batches_of(monkeypatch, "resend", 10)
    settings = own_list(esp, newsletter, "resend", 25)
    late = readers(25)[-1]
    store = SuppressionStore.for_settings(settings)

    def unsubscribe_meanwhile(summary: BatchSummary) -> None:
        if summary.sent and not store.is_suppressed(late):
            store.unsubscribe(late, how="one-click", issue="earlier-issue", at=DUE)

    outcome = send(settings, clock, progress=unsubscribe_meanwhile)
    store.close()
    assert store.path.exists()
    got = copies(esp)
    assert sum(got.values()) >= 20, outcome  # the send did run
    assert got[late] == 0, f"{late} unsubscribed before her batch left, and got the issue"


# -- your own list: overlapping runs ------------------------------------------------------------
@pytest.mark.slow
def test_removing_the_locks_folder_mid_send_does_not_let_a_second_run_send_too(
    esp: FakeEsp, newsletter: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Postmark send of 120 readers (batches of 50) is running; after its first batch
    a cleanup job removes `.spark-mail/ledger.sqlite3.locks/` and cron starts a second
    send. The second run takes a fresh lock file, finds the row `sending`, takes it for the
    leftovers of a dead run and sends the rest, while the first run sends the rest too: 50
    readers get the issue twice. Right: the second run sees the issue is being sent (the
    lock cannot vanish under its holder, or the holder stops when it does) and sends
    nothing."""
    batches_of(monkeypatch, "postmark", 50)
    settings = own_list(esp, newsletter, "postmark", 120)
    locks = settings.ledger_file.with_name(settings.ledger_file.name + ".locks")
    second: list[str] = []

    def cleanup_and_cron(summary: BatchSummary) -> None:
        if summary.sent and not second:
            shutil.rmtree(locks)
            second.append(send(settings, clock))

    first = send(settings, clock, progress=cleanup_and_cron)
    assert second, f"the second run never started ({first})"
    assert not twice(esp), (first, second, len(twice(esp)))


# -- your own list: repeating a batch under its idempotency key -----------------------------------
@pytest.mark.slow
def test_a_batch_key_older_than_a_day_is_not_repeated_because_a_later_repeat_failed_too(
    esp: FakeEsp, newsletter: Path, clock: FakeClock
) -> None:
    """Resend sends a batch under key K and answers 502 (in flight). 23 h later a rerun
    repeats it under K: Resend drops the repeat but answers 502 again. 30 h after the first
    send (Resend has forgotten K: keys live 24 h) the next run repeats it once more under
    K, and every reader of the batch gets a second copy, because the 24 h are counted from
    the last repeat (the `sending` rows' updated_at), not from the key's first use. Right:
    past 24 h since the batch FIRST left under K, its readers are uncertain, not repeated."""
    settings = own_list(esp, newsletter, "resend", 30)
    esp.act_then(status=502, path="/emails/batch")
    outcomes = [send(settings, clock)]
    clock.advance(23 * 3600)
    esp.act_then(status=502, path="/emails/batch")  # the repeat: dropped, answered 502
    outcomes.append(send(settings, clock))
    assert copies(esp).most_common(1)[0][1] == 1, outcomes
    clock.advance(7 * 3600)
    esp.idempotency.clear()  # 30 h after K's first use: Resend no longer knows it
    outcomes.append(send(settings, clock))
    assert not twice(esp), (outcomes, row(settings).state)


# -- your own list: changing provider between runs ----------------------------------------------
@pytest.mark.slow
def test_switching_provider_and_back_does_not_repeat_another_providers_batch(
    esp: FakeEsp, newsletter: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run 1 (resend, batches of 10): batch 1 of 15 readers is answered 502 and stays in
    flight. Run 2 (postmark, the user switched): batch 1 is rightly uncertain, the other 5
    readers go in one Postmark batch, answered 502 after Postmark sent it: in flight. Run 3
    (back to resend): the row still names resend (a resumed row keeps the provider of the
    run that claimed it), so the recovery rule thinks the Postmark batch was a Resend one
    and repeats it through Resend: 5 readers get two copies. Right: a batch in flight is
    settled by the provider that sent it; another provider's batch is uncertain."""
    batches_of(monkeypatch, "resend", 10)
    resend = own_list(esp, newsletter, "resend", 15)
    postmark = own_list(esp, newsletter, "postmark", 15)
    esp.act_then(status=502, path="/emails/batch")
    outcomes = [send(resend, clock)]
    esp.act_then(status=502, path="/email/batchWithTemplates")
    outcomes.append(send(postmark, clock))
    outcomes.append(send(resend, clock))
    assert not twice(esp), (outcomes, len(twice(esp)))


@pytest.mark.slow
def test_a_batch_in_flight_is_settled_after_two_readers_swapped_places_in_the_file(
    esp: FakeEsp, newsletter: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resend sends batch 1 (10 of 15 readers, batches of 10) and answers 502: in flight. The
    user then sorts part of the subscribers file (two rows of batch 1 swap places). Every
    later run repeats batch 1 under its key with its readers in the new order: Resend
    answers 409 (same key, other payload), which is taken for "may have acted", so the batch
    stays in flight, the run stops before the other 5 readers, and each run says "run again"
    forever: those 5 never get the issue. Right: a repeat carries the same request (or the
    batch is settled otherwise), and the rest of the list goes out."""
    batches_of(monkeypatch, "resend", 10)
    settings = own_list(esp, newsletter, "resend", 15)
    esp.act_then(status=502, path="/emails/batch")
    outcomes = [send(settings, clock)]
    swapped = readers(15)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    write_list(newsletter, swapped)
    for _ in range(3):
        clock.advance(600)
        outcomes.append(send(settings, clock))
    got = copies(esp)
    never = [a for a in readers(15) if got[a] == 0]
    assert not never, (outcomes, len(never), row(settings).state)


@pytest.mark.slow
def test_a_new_first_subscriber_does_not_make_an_unchanged_issue_count_as_changed(
    esp: FakeEsp, newsletter: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resend sends batch 1 (10 of 15 readers, batches of 10) and answers 502: in flight. A new
    reader subscribes and lands on the first line of the file. The issue is unchanged, but
    the lifecycle's content hash is that of the FIRST READER's personalised copy, so the
    rerun thinks the issue changed and makes the 10 readers of batch 1 `uncertain` (a human
    has to check Resend's logs and `--resend-uncertain`) instead of repeating the batch
    under its key, which Resend drops. Right: the issue's content is the issue's, not a
    reader's copy; the batch is repeated under its key and the issue ends `sent`."""
    batches_of(monkeypatch, "resend", 10)
    settings = own_list(esp, newsletter, "resend", 15)
    esp.act_then(status=502, path="/emails/batch")
    outcomes = [send(settings, clock)]
    write_list(newsletter, ["new-subscriber@example.com", *readers(15)])
    clock.advance(600)
    outcomes.append(send(settings, clock))
    assert not twice(esp)
    uncertain = [
        k for k, s in reader_states(settings, readers(15)).items() if s == ReaderState.UNCERTAIN
    ]
    assert not uncertain, (outcomes, len(uncertain))
    assert row(settings).state == SendState.SENT, outcomes


# -- your own list: --resend-uncertain --------------------------------------------------------------
@pytest.mark.slow
def test_resend_uncertain_does_not_resend_readers_nobody_has_checked_yet(
    esp: FakeEsp, newsletter: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Postmark, 120 readers in batches of 50. Run 1: batch 1 gets a 502 before Postmark acts
    (in flight, unconfirmed). Run 2: Postmark's search lags, so batch 1 becomes `uncertain`
    and is named to the user; batch 2 is sent by Postmark, answered 502: in flight. The user
    checks batch 1's readers in Postmark's activity log (nothing went out) and runs `send
    --resend-uncertain`, as the README says. That run turns batch 2 (whose search still
    lags) uncertain and resends it AT ONCE with batch 1: 50 readers get two copies, none of
    whom anybody checked. Right: `--resend-uncertain` resends the readers that were
    uncertain when it started; readers that become uncertain during the run are held and
    reported."""
    batches_of(monkeypatch, "postmark", 50)
    settings = own_list(esp, newsletter, "postmark", 120)
    path = "/email/batchWithTemplates"
    esp.fail(502, path=path)  # before Postmark acted
    outcomes = [send(settings, clock)]
    esp.postmark_search_lag = True
    esp.act_then(status=502, path=path)  # batch 2: sent, answer lost
    outcomes.append(send(settings, clock))
    checked = [k for k, s in reader_states(settings, readers(120)).items() if s == "uncertain"]
    assert len(checked) == 50, outcomes  # batch 1, named to the user
    outcomes.append(send(settings, clock, resend_uncertain=True))
    assert not twice(esp), (outcomes, len(twice(esp)))


# -- ESP answers that do not mean what they seem ---------------------------------------------------
ACCOUNT_ERRORS = {
    "out-of-credits": (405, "Not allowed to send: you have run out of credits.", 50),
    "sender-signature": (400, "The 'From' address you supplied is not a Sender Signature.", 0),
    "pending-approval": (
        412,
        "While your account is pending approval, all recipients must "
        "share the same domain as the 'From' address.",
        0,
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("error", list(ACCOUNT_ERRORS))
def test_postmark_account_errors_per_message_do_not_settle_readers_for_good(
    esp: FakeEsp,
    newsletter: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    error: str,
) -> None:
    """Postmark answers a batch with HTTP 200 and a per-message ErrorCode that is about the
    ACCOUNT, not the reader: 405 once the credits are used up, 400 while the sender
    signature is not confirmed, 412 while the account is pending approval. Every such
    reader is recorded `refused` (never retried) and, as nobody is left, the issue `sent`
    (with 0 readers, for the last two): once the account is fixed, `send` says "already
    sent" and those readers never get the issue. Right: only an error about the reader
    (406 inactive, 300 invalid address) refuses that reader; an account error leaves the
    readers unsent, stops the run, and the next run sends them. (120 readers in batches of
    50: the credits run out after the first batch.)"""
    code, message, quota = ACCOUNT_ERRORS[error]
    account = {"left": quota}
    templated = esp_server._postmark_templated

    def account_error(fake: FakeEsp, body: Any) -> dict[str, Any]:
        if account["left"] <= 0:
            return {"ErrorCode": code, "Message": message}
        account["left"] -= 1
        return templated(fake, body)

    monkeypatch.setattr(esp_server, "_postmark_templated", account_error)
    batches_of(monkeypatch, "postmark", 50)
    settings = own_list(esp, newsletter, "postmark", 120)
    outcomes = [send(settings, clock)]
    account["left"] = 10_000  # the user bought credits / confirmed the sender / was approved
    outcomes.append(send(settings, clock))
    got = copies(esp)
    never = [a for a in readers(120) if got[a] == 0]
    assert not never, (outcomes, len(never), row(settings).state)


@pytest.mark.slow
def test_postmark_search_answer_for_another_issue_does_not_count_as_this_batch(
    esp: FakeEsp, newsletter: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last week's issue went to the same 30 readers through Postmark. This week's batch is
    answered 502 before Postmark acted (in flight). The rerun asks Postmark's message search
    for the batch's metadata tag, and the search answers with last week's messages to the
    same readers (a filter the search ignores). spark-mail takes every recipient it finds
    as proof, records all 30 `sent`, and nobody gets this week's issue. Right: a found
    message counts only when its Metadata names this issue's batch (the search answer
    carries it); otherwise the readers are sent (or uncertain), never silently settled."""
    settings = own_list(esp, newsletter, "postmark", 30)
    due_issue(newsletter, "last-week")
    assert send_issue("last-week", settings, mode="send", clock=clock).outcome == "sent"
    search = esp_server.postmark_search

    def ignoring_metadata(fake: FakeEsp, req: esp_server.Recorded) -> Any:
        query = "&".join(p for p in req.query.split("&") if not p.startswith("metadata_"))
        return search(fake, dataclasses.replace(req, query=query))

    monkeypatch.setattr(esp_server, "postmark_search", ignoring_metadata)
    esp.fail(502, path="/email/batchWithTemplates")  # before Postmark acted
    outcomes = [send(settings, clock)]
    clock.advance(600)
    outcomes.append(send(settings, clock))
    this_week = collections.Counter(
        a for d in esp.delivered if d["metadata"].get("issue") == SAMPLE_SLUG for a in d["to"]
    )
    missed = [a for a in readers(30) if this_week[a] == 0]
    states = reader_states(settings, missed)
    silent = [a for a in missed if states.get(a) != ReaderState.UNCERTAIN]
    assert not silent, (outcomes, len(silent), states.get(missed[0]) if missed else None)


# -- the ESP's own scheduler -----------------------------------------------------------------------
@pytest.mark.slow
def test_a_scheduled_broadcast_that_vanished_at_the_esp_is_reported_not_left_in_silence(
    esp: FakeEsp, newsletter: Path
) -> None:
    """`schedule` hands issue-1 to Resend for 13:00. A colleague deletes the scheduled
    broadcast in Resend's dashboard. At 14:00 dispatch asks Resend (404: nothing went
    out), does nothing, and exits 0 with no output, run after run: the issue never goes
    out and nobody is told. Right: a scheduled send whose time has passed and that the ESP
    says did not go out is reported (exit 1) as needing a decision."""
    from spark_mail.scheduling.esp import schedule_issue

    due_issue(newsletter, "issue-1")
    settings = quick(settings_for(esp, newsletter, "resend", SPARK_MAIL_SEND_RATE="100"))
    clock = FakeClock(DUE)
    schedule_issue("issue-1", settings, at=DUE + dt.timedelta(hours=1), clock=clock)
    esp.broadcasts.clear()  # deleted in the dashboard
    clock.advance(2 * 3600)
    report = dispatch(settings, clock=clock)
    assert len(esp.audience_sends) == 0
    said = [(i.slug, str(i.outcome)) for i in report.items]
    assert report.exit_code == 1 and said, (said, row(settings, "issue-1").state)


@pytest.mark.slow
def test_unschedule_whose_answer_was_lost_can_be_finished(esp: FakeEsp, newsletter: Path) -> None:
    """`unschedule` deletes the scheduled Resend broadcast, but the answer is a 502. The row
    stays `scheduled`; a second `unschedule` asks Resend (404), then tries DELETE again
    (404) and fails, and so does every later one; `send` refuses ("scheduled with
    resend") and dispatch skips it: the issue can never go out. Right: a broadcast the ESP
    no longer has is unscheduled (404 on DELETE = already gone), and the issue can then be
    sent once."""
    from spark_mail.scheduling.esp import schedule_issue, unschedule_issue

    due_issue(newsletter, "issue-1")
    settings = quick(settings_for(esp, newsletter, "resend", SPARK_MAIL_SEND_RATE="100"))
    clock = FakeClock(DUE)
    schedule_issue("issue-1", settings, at=DUE + dt.timedelta(hours=1), clock=clock)
    esp.act_then(status=502, path="/broadcasts/", method="DELETE")
    outcomes = [attempt(lambda: unschedule_issue("issue-1", settings, clock=clock))]
    outcomes.append(attempt(lambda: unschedule_issue("issue-1", settings, clock=clock)))
    outcomes.append(attempt(lambda: send_issue("issue-1", settings, mode="send", clock=clock)))
    assert len(esp.audience_sends) == 1, (outcomes, row(settings, "issue-1").state)


class TryLater:
    """An SMTP sink that answers one recipient with a temporary 4xx at RCPT (greylisting,
    a relay's rate limit), once; the retry would be accepted."""

    def __init__(self, sink: Any, address: str, reply: str) -> None:
        self.sink, self.address, self.reply, self.refused = sink, address, reply, 0

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address == self.address and not self.refused:
            self.refused += 1
            return self.reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return str(await self.sink.handle_DATA(server, session, envelope))


@pytest.mark.slow
@pytest.mark.parametrize(
    "reply",
    ["451 4.7.1 Greylisted, please try again later", "421 4.7.0 Try again later, closing"],
    ids=["greylisted-451", "rate-limited-421"],
)
def test_smtp_temporary_refusal_at_rcpt_is_tried_again_not_refused_for_good(
    newsletter: Path, clock: FakeClock, reply: str
) -> None:
    """An SMTP relay answers RCPT for one reader with a 4xx ("try again later": greylisting,
    or a rate limit that also closes the connection). smtplib raises "recipients refused",
    which spark-mail records as `refused` for good (never retried); with the 421 the next
    reader, sent on the closed connection, is `uncertain` although nothing was sent. Right:
    a 4xx is temporary (RFC 5321): nothing was accepted, so the reader is `failed` and the
    next run sends it (and only a message sent on a live connection can be uncertain)."""
    from servers.smtp import Sink, serve

    addresses = readers(5)
    write_list(newsletter, addresses)
    sink = Sink()
    controller = serve(TryLater(sink, addresses[1], reply))
    try:
        settings = own_list_over_smtp(newsletter, controller.port)
        outcomes = [send(settings, clock), send(settings, clock)]
    finally:
        controller.stop()
    got = collections.Counter(a for m in sink.messages for a in m["to"])
    assert max(got.values()) == 1
    missing = [a for a in addresses if got[a] == 0]
    assert not missing, (outcomes, missing, reader_states(settings, missing))


# -- a hostile (or hurried) user between runs ------------------------------------------------------
@pytest.mark.slow
def test_an_issue_partly_sent_to_your_list_is_not_then_broadcast_to_the_esps_audience(
    esp: FakeEsp, newsletter: Path, clock: FakeClock
) -> None:
    """Own list through Resend: a canary `send --limit 10` reaches 10 readers; the issue is
    `pending`. The user then removes the `audience` setting (to "just send it to the Resend
    segment"): the claim accepts the pending row and a broadcast goes to the whole segment,
    the 10 canary readers included. Right: an issue with readers already recorded is
    finished on the path it started on (or refused with a clear line), never handed to a
    second audience."""
    settings = own_list(esp, newsletter, "resend", 50)
    outcomes = [send(settings, clock, limit=10)]
    assert sum(copies(esp).values()) == 10, outcomes
    segment = dataclasses.replace(settings, audience="")
    outcomes.append(send(segment, clock))
    assert copies(esp)["audience"] == 0, (outcomes, row(settings).state)


@pytest.mark.slow
def test_an_unconfirmed_broadcast_is_settled_before_the_issue_goes_to_your_list(
    esp: FakeEsp, newsletter: Path, clock: FakeClock
) -> None:
    """Resend, the ESP's segment: /broadcasts/{id}/send times out after Resend sent it; the
    run says "it may have gone out - run the same command again". The user instead sets
    `audience` (own list) and sends: the row's recorded broadcast is never asked about,
    and all 30 readers get their own copy after the segment got the broadcast. Right: an
    interrupted send is settled by the recovery rule whatever path the next run takes
    (here: Resend says the broadcast went out, so the issue is sent-earlier)."""
    settings = own_list(esp, newsletter, "resend", 30)
    # One attempt: the timeout is waited out for real, and a repeat (under /send's key)
    # would only wait it out again.
    segment = dataclasses.replace(settings, audience="", send_timeout=1.0, send_attempts=1)
    esp.act_then(hang=True, path="/send")
    outcomes = [send(segment, clock)]
    assert copies(esp)["audience"] == 1, outcomes
    outcomes.append(send(settings, clock))
    assert sum(copies(esp).values()) == 1, (outcomes, row(settings).state)


def test_renaming_a_sent_issue_file_does_not_send_it_again(esp: FakeEsp, newsletter: Path) -> None:
    """dispatch sends issue-1 at 12:00; at 13:00 the author renames the file (a nicer web
    archive URL). The ledger knows issues only by file name, so the 14:00 dispatch finds a
    due issue it never sent and broadcasts it again, within the late window. Right: an
    issue whose send_at, title and body are those of a sent issue is recognised (or
    reported), not sent a second time."""
    due_issue(newsletter, "issue-1")
    settings = quick(settings_for(esp, newsletter, "resend", SPARK_MAIL_SEND_RATE="100"))
    clock = FakeClock(DUE)
    first = dispatch(settings, clock=clock)
    assert [str(i.outcome) for i in first.items] == ["sent"]
    issues = newsletter / "issues"
    (issues / "issue-1.md").rename(issues / "issue-1-engineering-leadership.md")
    clock.advance(2 * 3600)
    second = dispatch(settings, clock=clock)
    assert len(esp.audience_sends) == 1, [(i.slug, str(i.outcome)) for i in second.items]


class DropAfterData:
    """An SMTP sink that takes one reader's message and then drops the connection before
    it answers (the message may or may not be delivered: `uncertain` is right for it)."""

    def __init__(self, sink: Any, address: str) -> None:
        self.sink, self.address = sink, address

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        answer = str(await self.sink.handle_DATA(server, session, envelope))
        if self.address in envelope.rcpt_tos:
            server.transport.close()
        return answer


def own_list_over_smtp(root: Path, port: int) -> Settings:
    from servers.smtp import smtp_settings

    return smtp_settings(
        root,
        port,
        SPARK_MAIL_AUDIENCE="subscribers.csv",
        SPARK_MAIL_SEND_CONCURRENCY="1",
        SPARK_MAIL_SIGNING_SECRET=esp_server.SIGNING_SECRET,
    )


@pytest.mark.slow
def test_one_uncertain_smtp_reader_does_not_hold_back_readers_who_certainly_got_nothing(
    newsletter: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SMTP, 12 readers in batches of 5: the connection drops right after reader 2's message
    (uncertain, rightly). The run stops and says "... 9 left for the next run". The next
    `send` refuses ("an earlier send may have gone out") and dispatch only reports
    `uncertain`: the 9 readers who certainly got nothing are held until a human runs
    `--resend-uncertain`, which also sends reader 2 again, perhaps a second copy. Right: the
    next run sends the readers that were never tried and keeps holding only the uncertain
    one."""
    from servers.smtp import Sink, serve

    batches_of(monkeypatch, "smtp", 5)
    addresses = readers(12)
    write_list(newsletter, addresses)
    sink = Sink()
    controller = serve(DropAfterData(sink, addresses[2]))
    try:
        settings = own_list_over_smtp(newsletter, controller.port)
        outcomes = [send(settings, clock), send(settings, clock)]
    finally:
        controller.stop()
    got = collections.Counter(a for m in sink.messages for a in m["to"])
    never_tried = [a for a in addresses[3:] if got[a] == 0]
    assert not never_tried, (outcomes, len(never_tried), row(settings).last_error)


@pytest.mark.slow
def test_after_ctrl_c_readers_in_flight_are_repeated_under_their_key_not_a_new_one(
    esp: FakeEsp, newsletter: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resend, 25 readers in batches of 10: batch 1 is sent by Resend and answered 502 (in
    flight: the next run repeats it under its key), and the user presses Ctrl-C. The run
    records the issue as `pending` and reports "10 readers uncertain". The user runs `send
    --resend-uncertain`: as the row is not `sending`, nothing settles the readers in flight,
    and they are sent again in a NEW batch under a NEW key, which Resend cannot drop: 10
    readers get two copies. Right: readers left in flight are settled by the recovery rule
    first (repeated under their batch's key), however the run ended."""
    batches_of(monkeypatch, "resend", 10)
    settings = own_list(esp, newsletter, "resend", 25)
    esp.act_then(status=502, path="/emails/batch")

    def ctrl_c(summary: BatchSummary) -> None:
        if summary.batches:
            raise KeyboardInterrupt

    outcomes = []
    with pytest.raises(KeyboardInterrupt):
        send_issue(SAMPLE_SLUG, settings, SendRequest(mode="send", progress=ctrl_c), clock=clock)
    outcomes.append(str(row(settings).state))
    outcomes.append(send(settings, clock, resend_uncertain=True))
    assert not twice(esp), (outcomes, len(twice(esp)))


# -- suppressions written the way people write them ------------------------------------------------
@pytest.mark.parametrize(
    "suppressions",
    [
        "Email Address,First Name,Last Name,UNSUB_TIME\n"
        "anna@example.com,Anna,Example,2024-05-01 10:00:00\n",
        "Anna Example <anna@example.com>\n",
        "<anna@example.com>\n",
        "anna@example.com,\n",
        "mailto:anna@example.com\n",
    ],
    ids=["mailchimp-export", "display-name", "angle-brackets", "trailing-comma", "mailto"],
)
def test_a_suppression_line_spark_mail_cannot_read_never_lets_the_address_through(
    esp: FakeEsp, newsletter: Path, clock: FakeClock, suppressions: str
) -> None:
    """The suppression file names anna the way people and tools write it: Mailchimp's
    unsubscribe export (its column is `Email Address`, so the file is read as one address
    per line and every line is a whole CSV row), `Name <addr>`, `<addr>`, a trailing comma
    from a pasted list, a `mailto:` from a List-Unsubscribe header. Each line is silently
    taken as an address nobody has, and anna gets the issue. Right: the address is read
    out of the line, or the send stops with the file, line and what is wrong; an opt-out
    is never dropped in silence."""
    settings = own_list(esp, newsletter, "postmark", 3)
    write_list(newsletter, ["anna@example.com", "bob@example.com", "carl@example.com"])
    (newsletter / "suppressed.txt").write_text(suppressions, encoding="utf-8")
    settings = dataclasses.replace(settings, suppression_file="suppressed.txt")
    outcome = send(settings, clock)
    assert copies(esp)["anna@example.com"] == 0, outcome


@pytest.mark.slow
@pytest.mark.parametrize("status", [302, 303])
def test_a_redirect_after_postmark_sent_the_batch_is_not_a_clear_refusal(
    esp: FakeEsp, newsletter: Path, clock: FakeClock, status: int
) -> None:
    """A proxy in front of Postmark forwards the batch (Postmark sends it) and answers the
    POST with a redirect (303 See Other is how HTTP says "done, look there"). A 3xx is
    recorded as a clear refusal: the readers are `failed` and the next run sends them
    again, and every reader gets two copies. Right (THE FAULT RULE: only a 4xx that says
    why, or a connection refused, is a clear refusal): the batch may have gone out, and
    the next run asks Postmark's search before sending anything."""
    settings = own_list(esp, newsletter, "postmark", 30)
    esp.act_then(status=status, path="/email/batchWithTemplates")
    outcomes = [send(settings, clock)]
    clock.advance(600)
    outcomes.append(send(settings, clock))
    assert not twice(esp), (outcomes, len(twice(esp)))


class DripServer:
    """A TCP server on 127.0.0.1 that answers every connection with an SMTP greeting one
    byte every `every` seconds, never finishing the line (a stuck relay or a tarpit)."""

    def __init__(self, every: float = 0.05) -> None:
        import socket
        import threading

        self.every = every
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = int(self.sock.getsockname()[1])
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        import threading

        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.drip, args=(conn,), daemon=True).start()

    def drip(self, conn: Any) -> None:
        with conn:
            conn.sendall(b"220")
            while not self.stop.wait(self.every):
                try:
                    conn.sendall(b"-")
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.slow
def test_a_dripping_smtp_server_cannot_hold_a_send_past_its_timeout(
    newsletter: Path, clock: FakeClock
) -> None:
    """The SMTP relay answers one byte every 0.05 s and never finishes its greeting line.
    SPARK_MAIL_SEND_TIMEOUT bounds each read, not the exchange, so the send hangs for as
    long as the server keeps dripping (smtplib reads up to 8 KB for one line: seven minutes
    here) and cron's next runs pile up behind the lock. Right: like the HTTP providers,
    an SMTP exchange takes at most its timeout in all, then fails cleanly (nothing was
    sent: the readers are `failed`)."""
    import threading

    write_list(newsletter, readers(3))
    server = DripServer()
    # The timeout bounds only this exchange with a server that never answers: short is safe.
    settings = dataclasses.replace(own_list_over_smtp(newsletter, server.port), send_timeout=0.3)
    outcome: list[str] = []
    worker = threading.Thread(target=lambda: outcome.append(send(settings, clock)), daemon=True)
    worker.start()
    worker.join(timeout=15)
    finished = not worker.is_alive()
    server.close()  # lets a hung send end (EOF), so nothing outlives the test
    worker.join(timeout=30)
    assert finished, "the send was still waiting for the SMTP greeting after 15 s"
    assert outcome and outcome[0] != "sent", outcome


@pytest.mark.slow
def test_a_subscribers_file_rewritten_during_the_send_does_not_end_it_sent_with_readers_left(
    esp: FakeEsp, newsletter: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Postmark, 500 readers in batches of 50 (an 18 KB file: more than the send has read
    ahead when its first batch is done). While the send runs, the nightly export rewrites
    subscribers.csv in place (truncate, then write), and the send reads the empty moment:
    its stream ends early. The check pass counted 500 readers, the send reached fewer,
    and the issue is recorded `sent` with nobody "left": once the export has
    written the file back, `send` says "already sent" and the other readers never get the
    issue. Right: a send pass that sees fewer readers than its check pass is not `sent`
    (the readers left are reported, and the next run sends them)."""
    batches_of(monkeypatch, "postmark", 50)
    settings = own_list(esp, newsletter, "postmark", 500)
    subscribers = newsletter / "subscribers.csv"
    full = subscribers.read_bytes()

    def nightly_export(summary: BatchSummary) -> None:
        if summary.sent and subscribers.stat().st_size:
            subscribers.write_bytes(b"")  # the export's truncate; its write comes later

    outcomes = [send(settings, clock, progress=nightly_export)]
    subscribers.write_bytes(full)  # the export finished
    clock.advance(600)
    outcomes.append(send(settings, clock))
    got = copies(esp)
    never = [a for a in readers(500) if got[a] == 0]
    assert not never, (outcomes, len(never), row(settings).state)
