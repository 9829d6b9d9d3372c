"""`preview --snapshot` against a `chromium` on PATH that misbehaves: a second Ctrl-C
while spark-mail waits for it to close. Each fake is a real process on PATH, spawned as spark-mail would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import poll_until

from conftest import REPO, SAMPLE_ISSUE

SLUG = SAMPLE_ISSUE.stem
OLD = b"last week's picture"


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
    try:
        poll_until(pid_file.exists, "chromium started", process=process)
        process.send_signal(signal.SIGINT)
        poll_until((newsletter / "asked-to-close").exists, "Browser.close", process=process)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    chromium = int(pid_file.read_text())
    still = running(chromium)
    if still:
        os.kill(chromium, signal.SIGKILL)
    assert not still, "Chromium left running"
    assert process.returncode == 130, err
    assert "Traceback" not in err, err
    assert_old_pngs_whole(shots)
