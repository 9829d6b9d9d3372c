"""`spark-mail dispatch` as cron runs it: real processes against a fake ESP that is its own
process (tests/esp_server.py), with overlapping runs, SIGKILL mid-request, and bad ledgers.

The ESP server process is asked what it received over HTTP (GET /_requests, /_state) and
programmed the same way (POST /_fault), so every count here is what the "ESP" saw.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from waiting import poll_until

from conftest import REPO, WARM_CLI, WARM_ESP, WarmProcess, run_cli

TESTS = Path(__file__).resolve().parent
KEY = "cron-test-key-5f3a"
NOW = "2025-01-20T07:00:00-05:00"
SLUG = "issue-1"
# The request that actually sends, per provider (a substring of its path).
SENDING_PATH = {"resend": "/send", "buttondown": "/publish", "postmark": "/email/batch"}


class EspProcess:
    """tests/esp_server.py running as its own process: forked from a warm interpreter that
    has its imports and schemas (conftest.WARM_ESP), a fresh server in each process."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        args = ["--port", "0", "--provider", provider, "--api-key", KEY]
        self.proc = WARM_ESP.start(args, cwd=TESTS, env=dict(os.environ))
        found: dict[str, str] = {}

        def listening() -> bool:  # once it has printed its URL (after PORT)
            try:
                out = (self.proc.folder / "stdout").read_text()
            except FileNotFoundError:  # not opened yet
                return False
            found.update(line.partition(" ")[::2] for line in out.splitlines())
            return "URL" in found

        poll_until(listening, "the ESP's URL", process=self.proc, timeout=60)
        self.url = found["URL"]
        self.base = f"http://127.0.0.1:{found['PORT']}"

    def call(self, path: str, payload: Any = None, timeout: float = 30) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.base + path, data=data, method="POST" if data else "GET"
        )
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read())

    def fault(self, **spec: Any) -> None:
        self.call("/_fault", spec)

    def requests(self, method: str | None = None, path: str | None = None) -> list[dict]:
        """The requests received (those with `method`, and whose path contains `path`)."""
        query = urllib.parse.urlencode({"method": method or "", "path": path or ""})
        return self.call(f"/_requests?{query}")

    def delivered(self) -> list[dict]:
        """Each message the ESP delivered: its "kind" and "to" (not its bodies)."""
        return self.call("/_delivered?fields=kind,to")

    def wait_for_request(self, path: str, timeout: float = 60) -> None:
        """Until the ESP has received POST `path`: the ESP answers when it arrives."""
        spec = {"method": "POST", "path": path, "timeout": timeout}
        arrived = self.call("/_wait", spec, timeout=timeout + 30)["arrived"]
        assert arrived, f"the ESP never received POST {path}"

    def release_holds(self) -> None:
        """Every answer the ESP keeps back (`hold`) goes now."""
        self.call("/_release", {})

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.proc.communicate(timeout=5)


@pytest.fixture
def start_esp() -> Iterator[Any]:
    started: list[EspProcess] = []

    def start(provider: str) -> EspProcess:
        started.append(EspProcess(provider))
        return started[-1]

    yield start
    for esp in started:
        esp.stop()


def make_newsletter(tmp_path: Path, esp: EspProcess, **extra: str) -> Path:
    """spark-mail.toml + issues/issue-1.md (due at NOW) + .env pointing at the ESP process."""
    root = tmp_path / "newsletter"
    (root / "issues").mkdir(parents=True)
    shutil.copy(REPO / "spark-mail.toml", root / "spark-mail.toml")
    (root / "issues" / f"{SLUG}.md").write_text(
        f'---\ntitle: "Issue one"\ndate: 2025-01-20\nsend_at: {NOW}\n---\nHello, readers.\n'
    )
    env = {
        "SPARK_MAIL_PROVIDER": esp.provider,
        "SPARK_MAIL_API_KEY": KEY,
        "SPARK_MAIL_API_URL": esp.url,
        "SPARK_MAIL_AUDIENCE_ID": "seg-1",
        "SPARK_MAIL_SEND_TIMEOUT": "20",
        "SPARK_MAIL_SEND_ATTEMPTS": "3",
        "SPARK_MAIL_SEND_BACKOFF": "0.01",
        "SPARK_MAIL_SEND_RATE": "100",  # Resend's 2/s: not waited out
        **extra,
    }
    if esp.provider == "postmark":
        (root / "subscribers.csv").write_text("email\nann@example.com\nbob@example.com\n")
        env["SPARK_MAIL_AUDIENCE"] = "subscribers.csv"
        env["SPARK_MAIL_SIGNING_SECRET"] = "cron-test-signing-secret-0123456789"
    (root / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return root


def start_cli(root: Path, *args: str) -> WarmProcess:
    """`python -m spark_mail ARGS` started and left running: a real process (forked from
    conftest's warm interpreter) the test can kill, interrupt and wait for, as a Popen."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_MAIL_")}
    return WARM_CLI.start(list(args), cwd=root, env=env)


def run(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A command run to its end, as its own process (forked from the warm interpreter of
    conftest.run_cli: the imports are not paid again for every rerun and status)."""
    return run_cli(*args, cwd=root, timeout=60)


def ledger_row(root: Path) -> dict:
    result = run(root, "status", SLUG, "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["sends"]
    return row


@pytest.mark.slow
def test_two_dispatch_processes_started_together_send_once(tmp_path: Path, start_esp):
    """Overlapping cron runs: the ESP receives one send; the other run says the issue is
    being sent and exits 0. The ESP holds the send open until that other run has ended
    (not for a fixed time), so the two runs overlap however fast either one is."""
    esp = start_esp("resend")
    root = make_newsletter(tmp_path, esp)
    esp.fault(hold=120.0, path=SENDING_PATH["resend"])  # keep the first send open
    procs = [start_cli(root, "dispatch", "--now", NOW) for _ in range(2)]
    ended: queue.Queue[WarmProcess] = queue.Queue()
    for proc in procs:
        threading.Thread(target=lambda p=proc: (p.wait(), ended.put(p)), daemon=True).start()
    try:
        esp.wait_for_request(SENDING_PATH["resend"])  # one run is sending...
        ended.get(timeout=60)  # ...and the other one has ended meanwhile
    finally:
        esp.release_holds()
    results = [(p.wait(timeout=60), *p.communicate(timeout=5)) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], results
    assert len(esp.requests("POST", SENDING_PATH["resend"])) == 1
    assert len([d for d in esp.delivered() if d["kind"] == "audience"]) == 1
    outputs = [out + err for _, out, err in results]
    assert sum("sent issue-1 via resend" in o for o in outputs) == 1
    assert sum("being sent by another spark-mail process" in o for o in outputs) == 1
    assert ledger_row(root)["state"] == "sent"


def kill_while_the_esp_holds(root: Path, esp: EspProcess, path: str, *args: str) -> None:
    """Start `dispatch`, wait until the ESP holds its request on `path`, SIGKILL it."""
    esp.fault(hold=120.0, path=path, method="POST")
    victim = start_cli(root, *(args or ("dispatch", "--now", NOW)))
    try:
        esp.wait_for_request(path)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_dispatch_killed_mid_send_is_settled_by_asking_the_esp(tmp_path: Path, start_esp):
    """SIGKILL while Resend holds the /send request: the next run asks Resend about the
    recorded broadcast, records `sent`, sends nothing; the ledger says why."""
    esp = start_esp("resend")
    root = make_newsletter(tmp_path, esp)
    kill_while_the_esp_holds(root, esp, SENDING_PATH["resend"])
    left = ledger_row(root)
    assert left["state"] == "interrupted" and left["esp_ids"], left
    rerun = run(root, "dispatch", "--now", NOW)
    assert rerun.returncode == 0, rerun.stderr
    assert "went out" in rerun.stdout
    assert len([d for d in esp.delivered() if d["kind"] == "audience"]) == 1
    row = ledger_row(root)
    assert row["state"] == "sent"
    assert "resend says it went out" in " ".join(e["detail"] or "" for e in row["history"])
    assert len(esp.requests("POST", SENDING_PATH["resend"])) == 1


@pytest.mark.slow
def test_dispatch_killed_before_any_id_repeats_under_the_same_key(tmp_path: Path, start_esp):
    """SIGKILL while Buttondown holds the draft request (no id recorded, so nothing to ask
    about): the next run repeats it under the same idempotency key; one email, one send."""
    esp = start_esp("buttondown")
    root = make_newsletter(tmp_path, esp)
    kill_while_the_esp_holds(root, esp, "/v1/emails")
    assert ledger_row(root)["state"] == "interrupted"
    rerun = run(root, "dispatch", "--now", NOW)
    assert rerun.returncode == 0, rerun.stderr
    assert len([d for d in esp.delivered() if d["kind"] == "audience"]) == 1
    row = ledger_row(root)
    assert row["state"] == "sent"
    details = " ".join(e["detail"] or "" for e in row["history"])
    assert "retried with the same idempotency key" in details
    drafts = [r for r in esp.requests("POST", "/v1/emails") if r["path"] == "/v1/emails"]
    assert len(drafts) == 2  # the repeat reached the ESP, which answered with the same draft
    keys = {r["headers"].get("X-Idempotency-Key") for r in drafts}
    assert len(keys) == 1 and None not in keys
    assert len(esp.call("/_state")["emails"]) == 1


@pytest.mark.slow
def test_dispatch_that_cannot_ask_the_esp_is_unconfirmed_until_it_can(tmp_path: Path, start_esp):
    """Killed mid-publish, and the ESP's lookups fail: the next run sends nothing and says
    `unconfirmed` (exit 1); the run after, with the ESP answering, records it sent."""
    esp = start_esp("buttondown")
    root = make_newsletter(tmp_path, esp)
    kill_while_the_esp_holds(root, esp, SENDING_PATH["buttondown"])
    esp.fault(status=500, times=3, method="GET")  # the ESP cannot be asked, this run
    blind = run(root, "dispatch", "--now", NOW)
    assert blind.returncode == 1 and "unconfirmed:" in blind.stderr, blind.stderr
    assert "Traceback" not in blind.stderr
    assert len(esp.requests("POST", SENDING_PATH["buttondown"])) == 1
    later = run(root, "dispatch", "--now", NOW)
    assert later.returncode == 0, later.stderr
    assert ledger_row(root)["state"] == "sent"
    assert len([d for d in esp.delivered() if d["kind"] == "audience"]) == 1
    assert len(esp.requests("POST", SENDING_PATH["buttondown"])) == 1


@pytest.mark.slow
def test_postmark_dispatch_killed_mid_batch_is_settled_by_postmarks_search(
    tmp_path: Path, start_esp
):
    """SIGKILL while Postmark holds the batch: the next run finds the batch's messages in
    Postmark's outbound search, records them sent and sends no second batch."""
    esp = start_esp("postmark")
    root = make_newsletter(tmp_path, esp)
    kill_while_the_esp_holds(root, esp, SENDING_PATH["postmark"])
    rerun = run(root, "dispatch", "--now", NOW)
    assert rerun.returncode == 0, rerun.stderr
    assert len(esp.requests("POST", SENDING_PATH["postmark"])) == 1
    assert esp.requests("GET", "/messages/outbound")
    assert ledger_row(root)["state"] == "sent"


@pytest.mark.slow
def test_postmark_dispatch_killed_mid_send_becomes_uncertain_until_a_human_resends(
    tmp_path: Path, start_esp
):
    """Postmark's search cannot confirm the batch (it lags) and there is no idempotency
    key: the next run sends nothing, reports `uncertain` with how to resolve it (exit 1);
    `send --resend-uncertain --yes` then sends."""
    esp = start_esp("postmark")
    root = make_newsletter(tmp_path, esp)
    kill_while_the_esp_holds(root, esp, SENDING_PATH["postmark"])
    esp.call("/_settings", {"postmark_search_lag": True})
    rerun = run(root, "dispatch", "--now", NOW)
    assert rerun.returncode == 1
    assert "uncertain" in rerun.stderr and "--resend-uncertain" in rerun.stderr
    assert "Traceback" not in rerun.stderr
    assert len(esp.requests("POST", SENDING_PATH["postmark"])) == 1
    assert ledger_row(root)["state"] == "uncertain"
    # Still reported, still not sent, on every later run until a human decides.
    later = run(root, "dispatch", "--now", NOW)
    assert later.returncode == 1 and "uncertain" in later.stderr
    assert len(esp.requests("POST", SENDING_PATH["postmark"])) == 1
    resent = run(root, "send", SLUG, "--resend-uncertain", "--yes")
    assert resent.returncode == 0, resent.stderr
    assert len(esp.requests("POST", SENDING_PATH["postmark"])) == 2
    assert ledger_row(root)["state"] == "sent"


@pytest.mark.slow
def test_500s_past_the_retries_are_one_unconfirmed_line(tmp_path: Path, start_esp):
    """The ESP keeps answering 500 (it may have acted each time): exit 1, one line naming
    the issue and the error, the row stays for the next run to settle; the key never
    shows."""
    esp = start_esp("resend")
    root = make_newsletter(tmp_path, esp, SPARK_MAIL_SEND_ATTEMPTS="2")
    esp.fault(status=500, times=10)
    result = run(root, "dispatch", "--now", NOW)
    assert result.returncode == 1
    # Retries are logged as they happen; the outcome itself is one line (after the time
    # every log line starts with under cron).
    lines = [line for line in result.stderr.splitlines() if " unconfirmed: " in f" {line}"]
    assert len(lines) == 1 and "issue-1" in lines[0] and "500" in lines[0], result.stderr
    assert "gave up after 2 attempts" in lines[0]
    assert result.stdout == ""
    row = ledger_row(root)
    assert row["state"] == "interrupted" and "500" in row["last_error"]
    assert KEY not in result.stdout + result.stderr + json.dumps(row)


def test_nothing_due_is_silent_with_exit_0_under_cron(tmp_path: Path, start_esp):
    """Before send_at, with stdout not a terminal: no output at all, exit 0, no request."""
    esp = start_esp("resend")
    root = make_newsletter(tmp_path, esp)
    result = run(root, "dispatch", "--now", "2025-01-20T06:59:00-05:00")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    as_json = run(root, "dispatch", "--now", "2025-01-20T06:59:00-05:00", "--json")
    assert json.loads(as_json.stdout) == {
        "now": "2025-01-20T06:59:00-05:00",
        "exit_code": 0,
        "issues": [],
        "site": None,
        "site_problem": None,
    }
    assert esp.requests() == []


@pytest.mark.slow
def test_corrupt_ledger_gives_one_error_line_and_sends_nothing(tmp_path: Path, start_esp):
    """Garbage bytes in .spark-mail/ledger.sqlite3: exit 1, one line naming the file."""
    esp = start_esp("resend")
    root = make_newsletter(tmp_path, esp)
    ledger = root / ".spark-mail" / "ledger.sqlite3"
    ledger.parent.mkdir()
    ledger.write_bytes(os.urandom(8192))
    result = run(root, "dispatch", "--now", NOW)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ledger.sqlite3" in lines[0] and "unreadable" in lines[0], lines
    assert "Traceback" not in result.stderr
    assert esp.requests() == []


@pytest.mark.slow
def test_locked_ledger_gives_one_error_line_and_sends_nothing(tmp_path: Path, start_esp):
    """Another process holds the ledger's write lock past ledger_timeout: exit 1, one line."""
    esp = start_esp("resend")
    root = make_newsletter(tmp_path, esp, SPARK_MAIL_LEDGER_TIMEOUT="0.05")
    assert run(root, "status").returncode == 0
    ledger = root / ".spark-mail" / "ledger.sqlite3"
    ledger.parent.mkdir()
    sqlite3.connect(ledger).execute("CREATE TABLE warmup (x)").connection.commit()
    holder = sqlite3.connect(ledger, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = run(root, "dispatch", "--now", NOW)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "locked by another process" in lines[0], lines
    assert esp.requests() == []
