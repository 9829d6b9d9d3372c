"""Shared fixtures: a throw-away newsletter folder with the sample settings and issue."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from browser import browser  # noqa: F401  (the shared headless Chromium fixture)
from ses_support import moto_server, ses_moto  # noqa: F401  (the local SES stand-in)

REPO = Path(__file__).resolve().parent.parent
SAMPLE_ISSUE = REPO / "issues" / "2025-01-20-engineering-leadership.md"
SAMPLE_SLUG = SAMPLE_ISSUE.stem


@pytest.fixture
def newsletter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A newsletter folder (settings + the sample issue), made the current directory.

    SPARK_MAIL_* variables of the machine running the tests are removed, so the tests see
    only what they set themselves.
    """
    root = tmp_path / "newsletter"
    (root / "issues").mkdir(parents=True)
    shutil.copy(REPO / "spark-mail.toml", root / "spark-mail.toml")
    shutil.copy(SAMPLE_ISSUE, root / "issues" / SAMPLE_ISSUE.name)
    for name in list(os.environ):
        if name.startswith("SPARK_MAIL_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(root)
    yield root


def write_issue(root: Path, name: str, front: str, body: str = "Hello, readers.\n") -> Path:
    """Write issues/<name>.md with the given front matter lines."""
    path = root / "issues" / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\n{front.strip()}\n---\n{body}", encoding="utf-8")
    return path


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60):
    """Run `python -m spark_mail ARGS` as a real process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_MAIL_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "spark_mail", *args],
        cwd=cwd,
        env=full_env,
        stdin=subprocess.DEVNULL,  # never a terminal, wherever pytest runs
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def esp() -> Iterator:
    """A fake ESP (Buttondown, Resend and Postmark routes) on 127.0.0.1; see tests/esp_server.py."""
    from esp_server import FakeEsp

    with FakeEsp(api_key="test-key") as server:
        yield server


def run_on_terminal(
    *args: str,
    cwd: Path,
    answers: list[tuple[str, str]],
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, str]:
    """Run `python -m spark_mail ARGS` on a pseudo-terminal (stdin, stdout and stderr are a
    terminal); each time the output shows the next prompt text in `answers`, type its answer.
    Returns (exit code, everything printed, with "\\n" line ends)."""
    import os
    import pty
    import select
    import time

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_MAIL_")}
    full_env.update({"NO_COLOR": "1", "COLUMNS": "200", **(env or {})})
    master, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spark_mail", *args],
        cwd=cwd, env=full_env, stdin=terminal, stdout=terminal, stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    printed, seen, pending = b"", 0, list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 0.1)[0]:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the process closed the terminal: it has finished
                break
            if not chunk:
                break
            printed += chunk
            text = printed.decode(errors="replace")
            if pending and pending[0][0] in text[seen:]:
                seen = len(text)
                os.write(master, pending.pop(0)[1].encode() + b"\n")
        else:
            raise AssertionError(f"no exit within {timeout} s; printed:\n{printed.decode()}")
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, printed.decode(errors="replace").replace("\r\n", "\n")
