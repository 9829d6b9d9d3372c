"""`schedule` for your own subscriber list on ESPs that schedule each batch (SendGrid
`send_at` + batch id, Mailgun `o:deliverytime`), against the fake ESP on 127.0.0.1 and a
real SQLite ledger: handed over once, recorded `scheduled`, confirmed `sent` by dispatch
once the time has passed, taken back where the ESP can."""

from __future__ import annotations

import datetime as dt

import pytest
from test_bulk import reader_states, write_readers

from conftest import SAMPLE_SLUG
from esp_server import settings_for
from spark_mail.clock import FakeClock
from spark_mail.errors import AlreadySent, ConfigError, UnsupportedOperation
from spark_mail.ledger import Ledger, SendState
from spark_mail.scheduling.cron import dispatch
from spark_mail.scheduling.esp import schedule_issue, unschedule_issue
from spark_mail.sending import send_issue


def own(esp, root, provider: str, readers: int = 5):
    write_readers(root, readers)
    return settings_for(esp, root, provider, SPARK_MAIL_AUDIENCE="subscribers.csv")


def record(settings):
    with Ledger(settings.ledger_file) as ledger:
        return ledger.get(SAMPLE_SLUG)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def test_sendgrid_schedule_hands_every_copy_over_once_and_dispatch_confirms(esp, newsletter):
    """One batch id (recorded), every call with it and send_at; the issue `scheduled` with
    its readers; a send is refused meanwhile; dispatch after the time records `sent`."""
    settings = own(esp, newsletter, "sendgrid")
    clock = FakeClock(now())
    at = clock.now() + dt.timedelta(hours=2)
    report = schedule_issue(SAMPLE_SLUG, settings, at=at, clock=clock)
    assert report.outcome == "scheduled" and report.recipients == 5
    row = record(settings)
    assert row.state == SendState.SCHEDULED
    assert row.esp_ids["readers_scheduled"] == "5" and row.esp_ids["batch_id"]
    sends = esp.calls("POST", "/v3/mail/send")
    assert {c.body["batch_id"] for c in sends} == {row.esp_ids["batch_id"]}
    assert {c.body["send_at"] for c in sends} == {int(at.timestamp())}
    assert reader_states(settings) == {"sent": 5}
    with pytest.raises(AlreadySent):
        send_issue(SAMPLE_SLUG, settings, mode="send", clock=clock)
    clock.advance(3 * 3600)
    dispatch(settings, clock.now(), clock=clock)
    assert record(settings).state == SendState.SENT
    assert len(esp.calls("POST", "/v3/mail/send")) == len(sends)  # nothing sent again


@pytest.mark.slow
def test_sendgrid_unschedule_cancels_the_batch_and_a_later_send_reaches_everyone(esp, newsletter):
    """unschedule cancels the batch id at SendGrid and forgets the issue and its readers,
    so a later send goes to every reader (the cancelled copies never went out)."""
    settings = own(esp, newsletter, "sendgrid")
    clock = FakeClock(now())
    schedule_issue(SAMPLE_SLUG, settings, at=clock.now() + dt.timedelta(hours=2), clock=clock)
    batch_id = record(settings).esp_ids["batch_id"]
    unschedule_issue(SAMPLE_SLUG, settings, clock=clock)
    assert esp.sendgrid.scheduled_sends == {batch_id: "cancel"}
    assert record(settings) is None and reader_states(settings) == {}
    send_issue(SAMPLE_SLUG, settings, mode="send", clock=clock)
    delivered = [a for d in esp.delivered if d["kind"] == "message" for a in d["to"]]
    assert len(delivered) == len(set(delivered)) == 5


def test_a_time_beyond_the_esps_window_is_refused_before_anything(esp, newsletter):
    """SendGrid: 73 hours ahead; Mailgun: past mailgun_schedule_days. Nothing is claimed in
    the ledger and nothing reaches the ESP."""
    clock = FakeClock(now())
    settings = own(esp, newsletter, "sendgrid")
    with pytest.raises(ConfigError, match="72 hours"):
        schedule_issue(SAMPLE_SLUG, settings, at=clock.now() + dt.timedelta(hours=73), clock=clock)
    settings = own(esp, newsletter, "mailgun")
    with pytest.raises(ConfigError, match="3 days ahead"):
        schedule_issue(SAMPLE_SLUG, settings, at=clock.now() + dt.timedelta(days=4), clock=clock)
    assert esp.calls() == [] and record(settings) is None


@pytest.mark.slow
def test_mailgun_schedules_with_deliverytime_and_cannot_take_it_back(esp, newsletter):
    """Every batch carries o:deliverytime; unschedule says why Mailgun cannot, and the
    ledger still says `scheduled`."""
    settings = own(esp, newsletter, "mailgun")
    clock = FakeClock(now())
    at = clock.now() + dt.timedelta(days=2)
    schedule_issue(SAMPLE_SLUG, settings, at=at, clock=clock)
    assert {m["deliverytime"] for m in esp.delivered} == {
        at.strftime("%a, %d %b %Y %H:%M:%S +0000")
    }
    with pytest.raises(UnsupportedOperation, match="one by one"):
        unschedule_issue(SAMPLE_SLUG, settings, clock=clock)
    assert record(settings).state == SendState.SCHEDULED


def test_an_esp_that_cannot_schedule_batches_says_so_for_an_own_list(esp, newsletter):
    """Resend schedules broadcasts, not own-list batches: refused, nothing sent."""
    settings = own(esp, newsletter, "resend")
    clock = FakeClock(now())
    with pytest.raises(UnsupportedOperation, match="own subscriber list"):
        schedule_issue(SAMPLE_SLUG, settings, at=clock.now() + dt.timedelta(hours=1), clock=clock)
    assert esp.calls() == [] and record(settings) is None
