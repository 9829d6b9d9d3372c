"""Benchmark the reader desk: poll clicks and one-click unsubscribes against a real `serve`.

    python bench/desk.py [--requests 5000] [--connections 16] [--workers [1 2]] [--starts 3]

For each worker count a real `python -m spark_mail serve --workers N` process runs on
127.0.0.1 in a temporary copy of the sample newsletter (fresh store). The load generator
is tests/loadgen.py: raw asyncio sockets (uvloop), HTTP/1.1 keep-alive, `--connections`
connections, every request prepared beforehand, in THIS process on the SAME machine, so it
takes CPU from the server it measures (on 2 cores, one of them is mostly the generator's).
No external tool is needed (wrk is not used).

Each scenario sends `--requests` requests, each from a different reader (every one a
write to the store): a poll click (the vote, then the results page rendered with Jinja2)
and a one-click unsubscribe (RFC 8058 POST, committed with fsync). The baseline, measured
in the same run, is GET /healthz (routing, middleware, one SQLite read, no write).
Printed: requests/s, p50 and p99 latency, and the ratio of requests/s to the baseline.
Target on 2 cores: at least 1,000 requests/s at p99 under 50 ms. Not a test: the machines
here are shared and noisy.

First, the CPU a spawned worker of `serve --workers 2` uses to start (spawn, imports, the
app, up to uvicorn's "Application startup complete."), read from /proc (Linux), median of
`--starts` starts; the baseline, measured alternately in the same run, is uvicorn's own
worker serving a hello-world ASGI app (the floor spark-mail's part comes on top of).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from loadgen import LoadResult, http_request, run_load  # noqa: E402

SAMPLE = REPO / "issues" / "2025-01-20-engineering-leadership.md"
SLUG = SAMPLE.stem
SECRET = "bench-signing-secret-0123456789abcdef"
HOST = "tinybigspark.com"
ENV = {
    "SPARK_MAIL_SIGNING_SECRET": SECRET,
    "SPARK_MAIL_POLL_DAYS": "0",  # the sample issue is old; keep its poll open
    "SPARK_MAIL_DESK_RATE_LIMIT": "0",  # one address sends everything here
}


def newsletter(folder: Path) -> Path:
    (folder / "issues").mkdir(parents=True)
    shutil.copy(REPO / "spark-mail.toml", folder / "spark-mail.toml")
    shutil.copy(SAMPLE, folder / "issues" / SAMPLE.name)
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Desk:
    """A `spark-mail serve` process, answering once /healthz does."""

    def __init__(self, root: Path, workers: int) -> None:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_MAIL_")} | ENV
        command = [sys.executable, "-m", "spark_mail", "serve", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, "--workers", str(workers)],
            cwd=root,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise SystemExit("serve did not start")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


HELLO_APP = """\
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


def spawned_workers(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def worker_start_cpu(command: list[str], cwd: Path, workers: int = 2) -> list[float]:
    """The CPU seconds each spawned worker of `command` has used once all of them have
    said "Application startup complete." (uvicorn's log, on stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_MAIL_")} | ENV
    port = ["--port", str(free_port()), "--workers", str(workers)]
    proc = subprocess.Popen(
        [*command, *port], cwd=cwd, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        started = 0
        for line in proc.stderr:
            started += "Application startup complete" in line
            if started == workers:
                return [cpu_seconds(pid) for pid in spawned_workers(proc.pid)]
        raise SystemExit(f"{command} ended before its workers started")
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def worker_starts(starts: int) -> None:
    if starts <= 0:
        return
    print(f"CPU of a spawned worker until its app is up (median of {starts} x 2 workers):")
    with tempfile.TemporaryDirectory(prefix="spark-desk-bench-") as tmp:
        root = newsletter(Path(tmp))
        (root / "hello_asgi.py").write_text(HELLO_APP)
        kinds = {
            "uvicorn alone (hello-world app)": [sys.executable, "-m", "uvicorn", "hello_asgi:app"],
            "spark-mail serve": [sys.executable, "-m", "spark_mail", "serve"],
        }
        cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
        for _ in range(starts):  # alternately, so both see the machine in the same moods
            for kind, command in kinds.items():
                cpu[kind] += worker_start_cpu(command, root)
    baseline = statistics.median(cpu["uvicorn alone (hello-world app)"])
    for kind, seconds in cpu.items():
        median = statistics.median(seconds)
        print(f"  {kind:<34}{median * 1000:>6.0f} ms{(median - baseline) * 1000:>+8.0f} ms")


def requests_for(kind: str, count: int, start: int) -> list[bytes]:
    """`count` prepared requests, each from a different reader."""
    from spark_mail.config import Secret
    from spark_mail.personalize import TokenSigner

    signer = TokenSigner(Secret(SECRET), SLUG)
    out = []
    for n in range(start, start + count):
        email = f"reader{n:07d}@example.com"
        query = f"issue={SLUG}&email={quote(email, safe='')}"
        if kind == "healthz":
            out.append(http_request("GET", "/healthz", HOST))
        elif kind == "poll click":
            token = signer(email, "poll")
            target = f"/poll/{SLUG}?answer={n % 3 + 1}&{query}&token={token}"
            out.append(http_request("GET", target, HOST))
        else:
            target = f"/unsubscribe?{query}&token={signer(email, 'unsubscribe')}"
            body = b"List-Unsubscribe=One-Click"
            kind_header = "application/x-www-form-urlencoded"
            out.append(http_request("POST", target, HOST, body, Content_Type=kind_header))
    return out


def measure(port: int, kind: str, count: int, connections: int, start: int) -> LoadResult:
    result = run_load("127.0.0.1", port, requests_for(kind, count, start), connections)
    bad = {status: n for status, n in result.statuses.items() if status != 200}
    if bad:
        raise SystemExit(f"{kind}: unexpected answers {bad}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2], help="none: no load")
    parser.add_argument("--starts", type=int, default=3, help="worker starts to measure (0: none)")
    args = parser.parse_args()
    worker_starts(args.starts)
    if not args.workers:
        return
    print(f"load generator: tests/loadgen.py (asyncio + uvloop, {args.connections} keep-alive "
          f"connections) in this process, on the same {os.cpu_count()}-core machine")  # fmt: skip
    header = f"{'workers':>7}  {'scenario':<18}{'requests':>9}{'req/s':>9}{'p50 ms':>8}"
    print(header + f"{'p99 ms':>8}{'vs baseline':>13}")
    for workers in args.workers:
        with tempfile.TemporaryDirectory(prefix="spark-desk-bench-") as tmp:
            desk = Desk(newsletter(Path(tmp)), workers)
            try:
                measure(desk.port, "healthz", 500, args.connections, 0)  # warm up
                baseline = None
                for number, kind in enumerate(("healthz", "poll click", "unsubscribe")):
                    start = 1_000_000 * number
                    result = measure(desk.port, kind, args.requests, args.connections, start)
                    baseline = baseline or result.rate
                    print(
                        f"{workers:>7}  {kind:<18}{len(result.latencies):>9}"
                        f"{result.rate:>9,.0f}{result.percentile(50):>8.1f}"
                        f"{result.percentile(99):>8.1f}{result.rate / baseline:>13.2f}"
                    )
            finally:
                desk.stop()


if __name__ == "__main__":
    main()
