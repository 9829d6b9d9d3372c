"""Link-check speed: an email with 200 distinct links to a local server that answers after
100 ms. Prints the first (network) run, the second run (all from the cache) and the ratio.

    python bench/check.py

Targets: first run under 2 s (sequential would take 20 s), cached run under 0.2 s.
"""

from __future__ import annotations

import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from spark_mail.checks import run_checks
from spark_mail.config import Settings
from spark_mail.render import RenderedEmail

LINKS = 200
DELAY = 0.100
FIRST_TARGET, CACHED_TARGET = 2.0, 0.2


class SlowServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 64 concurrent connects would overflow the default backlog of 5


class SlowHandler(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        time.sleep(DELAY)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def email_with_links(base: str) -> RenderedEmail:
    anchors = "\n".join(f'<p><a href="{base}/post/{i}">Post {i}</a></p>' for i in range(LINKS))
    return RenderedEmail(
        slug="bench",
        subject="Benchmark",
        preheader="",
        from_address="bench@example.com",
        reply_to="",
        html=f"<!DOCTYPE html><html><body>{anchors}</body></html>",
        text="",
        headers={},
        sections=(),
    )


def main() -> None:
    server = SlowServer(("127.0.0.1", 0), SlowHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    email = email_with_links(f"http://127.0.0.1:{server.server_address[1]}")
    with tempfile.TemporaryDirectory() as state:
        settings = Settings(root=Path(state), link_timeout=10.0)
        start = time.perf_counter()
        first = run_checks(email, settings, links=True)
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        second = run_checks(email, settings, links=True)
        cached_s = time.perf_counter() - start
    server.shutdown()
    checked = sum(1 for r in first.links if r.ok)
    from_cache = sum(1 for r in second.links if r.cached)
    print(f"links: {LINKS} distinct, server answers after {DELAY * 1000:.0f} ms")
    print(f"first run:  {first_s:.3f} s ({checked} ok)  target < {FIRST_TARGET} s  "
          f"{'OK' if first_s < FIRST_TARGET else 'MISSED'}")  # fmt: skip
    print(f"cached run: {cached_s:.3f} s ({from_cache} from cache)  target < {CACHED_TARGET} s  "
          f"{'OK' if cached_s < CACHED_TARGET else 'MISSED'}")  # fmt: skip
    print(f"sequential would take {LINKS * DELAY:.1f} s: "
          f"concurrency speed-up {LINKS * DELAY / first_s:.1f}x")  # fmt: skip
    print(f"cache speed-up: {first_s / cached_s:.0f}x")


if __name__ == "__main__":
    main()
