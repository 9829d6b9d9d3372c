"""A spark-mail command as its own process (forked from conftest's warm interpreter) with
every file write it makes watched: the tests kill it, interrupt it or pause it at one
chosen write, a point inside its work that no timing could hit reliably."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import WARM_CLI, WarmProcess

# Every file the process opens for writing is wrapped: each write() first calls the
# script's on_write(file, data), defined before this part.
WATCH_WRITES = r"""
class Watched:
    def __init__(self, fh):
        self._fh = fh
    def write(self, data):
        on_write(self._fh, data)
        return self._fh.write(data)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return self._fh.__exit__(*exc)
    def __iter__(self):
        return iter(self._fh)
    def __getattr__(self, name):
        return getattr(self._fh, name)
def watched(fh):
    return Watched(fh) if set(getattr(fh, "mode", "")) & set("wax+") else fh
real_open, real_fdopen = io.open, os.fdopen
io.open = builtins.open = lambda *a, **k: watched(real_open(*a, **k))
os.fdopen = lambda *a, **k: watched(real_fdopen(*a, **k))
"""
# The CLI with every file write watched (conftest's warm interpreter runs this in the
# command's own process before the CLI, with `params`): `count:N` acts on the N-th write,
# `text:RE` on the first write whose data matches RE. Actions: kill (SIGKILL after writing
# half the data), int (Ctrl-C after half), pause (touch PAUSED, wait until the test writes
# to the GO pipe, then write).
WRITE_HOOK = (
    r"""
import builtins, io, os, re, select, signal
trigger, action, paused, go = params
state = {"count": 0}
def fire(data):
    state["count"] += 1
    if trigger.startswith("count:"):
        return state["count"] == int(trigger[6:])
    text = data if isinstance(data, str) else bytes(data).decode("utf-8", "replace")
    return re.search(trigger[5:], text) is not None
def on_write(fh, data):
    if fire(data):
        if action == "pause":
            released = os.open(go, os.O_RDONLY | os.O_NONBLOCK)  # a reader before PAUSED
            real_open(paused, "w").close()
            select.select([released], [], [], 60)  # until the test writes (60 s at most)
        else:
            fh.write(data[: len(data) // 2])
            fh.flush()
            os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGINT)
"""
    + WATCH_WRITES
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_MAIL_")}
    return {**env, "NO_COLOR": "1", **extra}


def hooked(tmp: Path, trigger: str, action: str, *args: str, cwd: Path) -> WarmProcess:
    """`spark-mail ARGS` as its own process (forked from conftest's warm interpreter, so
    one write after another is killed without a fresh interpreter for each), with
    WRITE_HOOK acting on one write."""
    if not (tmp / "GO").exists():
        os.mkfifo(tmp / "GO")
    params = (trigger, action, str(tmp / "PAUSED"), str(tmp / "GO"))
    return WARM_CLI.start(list(args), cwd=cwd, env=clean_env(), prelude=WRITE_HOOK, params=params)
