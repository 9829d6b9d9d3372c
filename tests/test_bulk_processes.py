"""Own-list sending as real processes: `python -m spark_mail send ... --yes` is killed with
SIGKILL while the fake ESP (its own process) holds a batch request open; the next run
delivers every reader exactly once - including the batch in flight on Resend (same
Idempotency-Key, the ESP replays its first answer), while on Postmark (no keys) that batch
is reported as uncertain and not sent again."""

from __future__ import annotations

import collections
import json
import signal
from pathlib import Path

import pytest
from test_cron_processes import SLUG, EspProcess, make_newsletter, run, start_cli, start_esp
from waiting import poll_until

__all__ = ["start_esp"]  # the fixture, used by name below

pytestmark = pytest.mark.slow  # killed and interrupted processes, 1,200-reader lists

BATCH_PATH = {
    "postmark": "/email/batch",
    "resend": "/emails/batch",
    "mailgun": "/v3/mg.example.com/messages",
    "sendgrid": "/v3/mail/send",
}


def own_list(tmp_path: Path, esp: EspProcess, readers: int) -> Path:
    root = make_newsletter(
        tmp_path,
        esp,
        SPARK_MAIL_SEND_CONCURRENCY="1",
        SPARK_MAIL_SIGNING_SECRET="process-signing-secret-0123456789",
        SPARK_MAIL_AUDIENCE="subscribers.csv",
        SPARK_MAIL_PROGRESS_SECONDS="0",
    )
    lines = ["email,first_name"] + [f"r{n:04d}@example.com,R{n}" for n in range(readers)]
    (root / "subscribers.csv").write_text("\n".join(lines) + "\n")
    return root


def kill_during_first_batch(root: Path, esp: EspProcess) -> None:
    esp.fault(hold=120.0, path=BATCH_PATH[esp.provider])
    victim = start_cli(root, "send", SLUG, "--yes")
    try:
        esp.wait_for_request(BATCH_PATH[esp.provider])
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL


def signal_taken(pid: int, signum: int) -> bool:
    """Whether the process has taken `signum` off its queues: no longer pending for the
    process (ShdPnd) or any of its threads (SigPnd), as /proc shows them."""
    bit = 1 << (signum - 1)
    statuses = [Path(f"/proc/{pid}/status")]
    statuses += [task / "status" for task in Path(f"/proc/{pid}/task").iterdir()]
    for status in statuses:
        try:
            lines = status.read_text().splitlines()
        except FileNotFoundError:  # a thread that has ended
            continue
        for line in lines:
            name, _, value = line.partition(":")
            if name in ("ShdPnd", "SigPnd") and int(value, 16) & bit:
                return False
    return True


def copies(esp: EspProcess) -> collections.Counter[str]:
    return collections.Counter(a for d in esp.delivered() for a in d["to"])


def status(root: Path) -> dict:
    result = run(root, "status", SLUG, "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["sends"]
    return row


def test_resend_killed_mid_batch_then_rerun_delivers_everyone_exactly_once(
    tmp_path: Path, start_esp
):
    """SIGKILL while Resend holds batch 1: the rerun sends batch 1 again with the same
    Idempotency-Key (the ESP replays, delivering nothing twice) and then the rest."""
    esp = start_esp("resend")
    root = own_list(tmp_path, esp, 250)
    kill_during_first_batch(root, esp)
    rerun = run(root, "send", SLUG, "--yes")
    assert rerun.returncode == 0, rerun.stderr
    counts = copies(esp)
    assert len(counts) == 250 and set(counts.values()) == {1}
    calls = esp.requests("POST", BATCH_PATH["resend"])
    assert len(calls) == 4  # the killed batch, its repeat, then two new batches
    keys = [c["headers"]["Idempotency-Key"] for c in calls]
    assert keys[0] == keys[1] and len(set(keys)) == 3
    assert status(root)["state"] == "sent"
    assert "250 sent" in rerun.stdout or "250" in rerun.stdout


def test_postmark_killed_mid_batch_is_settled_by_search_and_sends_the_rest(
    tmp_path: Path, start_esp
):
    """SIGKILL while Postmark holds batch 1 (it processed it): the rerun finds those 500 in
    Postmark's message search, does not send them again, sends the other 200; every reader
    has exactly one copy."""
    esp = start_esp("postmark")
    root = own_list(tmp_path, esp, 700)
    kill_during_first_batch(root, esp)
    rerun = run(root, "send", SLUG, "--yes")
    assert rerun.returncode == 0, rerun.stderr
    counts = copies(esp)
    assert len(counts) == 700 and set(counts.values()) == {1}
    calls = esp.requests("POST", BATCH_PATH["postmark"])
    assert [len(c["body"]["Messages"]) for c in calls] == [500, 200]
    assert status(root)["state"] == "sent"


def test_postmark_killed_mid_batch_reports_the_batch_uncertain_and_sends_the_rest(
    tmp_path: Path, start_esp
):
    """The same, but Postmark's search lags and shows nothing: the rerun does not send those
    500 again, sends the other 200, names the uncertain readers and exits 1; every reader
    has exactly one copy."""
    esp = start_esp("postmark")
    root = own_list(tmp_path, esp, 700)
    kill_during_first_batch(root, esp)
    esp.call("/_settings", {"postmark_search_lag": True})
    rerun = run(root, "send", SLUG, "--yes")
    assert rerun.returncode == 1
    assert "500 readers were in batches that may have gone out" in rerun.stderr
    assert "r0000@example.com" in rerun.stderr and "--resend-uncertain" in rerun.stderr
    assert "Traceback" not in rerun.stderr
    counts = copies(esp)
    assert len(counts) == 700 and set(counts.values()) == {1}
    calls = esp.requests("POST", BATCH_PATH["postmark"])
    assert [len(c["body"]["Messages"]) for c in calls] == [500, 200]
    assert status(root)["state"] == "uncertain"


def test_progress_lines_and_summary_under_cron(tmp_path: Path, start_esp):
    """No terminal: progress comes as plain lines on stderr, the summary as JSON."""
    esp = start_esp("postmark")
    root = own_list(tmp_path, esp, 1200)
    result = run(root, "send", SLUG, "--yes", "--json", "--limit", "1000")
    assert result.returncode == 0, result.stderr
    assert f"{SLUG}: " in result.stderr and "readers" in result.stderr and "/s" in result.stderr
    data = json.loads(result.stdout)
    assert data["outcome"] == "partial"
    summary = data["summary"]
    assert (summary["sent"], summary["remaining"], summary["readers"]) == (1000, 200, 1200)
    assert summary["rate"] > 0 and summary["seconds"] > 0


def test_ctrl_c_mid_send_finishes_the_batch_in_flight_and_the_rerun_sends_the_rest(
    tmp_path: Path, start_esp
):
    """SIGINT while Postmark holds batch 1: the process waits for that answer, records it,
    says how many readers got the issue and how to go on, exits 130; the rerun sends only the
    readers not yet sent - nobody twice, none uncertain."""
    esp = start_esp("postmark")
    root = own_list(tmp_path, esp, 1200)
    esp.fault(hold=120.0, path=BATCH_PATH["postmark"])  # until released below
    victim = start_cli(root, "send", SLUG, "--yes")
    try:
        esp.wait_for_request(BATCH_PATH["postmark"])
    finally:
        victim.send_signal(signal.SIGINT)
    # Batch 1's answer goes once the process has taken the SIGINT (Python's handler has
    # run: whatever its threads do next, the KeyboardInterrupt comes before batch 2)
    poll_until(lambda: signal_taken(victim.pid, signal.SIGINT), "the SIGINT to be taken")
    esp.release_holds()
    _, err = victim.communicate(timeout=60)
    assert victim.returncode == 130, err
    assert "Traceback" not in err
    assert f"500 of 1,200 readers got {SLUG} before the stop" in err  # how far, and how to go on
    assert f"`spark-mail send {SLUG}` continues" in err
    assert status(root)["state"] == "pending"
    rerun = run(root, "send", SLUG, "--yes")
    assert rerun.returncode == 0, rerun.stderr
    counts = copies(esp)
    assert len(counts) == 1200 and set(counts.values()) == {1}
    assert status(root)["state"] == "sent"
