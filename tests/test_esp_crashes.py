"""Own-list sends through Mailgun and SendGrid as real processes, killed with SIGKILL while
the fake ESP (its own process) holds a batch it already processed: the next run settles that
batch by the fault rule (Mailgun: its events API; SendGrid: uncertain) and sends the rest,
and no reader gets two copies."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from test_bulk_processes import BATCH_PATH, kill_during_first_batch, own_list, status
from test_cron_processes import SLUG, EspProcess, run, start_esp

__all__ = ["start_esp"]  # the fixture, used by name below

pytestmark = pytest.mark.slow
SENDING = BATCH_PATH


def killed_during_first_batch(tmp_path: Path, esp: EspProcess, readers: int) -> Path:
    root = own_list(tmp_path, esp, readers)
    with (root / ".env").open("a") as env:
        env.write("SPARK_MAIL_MAILGUN_DOMAIN=mg.example.com\n")
    kill_during_first_batch(root, esp)
    return root


def copies(esp: EspProcess) -> collections.Counter[str]:
    return collections.Counter(a for d in esp.delivered() for a in d["to"])


def test_mailgun_killed_mid_batch_is_settled_by_its_events_and_sends_the_rest(
    tmp_path: Path, start_esp
):
    """Mailgun queued batch 1 (1,000 readers) before the kill: the rerun finds them in the
    events API by the batch's variable, sends only the other 500; the issue is `sent`."""
    esp = start_esp("mailgun")
    root = killed_during_first_batch(tmp_path, esp, 1500)
    rerun = run(root, "send", SLUG, "--yes")
    assert rerun.returncode == 0, rerun.stderr
    counts = copies(esp)
    assert len(counts) == 1500 and set(counts.values()) == {1}
    assert len(esp.requests("POST", SENDING["mailgun"])) == 2
    assert len(esp.requests("GET", "/events")) >= 1
    assert status(root)["state"] == "sent"


def test_mailgun_events_not_in_yet_leave_the_batch_uncertain(tmp_path: Path, start_esp):
    """The events API shows nothing yet: the batch's 1,000 readers are `uncertain` (named,
    exit 1), the other 500 go out, nobody twice."""
    esp = start_esp("mailgun")
    root = killed_during_first_batch(tmp_path, esp, 1500)
    esp.call("/_settings", {"mailgun_events_lag": True})
    rerun = run(root, "send", SLUG, "--yes")
    assert rerun.returncode == 1
    assert "1,000 readers were in batches that may have gone out" in rerun.stderr
    assert "Traceback" not in rerun.stderr
    counts = copies(esp)
    assert len(counts) == 1500 and set(counts.values()) == {1}
    assert status(root)["state"] == "uncertain"


def test_sendgrid_killed_mid_batch_reports_the_batch_uncertain_and_sends_the_rest(
    tmp_path: Path, start_esp
):
    """SendGrid can neither be asked nor drop a repeat: the batch in flight is `uncertain`,
    the rest is sent, the run says what to do."""
    esp = start_esp("sendgrid")
    root = killed_during_first_batch(tmp_path, esp, 1200)
    rerun = run(root, "send", SLUG, "--yes")
    assert rerun.returncode == 1
    assert "1,000 readers were in batches that may have gone out" in rerun.stderr
    assert "--resend-uncertain" in rerun.stderr
    counts = copies(esp)
    assert len(counts) == 1200 and set(counts.values()) == {1}
    assert [len(c["body"]["personalizations"]) for c in esp.requests("POST", "/v3/mail/send")] == [
        1000,
        200,
    ]
    assert status(root)["state"] == "uncertain"
