"""Own-list sending (spark_mail.bulk through publish.send_issue) against the fake ESP on
127.0.0.1, an aiosmtpd server and a real SQLite ledger: batches, suppression, bad rows,
hostile reader values, --limit, per-message ErrorCode, 429s, resume."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
from test_personalize import GREETING, make_layout

from conftest import SAMPLE_SLUG, write_issue
from esp_server import settings_for
from provider_support import batches_of
from spark_mail.audience import AudienceError
from spark_mail.clock import FakeClock
from spark_mail.errors import UnsupportedOperation
from spark_mail.ledger import Ledger, ReaderState, SendState
from spark_mail.providers.http import RateLimiter
from spark_mail.sending import send_issue


def write_readers(root: Path, count: int, header: str = "email,first_name", rows=()) -> Path:
    """subscribers.csv with `count` generated readers, then `rows` as written."""
    path = root / "subscribers.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(header + "\n")
        columns = header.split(",")[1:]
        for number in range(count):
            values = [f"R{number}" if c == "first_name" else "" for c in columns]
            fh.write(",".join([f"reader{number:05d}@example.com", *values]) + "\n")
        for row in rows:
            fh.write(row + "\n")
    return path


def own_settings(esp, root: Path, provider: str = "postmark", **extra: str):
    return settings_for(esp, root, provider, SPARK_MAIL_AUDIENCE="subscribers.csv", **extra)


def postmark_messages(esp) -> list[dict]:
    """Every message as the fake Postmark sent it: rendered from the stored template with
    each message's TemplateModel (esp_merge), or as received in full (/email/batch)."""
    full = [m for call in esp.calls("POST", "/email/batch") for m in call.body]
    merged = [
        {"To": d["to"][0], "HtmlBody": d["html"], "TextBody": d["text"], "Headers": d["headers"]}
        for d in esp.delivered
        if d["kind"] == "message" and "html" in d
    ]
    return full + merged


def batch_sizes(esp) -> list[int]:
    full = [len(call.body) for call in esp.calls("POST", "/email/batch")]
    merged = [len(c.body["Messages"]) for c in esp.calls("POST", "/email/batchWithTemplates")]
    return sorted(full + merged)


def delivered_to(esp) -> collections.Counter[str]:
    return collections.Counter(a for d in esp.delivered if d["kind"] == "message" for a in d["to"])


def reader_states(settings, slug: str = SAMPLE_SLUG) -> dict[str, int]:
    with Ledger(settings.ledger_file) as ledger:
        return ledger.reader_counts(slug)


def issue_state(settings, slug: str = SAMPLE_SLUG) -> SendState | None:
    with Ledger(settings.ledger_file) as ledger:
        record = ledger.get(slug)
    return None if record is None else record.state


@pytest.mark.slow
@pytest.mark.parametrize("merge", ["true", "false"], ids=["esp-merge", "full-copies"])
def test_every_reader_gets_one_copy_in_batches_of_at_most_500(esp, newsletter, merge):
    """501 readers through Postmark (its own limit of 500 a call, one over it): 2 batch
    calls (500, 1) on the broadcast
    stream, one message per reader, the issue `sent` once every reader is; with the ESP
    merging (one stored template) or every copy sent in full."""
    write_readers(newsletter, 501)
    settings = own_settings(esp, newsletter, SPARK_MAIL_ESP_MERGE=merge)
    result = send_issue(SAMPLE_SLUG, settings, mode="send")
    assert batch_sizes(esp) == [1, 500]
    assert esp.schema_errors == []
    assert len(esp.calls("POST", "/templates")) == (1 if merge == "true" else 0)
    counts = delivered_to(esp)
    assert len(counts) == 501 and set(counts.values()) == {1}
    assert {d["stream"] for d in esp.delivered} == {"broadcast"}
    assert result.outcome == "sent" and result.summary and result.summary["sent"] == 501
    assert reader_states(settings) == {"sent": 501}
    assert issue_state(settings) == SendState.SENT


@pytest.mark.slow
def test_each_copy_carries_the_readers_own_signed_unsubscribe_link(esp, newsletter):
    """Copies differ per reader: the List-Unsubscribe header and the body's link name the
    reader they went to, never another."""
    write_readers(newsletter, 3)
    send_issue(SAMPLE_SLUG, own_settings(esp, newsletter), mode="send")
    for message in postmark_messages(esp):
        address = message["To"]
        headers = {h["Name"]: h["Value"] for h in message["Headers"]}
        assert f"email={address.replace('@', '%40')}" in headers["List-Unsubscribe"]
        assert f"email={address.replace('@', '%40')}" in message["HtmlBody"]
        assert "token=" in headers["List-Unsubscribe"]


def test_suppressed_readers_never_receive_anything(esp, newsletter):
    """Unsubscribed / bounced columns and the suppression file win, in every run."""
    write_readers(
        newsletter,
        4,
        header="email,first_name,unsubscribed,bounced",
        rows=[
            "gone@example.com,Gone,yes,",
            "bounce@example.com,Bounce,,true",
            "listed@example.com,Listed,,",
            "late@example.com,Late,,",
            "LATE@example.com,Late again,1,",  # suppressed on a later row: still wins
        ],
    )
    (newsletter / "suppressed.txt").write_text("listed@example.com\n")
    settings = own_settings(esp, newsletter, SPARK_MAIL_SUPPRESSION_FILE="suppressed.txt")
    first = send_issue(SAMPLE_SLUG, settings, mode="send", limit=2)
    assert first.outcome == "partial"
    result = send_issue(SAMPLE_SLUG, settings, mode="send")
    got = set(delivered_to(esp))
    assert got == {f"reader{n:05d}@example.com" for n in range(4)}
    assert result.summary and result.summary["suppressed"] == 5


@pytest.mark.slow
def test_invalid_rows_stop_the_send_with_line_numbers(esp, newsletter):
    """Invalid rows: nothing sent, no ledger row, one error naming the lines and
    --skip-invalid; with --skip-invalid the valid readers get it."""
    write_readers(newsletter, 2, rows=["not-an-address,X", "a@b@c.com,Y", "ok@example.com,Z"])
    settings = own_settings(esp, newsletter)
    with pytest.raises(AudienceError) as caught:
        send_issue(SAMPLE_SLUG, settings, mode="send")
    message = str(caught.value)
    assert "2 invalid rows" in message and "line 4" in message and "line 5" in message
    assert "--skip-invalid" in message and "nothing was sent" in message
    assert esp.calls() == []
    assert issue_state(settings) is None
    result = send_issue(SAMPLE_SLUG, settings, mode="send", skip_invalid=True)
    assert set(delivered_to(esp)) == {
        "reader00000@example.com",
        "reader00001@example.com",
        "ok@example.com",
    }
    assert result.summary and result.summary["invalid"] == 2


def test_an_empty_list_sends_nothing(esp, newsletter):
    """A subscribers file with only a header: a clear error and no request."""
    (newsletter / "subscribers.csv").write_text("email\n")
    with pytest.raises(AudienceError, match="no readers"):
        send_issue(SAMPLE_SLUG, own_settings(esp, newsletter), mode="send", skip_invalid=True)
    assert esp.calls() == []


def test_hostile_reader_names_are_harmless_in_what_the_esp_receives(esp, newsletter):
    """A first name `<script>` is escaped in HTML; `x\\r\\nBcc: y` adds no header and no
    recipient; the address stays the only `To`."""
    make_layout(newsletter, "greet", GREETING)
    write_issue(newsletter, "greet", "title: Hello\ndate: 2025-02-03\nlayout: greet")
    (newsletter / "subscribers.csv").write_text(
        'email,first_name\nann@example.com,<script>alert(1)</script>\nbob@example.com,"x\r\nBcc: y@evil.example"\n',
        encoding="utf-8",
    )
    send_issue("greet", own_settings(esp, newsletter), mode="send")
    messages = {m["To"]: m for m in postmark_messages(esp)}
    assert set(messages) == {"ann@example.com", "bob@example.com"}
    ann, bob = messages["ann@example.com"], messages["bob@example.com"]
    assert "<script>" not in ann["HtmlBody"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in ann["HtmlBody"]
    for message in (ann, bob):
        assert "Bcc" not in message and "Cc" not in message
        for header in message["Headers"]:
            assert "\r" not in header["Value"] and "\n" not in header["Value"]
            assert header["Name"].lower() not in ("bcc", "cc", "to")
    assert "Hi x Bcc: y@evil.example," in bob["HtmlBody"]
    for call in esp.calls("POST", "/email/batchWithTemplates"):  # what left spark-mail
        for sent in call.body["Messages"]:
            assert not {"Cc", "Bcc"} & set(sent) and sent["To"] in messages
            assert "\r" not in json.dumps(sent) and "\\n" not in json.dumps(sent["Headers"])
    assert sorted(a for d in esp.delivered for a in d["to"]) == [
        "ann@example.com",
        "bob@example.com",
    ]


@pytest.mark.slow
def test_limit_then_a_full_run_sends_each_reader_once(esp, newsletter, monkeypatch):
    """--limit 70 (a canary; batches of 50, so the limit cuts the second) sends the first 70
    and leaves the issue open; the next run sends the other 50; a third run is refused as
    already sent."""
    batches_of(monkeypatch, "postmark", 50)
    write_readers(newsletter, 120)
    settings = own_settings(esp, newsletter)
    canary = send_issue(SAMPLE_SLUG, settings, mode="send", limit=70)
    assert canary.outcome == "partial" and canary.summary and canary.summary["remaining"] == 50
    assert set(delivered_to(esp)) == {f"reader{n:05d}@example.com" for n in range(70)}
    assert issue_state(settings) == SendState.PENDING
    rest = send_issue(SAMPLE_SLUG, settings, mode="send")
    assert rest.outcome == "sent" and rest.summary and rest.summary["already_sent"] == 70
    counts = delivered_to(esp)
    assert len(counts) == 120 and set(counts.values()) == {1}
    from spark_mail.errors import AlreadySent

    with pytest.raises(AlreadySent):
        send_issue(SAMPLE_SLUG, settings, mode="send")


@pytest.mark.slow
def test_per_message_error_code_fails_only_that_reader(esp, newsletter):
    """HTTP 200 with ErrorCode 406 for one reader: that reader is `refused` (named in the
    result), the others are sent, and a rerun does not retry the refused one."""
    write_readers(newsletter, 5)
    esp.postmark_inactive.add("reader00002@example.com")
    settings = own_settings(esp, newsletter)
    result = send_issue(SAMPLE_SLUG, settings, mode="send")
    assert list(result.refused) == ["reader00002@example.com"]
    assert "ErrorCode 406" in result.refused["reader00002@example.com"]
    assert reader_states(settings) == {"sent": 4, "refused": 1}
    assert issue_state(settings) == SendState.SENT
    assert len(delivered_to(esp)) == 4


@pytest.mark.slow
def test_a_failed_batch_stops_the_run_and_the_next_run_sends_the_rest(esp, newsletter, monkeypatch):
    """A batch refused as a whole (422) is `failed`: the run stops with how far it got;
    the next run sends exactly the readers that did not get it (110 readers, batches of
    50)."""
    batches_of(monkeypatch, "postmark", 50)
    write_readers(newsletter, 110)
    settings = own_settings(esp, newsletter, SPARK_MAIL_SEND_CONCURRENCY="1")
    esp.fail(422, path="/email/batch")  # the first batch call
    from spark_mail.errors import BatchSendFailed

    with pytest.raises(BatchSendFailed, match="left for the next run") as caught:
        send_issue(SAMPLE_SLUG, settings, mode="send")
    assert caught.value.summary.failed == 50
    assert issue_state(settings) == SendState.FAILED
    send_issue(SAMPLE_SLUG, settings, mode="send")
    counts = delivered_to(esp)
    assert len(counts) == 110 and set(counts.values()) == {1}


@pytest.mark.slow
def test_a_429_slows_down_and_the_batch_still_goes_once(esp, newsletter, monkeypatch):
    """Resend answers 429 with retry-after: the batch is retried after it, under the same
    Idempotency-Key, and every reader gets exactly one copy (15 readers, batches of 10;
    the waits on a FakeClock)."""
    batches_of(monkeypatch, "resend", 10)
    write_readers(newsletter, 15)
    settings = own_settings(esp, newsletter, "resend", SPARK_MAIL_SEND_CONCURRENCY="1")
    esp.fail(429, retry_after=0.3, path="/emails/batch")
    clock = FakeClock()
    started = clock.monotonic()
    send_issue(SAMPLE_SLUG, settings, mode="send", clock=clock)
    assert clock.monotonic() - started >= 0.3
    assert 0.3 in clock.sleeps  # the retry waited for the ESP's retry-after
    calls = esp.calls("POST", "/emails/batch")
    assert [len(c.body) for c in calls] == [10, 10, 5]  # refused, its retry, the next
    keys = [c.header("Idempotency-Key") for c in calls]
    assert keys[0] == keys[1] and keys[1] != keys[2]
    sent = collections.Counter(a for d in esp.delivered for a in d["to"])
    assert len(sent) == 15 and set(sent.values()) == {1}


@pytest.mark.slow
def test_rate_limiter_pauses_everyone_and_halves_the_rate_after_a_429():
    """slow_down(pause): no request starts before the pause ends, then they start further
    apart (at least 50 ms for an ESP without a documented limit)."""
    clock = FakeClock()
    limiter = RateLimiter(None, clock)
    limiter.slow_down(0.2)
    started = clock.monotonic()
    limiter.wait()
    limiter.wait()
    assert clock.monotonic() - started >= 0.24
    assert limiter.interval == pytest.approx(0.05) and limiter.slowdowns == 1
    resend = RateLimiter(2.0)
    resend.slow_down(0)
    assert resend.interval == pytest.approx(1.0)


def test_buttondown_with_a_subscribers_file_is_an_unsupported_operation(esp, newsletter):
    """Buttondown keeps the audience: a clear UnsupportedOperation line, nothing sent."""
    write_readers(newsletter, 3)
    with pytest.raises(UnsupportedOperation, match="buttondown: cannot send to your own"):
        send_issue(SAMPLE_SLUG, own_settings(esp, newsletter, "buttondown"), mode="send")
    assert esp.calls() == []


def test_dry_run_shows_a_batch_for_the_first_readers_and_sends_nothing(esp, newsletter):
    """Own-list dry run: one batch request for the first 5 readers in dist/, no network,
    no ledger, counts from the whole file."""
    write_readers(newsletter, 40)
    settings = own_settings(esp, newsletter)
    result = send_issue(SAMPLE_SLUG, settings, mode="dry-run")
    assert esp.calls() == []
    assert not settings.ledger_file.exists()
    folder = newsletter / "dist" / SAMPLE_SLUG / "dry-run"
    (batch,) = folder.glob("*email-batch*.json")
    body = json.loads(batch.read_text())["json"]["Messages"]
    assert [m["To"] for m in body] == [f"reader{n:05d}@example.com" for n in range(5)]
    assert len(list(folder.glob("*templates*.json"))) == 2  # looked for, then stored
    assert result.summary and result.summary["readers"] == 40


def test_outbox_writes_one_file_per_reader(newsletter):
    """No ESP: the outbox writes each reader's copy as its own .eml file."""
    from spark_mail.config import load_settings

    write_readers(newsletter, 3)
    settings = load_settings(
        newsletter,
        env={
            "SPARK_MAIL_AUDIENCE": "subscribers.csv",
            "SPARK_MAIL_SIGNING_SECRET": "outbox-signing-secret-0123456789",
        },
    )
    send_issue(SAMPLE_SLUG, settings, mode="send")
    files = sorted(p.name for p in (newsletter / "outbox" / SAMPLE_SLUG).glob("send-*.eml"))
    assert [name.rsplit("-", 1)[0] for name in files] == [
        f"send-reader{n:05d}@example.com" for n in range(3)
    ]
    assert reader_states(settings) == {ReaderState.SENT: 3}


@pytest.mark.slow
def test_smtp_sends_each_reader_a_copy_over_several_reused_connections(newsletter, monkeypatch):
    """SMTP own list: 20 readers in batches of 5, 4 connections at most (not one per
    message), each reader one message addressed to them alone."""
    from servers.smtp import Sink, serve, smtp_settings

    batches_of(monkeypatch, "smtp", 5)
    write_readers(newsletter, 20)
    sink = Sink()
    controller = serve(sink)
    try:
        settings = smtp_settings(
            newsletter,
            controller.port,
            SPARK_MAIL_AUDIENCE="subscribers.csv",
            SPARK_MAIL_SIGNING_SECRET="smtp-signing-secret-0123456789",
        )
        send_issue(SAMPLE_SLUG, settings, mode="send")
    finally:
        controller.stop()
    assert sorted(m["to"][0] for m in sink.messages) == [
        f"reader{n:05d}@example.com" for n in range(20)
    ]
    assert all(len(m["to"]) == 1 for m in sink.messages)
    assert 1 <= len({m["peer"] for m in sink.messages}) <= 4


@pytest.mark.slow
def test_a_list_sent_only_to_the_outbox_goes_out_for_real_once_a_provider_is_set(esp, newsletter):
    """Own list through the outbox (files, no reader reached), then Postmark: every reader
    gets one copy; a second Postmark run is refused as already sent."""
    import dataclasses

    from spark_mail.errors import AlreadySent

    write_readers(newsletter, 10)
    settings = own_settings(esp, newsletter)
    outbox = dataclasses.replace(settings, provider="outbox")
    assert send_issue(SAMPLE_SLUG, outbox, mode="send").outcome == "sent"
    assert delivered_to(esp) == collections.Counter()
    assert send_issue(SAMPLE_SLUG, settings, mode="send").outcome == "sent"
    counts = delivered_to(esp)
    assert len(counts) == 10 and set(counts.values()) == {1}
    with pytest.raises(AlreadySent):
        send_issue(SAMPLE_SLUG, settings, mode="send")


@pytest.mark.slow
def test_a_list_begun_through_an_esp_and_finished_to_the_outbox_is_not_sent_again(esp, newsletter):
    """Postmark took the first 3 readers (--limit), the outbox "sent" the other 7: when
    Postmark is set again the 3 must not get a second copy, so the issue stays sent."""
    import dataclasses

    from spark_mail.errors import AlreadySent

    write_readers(newsletter, 10)
    settings = own_settings(esp, newsletter)
    assert send_issue(SAMPLE_SLUG, settings, mode="send", limit=3).outcome == "partial"
    outbox = dataclasses.replace(settings, provider="outbox")
    assert send_issue(SAMPLE_SLUG, outbox, mode="send").outcome == "sent"
    with pytest.raises(AlreadySent):
        send_issue(SAMPLE_SLUG, settings, mode="send")
    counts = delivered_to(esp)
    assert len(counts) == 3 and set(counts.values()) == {1}
