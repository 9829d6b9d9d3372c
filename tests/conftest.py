"""Shared fixtures: a throw-away newsletter folder with the sample settings and issue."""

from __future__ import annotations

import atexit
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Bytecode on for this process, whatever PYTHONDONTWRITEBYTECODE says (this machine's shell
# sets it): pytest then keeps each test module with its asserts rewritten in __pycache__
# (rewriting the suite's asserts costs every xdist worker ~7 s of CPU at each start), and
# spark_mail's modules are compiled once, not by every process the tests start (those still
# write nothing; they read what is there). __pycache__ is git-ignored; pip writes the same.
sys.dont_write_bytecode = False

# tmp_path on the machine's RAM disk where it has one (Linux: /dev/shm). The suite makes and
# removes a few thousand folders, and its ledgers and stores are SQLite files in WAL mode
# with `synchronous = FULL`: on a disk that was ~3 s of system CPU in the quick loop, and the
# waits for each fsync. The code paths are the same (fsync is called; it returns at once).
# Set PYTEST_DEBUG_TEMPROOT (pytest's own variable for this) to put them elsewhere.
if "PYTEST_DEBUG_TEMPROOT" not in os.environ and os.access("/dev/shm", os.W_OK | os.X_OK):
    os.environ["PYTEST_DEBUG_TEMPROOT"] = "/dev/shm"

from browser import browser, browser_session  # noqa: E402, F401  (the shared headless Chromium)
from ses_support import moto_server, ses_moto  # noqa: E402, F401  (the local SES stand-in)

# A suite started in the background by a shell without job control (`cmd &` in a script, as a
# CI runner may) inherits SIGINT ignored, and so would every process it starts: the Ctrl-C
# tests would send a signal nobody hears. Processes started from here get the default back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(optionalhook=True)  # the hook is pytest-xdist's: `-p no:xdist` runs without
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto`: one test process more than this process may use CPUs. A fifth to a quarter
    of the suite's time a test waits on something that needs no CPU (a timeout running out,
    a process starting or dying, a socket); two CPUs sat idle ~23 % of a 2-process run. On
    2 CPUs, 3 processes took 59.5-68.6 s where 2 took 70.3-82.0 s in the same sittings; 4
    took as long as 3 or longer (each brings its own Chromium, warm interpreters, moto_server).
    PYTEST_XDIST_AUTO_NUM_WORKERS (pytest-xdist's own, for a smaller or shared machine) still
    says how many: pytest-xdist's hook reads it, and this one ran first and ignored it."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist's hook next: it reads the variable
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return (len(usable) if usable else os.cpu_count() or 1) + 1


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist load` (what `-n` does by default), with the tests that share a Chromium or a
    moto_server sent to one test process (tests/process_groups.py)."""
    if config.getoption("dist") != "load":
        return None  # another --dist asked for: pytest-xdist's own
    from process_groups import make_scheduler

    return make_scheduler(config, log)


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection imported (spark_mail, the test modules, pytest, httpx, starlette, ...)
    lives until the process ends: moved out of the garbage collector's sight, each full
    collection during the tests looks only at what the tests made (per worker: 0.9 -> 0.3 s
    of CPU in the quick loop). The price: a reference cycle made before this point that
    becomes garbage later stays in memory until the process ends."""
    gc.freeze()


# And at exit: the collector's last pass over everything the process made cost ~0.5 s of
# CPU per process (each xdist worker, and the controller). Registered first, so it runs
# after the other exit handlers (atexit calls them last-registered first).
atexit.register(gc.freeze)

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
    """Run `python -m spark_mail ARGS` as a real process: forked from a warm interpreter
    (tests/cli_zygote.py), or a fresh one when the test sets PYTHON* variables."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_MAIL_")}
    full_env.update(env or {})
    if not any(name.startswith("PYTHON") for name in env or {}):
        process = WARM_CLI.start(list(args), cwd=cwd, env=full_env)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            out, err = process.read_output(errors="replace")
            raise subprocess.TimeoutExpired(process.args, timeout, out, err) from None
        return subprocess.CompletedProcess(process.args, process.returncode, *process.communicate())
    return subprocess.run(
        [sys.executable, "-m", "spark_mail", *args],
        cwd=cwd,
        env=full_env,
        stdin=subprocess.DEVNULL,  # never a terminal, wherever pytest runs
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class WarmProcess:
    """A child of a warm interpreter (tests/cli_zygote.py), handled as a `subprocess.Popen`
    with text output: a real process with its own pid, signalled through a pidfd (never a
    pid reused after it ended), its exit code told by the warm interpreter that waits for
    it. stdout and stderr go to files, read by `communicate()` once it has ended."""

    stdout = stderr = None  # nothing piped: waiting.poll_until reads communicate() instead

    def __init__(self, warm: WarmCli, request_id: int, args: list[str], folder: Path) -> None:
        self.warm, self.id, self.args, self.folder = warm, request_id, args, folder
        self.returncode: int | None = None
        self.pidfd_lock = threading.Lock()  # two threads may wait (or signal) at once
        self.pid: int = warm.answer(request_id, "pid", None)
        try:
            self.pidfd: int | None = os.pidfd_open(self.pid)
        except ProcessLookupError:  # ended already (and was waited for)
            self.pidfd = None

    def poll(self) -> int | None:
        if self.returncode is None and self.warm.answered(self.id, "code"):
            self.wait()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            code = self.warm.answer(self.id, "code", timeout)
            if code is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            with self.pidfd_lock:  # closed once (a second close could hit a reused fd)
                if self.pidfd is not None:
                    os.close(self.pidfd)
                    self.pidfd = None
                self.returncode = code
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with self.pidfd_lock:
                if self.pidfd is not None:
                    signal.pidfd_send_signal(self.pidfd, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def read_output(self, errors: str = "strict") -> tuple[str, str]:
        return tuple(  # type: ignore[return-value]
            (self.folder / name).read_text(encoding="utf-8", errors=errors)
            for name in ("stdout", "stderr")
        )

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """(stdout, stderr) once the process has ended; its files are then removed."""
        self.wait(timeout)
        output = self.read_output()
        shutil.rmtree(self.folder, ignore_errors=True)
        return output


class WarmCli:
    """The client of tests/cli_zygote.py: one per test worker and program, started on first
    use. A thread reads the answers; any number of children may run at once."""

    def __init__(self, program: str = "spark_mail") -> None:
        self.program = program
        self.lock = threading.Condition()
        self.process: subprocess.Popen[bytes] | None = None
        self.answers: dict[int, dict[str, int]] = {}
        self.ids = iter(range(1, 1 << 62))

    def start(
        self,
        args: list[str],
        cwd: Path,
        env: dict[str, str],
        *,
        session: bool = False,
        output: Path | None = None,
        stdin: Path | None = None,
        prelude: str = "",
        params: tuple[str, ...] = (),
    ) -> WarmProcess:
        """Start the program with `args` (as `python -m spark_mail ARGS`, or `python
        tests/esp_server.py ARGS`) in `cwd` with exactly `env`. `session`: in a session
        of its own (Popen's start_new_session). `output`: a file (a FIFO the test reads)
        that takes both stdout and stderr, instead of files read by `communicate()`.
        `stdin`: a file to read instead of /dev/null. `prelude`: Python code the child runs
        before the CLI (with `params` as a global)."""
        import tempfile

        folder = Path(tempfile.mkdtemp(prefix="spark-warm-"))
        stdout, stderr = (output, output) if output else (folder / "stdout", folder / "stderr")
        with self.lock:
            if self.process is None or self.process.poll() is not None:
                self.launch()
            assert self.process is not None and self.process.stdin is not None
            request_id = next(self.ids)
            request = {"id": request_id, "args": args, "cwd": str(cwd), "env": env,
                       "stdout": str(stdout), "stderr": str(stderr), "session": session,
                       "stdin": str(stdin or ""), "prelude": prelude, "params": list(params)}  # fmt: skip
            self.process.stdin.write(json.dumps(request).encode() + b"\n")
            self.process.stdin.flush()
        name = "spark-mail" if self.program == "spark_mail" else "esp_server.py"
        return WarmProcess(self, request_id, [name, *args], folder)

    def launch(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_MAIL_")}
        script = str(Path(__file__).with_name("cli_zygote.py"))
        self.process = subprocess.Popen(
            [sys.executable, script, self.program],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )  # fmt: skip
        threading.Thread(target=self.read, args=(self.process,), daemon=True).start()
        atexit.register(self.stop)

    def read(self, process: subprocess.Popen[bytes]) -> None:
        """The reader thread: each answer line into `answers`, waking who waits for it."""
        assert process.stdout is not None
        for line in process.stdout:
            answer = json.loads(line)
            with self.lock:
                self.answers.setdefault(answer.pop("id"), {}).update(answer)
                self.lock.notify_all()
        with self.lock:
            self.answers.setdefault(-1, {})["ended"] = 1  # the warm process is gone
            self.lock.notify_all()

    def answered(self, request_id: int, key: str) -> bool:
        with self.lock:
            return key in self.answers.get(request_id, {})

    def answer(self, request_id: int, key: str, timeout: float | None) -> int | None:
        """The child's `key` ("pid", "code") once the warm process has told it; None when
        `timeout` passes first."""
        with self.lock:
            got = self.lock.wait_for(
                lambda: key in self.answers.get(request_id, {}) or -1 in self.answers, timeout
            )
            if not got:
                return None
            if key not in self.answers.get(request_id, {}):
                raise RuntimeError("the warm CLI process ended")
            return self.answers[request_id][key]  # kept: several threads may wait for it

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.wait(timeout=30)


WARM_CLI = WarmCli()
WARM_ESP = WarmCli("esp_server")  # tests/esp_server.py as its own process (EspProcess)


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
    stdout: Any = None,
) -> tuple[int, str]:
    """Run `python -m spark_mail ARGS` on a pseudo-terminal (stdin, stdout and stderr are a
    terminal); each time the output shows the next prompt text in `answers`, type its answer.
    `stdout`: a file that takes stdout instead (`cmd > file` typed on a terminal).
    Returns (exit code, everything printed on the terminal, with "\\n" line ends)."""
    import os
    import pty
    import select
    import time

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_MAIL_")}
    full_env.update({"NO_COLOR": "1", "COLUMNS": "200", **(env or {})})
    master, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spark_mail", *args],
        cwd=cwd, env=full_env, stdin=terminal, stdout=stdout or terminal, stderr=terminal,
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
