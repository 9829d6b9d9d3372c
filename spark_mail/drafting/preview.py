"""`spark-mail preview`: the built issue on a local web page that follows every save.

- stdlib ThreadingHTTPServer bound to 127.0.0.1 only (a draft is nobody else's business).
- One page shows the views (desktop 600 px, phone 375 px, dark mode, plain text, the web
  copy) and the offline check results. Link checks are left to `spark-mail check`: the preview
  rebuilds on every save and must stay instant and work offline.
- Rebuilds: a background thread polls the mtime and size of the issue file and of every file
  in the layout folders (the newsletter's and the packaged default) every 0.25 s. A poll
  needs no extra threads or OS watches, sees editors that save by rename, and costs
  microseconds for a dozen files; watchfiles (a native watcher) would be one more
  dependency for no gain at this size, so spark-mail does not depend on it. Settings are
  read once at start: restart after editing them.
- The page reloads itself: a tiny script polls `/version`, which changes on each rebuild.
- A build error is shown on the page (above the last good build) and logged; the server
  keeps running and recovers on the next good save.
"""

from __future__ import annotations

import errno
import html
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from spark_mail.config import Settings
from spark_mail.errors import PreviewError, SparkMailError

HOST = "127.0.0.1"
POLL_SECONDS = 0.25
DARK_MEDIA_RE = re.compile(r"@media\s*\(\s*prefers-color-scheme\s*:\s*dark\s*\)", re.I)

Log = Callable[[str], None]


@dataclass(frozen=True)
class Build:
    """One rebuild: the email and its checks, or the error that stopped it."""

    version: int
    email: Any = None  # render.RenderedEmail of the last good build
    report: Any = None  # checks.Report of that build
    error: str = ""  # why the latest build failed ("" when it worked)
    built_at: float = 0.0
    web: str = ""  # the web copy: the page `spark-mail site build` publishes


def dark_html(email_html: str) -> str:
    """The email as a dark-mode client shows it: the layout's dark rules always on."""
    return DARK_MEDIA_RE.sub("@media all", email_html)


class Preview:
    """Builds the issue and keeps the latest result; watches files and rebuilds on change."""

    def __init__(self, path: Path, settings: Settings, log: Log) -> None:
        self.path = path
        self.settings = settings
        self.log = log
        self._built = threading.Condition()  # notified on each rebuild
        self.current = Build(version=0)

    def rebuild(self) -> Build:
        from spark_mail.checks import run_checks
        from spark_mail.render import build
        from spark_mail.site import web_page

        start = time.perf_counter()
        previous = self.current
        try:
            email = build(self.path, self.settings)
            report = run_checks(email, self.settings, links=False)
            web = web_page(self.path, self.settings)
        except SparkMailError as exc:
            result = Build(
                previous.version + 1, previous.email, previous.report, str(exc), web=previous.web
            )
            self.log(f"build failed: {exc}")
        else:
            result = Build(previous.version + 1, email, report, "", time.time(), web)
            self.log(
                f"built {email.slug} in {time.perf_counter() - start:.2f} s: {report.summary()}"
            )
        with self._built:
            self.current = result
            self._built.notify_all()
        return result

    def wait_for_build(self, after: int, timeout: float) -> Build:
        """The first build newer than version `after`, or the current one after `timeout`."""
        with self._built:
            self._built.wait_for(lambda: self.current.version > after, timeout)
            return self.current

    def watched_files(self) -> list[Path]:
        files = [self.path]
        for folder in self.settings.layout_dirs():
            if folder.is_dir():
                files.extend(p for p in sorted(folder.rglob("*")) if p.is_file())
        return files

    def snapshot(self) -> dict[Path, tuple[int, int] | None]:
        state: dict[Path, tuple[int, int] | None] = {}
        for file in self.watched_files():
            try:
                st = file.stat()
                state[file] = (st.st_mtime_ns, st.st_size)
            except OSError:
                state[file] = None
        return state

    def watch(
        self,
        stop: threading.Event,
        interval: float = POLL_SECONDS,
        seen: dict[Path, tuple[int, int] | None] | None = None,
    ) -> None:
        """Rebuild whenever a watched file changes. `seen`: the files as they were when the
        caller started watching (taken before the thread starts, so an edit made right
        after cannot slip in before the first look)."""
        seen = self.snapshot() if seen is None else seen
        while not stop.wait(interval):
            now = self.snapshot()
            if now != seen:
                seen = now
                self.rebuild()


# -- the pages -------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{title} - spark-mail preview</title>
<style>
 body {{ font: 14px/1.5 -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
        background: #e5e7eb; color: #111827; }}
 header {{ background: #111827; color: #f9fafb; padding: 12px 20px; }}
 header h1 {{ font-size: 16px; margin: 0 0 4px; }} header p {{ margin: 0; color: #d1d5db; }}
 .error {{ background: #fee2e2; color: #7f1d1d; border: 2px solid #dc2626; margin: 16px 20px;
          padding: 12px 16px; white-space: pre-wrap; font-family: Menlo, monospace; }}
 .panes {{ display: flex; flex-wrap: wrap; gap: 20px; padding: 20px; align-items: flex-start; }}
 .pane h2 {{ font-size: 13px; text-transform: uppercase; letter-spacing: 1px; margin: 0 0 6px; }}
 iframe {{ border: 1px solid #9ca3af; background: #fff; height: 900px; display: block; }}
 .dark iframe {{ background: #0d1117; }}
 pre.text {{ width: 600px; height: 900px; overflow: auto; margin: 0; background: #fff;
            border: 1px solid #9ca3af; padding: 12px; box-sizing: border-box;
            white-space: pre-wrap; }}
 table {{ border-collapse: collapse; margin: 0 20px 8px; background: #fff; }}
 td, th {{ border: 1px solid #d1d5db; padding: 4px 8px; text-align: left; vertical-align: top; }}
 .sev-error {{ color: #b91c1c; font-weight: 600; }} .sev-warning {{ color: #a16207; }}
 .clean {{ color: #15803d; font-weight: 600; margin: 12px 20px; }}
 .note {{ color: #6b7280; font-size: 12px; margin: 4px 0 0; }}
</style></head>
<body data-version="{version}">
<header><h1>{title}</h1><p>{meta}</p></header>
{error}
<section id="checks">{checks}</section>
{panes}
<script>
// Reload when the server has rebuilt (a new /version); stay quiet while it is stopped.
(function poll() {{
  fetch("/version", {{cache: "no-store"}}).then(r => r.json()).then(j => {{
    if (j.version !== {version}) location.reload(); else setTimeout(poll, 500);
  }}).catch(() => setTimeout(poll, 1500));
}})();
</script>
</body></html>
"""

PANES = """<div class="panes">
 <div class="pane"><h2>Desktop (600 px)</h2>
  <iframe title="desktop" src="/email.html?v={v}" width="640"></iframe></div>
 <div class="pane"><h2>Phone (375 px)</h2>
  <iframe title="phone" src="/email.html?v={v}" width="375"></iframe></div>
 <div class="pane dark"><h2>Dark mode</h2>
  <iframe title="dark" src="/email-dark.html?v={v}" width="640"></iframe>
  <p class="note">{dark_note}</p></div>
 <div class="pane"><h2>Plain text</h2><pre class="text">{text}</pre></div>
 <div class="pane"><h2>Web copy (site build)</h2>
  <iframe title="web" src="/web.html?v={v}" width="800"></iframe></div>
</div>"""


def checks_html(report: Any) -> str:
    if not report.problems:
        return '<p class="clean">Checks: clean (offline rules; `spark-mail check` also ' \
            "checks the links)</p>"  # fmt: skip
    rows = "".join(
        f'<tr><td class="sev-{f.severity}">{f.severity}</td><td>{html.escape(f.rule_id)}</td>'
        f"<td>{html.escape(f.message)}</td><td>{html.escape(f.hint)}</td></tr>"
        for f in report.problems
    )
    return (
        f"<table><caption>Checks: {html.escape(report.summary())} (offline rules)</caption>"
        f"<tr><th>severity</th><th>rule</th><th>problem</th><th>how to fix</th></tr>{rows}"
        "</table>"
    )


def index_page(build: Build, path: Path) -> str:
    from spark_mail.render import GMAIL_CLIP_BYTES

    email = build.email
    error = ""
    if build.error:
        shown = "the last good build is shown below" if email else "nothing built yet"
        error = (
            f'<div class="error" id="build-error">Build failed: {html.escape(build.error)}'
            f"\n\n({shown}; save the file to try again)</div>"
        )
    if email is None:
        return PAGE.format(
            title=html.escape(path.name), meta="", error=error, checks="", panes="",
            version=build.version,
        )  # fmt: skip
    meta = (
        f"Subject: {html.escape(email.subject)} &middot; Preheader: "
        f"{html.escape(email.preheader) or '(none)'} &middot; HTML "
        f"{email.html_bytes / 1024:.1f} KB of {GMAIL_CLIP_BYTES / 1024:.0f} KB"
    )
    has_dark = DARK_MEDIA_RE.search(email.html) is not None
    panes = PANES.format(
        v=build.version,
        text=html.escape(email.text),
        dark_note="the layout's prefers-color-scheme: dark rules, always on"
        if has_dark
        else "this layout has no dark-mode rules: mail apps will invert its colours",
    )
    return PAGE.format(
        title=html.escape(email.subject), meta=meta, error=error,
        checks=checks_html(build.report), panes=panes, version=build.version,
    )  # fmt: skip


def make_handler(preview: Preview) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "spark-mail-preview"

        def do_GET(self) -> None:
            build = preview.current
            route = self.path.split("?", 1)[0]
            email = build.email
            if route == "/":
                self.reply(200, "text/html", index_page(build, preview.path))
            elif route == "/version":
                self.reply(200, "application/json", json.dumps({"version": build.version}))
            elif route in ("/email.html", "/email-dark.html") and email is not None:
                page = email.html if route == "/email.html" else dark_html(email.html)
                self.reply(200, "text/html", page)
            elif route == "/web.html" and build.web:
                self.reply(200, "text/html", build.web)
            elif route == "/email.txt" and email is not None:
                self.reply(200, "text/plain", email.text)
            elif route == "/checks.json" and build.report is not None:
                self.reply(200, "application/json", json.dumps(build.report.to_json()))
            elif email is None and route in ("/email.html", "/email-dark.html", "/email.txt"):
                self.reply(503, "text/plain", f"Build failed: {build.error}")
            else:
                self.reply(404, "text/plain", "not found")

        def reply(self, status: int, content_type: str, body: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one line per request would drown the build messages

    return Handler


class PreviewServer:
    """The server and its watcher. `start()` runs both in background threads (tests);
    `serve()` below runs the server in the calling thread until Ctrl-C (the CLI)."""

    def __init__(
        self,
        path: Path,
        settings: Settings,
        *,
        port: int = 0,
        log: Log | None = None,
        poll_interval: float = POLL_SECONDS,
    ) -> None:
        if not path.exists():  # a typo: say so now, not on a page that never builds
            from spark_mail.files import missing_issue

            raise missing_issue(path)
        self.preview = Preview(path, settings, log or (lambda _message: None))
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._serving = False  # serve_forever runs in a thread of ours (start())
        try:
            self.httpd = ThreadingHTTPServer((HOST, port), make_handler(self.preview))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PreviewError(
                    f"{HOST}:{port} is already in use (another preview?)",
                    hint="stop it, or pick another port with --port N (--port 0: any free one)",
                ) from None
            raise PreviewError(
                f"cannot listen on {HOST}:{port} ({exc.strerror})", hint="try --port 0"
            ) from None
        self.httpd.daemon_threads = True
        self.preview.rebuild()  # the first build; an error is shown, the server still starts

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.httpd.server_address[1]}/"

    def start_watcher(self) -> None:
        watcher = threading.Thread(
            target=self.preview.watch,
            args=(self._stop, self.poll_interval, self.preview.snapshot()),
            name="spark-mail-preview-watch",
            daemon=True,
        )
        watcher.start()
        self._threads.append(watcher)

    def start(self) -> PreviewServer:
        self.start_watcher()
        server = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        server.start()
        self._threads.append(server)
        self._serving = True
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._serving:
            self.httpd.shutdown()
        self.httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=2)

    def __enter__(self) -> PreviewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    path: Path,
    settings: Settings,
    *,
    port: int,
    on_ready: Callable[[str], None],
    log: Log,
) -> None:
    """Serve until Ctrl-C, then stop cleanly (returns normally)."""
    server = PreviewServer(path, settings, port=port, log=log)
    server.start_watcher()
    on_ready(server.url)
    try:
        server.httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
