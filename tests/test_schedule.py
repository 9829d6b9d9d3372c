"""schedule / unschedule (the ESP's own scheduler) and status (the ledger), against the fake
ESP on 127.0.0.1, in-process and through the real `spark-mail` command."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from conftest import run_cli, write_issue
from esp_server import FakeEsp
from spark_mail.clock import FakeClock
from spark_mail.config import Settings, load_settings
from spark_mail.errors import AlreadySent, ConfigError, UnsupportedOperation
from spark_mail.ledger import SendState, open_ledger
from spark_mail.scheduling.cron import dispatch
from spark_mail.scheduling.esp import schedule_issue, unschedule_issue
from spark_mail.scheduling.status import status
from spark_mail.sending import send_issue

NOW = dt.datetime(2025, 1, 19, 12, 0, tzinfo=dt.UTC)
AT = dt.datetime(2025, 1, 20, 12, 0, tzinfo=dt.UTC)


def env_for(esp: FakeEsp, provider: str) -> dict[str, str]:
    return {
        "SPARK_MAIL_PROVIDER": provider,
        "SPARK_MAIL_API_KEY": esp.api_key,
        "SPARK_MAIL_API_URL": esp.url(provider),
        "SPARK_MAIL_AUDIENCE_ID": "seg-1",
        "SPARK_MAIL_SEND_TIMEOUT": "30",  # not a timeout test: a busy machine is slow
        "SPARK_MAIL_SEND_ATTEMPTS": "2",
        "SPARK_MAIL_SEND_BACKOFF": "0.01",
    }


def settings_for(root: Path, esp: FakeEsp, provider: str) -> Settings:
    return load_settings(start=root, env=env_for(esp, provider))


def an_issue(root: Path, send_at: str | None = "2025-01-20T07:00:00") -> Path:
    front = 'title: "Issue 7"\ndate: 2025-01-20' + (f"\nsend_at: {send_at}" if send_at else "")
    return write_issue(root, "issue-7", front)


def test_schedule_hands_the_issue_to_resend_with_scheduled_at(newsletter: Path, esp: FakeEsp):
    """Resend gets a broadcast scheduled for send_at (read in the timezone); the ledger says
    `scheduled`; nothing reaches readers yet."""
    an_issue(newsletter)
    settings = settings_for(newsletter, esp, "resend")
    result = schedule_issue("issue-7", settings, clock=FakeClock(NOW))
    assert result.outcome == "scheduled"
    (broadcast,) = esp.broadcasts.values()
    assert broadcast["status"] == "scheduled"
    assert broadcast["scheduled_at"] == "2025-01-20T12:00:00Z"  # 07:00 in New York
    assert esp.audience_sends == []
    with open_ledger(settings) as ledger:
        record = ledger.get("issue-7")
    assert record is not None and record.state == SendState.SCHEDULED
    assert record.scheduled_for == "2025-01-20T07:00:00-05:00"
    assert dt.datetime.fromisoformat(record.scheduled_for) == AT
    assert record.esp_ids == {"broadcast_id": broadcast["id"]}


def test_schedule_on_buttondown_publishes_with_publish_date(newsletter: Path, esp: FakeEsp):
    """Buttondown: a draft, then published as `scheduled` with `publish_date` = --at."""
    an_issue(newsletter, send_at=None)
    settings = settings_for(newsletter, esp, "buttondown")
    schedule_issue("issue-7", settings, at=AT, clock=FakeClock(NOW))
    (email,) = esp.emails.values()
    assert email["status"] == "scheduled"
    assert email["publish_date"].startswith("2025-01-20T12:00:00")
    assert esp.audience_sends == []


def test_scheduled_issue_is_skipped_by_dispatch_and_refused_by_send(newsletter: Path, esp: FakeEsp):
    """Once the ESP has it, neither dispatch nor send sends it a second time."""
    an_issue(newsletter)
    settings = settings_for(newsletter, esp, "resend")
    schedule_issue("issue-7", settings, clock=FakeClock(NOW))
    assert dispatch(settings, AT).items == []
    with pytest.raises(AlreadySent, match="unschedule"):
        send_issue("issue-7", settings, mode="send", clock=FakeClock(AT))
    assert esp.audience_sends == []
    assert len(esp.broadcasts) == 1


def test_dispatch_records_a_scheduled_send_the_esp_has_made_as_sent(newsletter: Path, esp: FakeEsp):
    """After the scheduled time, dispatch asks the ESP once and the ledger says `sent`;
    before it, nothing is asked; the ESP is never asked to send."""
    an_issue(newsletter)
    settings = settings_for(newsletter, esp, "resend")
    schedule_issue("issue-7", settings, clock=FakeClock(NOW))
    dispatch(settings, AT - dt.timedelta(minutes=1))
    assert esp.calls("GET") == []
    (broadcast,) = esp.broadcasts.values()
    broadcast["status"] = "sent"  # the ESP's scheduler did its job
    assert dispatch(settings, AT).items == []
    with open_ledger(settings) as ledger:
        record = ledger.get("issue-7")
        why = ledger.history("issue-7")[-1]
    assert record is not None and record.state == SendState.SENT
    assert why.detail == "resend sent it as scheduled"
    assert len(esp.calls("GET")) == 1
    assert len(esp.calls("POST", r"/broadcasts/.+/send")) == 1  # only the schedule
    dispatch(settings, AT + dt.timedelta(minutes=5))
    assert len(esp.calls("GET")) == 1  # settled: not asked again


@pytest.mark.slow
def test_unschedule_takes_it_back_and_warns_that_send_at_is_still_set(
    newsletter: Path, esp: FakeEsp
):
    """The broadcast is deleted at the ESP, the ledger row is gone (history kept), and the
    user is told dispatch would still send it at send_at."""
    an_issue(newsletter)
    settings = settings_for(newsletter, esp, "resend")
    schedule_issue("issue-7", settings, clock=FakeClock(NOW))
    result = unschedule_issue("issue-7", settings, clock=FakeClock(NOW))
    assert result.outcome == "unscheduled" and "send_at is still set" in result.message
    assert esp.broadcasts == {}
    assert esp.calls("DELETE", r"/broadcasts/.+")
    with open_ledger(settings) as ledger:
        assert ledger.get("issue-7") is None
        assert [e.state for e in ledger.history("issue-7")][-1] == "removed"


def test_unschedule_after_the_esp_sent_it_records_sent(newsletter: Path, esp: FakeEsp):
    """Too late to take back: the ESP says sent, the ledger follows, nothing is deleted."""
    an_issue(newsletter)
    settings = settings_for(newsletter, esp, "resend")
    schedule_issue("issue-7", settings, clock=FakeClock(NOW))
    (broadcast,) = esp.broadcasts.values()
    broadcast["status"] = "sent"
    with pytest.raises(AlreadySent, match="already sent it"):
        unschedule_issue("issue-7", settings, clock=FakeClock(AT))
    assert esp.calls("DELETE") == []
    with open_ledger(settings) as ledger:
        assert ledger.get("issue-7").state == SendState.SENT  # type: ignore[union-attr]


def test_schedule_on_a_provider_without_a_scheduler_points_to_dispatch(
    newsletter: Path, esp: FakeEsp
):
    """Postmark has no scheduler: a clear error naming dispatch; nothing recorded or sent."""
    an_issue(newsletter)
    settings = settings_for(newsletter, esp, "postmark")
    with pytest.raises(UnsupportedOperation) as caught:
        schedule_issue("issue-7", settings, clock=FakeClock(NOW))
    assert "postmark" in str(caught.value) and "spark-mail dispatch" in str(caught.value)
    assert esp.requests == []
    assert not settings.ledger_file.exists()


def test_schedule_in_the_past_or_without_a_time_is_refused(newsletter: Path, esp: FakeEsp):
    """A time already gone, or no --at and no send_at: one clear error, nothing sent."""
    an_issue(newsletter)
    settings = settings_for(newsletter, esp, "resend")
    with pytest.raises(ConfigError, match="in the past"):
        schedule_issue("issue-7", settings, clock=FakeClock(AT + dt.timedelta(hours=1)))
    an_issue(newsletter, send_at=None)
    with pytest.raises(ConfigError, match="no time to schedule"):
        schedule_issue("issue-7", settings, clock=FakeClock(NOW))
    assert esp.requests == []


def test_unschedule_of_an_issue_that_is_not_scheduled_is_a_clear_error(
    newsletter: Path, esp: FakeEsp
):
    """Nothing to take back: say so, exit non-zero, no request."""
    an_issue(newsletter)
    with pytest.raises(ConfigError, match="not scheduled"):
        unschedule_issue("issue-7", settings_for(newsletter, esp, "resend"))
    assert esp.requests == []


def test_status_shows_a_dead_senders_row_as_interrupted(newsletter: Path):
    """`sending` with nobody holding the lock is shown as `interrupted`; a live one as
    `sending`."""
    settings = load_settings(start=newsletter, env={})
    with open_ledger(settings) as dead:
        dead.claim("dead-one", "h", "resend", "send", NOW)
    with open_ledger(settings) as live:
        assert live.locks.try_acquire("live-one")
        live.claim("live-one", "h", "resend", "send", NOW)
        states = {row.record.slug: row.state for row in status(settings)}
    assert states == {"dead-one": "interrupted", "live-one": "sending"}


@pytest.mark.slow
def test_schedule_status_unschedule_commands_end_to_end(newsletter: Path, esp: FakeEsp):
    """The real commands: schedule prints the time, status (table and --json, with the
    issue's history) shows it, unschedule takes it back."""
    an_issue(newsletter)
    env = env_for(esp, "resend")
    scheduled = run_cli("schedule", "issue-7", "--at", "2099-01-20T07:00", cwd=newsletter, env=env)
    assert scheduled.returncode == 0, scheduled.stderr
    assert "Scheduled: issue-7 with resend for 2099-01-20T07:00:00-05:00" in scheduled.stdout
    table = run_cli("status", cwd=newsletter, env=env)
    assert table.returncode == 0 and "scheduled" in table.stdout and "issue-7" in table.stdout
    as_json = json.loads(run_cli("status", "issue-7", "--json", cwd=newsletter, env=env).stdout)
    (row,) = as_json["sends"]
    assert row["state"] == "scheduled" and row["provider"] == "resend"
    assert [e["state"] for e in row["history"]] == ["sending", "ids", "scheduled"]
    gone = run_cli("unschedule", "issue-7", cwd=newsletter, env=env)
    assert gone.returncode == 0, gone.stderr
    assert "Unscheduled issue-7 from resend" in gone.stdout and "send_at" in gone.stderr
    again = run_cli("unschedule", "issue-7", cwd=newsletter, env=env)
    assert again.returncode == 2 and "not scheduled" in again.stderr
    assert "Traceback" not in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert esp.api_key not in scheduled.stdout + table.stdout + gone.stdout + gone.stderr


def test_schedule_command_on_postmark_says_so_and_points_to_dispatch(
    newsletter: Path, esp: FakeEsp
):
    """One line on stderr, exit 1, no traceback."""
    an_issue(newsletter)
    result = run_cli("schedule", "issue-7", cwd=newsletter, env=env_for(esp, "postmark"))
    assert result.returncode == 1
    assert "postmark: cannot schedule" in result.stderr and "dispatch" in result.stderr
    assert "Traceback" not in result.stderr


def test_status_with_no_ledger_says_nothing_was_sent_and_creates_nothing(newsletter: Path):
    """A fresh newsletter: a friendly line, `sends: []` in JSON, no .spark-mail folder."""
    plain = run_cli("status", cwd=newsletter)
    assert plain.returncode == 0 and "no send recorded yet" in plain.stdout
    as_json = json.loads(run_cli("status", "--json", cwd=newsletter).stdout)
    assert as_json["sends"] == []
    assert not (newsletter / ".spark-mail").exists()
