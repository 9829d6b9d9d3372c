"""Link checking against a real HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from spark_mail.checks import run_checks
from spark_mail.checks.links import CACHE_FILE, check_links
from spark_mail.config import Settings
from spark_mail.render import RenderedEmail

# A local answer under a heavy load still comes within TIMEOUT (0.5 s did not, at a load of
# 17: /no-head's HEAD and GET timed out); tests waiting on /slow use SLOW_TIMEOUT, which
# only has to end long before /slow answers (when its server stops, up to 60 s).
TIMEOUT = 10.0
SLOW_TIMEOUT = 2.0
SLOW_SECONDS = 30


class LinkServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many concurrent connects; the default 5 would stall them

    def __init__(self, together: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), LinkHandler)
        # `together`: each request waits until that many are in flight (a checker that
        # sends fewer at once times out here and gets a 500); no clock involved
        self.together = threading.Barrier(together, timeout=30) if together else None
        self.released = threading.Event()  # set when the server stops: ends /slow
        self.hits: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class LinkHandler(BaseHTTPRequestHandler):
    server: LinkServer

    def do_HEAD(self) -> None:
        self.answer(head=True)

    def do_GET(self) -> None:
        self.answer(head=False)

    def answer(self, head: bool) -> None:
        srv = self.server
        with srv.lock:
            srv.hits.append((self.command, self.path))
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            if srv.together is not None:
                srv.together.wait()
        except threading.BrokenBarrierError:
            self.send(500)
            return
        finally:
            with srv.lock:
                srv.in_flight -= 1
        self.route(head)

    def route(self, head: bool) -> None:
        path = self.path.split("?")[0]
        if path.startswith("/ok"):
            self.send(200)
        elif path == "/moved":
            self.send(301, {"Location": "/ok/target"})
        elif path == "/loop":
            self.send(302, {"Location": "/loop"})
        elif path == "/missing":
            self.send(404)
        elif path == "/error":
            self.send(500)
        elif path == "/forbidden":
            self.send(403)
        elif path == "/slow":
            self.server.released.wait(60)  # slower than any link timeout, until it stops
            self.send(200)
        elif path == "/no-head":
            self.send(405 if head else 200)
        elif path == "/big.png":
            self.send(200, {"Content-Type": "image/png"}, size=2_000_000, head=head)
        elif path == "/small.png":
            self.send(200, {"Content-Type": "image/png"}, size=20_000, head=head)
        else:
            self.send(404)

    def send(
        self, status: int, headers: dict[str, str] | None = None, size: int = 0, head: bool = True
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if size and not head:
            # The checker reads the headers only and hangs up.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(b"\0" * size)

    def log_message(self, format: str, *args: object) -> None:
        pass


def start(together: int = 0) -> LinkServer:
    server = LinkServer(together)
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    ).start()
    return server


@pytest.fixture
def server() -> Iterator[LinkServer]:
    srv = start()
    yield srv
    stop(srv)


def stop(srv: LinkServer) -> None:
    srv.released.set()
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(root=tmp_path, link_timeout=TIMEOUT, link_cache_hours=1.0)


def one(server: LinkServer, path: str, settings: Settings, kind: str = "link"):
    (result,) = check_links({server.url(path): kind}, settings)
    return result


def test_ok_link_passes_with_head_only(server: LinkServer, settings: Settings) -> None:
    """A 200 answer to HEAD is enough: no GET is made."""
    result = one(server, "/ok", settings)
    assert result.ok and result.status == 200 and result.method == "HEAD"
    assert server.hits == [("HEAD", "/ok")]


def test_redirect_is_followed_and_reported(server: LinkServer, settings: Settings) -> None:
    """A 301 is followed to its target and reported with the final URL."""
    result = one(server, "/moved", settings)
    assert result.ok and result.status == 200
    assert result.redirects == 1 and result.final_url == server.url("/ok/target")


@pytest.mark.parametrize(("path", "status"), [("/missing", 404), ("/error", 500)])
def test_error_status_is_broken_after_get_retry(
    server: LinkServer, settings: Settings, path: str, status: int
) -> None:
    """404/500 on HEAD are confirmed with GET before the link counts as broken."""
    result = one(server, path, settings)
    assert not result.ok and result.status == status
    assert [m for m, _ in server.hits] == ["HEAD", "GET"]
    assert str(status) in result.problem


def test_head_not_allowed_falls_back_to_get(server: LinkServer, settings: Settings) -> None:
    """A server answering HEAD with 405 is checked with GET (and passes)."""
    result = one(server, "/no-head", settings)
    assert result.ok and result.method == "GET" and result.status == 200


@pytest.mark.slow
def test_slow_link_times_out(server: LinkServer, settings: Settings) -> None:
    """A server slower than link_timeout is a broken link; HEAD is not retried with GET."""
    started = time.perf_counter()
    result = one(server, "/slow", replace(settings, link_timeout=SLOW_TIMEOUT))
    assert time.perf_counter() - started < SLOW_SECONDS
    assert not result.ok and "timeout" in result.problem
    assert [m for m, _ in server.hits] == ["HEAD"]


@pytest.mark.slow
def test_redirect_loop_is_broken(server: LinkServer, settings: Settings) -> None:
    """Endless redirects end as a broken link, not a hang."""
    result = one(server, "/loop", settings)
    assert not result.ok and "redirects" in result.problem


def test_refused_connection_is_unreachable(settings: Settings) -> None:
    """A closed port gives a 'cannot connect' result marked unreachable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (result,) = check_links({f"http://127.0.0.1:{port}/x": "link"}, settings)
    assert not result.ok and result.unreachable and "cannot connect" in result.problem


def test_links_are_checked_concurrently(settings: Settings) -> None:
    """Ten links to a server that answers none until all ten are in flight: all pass."""
    srv = start(together=10)
    try:
        targets = {srv.url(f"/ok/{i}"): "link" for i in range(10)}
        results = check_links(targets, replace(settings, link_timeout=60.0))
    finally:
        stop(srv)
    assert all(r.ok for r in results), [r.problem for r in results if not r.ok]
    assert srv.max_in_flight == 10


@pytest.mark.slow
def test_per_host_limit_bounds_parallel_requests(settings: Settings) -> None:
    """No more than per_host requests reach one host at the same time."""
    srv = start(together=3)
    try:
        targets = {srv.url(f"/ok/{i}"): "link" for i in range(12)}
        results = check_links(targets, replace(settings, link_timeout=60.0), per_host=3)
    finally:
        stop(srv)
    assert all(r.ok for r in results)  # they came three at a time
    assert 1 < srv.max_in_flight <= 3


@pytest.mark.slow
def test_successes_are_cached_failures_are_not(server: LinkServer, settings: Settings) -> None:
    """A second run answers good links from .spark-mail/links.json and re-checks bad ones."""
    targets = {server.url("/ok"): "link", server.url("/missing"): "link"}
    check_links(targets, settings)
    cache = json.loads((settings.state_path / CACHE_FILE).read_text())
    assert list(cache["links"]) == [server.url("/ok")]
    server.hits.clear()
    again = check_links(targets, settings)
    assert again[0].cached and again[0].ok
    assert not again[1].cached and not again[1].ok
    assert {p for _, p in server.hits} == {"/missing"}


@pytest.mark.slow
def test_cache_expires_after_link_cache_hours(server: LinkServer, settings: Settings) -> None:
    """An entry older than link_cache_hours is checked again."""
    target = {server.url("/ok"): "link"}
    check_links(target, settings, now=time.time() - 2 * 3600)
    server.hits.clear()
    (result,) = check_links(target, settings)
    assert not result.cached and server.hits == [("HEAD", "/ok")]


def test_broken_cache_file_is_ignored(server: LinkServer, settings: Settings) -> None:
    """A corrupt links.json is treated as empty and rewritten, not an error."""
    settings.state_path.mkdir(parents=True)
    (settings.state_path / CACHE_FILE).write_text("{not json")
    assert one(server, "/ok", settings).ok
    assert json.loads((settings.state_path / CACHE_FILE).read_text())["version"] == 1


# -- through run_checks ----------------------------------------------------------------------


def email_linking(urls: list[str], images: list[str] | None = None) -> RenderedEmail:
    anchors = "".join(f'<a href="{u}">link</a> ' for u in urls)
    imgs = "".join(f'<img src="{u}" alt="picture">' for u in images or [])
    return RenderedEmail(
        slug="links",
        subject="Links",
        preheader="",
        from_address="a@example.com",
        reply_to="",
        html=f"<html><body>{anchors}{imgs}</body></html>",
        text="",
        headers={},
        sections=(),
    )


def findings(email: RenderedEmail, settings: Settings, rule: str) -> list[str]:
    report = run_checks(email, settings, links=True)
    assert report.links_checked
    return [f.message for f in report.findings if f.rule_id == rule]


@pytest.mark.slow  # waits out a 2 s link timeout
def test_broken_links_are_errors_in_the_report(server: LinkServer, settings: Settings) -> None:
    """404, 500 and timeout links each give a links.broken error; good ones do not."""
    urls = [server.url(p) for p in ("/ok", "/moved", "/missing", "/error", "/slow")]
    broken = findings(
        email_linking(urls), replace(settings, link_timeout=SLOW_TIMEOUT), "links.broken"
    )
    assert len(broken) == 3
    assert all(any(p in m for m in broken) for p in ("/missing", "/error", "/slow"))


def test_heavy_image_is_a_warning(server: LinkServer, settings: Settings) -> None:
    """An image over 1 MB (Content-Length) warns; a small one does not."""
    email = email_linking([], [server.url("/big.png"), server.url("/small.png")])
    heavy = findings(email, settings, "image.heavy")
    assert len(heavy) == 1 and "/big.png" in heavy[0]


def test_site_refusing_robots_is_unverified_not_broken(
    server: LinkServer, settings: Settings
) -> None:
    """403 from a site is a warning to check by hand, not a broken link."""
    email = email_linking([server.url("/forbidden")])
    report = run_checks(email, settings, links=True)
    assert [f.rule_id for f in report.findings if f.rule_id.startswith("links.")] == [
        "links.unverified"
    ]


def test_unreachable_network_is_one_finding(settings: Settings) -> None:
    """When no link can be reached at all, one links.unreachable error, not one per link."""
    ports = []
    for _ in range(3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    email = email_linking([f"http://127.0.0.1:{p}/x" for p in ports])
    report = run_checks(email, settings, links=True)
    ids = [f.rule_id for f in report.findings if f.rule_id.startswith("links.")]
    assert ids == ["links.unreachable"]
    assert "--no-links" in report.errors[-1].hint or any(
        "--no-links" in f.hint for f in report.errors
    )


def test_merge_tag_and_mailto_urls_are_not_fetched(server: LinkServer, tmp_path: Path) -> None:
    """mailto: and the settings' merge-tag URLs are skipped by the link check."""
    settings = Settings(
        root=tmp_path, link_timeout=TIMEOUT, unsubscribe_url="{{ unsubscribe_url }}"
    )
    email = email_linking(["mailto:a@example.com", "{{ unsubscribe_url }}", server.url("/ok")])
    report = run_checks(email, settings, links=True)
    assert [r.url for r in report.links] == [server.url("/ok")]


@pytest.mark.slow
def test_check_command_reports_broken_link_with_exit_1(
    server: LinkServer, newsletter: Path
) -> None:
    """`spark-mail check` with links on exits 1 and names the broken link (real process)."""
    from conftest import run_cli, write_issue

    body = f"[Gone]({server.url('/missing')}) and [fine]({server.url('/ok')})\n"
    write_issue(newsletter, "2025-03-03-links", "title: Links\ndate: 2025-03-03", body)
    # Only 127.0.0.1 links: no web copy (so no share links), unsubscribe and logo local too.
    env = {
        "SPARK_MAIL_BASE_URL": "",
        "SPARK_MAIL_UNSUBSCRIBE_URL": server.url("/ok/unsubscribe"),
        "SPARK_MAIL_LINK_TIMEOUT": "2",
    }
    (newsletter / "spark-mail.toml").write_text(
        (newsletter / "spark-mail.toml")
        .read_text()
        .replace("https://tinybigspark.com/logo.png", server.url("/ok/logo.png"))
    )
    result = run_cli("check", "2025-03-03-links", "--json", cwd=newsletter, env=env)
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    broken = [f for f in data["findings"] if f["rule_id"] == "links.broken"]
    assert len(broken) == 1 and "/missing" in broken[0]["message"]
    assert all("127.0.0.1" in link["url"] for link in data["links"])
