"""`preview --snapshot` against a `chromium` on PATH that misbehaves: garbage on its
DevTools pipe, answers that are not what was asked, and a second Ctrl-C while spark-mail
waits for it to close. Each fake is a real process on PATH, spawned as spark-mail would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import poll_until, reaped

from conftest import REPO, SAMPLE_ISSUE, run_cli

SLUG = SAMPLE_ISSUE.stem
OLD = b"last week's picture"

# Answers every command with `reply(id)`; exits when asked to close
ANSWERING = """
import json, os, sys
reply = {reply}
pending = b""
while chunk := os.read(3, 65536):
    pending += chunk
    while b"\\0" in pending:
        raw, pending = pending.split(b"\\0", 1)
        if b"Browser.close" in raw:
            sys.exit()
        os.write(4, reply(json.loads(raw)["id"]) + b"\\0")
"""

REPLIES = {
    "not JSON": 'lambda i: b"not json at all"',
    "not UTF-8": 'lambda i: b"\\xff\\xfe"',
    "a list": 'lambda i: b"[1, 2]"',
    "an empty result": 'lambda i: json.dumps({"id": i, "result": {}}).encode()',
    "a string error": 'lambda i: json.dumps({"id": i, "error": "no"}).encode()',
    "a result that is a list": 'lambda i: json.dumps({"id": i, "result": [1]}).encode()',
}


def fake_chromium(folder: Path, body: str) -> dict[str, str]:
    """A `chromium` on PATH running `body` (Python); the environment that finds it."""
    bin_dir = folder / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "chromium"
    script.write_text(f"#!{sys.executable}\n{body}", "utf-8")
    script.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_DIR": str(folder)}


def old_pngs(newsletter: Path) -> Path:
    shots = newsletter / "shots"
    shots.mkdir()
    (shots / f"{SLUG}-375-light.png").write_bytes(OLD)
    return shots


def assert_old_pngs_whole(shots: Path) -> None:
    assert sorted(p.name for p in shots.iterdir()) == [f"{SLUG}-375-light.png"]
    assert (shots / f"{SLUG}-375-light.png").read_bytes() == OLD


@pytest.mark.slow
@pytest.mark.parametrize("answer", list(REPLIES))
def test_chromium_answering_garbage_on_its_pipe_is_one_error_line(newsletter: Path, answer: str):
    """Garbage on the pipe crashed `preview --snapshot` with a traceback (JSONDecodeError,
    AttributeError, KeyError), where a Chromium that exits gives one error line."""
    env = fake_chromium(newsletter, ANSWERING.format(reply=REPLIES[answer]))
    shots = old_pngs(newsletter)
    done = run_cli("preview", SLUG, "--snapshot", "shots", cwd=newsletter, env=env)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "headless Chromium failed" in lines[0] and "chromium --headless" in lines[0]
    assert_old_pngs_whole(shots)


HANGING = """
import os, pathlib, signal
signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches spark-mail only
here = pathlib.Path(os.environ["FAKE_DIR"])
(here / "chromium.pid").write_text(str(os.getpid()))
seen = b""
while chunk := os.read(3, 65536):
    seen += chunk
    if b"Browser.close" in seen:
        (here / "asked-to-close").write_text("")
signal.pause()
"""


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_a_second_ctrl_c_while_chromium_is_asked_to_close_leaves_no_chromium(newsletter: Path):
    """Chromium hangs; Ctrl-C; spark-mail asks it to close and waits up to 10 s; a second
    Ctrl-C in that wait ended spark-mail and left Chromium running for good."""
    env = {**os.environ, **fake_chromium(newsletter, HANGING), "PYTHONPATH": str(REPO)}
    shots = old_pngs(newsletter)
    process = subprocess.Popen(
        [sys.executable, "-m", "spark_mail", "preview", SLUG, "--snapshot", "shots"],
        cwd=newsletter,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid_file = newsletter / "chromium.pid"
    with reaped(process):
        poll_until(pid_file.exists, "chromium started", process=process)
        process.send_signal(signal.SIGINT)
        poll_until((newsletter / "asked-to-close").exists, "Browser.close", process=process)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    chromium = int(pid_file.read_text())
    still = running(chromium)
    if still:
        os.kill(chromium, signal.SIGKILL)
    assert not still, "Chromium left running"
    assert process.returncode == 130, err
    assert "Traceback" not in err, err
    assert_old_pngs_whole(shots)
