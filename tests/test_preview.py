"""The preview server, over real HTTP on 127.0.0.1, and the `preview` command as a process."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from waiting import answers, poll_until, reaped

from conftest import SAMPLE_SLUG
from spark_mail.config import load_settings
from spark_mail.drafting.preview import PreviewError, PreviewServer, dark_html

POLL = 0.05


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for_version(server: PreviewServer, after: int, timeout: float = 60.0) -> int:
    """The next build's version, as the page's /version reports it (woken by the rebuild)."""
    server.preview.wait_for_build(after, timeout)
    version = json.loads(fetch(server.url + "version")[1])["version"]
    if version > after:
        return version
    raise AssertionError(f"the preview did not rebuild: {getattr(server, 'logs', [])[-3:]}")


@pytest.fixture
def issue_path(newsletter: Path) -> Path:
    return newsletter / "issues" / f"{SAMPLE_SLUG}.md"


@pytest.fixture
def server(newsletter: Path, issue_path: Path) -> Iterator[PreviewServer]:
    logs: list[str] = []
    with PreviewServer(
        issue_path, load_settings(newsletter, env={}), log=logs.append, poll_interval=POLL
    ) as srv:
        srv.logs = logs  # type: ignore[attr-defined]
        yield srv


def test_index_shows_four_views_and_checks(server: PreviewServer) -> None:
    """The index page has the desktop, phone, dark and text views and the check results."""
    status, page = fetch(server.url)
    assert status == 200
    assert 'title="desktop"' in page and 'width="640"' in page
    assert 'title="phone"' in page and 'width="375"' in page
    assert 'title="dark"' in page and "/email-dark.html" in page
    assert "Plain text" in page and "View this issue in your browser" in page
    assert "Checks: clean" in page
    assert 'fetch("/version"' in page  # the self-reload script


@pytest.mark.slow
def test_serves_email_text_and_dark_variant(server: PreviewServer) -> None:
    """/email.html is the built HTML, /email.txt the text part, dark has its rules always on."""
    status, html = fetch(server.url + "email.html")
    assert status == 200 and "Engineering Leadership" in html
    assert "prefers-color-scheme: dark" in html
    _, dark = fetch(server.url + "email-dark.html")
    assert "prefers-color-scheme" not in dark and "@media all" in dark
    _, text = fetch(server.url + "email.txt")
    assert text.startswith("View this issue in your browser")
    assert fetch(server.url + "nope")[0] == 404


@pytest.mark.slow
def test_editing_the_issue_changes_what_it_serves(server: PreviewServer, issue_path: Path) -> None:
    """Saving the issue file rebuilds it: /version moves on and the new text is served."""
    version = json.loads(fetch(server.url + "version")[1])["version"]
    issue_path.write_text(issue_path.read_text().replace("Until next time", "See you Friday"))
    wait_for_version(server, version)
    _, html = fetch(server.url + "email.html")
    assert "See you Friday" in html and "Until next time" not in html


@pytest.mark.slow
def test_build_error_shows_on_page_and_server_recovers(
    server: PreviewServer, issue_path: Path
) -> None:
    """A broken save shows the error (and keeps the last good build); a fix clears it."""
    good = issue_path.read_text()
    version = json.loads(fetch(server.url + "version")[1])["version"]
    issue_path.write_text(good.replace("date: 2025-01-20", "date: someday"))
    version = wait_for_version(server, version)
    _, page = fetch(server.url)
    assert 'id="build-error"' in page and "is not a date" in page
    assert fetch(server.url + "email.html")[0] == 200  # the last good build is still there
    assert any("build failed" in line for line in server.logs)  # type: ignore[attr-defined]
    issue_path.write_text(good)
    wait_for_version(server, version)
    assert 'id="build-error"' not in fetch(server.url)[1]


@pytest.mark.slow
def test_layout_change_triggers_rebuild(server: PreviewServer, newsletter: Path) -> None:
    """A new or edited file in layouts/ rebuilds too."""
    version = json.loads(fetch(server.url + "version")[1])["version"]
    (newsletter / "layouts").mkdir(exist_ok=True)
    (newsletter / "layouts" / "note.txt").write_text("touched")
    assert wait_for_version(server, version) > version


@pytest.mark.slow
def test_binds_to_localhost_only(server: PreviewServer) -> None:
    """The kernel's table of listening sockets shows the preview on 127.0.0.1 only, and a
    connection through another address of this machine is refused."""
    port = server.httpd.server_address[1]
    listening = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if int(port_hex, 16) == port and state == "0A":  # 0A: LISTEN
            listening.append(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    assert listening == ["127.0.0.1"]
    others = [a for a in local_addresses() if not a.startswith("127.")]
    if others:
        with pytest.raises(OSError), socket.create_connection((others[0], port), timeout=2):
            pass


def local_addresses() -> list[str]:
    """This machine's own IPv4 addresses: in the kernel's routing trie, an address followed
    by a `/32 host LOCAL` entry."""
    found = set()
    lines = Path("/proc/net/fib_trie").read_text().splitlines()
    for line, after in itertools.pairwise(lines):
        match = re.search(r"\|-- (\d+\.\d+\.\d+\.\d+)", line)
        if match and "/32 host LOCAL" in after:
            found.add(match.group(1))
    return sorted(found)


def test_port_in_use_is_a_clear_error(newsletter: Path, issue_path: Path) -> None:
    """A taken port raises PreviewError naming the port and --port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PreviewError, match=rf"127.0.0.1:{port} is already in use.*--port"):
            PreviewServer(issue_path, load_settings(newsletter, env={}), port=port)


def test_dark_html_turns_dark_rules_on() -> None:
    """Only the prefers-color-scheme: dark media query is rewritten."""
    css = "@media (prefers-color-scheme: dark) { a {} } @media (max-width: 480px) { b {} }"
    assert dark_html(css) == "@media all { a {} } @media (max-width: 480px) { b {} }"


# -- the command, as a real process -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_preview(newsletter: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPARK_MAIL_")}
    return subprocess.Popen(
        [sys.executable, "-m", "spark_mail", "preview", SAMPLE_SLUG, "--no-open",
         "--port", str(port)],
        cwd=newsletter, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_until_serving(port: int, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    version = answers(lambda: fetch(f"http://127.0.0.1:{port}/version")[0], OSError)
    poll_until(version, "preview answered", process=proc, timeout=timeout)


@pytest.mark.slow
def test_preview_command_serves_and_stops_cleanly_on_ctrl_c(newsletter: Path) -> None:
    """`spark-mail preview` serves the page; SIGINT stops it with exit 0 and no traceback."""
    port = free_port()
    proc = start_preview(newsletter, port)
    with reaped(proc):
        wait_until_serving(port, proc)
        assert "Engineering Leadership" in fetch(f"http://127.0.0.1:{port}/email.html")[1]
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert f"http://127.0.0.1:{port}/" in stderr and "Preview stopped." in stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_preview_command_port_in_use_is_one_line(newsletter: Path) -> None:
    """A taken port: exit 1 and one error line, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = start_preview(newsletter, port)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "already in use" in lines[0] and "--port" in lines[0]
