"""dispatch(): what is due at a frozen `now` goes out once, in order, through the real send
path, against the fake ESP on 127.0.0.1 (Buttondown routes)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from conftest import run_cli, write_issue
from esp_server import FakeEsp
from spark_mail.clock import FakeClock
from spark_mail.config import Settings, load_settings
from spark_mail.errors import ConfigError, LedgerError
from spark_mail.ledger import Ledger, SendState, open_ledger
from spark_mail.providers import get_provider
from spark_mail.render import build
from spark_mail.scheduling.cron import dispatch, due_issues
from spark_mail.scheduling.times import parse_time

# The sample settings' timezone is America/New_York: 07:00 there is 12:00 UTC in January.
UTC = dt.UTC


NOW = dt.datetime(2025, 1, 20, 8, 0, tzinfo=dt.UTC)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def esp_settings(root: Path, esp: FakeEsp, **extra: str) -> Settings:
    env = {
        "SPARK_MAIL_PROVIDER": "buttondown",
        "SPARK_MAIL_API_KEY": esp.api_key,
        "SPARK_MAIL_API_URL": esp.url("buttondown"),
        "SPARK_MAIL_SEND_TIMEOUT": "30",  # not a timeout test: a busy machine is slow
        "SPARK_MAIL_SEND_ATTEMPTS": "3",
        "SPARK_MAIL_SEND_BACKOFF": "0.01",
        "SPARK_MAIL_SEND_RETRY_SECONDS": "60",
        **extra,
    }
    return load_settings(start=root, env=env)


def issue(root: Path, name: str, send_at: str | None, subject: str | None = None) -> Path:
    lines = [f'title: "{subject or name}"', "date: 2025-01-20"]
    if send_at:
        lines.append(f"send_at: {send_at}")
    return write_issue(root, name, "\n".join(lines))


def subjects(esp: FakeEsp) -> list[str]:
    return [d["subject"] for d in esp.audience_sends]


def test_issue_goes_out_at_send_at_not_before_and_only_once(newsletter: Path, esp: FakeEsp):
    """Before send_at nothing happens; at send_at it is sent; the next run sends nothing."""
    issue(newsletter, "issue-1", "2025-01-20T07:00:00-05:00")
    settings = esp_settings(newsletter, esp)
    early = dispatch(settings, at("2025-01-20T06:59:59-05:00"))
    assert early.items == [] and esp.requests == []
    on_time = dispatch(settings, at("2025-01-20T07:00:00-05:00"))
    assert [(i.slug, i.outcome) for i in on_time.items] == [("issue-1", "sent")]
    assert on_time.exit_code == 0
    again = dispatch(settings, at("2025-01-20T07:05:00-05:00"))
    assert again.items == []
    assert subjects(esp) == ["issue-1"]
    with open_ledger(settings) as ledger:
        record = ledger.get("issue-1")
    assert record is not None and record.state == SendState.SENT and record.esp_ids


def test_send_at_without_offset_is_read_in_the_timezone_setting(newsletter: Path, esp: FakeEsp):
    """A naive 07:00 in America/New_York is 12:00 UTC: not due at 11:59 UTC, due at 12:00."""
    issue(newsletter, "issue-1", "2025-01-20T07:00:00")
    settings = esp_settings(newsletter, esp)
    assert settings.timezone == "America/New_York"
    assert dispatch(settings, at("2025-01-20T11:59:00+00:00")).items == []
    assert [i.outcome for i in dispatch(settings, at("2025-01-20T12:00:00+00:00")).items] == [
        "sent"
    ]


def test_send_at_with_offset_ignores_the_timezone_setting(newsletter: Path, esp: FakeEsp):
    """07:00+01:00 is 06:00 UTC, whatever the newsletter's zone."""
    issue(newsletter, "issue-1", "2025-01-20T07:00:00+01:00")
    settings = esp_settings(newsletter, esp)
    with open_ledger(settings) as ledger:
        assert due_issues(settings, at("2025-01-20T05:59:59+00:00"), ledger) == []
        due = due_issues(settings, at("2025-01-20T06:00:00+00:00"), ledger)
    assert [(d.slug, d.outcome) for d in due] == [("issue-1", "due")]


def test_now_without_offset_is_read_in_the_timezone_setting(newsletter: Path):
    """`--now 2025-01-20T07:00` means 07:00 in the newsletter's zone."""
    settings = load_settings(start=newsletter, env={})
    assert parse_time("2025-01-20T07:00", settings) == at("2025-01-20T12:00:00+00:00")
    with pytest.raises(ConfigError, match="not an ISO 8601"):
        parse_time("next tuesday", settings)


def test_issue_due_beyond_the_late_window_is_reported_not_sent(newsletter: Path, esp: FakeEsp):
    """25 h late with a 24 h window: reported `late` (not a failure), nothing sent;
    --catch-up sends it."""
    issue(newsletter, "issue-1", "2025-01-20T07:00:00-05:00")
    settings = esp_settings(newsletter, esp)
    late = dispatch(settings, at("2025-01-21T08:00:00-05:00"))
    assert [(i.slug, i.outcome) for i in late.items] == [("issue-1", "late")]
    assert "--catch-up" in late.items[0].message and late.exit_code == 0
    assert esp.requests == []
    caught_up = dispatch(settings, at("2025-01-21T08:00:00-05:00"), catch_up=True)
    assert [i.outcome for i in caught_up.items] == ["sent"]
    assert subjects(esp) == ["issue-1"]


def test_late_window_is_a_setting(newsletter: Path, esp: FakeEsp):
    """late_window_hours = 1: two hours late is too late; 59 minutes is not."""
    issue(newsletter, "issue-1", "2025-01-20T07:00:00-05:00")
    settings = esp_settings(newsletter, esp, SPARK_MAIL_LATE_WINDOW_HOURS="1")
    with open_ledger(settings) as ledger:
        two_hours = due_issues(settings, at("2025-01-20T09:00:00-05:00"), ledger)
        in_time = due_issues(settings, at("2025-01-20T07:59:00-05:00"), ledger)
    assert [d.outcome for d in two_hours] == ["late"]
    assert [d.outcome for d in in_time] == ["due"]


def test_due_issues_go_out_in_send_at_order(newsletter: Path, esp: FakeEsp):
    """File names sort one way, send_at the other: send_at wins."""
    issue(newsletter, "a-second", "2025-01-20T09:00:00+00:00")
    issue(newsletter, "b-first", "2025-01-20T08:00:00+00:00")
    issue(newsletter, "c-later", "2025-01-21T08:00:00+00:00")  # not due yet
    report = dispatch(esp_settings(newsletter, esp), at("2025-01-20T10:00:00+00:00"))
    assert [i.slug for i in report.items] == ["b-first", "a-second"]
    assert subjects(esp) == ["b-first", "a-second"]


@pytest.mark.slow
def test_one_failing_issue_does_not_stop_the_others(newsletter: Path, esp: FakeEsp):
    """A broken issue file and an ESP refusal fail (exit 1); the good issue still goes out."""
    issue(newsletter, "good", "2025-01-20T08:00:00+00:00")
    issue(newsletter, "refused", "2025-01-20T07:00:00+00:00", subject="Refused one")
    (newsletter / "issues" / "broken.md").write_text("---\ntitle: [unclosed\n---\nx\n")
    esp.fail(400, times=1, method="POST")  # the first create (the earlier `refused`)
    report = dispatch(esp_settings(newsletter, esp), at("2025-01-20T09:00:00+00:00"))
    outcomes = {i.slug: i.outcome for i in report.items}
    assert outcomes == {"broken": "failed", "refused": "failed", "good": "sent"}
    assert report.exit_code == 1
    broken = next(i for i in report.items if i.slug == "broken")
    assert "broken.md:3" in broken.message and "YAML" in broken.message
    assert subjects(esp) == ["good"]


@pytest.mark.slow
def test_429_with_retry_after_then_success_sends_once(newsletter: Path, esp: FakeEsp):
    """Two 429s with Retry-After: retried, sent exactly once."""
    issue(newsletter, "issue-1", "2025-01-20T08:00:00+00:00")
    esp.fail(429, times=2, retry_after=0.05)
    report = dispatch(esp_settings(newsletter, esp), at("2025-01-20T08:00:00+00:00"))
    assert [i.outcome for i in report.items] == ["sent"]
    assert len(esp.audience_sends) == 1
    assert sum(1 for r in esp.requests if r.method == "POST") >= 3  # 2 refused + the real ones


@pytest.mark.slow
def test_500s_until_give_up_are_unconfirmed_then_next_run_sends_once(
    newsletter: Path, esp: FakeEsp
):
    """Retries exhausted on 500s: the ESP may have acted, so not `failed` but
    `unconfirmed` with the reason, exit 1; the next run repeats the request under the same
    idempotency key and the issue goes out once."""
    issue(newsletter, "issue-1", "2025-01-20T08:00:00+00:00")
    settings = esp_settings(newsletter, esp)
    esp.fail(500, times=3)
    first = dispatch(settings, at("2025-01-20T08:00:00+00:00"))
    assert [i.outcome for i in first.items] == ["unconfirmed"] and first.exit_code == 1
    assert "500" in first.items[0].message
    with open_ledger(settings) as ledger:
        record = ledger.get("issue-1")
    assert record is not None and record.state == SendState.SENDING
    assert "500" in (record.last_error or "")
    assert esp.audience_sends == []
    retried = dispatch(settings, at("2025-01-20T08:05:00+00:00"))
    assert [i.outcome for i in retried.items] == ["sent"]
    assert len(esp.audience_sends) == 1


@pytest.mark.slow
def test_timeout_on_the_sending_request_still_sends_once(newsletter: Path, esp: FakeEsp):
    """The ESP sends but never answers: the retry carries the same key, one send."""
    issue(newsletter, "issue-1", "2025-01-20T08:00:00+00:00")
    esp.act_then(hang=True, path="/publish")  # processed, never answered
    settings = esp_settings(newsletter, esp, SPARK_MAIL_SEND_TIMEOUT="1")
    report = dispatch(settings, at("2025-01-20T08:00:00+00:00"))
    assert len(esp.calls("POST", r"/v1/emails/.+/publish")) == 2  # timed out, then retried
    assert len(esp.audience_sends) == 1
    assert [i.outcome for i in report.items] == ["sent"], report.items


def test_uncertain_issue_is_reported_and_not_sent(newsletter: Path, esp: FakeEsp):
    """An `uncertain` row is a failure that names --resend-uncertain, and nothing is sent."""
    issue(newsletter, "issue-1", "2025-01-20T08:00:00+00:00")
    settings = esp_settings(newsletter, esp)
    with open_ledger(settings) as ledger:
        ledger.claim("issue-1", "h", "postmark", "send", NOW)
        ledger.mark_uncertain("issue-1", "killed mid-request", NOW)
    report = dispatch(settings, at("2025-01-20T08:00:00+00:00"))
    assert [i.outcome for i in report.items] == ["uncertain"] and report.exit_code == 1
    assert "--resend-uncertain" in report.items[0].message
    assert "killed mid-request" in report.items[0].message
    assert esp.requests == []


def test_dry_run_sends_nothing_and_records_nothing(newsletter: Path, esp: FakeEsp):
    """--dry-run runs the provider against a recorder: no request, no ledger row."""
    issue(newsletter, "issue-1", "2025-01-20T08:00:00+00:00")
    settings = esp_settings(newsletter, esp)
    report = dispatch(settings, at("2025-01-20T08:00:00+00:00"), dry_run=True)
    assert [i.outcome for i in report.items] == ["dry-run"]
    assert esp.requests == []
    assert (newsletter / "dist" / "issue-1" / "dry-run" / "summary.json").is_file()
    with open_ledger(settings) as ledger:
        assert ledger.get("issue-1") is None


def test_corrupt_ledger_stops_dispatch_before_anything_is_sent(newsletter: Path, esp: FakeEsp):
    """Garbage in the ledger file: one LedgerError, no request to the ESP."""
    issue(newsletter, "issue-1", "2025-01-20T08:00:00+00:00")
    settings = esp_settings(newsletter, esp)
    settings.ledger_file.parent.mkdir(parents=True)
    settings.ledger_file.write_bytes(b"this is not a database\x00\xff" * 100)
    with pytest.raises(LedgerError, match="unreadable"):
        dispatch(settings, at("2025-01-20T08:00:00+00:00"))
    assert esp.requests == []


@pytest.mark.slow
def test_locked_ledger_stops_dispatch_before_anything_is_sent(newsletter: Path, esp: FakeEsp):
    """Another writer holds the ledger past ledger_timeout: LedgerError, nothing sent."""
    issue(newsletter, "issue-1", "2025-01-20T08:00:00+00:00")
    settings = esp_settings(newsletter, esp, SPARK_MAIL_LEDGER_TIMEOUT="0.2")
    Ledger(settings.ledger_file).open().close()
    other = sqlite3.connect(settings.ledger_file, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LedgerError, match="locked"):
            dispatch(settings, at("2025-01-20T08:00:00+00:00"))
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert esp.requests == []


def test_wrong_timezone_setting_is_one_clear_error(newsletter: Path, esp: FakeEsp):
    """timezone = "Mars/Olympus": ConfigError naming the setting, before anything else."""
    issue(newsletter, "issue-1", "2025-01-20T08:00:00")
    settings = esp_settings(newsletter, esp, SPARK_MAIL_TIMEZONE="Mars/Olympus")
    with pytest.raises(ConfigError, match="'timezone'"):
        dispatch(settings, at("2025-01-20T08:00:00+00:00"))
    assert esp.requests == []


def test_nothing_due_creates_no_ledger(newsletter: Path):
    """A run with nothing due writes nothing at all."""
    settings = load_settings(start=newsletter, env={})
    report = dispatch(settings, at("2025-01-20T08:00:00+00:00"))
    assert report.items == [] and report.exit_code == 0
    assert not settings.ledger_file.exists()


def test_interrupted_schedule_found_by_dispatch_is_left_to_the_esp(newsletter: Path, esp: FakeEsp):
    """A `schedule` killed after Buttondown accepted it: dispatch asks, records `scheduled`,
    and sends nothing itself."""
    path = issue(newsletter, "issue-1", "2025-01-20T08:00:00+00:00")
    settings = esp_settings(newsletter, esp)
    email = build(path, settings)
    later = at("2025-01-21T08:00:00+00:00")
    with open_ledger(settings) as dead, get_provider(settings) as provider:
        assert dead.locks.try_acquire("issue-1")
        dead.claim(
            "issue-1", email.content_hash, "buttondown", "schedule", NOW, scheduled_for=later
        )
        provider.schedule(email, later, on_ids=lambda ids: dead.record_ids("issue-1", ids, NOW))
    report = dispatch(settings, at("2025-01-20T08:00:00+00:00"))
    assert [i.outcome for i in report.items] == ["scheduled-earlier"] and report.exit_code == 0
    assert esp.audience_sends == []
    with open_ledger(settings) as ledger:
        assert ledger.get("issue-1").state == SendState.SCHEDULED  # type: ignore[union-attr]


def test_a_future_now_is_refused_for_a_real_send_and_allowed_for_a_dry_run(newsletter: Path):
    """`--now` later than the real clock never sends for real (exit 2, one line, nothing
    sent, no ledger); with --dry-run it shows what would be due then."""
    issue(newsletter, "issue-1", "2099-01-20T08:00:00+00:00")
    later = at("2099-01-20T09:00:00+00:00")
    settings = load_settings(start=newsletter, env={})
    with pytest.raises(ConfigError, match="later than the real time") as caught:
        dispatch(settings, later, clock=FakeClock(NOW))
    assert caught.value.exit_code == 2 and "--dry-run" in str(caught.value)
    assert not settings.ledger_file.exists()
    dry = dispatch(settings, later, dry_run=True, clock=FakeClock(NOW))
    assert [i.outcome for i in dry.items] == ["dry-run"]
    cli = run_cli("dispatch", "--now", "2099-01-20T09:00:00+00:00", cwd=newsletter)
    assert cli.returncode == 2 and "later than the real time" in cli.stderr
    assert "Traceback" not in cli.stderr and len(cli.stderr.strip().splitlines()) == 1


def test_the_ledger_records_the_real_time_not_the_pretend_one(newsletter: Path):
    """A past `--now` picks what is due; `sent_at` is the time the send really happened."""
    issue(newsletter, "issue-1", "2025-01-20T08:00:00+00:00")
    settings = load_settings(start=newsletter, env={})
    real = dt.datetime(2025, 3, 1, 9, 30, tzinfo=dt.UTC)
    report = dispatch(settings, at("2025-01-20T08:05:00+00:00"), clock=FakeClock(real))
    assert [i.outcome for i in report.items] == ["sent"]
    with open_ledger(settings) as ledger:
        record = ledger.get("issue-1")
    assert record is not None and record.sent_at == real.isoformat(timespec="seconds")


@pytest.mark.slow
def test_an_issue_that_went_only_to_the_outbox_goes_out_once_a_real_provider_is_set(
    newsletter: Path, esp: FakeEsp
):
    """A newcomer's cron line ran before `.env` named an ESP: the issue "went" to the outbox
    (no reader has it). Once a real provider is set, dispatch sends it for real, once; the
    outbox itself still never takes it twice."""
    issue(newsletter, "issue-1", "2025-01-20T07:00:00-05:00")
    outbox = load_settings(start=newsletter, env={})  # no provider set: the outbox
    first = dispatch(outbox, at("2025-01-20T07:00:00-05:00"))
    assert [(i.slug, i.outcome) for i in first.items] == [("issue-1", "sent")]
    assert dispatch(outbox, at("2025-01-20T07:05:00-05:00")).items == []
    assert esp.requests == []

    real = esp_settings(newsletter, esp)
    on_time = dispatch(real, at("2025-01-20T07:10:00-05:00"))
    assert [(i.slug, i.outcome) for i in on_time.items] == [("issue-1", "sent")]
    assert dispatch(real, at("2025-01-20T07:15:00-05:00")).items == []
    assert subjects(esp) == ["issue-1"]
    with open_ledger(real) as ledger:
        record = ledger.get("issue-1")
        history = [event.detail for event in ledger.history("issue-1")]
    assert record is not None and record.provider == "buttondown" and record.state == "sent"
    assert any("went only to the outbox" in (detail or "") for detail in history)
    # and back on the outbox, the real send stands: nothing goes anywhere again
    assert dispatch(outbox, at("2025-01-20T07:20:00-05:00")).items == []
