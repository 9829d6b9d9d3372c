"""Benchmark own-list sending: the sample issue to 10,000 and 100,000 generated readers.

    python bench/send.py [--readers 10000 100000] [--delay 0.05] [--provider postmark]
                         [--concurrency N] [--desk-store N]
    python bench/send.py --smtp [--readers 2000] [--concurrency N]

`--smtp`: an own-list send over SMTP into a local aiosmtpd server (its own process) against
a baseline measured in the same run: a plain smtplib sender pushing the very same messages
(each reader's copy, built beforehand) through the same number of connections to the same
server. Printed: both rates, the ratio (target >= 0.7), and where spark-mail's time goes.

A lean ESP emulator runs as its own process on 127.0.0.1 (tests/esp_server.py validates
every message against the vendor's JSON schema and keeps them all, which would make the
emulator the thing measured). It answers each batch call after `--delay` seconds
(default 50 ms), enforces the batch limits (Postmark 500 messages / 50 MB per call,
Resend 100) and answers like the vendor (a per-message `ErrorCode` / an id per email).

Each run is a real `python -m spark_mail send sample --yes --json` child process against a
fresh ledger, with a subscribers CSV generated in a temp folder. Printed per run:
readers per second (the send itself, from the summary; and the whole command), the ratio
to the ESP's ideal (readers per call x concurrent calls / delay), bytes sent per reader,
and the peak RSS of the sending process (os.wait4's rusage of that child alone).
`--desk-store N` runs each size a second time with a reader desk store
(`.spark-mail/readers.sqlite3`) holding N other suppressed addresses, which the send reads
before it starts and queries right before each batch leaves, and prints that run's rate as
a ratio to the run without a store.
Targets on a 2-core machine: ratio >= 0.7 (Postmark emulator); 100,000 readers' peak RSS
at most 50 MB above the 10,000-reader run. Not a test: machines here are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "issues" / "2025-01-20-engineering-leadership.md"
KEY = "bench-key"
LIMITS = {"postmark": 500, "resend": 100}
PATHS = {"postmark": ("/email/batch", "/email/batchWithTemplates"), "resend": ("/emails/batch",)}
# How a message starts in the compact JSON spark-mail sends (a key, never inside a string:
# JSON escapes the quotes of a string's content). Counting them is far cheaper than parsing
# 20 MB per call, which would make the emulator the bottleneck on two cores.
MESSAGE_KEY = {"postmark": b'"MessageStream":', "resend": b'"from":'}
POSTMARK_MAX_BYTES = 50 * 1024 * 1024


# -- the emulator (runs in its own process: `bench/send.py --serve PROVIDER DELAY`) ---------
def serve(provider: str, delay: float) -> None:
    limit = LIMITS[provider]
    stats = {"calls": 0, "messages": 0, "bytes": 0}
    templates: set[str] = set()  # Postmark template aliases stored
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out as separate writes: without this, Nagle's algorithm
            # and the client's delayed ACK add ~40 ms to every answer, which is the
            # emulator's artefact, not the ESP's delay being measured.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/_stats":
                with lock:
                    self.answer(200, dict(stats))
            elif self.path.startswith("/templates/") and self.path[11:] in templates:
                self.answer(200, {"Alias": self.path[11:], "TemplateId": 1})
            else:
                self.answer(404, {"ErrorCode": 1101, "Message": "Not found"})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/templates" and provider == "postmark":
                alias = json.loads(raw).get("Alias", "")
                templates.add(alias)
                self.answer(200, {"TemplateId": 1, "Alias": alias, "Active": True})
                return
            if self.path not in PATHS[provider]:
                self.answer(404, {"ErrorCode": 0, "Message": "Not found"})
                return
            count = raw.count(MESSAGE_KEY[provider])
            time.sleep(delay)
            with lock:
                stats["calls"] += 1
                stats["bytes"] += len(raw)
            if count > limit or (provider == "postmark" and len(raw) > POSTMARK_MAX_BYTES):
                message = f"a batch holds at most {limit} messages ({count} sent)"
                if provider == "postmark":
                    self.answer(422, {"ErrorCode": 300, "Message": message})
                else:
                    self.answer(
                        422, {"statusCode": 422, "name": "validation_error", "message": message}
                    )
                return
            with lock:
                stats["messages"] += count
            if provider == "postmark":
                ok = {"ErrorCode": 0, "Message": "OK", "SubmittedAt": "2025-01-20T12:00:00Z"}
                self.answer(200, [{**ok, "MessageID": str(uuid.uuid4())} for _ in range(count)])
            else:
                self.answer(200, {"data": [{"id": str(uuid.uuid4())} for _ in range(count)]})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


class Emulator:
    def __init__(self, provider: str, delay: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", provider, str(delay)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        self.url = f"http://127.0.0.1:{line[1]}"

    def stats(self) -> dict[str, int]:
        import urllib.request

        with urllib.request.urlopen(self.url + "/_stats", timeout=5) as answer:
            return json.loads(answer.read())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# -- the runs ---------------------------------------------------------------------------------
def newsletter(
    folder: Path, readers: int, provider: str, url: str, concurrency: int, full: bool = False
) -> Path:
    root = folder / f"n{readers}"
    (root / "issues").mkdir(parents=True)
    shutil.copy(REPO / "spark-mail.toml", root / "spark-mail.toml")
    shutil.copy(SAMPLE, root / "issues" / "sample.md")
    with (root / "subscribers.csv").open("w", encoding="utf-8") as fh:
        fh.write("email,first_name,unsubscribed\n")
        for number in range(readers):
            fh.write(f"reader{number:06d}@example{number % 97}.com,Reader{number},\n")
    env = {
        "SPARK_MAIL_PROVIDER": provider,
        "SPARK_MAIL_API_KEY": KEY,
        "SPARK_MAIL_API_URL": url,
        "SPARK_MAIL_AUDIENCE": "subscribers.csv",
        "SPARK_MAIL_SIGNING_SECRET": "bench-signing-secret-0123456789",
        "SPARK_MAIL_SEND_TIMEOUT": "60",
        "SPARK_MAIL_PROGRESS_SECONDS": "3600",
    }
    if concurrency:
        env["SPARK_MAIL_SEND_CONCURRENCY"] = str(concurrency)
    if full:
        env["SPARK_MAIL_ESP_MERGE"] = "false"
    (root / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return root


def fill_desk_store(root: Path, count: int) -> None:
    """A reader desk store with `count` suppressed addresses that are not on the list."""
    import datetime as dt

    from spark_mail.audience.suppressions import SuppressionStore, suppress

    now = dt.datetime.now(dt.UTC)
    with SuppressionStore(root / ".spark-mail" / "readers.sqlite3") as store:
        for start in range(0, count, 5000):
            store.run(
                [
                    suppress(f"gone{n:07d}@example.org", how="one-click", issue="x", at=now)
                    for n in range(start, min(count, start + 5000))
                ]
            )


def run_send(root: Path) -> tuple[dict[str, Any], float, int]:
    """(summary, wall seconds, peak RSS in bytes) of one `spark-mail send` child."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_MAIL_")}
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spark_mail", "send", "sample", "--yes", "--json"],
            cwd=root,
            env=env,
            stdout=out,
            stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.monotonic() - started
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            sys.exit(f"send failed ({proc.returncode}): {err.read().decode()[-2000:]}")
        result = json.loads(out.read())
    return result["summary"], wall, usage.ru_maxrss * 1024  # ru_maxrss is KiB on Linux


# -- SMTP: spark-mail against a plain smtplib sender, same server, same run -------------------
def serve_smtp() -> None:
    """An aiosmtpd server that accepts every message and counts it (its own process)."""
    from aiosmtpd.controller import Controller

    class Counter:
        def __init__(self) -> None:
            self.messages = 0

        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            self.messages += len(envelope.rcpt_tos)
            return "250 OK"

    with socket.socket() as probe:  # aiosmtpd checks its own port: pick a free one first
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(Counter(), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"PORT {port}", flush=True)
    threading.Event().wait()


def smtp_messages(root: Path, readers: int) -> list[tuple[str, bytes]]:
    """(recipient, MIME bytes) of every reader's copy, as spark-mail builds them."""
    sys.path.insert(0, str(REPO))
    from spark_mail.audience import iter_readers
    from spark_mail.config import load_settings
    from spark_mail.personalize import prepare
    from spark_mail.providers.mime import mime_for

    settings = load_settings(root, env={})
    template = prepare(root / "issues" / "sample.md", settings)
    built = []
    for reader in iter_readers(root / "subscribers.csv"):
        copy = template.copy(reader).email(template.email)
        built.append((reader.email, mime_for(copy, reader.email).as_bytes()))
    assert len(built) == readers
    return built


def plain_smtplib(port: int, messages: list[tuple[str, bytes]], connections: int) -> float:
    """Seconds a plain smtplib sender takes to push `messages` over `connections`."""
    import smtplib

    shares = [messages[n::connections] for n in range(connections)]
    sender = "hello@tinybigspark.com"

    def push(share: list[tuple[str, bytes]]) -> None:
        with smtplib.SMTP("127.0.0.1", port) as conn:
            for to, data in share:
                conn.sendmail(sender, [to], data)

    threads = [threading.Thread(target=push, args=(share,)) for share in shares]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def smtp_main(readers: int, concurrency: int) -> None:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve-smtp"], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    port = int(server.stdout.readline().split()[1])
    connections = concurrency or 4  # the smtp provider's default
    try:
        with tempfile.TemporaryDirectory(prefix="spark-bench-smtp-") as folder:
            root = newsletter(Path(folder), readers, "smtp", "", concurrency)
            env = (root / ".env").read_text().replace("SPARK_MAIL_API_URL=\n", "")
            env += f"SPARK_MAIL_SMTP_HOST=127.0.0.1\nSPARK_MAIL_SMTP_PORT={port}\n"
            env += f"SPARK_MAIL_SMTP_TLS=none\nSPARK_MAIL_SEND_CONCURRENCY={connections}\n"
            (root / ".env").write_text(env)
            messages = smtp_messages(root, readers)
            size = sum(len(data) for _, data in messages) / readers
            rates: dict[str, list[float]] = {"spark-mail": [], "smtplib": []}
            for _ in range(3):  # alternate, so both meet the same machine load
                plain = plain_smtplib(port, messages, connections)
                rates["smtplib"].append(readers / plain)
                shutil.rmtree(root / ".spark-mail", ignore_errors=True)  # a fresh ledger
                summary, _, _ = run_send(root)
                if summary["sent"] != readers:
                    sys.exit(f"spark-mail sent {summary['sent']} of {readers}")
                rates["spark-mail"].append(summary["rate"])
    finally:
        server.terminate()
        server.wait(timeout=10)
    ours, theirs = max(rates["spark-mail"]), max(rates["smtplib"])
    pairs = sorted(a / b for a, b in zip(rates["spark-mail"], rates["smtplib"], strict=True))
    print(
        f"SMTP own list, {readers:,} readers ({size / 1024:,.1f} KB each), {connections} "
        f"connections to a local aiosmtpd, best of 3 alternating runs:"
    )
    print(f"  plain smtplib sender (messages built beforehand): {theirs:>7,.0f} readers/s")
    print(f"  spark-mail send (builds each copy, ledger, ...):  {ours:>7,.0f} readers/s")
    print(
        f"  ratio {ours / theirs:.2f} of the best runs, {pairs[1]:.2f} median of the pairs "
        f"(target >= 0.70); runs: spark-mail "
        f"{', '.join(f'{r:,.0f}' for r in rates['spark-mail'])}, smtplib "
        f"{', '.join(f'{r:,.0f}' for r in rates['smtplib'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", nargs=2, metavar=("PROVIDER", "DELAY"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-smtp", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--smtp", action="store_true", help="SMTP against plain smtplib")
    parser.add_argument("--readers", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per batch call")
    parser.add_argument("--provider", choices=sorted(LIMITS), default="postmark")
    parser.add_argument("--concurrency", type=int, default=0, help="0: the provider's default")
    parser.add_argument(
        "--full-copies",
        action="store_true",
        help="Postmark: send every reader's full copy (esp_merge = false), not template values",
    )
    parser.add_argument(
        "--desk-store",
        type=int,
        default=0,
        metavar="N",
        help="also run each size with a reader desk store of N other suppressions",
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], float(args.serve[1]))
        return
    if args.serve_smtp:
        serve_smtp()
        return
    if args.smtp:
        smtp_main(args.readers[0] if args.readers != [10_000, 100_000] else 2000, args.concurrency)
        return

    sys.path.insert(0, str(REPO))
    from spark_mail.config import load_settings
    from spark_mail.providers import get_provider

    probe = load_settings(
        REPO,
        env={
            "SPARK_MAIL_PROVIDER": args.provider,
            "SPARK_MAIL_API_KEY": KEY,
            "SPARK_MAIL_SEND_CONCURRENCY": str(args.concurrency),
        },
    )
    provider = get_provider(probe)
    per_call, concurrent = provider.batch_size, provider.concurrency
    ideal = per_call * concurrent / args.delay
    if provider.requests_per_second:  # Resend: the documented rate is the ceiling
        ideal = min(ideal, per_call * provider.requests_per_second)
    print(
        f"{args.provider} emulator: {per_call} readers per call, {concurrent} calls in flight, "
        f"{args.delay * 1000:.0f} ms per call -> ideal {ideal:,.0f} readers/s"
    )
    emulator = Emulator(args.provider, args.delay)
    peaks: dict[int, int] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="spark-bench-send-") as folder:
            for readers in args.readers:
                root = newsletter(
                    Path(folder),
                    readers,
                    args.provider,
                    emulator.url,
                    args.concurrency,
                    args.full_copies,
                )
                before = emulator.stats()
                summary, wall, peak = run_send(root)
                after = emulator.stats()
                received = after["messages"] - before["messages"]
                if received != readers or summary["sent"] != readers:
                    sys.exit(f"{readers} readers but {received} received, {summary['sent']} sent")
                rate = summary["rate"]
                per_reader = (after["bytes"] - before["bytes"]) / readers
                peaks[readers] = peak
                print(
                    f"{readers:>7,} readers: {rate:>8,.0f} readers/s sending "
                    f"(ratio {rate / ideal:.2f} of ideal), {readers / wall:>7,.0f}/s whole command "
                    f"({wall:.1f} s), {per_reader:,.0f} bytes/reader, "
                    f"peak RSS {peak / 2**20:,.1f} MB"
                )
                if args.desk_store:
                    with_store(root, readers, args.desk_store, rate, emulator)
                shutil.rmtree(root)
    finally:
        emulator.stop()
    if len(peaks) > 1:
        small, large = min(peaks), max(peaks)
        growth = (peaks[large] - peaks[small]) / 2**20
        print(f"peak RSS growth {small:,} -> {large:,} readers: {growth:+.1f} MB (target <= 50 MB)")


def with_store(root: Path, readers: int, count: int, baseline: float, emulator: Any) -> None:
    """The same send again (a fresh ledger) with a desk store of `count` suppressions."""
    shutil.rmtree(root / ".spark-mail")
    fill_desk_store(root, count)
    before = emulator.stats()
    summary, _, _ = run_send(root)
    if emulator.stats()["messages"] - before["messages"] != readers:
        sys.exit(f"{readers} readers but another number received with the desk store")
    rate = summary["rate"]
    print(
        f"{readers:>7,} readers, desk store of {count:,} suppressions (checked before each "
        f"batch): {rate:>8,.0f} readers/s, ratio {rate / baseline:.2f} to the run without"
    )


if __name__ == "__main__":
    main()
