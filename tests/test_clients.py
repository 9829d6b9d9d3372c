"""`clients.*`: per-client support from the vendored caniemail data, narrowed by --clients."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE_ISSUE, run_cli
from spark_mail.checks import run_checks
from spark_mail.checks.caniemail import DATA_FILE, GROUPS, features, main, resolve_clients
from spark_mail.config import load_settings
from spark_mail.render import RenderedEmail, build

SECOND_ISSUE = REPO / "tests" / "fixtures" / "issues" / "2025-02-03-shipping-small.md"
CUSTOM_CSS = (
    "  .prose { display: flex; }\n  .prose h2 { background-image: linear-gradient(#fff, #000); }\n"
)


def clients_findings(email: RenderedEmail, **kwargs: object):
    report = run_checks(email, load_settings(REPO), **kwargs)  # type: ignore[arg-type]
    return [f for f in report.findings if f.rule_id.startswith("clients.")]


@pytest.mark.parametrize("issue", [SAMPLE_ISSUE, SECOND_ISSUE], ids=["sample", "second"])
def test_default_layout_has_no_clients_warning(issue: Path):
    """The default layout's features are either supported or used with a fallback (info)."""
    found = clients_findings(build(issue, load_settings(REPO)))
    assert [f for f in found if f.severity != "info"] == []
    media = [f for f in found if f.rule_id == "clients.css-at-media"]
    assert len(media) == 1 and "Outlook for Windows" in media[0].message
    assert "desktop layout" in media[0].message


@pytest.fixture
def custom_layout(newsletter: Path) -> Path:
    """The sample issue in a copy of the default layout with flexbox and a gradient added."""
    layout = newsletter / "layouts" / "flashy"
    shutil.copytree(REPO / "layouts" / "default", layout)
    styles = layout / "partials" / "styles.mjml"
    styles.write_text(styles.read_text().replace("</mj-style>", CUSTOM_CSS + "</mj-style>", 1))
    issue = newsletter / "issues" / SAMPLE_ISSUE.name
    issue.write_text(
        issue.read_text().replace("date: 2025-01-20", "date: 2025-01-20\nlayout: flashy")
    )
    return issue


def test_unsupported_feature_names_client_effect_and_place(custom_layout: Path):
    """display:flex is a warning naming the clients that drop it and where it is used."""
    found = clients_findings(build(custom_layout, load_settings()))
    flex = [f for f in found if f.rule_id == "clients.css-display-flex"]
    assert len(flex) == 1 and flex[0].severity == "warning"
    message = flex[0].message
    assert "Outlook for Windows" in message and "ignores it" in message
    assert "'prose'" in message and "caniemail.com/features/css-display-flex" in flex[0].hint
    gradient = [f for f in found if f.rule_id == "clients.css-linear-gradient"]
    assert gradient and "Outlook for Windows" in gradient[0].message


def test_clients_option_narrows_the_rules(custom_layout: Path):
    """Only the chosen clients are named; a client that supports everything finds nothing."""
    email = build(custom_layout, load_settings())
    gmail = clients_findings(email, clients=resolve_clients("gmail"))
    assert all("Outlook" not in f.message for f in gmail)
    apple = clients_findings(email, clients=resolve_clients("apple-mail-macos"))
    assert [f for f in apple if f.severity == "warning"] == []


def test_a_check_after_a_refresh_sees_the_new_data(
    custom_layout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The same email checked again in one process (preview, the desk) after `caniemail
    refresh` has rewritten the data: the findings are the new data's, not the kept ones."""
    email = build(custom_layout, load_settings())
    assert any("flex" in f.message for f in clients_findings(email))
    everywhere = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    for feature in everywhere["features"].values():
        feature["support"] = {}  # no client drops anything
    refreshed = tmp_path / "caniemail.json"
    refreshed.write_text(json.dumps(everywhere), encoding="utf-8")
    monkeypatch.setattr("spark_mail.checks.caniemail.DATA_FILE", refreshed)
    features.cache_clear()  # what refresh() does once it has written the file
    try:
        assert clients_findings(email) == []
    finally:
        monkeypatch.undo()
        features.cache_clear()
    assert any("flex" in f.message for f in clients_findings(email))


def test_unknown_client_is_one_clear_error(newsletter: Path):
    """`check --clients hotmail`: exit 2, the known names listed, no traceback."""
    result = run_cli(
        "check", SAMPLE_ISSUE.stem, "--no-links", "--clients", "gmail,hotmail", cwd=newsletter
    )
    assert result.returncode == 2
    assert "unknown mail client 'hotmail'" in result.stderr and "outlook" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_check_command_lists_notes_on_request(custom_layout: Path, newsletter: Path):
    """Warnings show in the table; info notes as one line of ids, in full with --notes."""
    result = run_cli(
        "check", SAMPLE_ISSUE.stem, "--no-links", "--clients", "outlook", cwd=newsletter
    )
    assert result.returncode == 0, result.stderr
    assert "0 errors, 3 warnings" in result.stdout  # flex, gradient, background-image
    assert "notes (info, --notes lists them): clients.css-at-media" in result.stdout
    full = run_cli("check", SAMPLE_ISSUE.stem, "--no-links", "--notes", cwd=newsletter)
    assert "desktop layout" in full.stdout.replace("\n", " ")


def test_vendored_data_covers_the_major_clients():
    """The vendored caniemail data has every client of every group for the common features."""
    data = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    assert data["source"] == "https://www.caniemail.com/api/data.json"
    assert (DATA_FILE.parent / "LICENSE-caniemail").read_text().count("MIT License") == 1
    media = features()["css-at-media"]
    for group in GROUPS.values():
        for client in group:
            assert client in media.support


@pytest.fixture
def caniemail_server() -> Iterator[str]:
    """A stand-in for caniemail.com on 127.0.0.1 serving a one-feature data.json."""
    body = json.dumps(
        {
            "last_update_date": "2030-01-01 00:00:00 +0000",
            "data": [
                {
                    "slug": "css-display-flex",
                    "title": "display:flex",
                    "url": "https://www.caniemail.com/features/css-display-flex/",
                    "stats": {"outlook": {"windows": {"2016": "n", "2019": "a #1"}}},
                    "notes_by_num": {"1": "Only in tables."},
                }
            ],
        }
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # polled every 10 ms, so shutdown() does not wait serve_forever's default 0.5 s
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api/data.json"
    server.shutdown()
    server.server_close()


def test_refresh_command_rewrites_the_data(caniemail_server: str, tmp_path: Path):
    """The refresh command downloads data.json and keeps each client's newest result."""
    out = tmp_path / "caniemail.json"
    assert main(["--url", caniemail_server, "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["last_update_date"] == "2030-01-01 00:00:00 +0000"
    flex = data["features"]["css-display-flex"]["support"]
    assert flex == {"outlook-windows": ["a", "Only in tables."]}


def test_refresh_command_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """An unreachable source: exit 1, one error line, the vendored file untouched."""
    out = tmp_path / "caniemail.json"
    assert main(["--url", "http://127.0.0.1:9/data.json", "--out", str(out)]) == 1
    assert not out.exists()
    assert capsys.readouterr().err.count("\n") == 1


def test_a_feature_counts_every_declaration_that_uses_it() -> None:
    """Two declarations of one property in a style attribute are two uses; the first three
    places are named, the rest counted (also after other caniemail data was read)."""
    from spark_mail.checks.clients import feature_uses
    from spark_mail.checks.styles import StyledEmail

    divs = "".join(f'<div style="border-radius:4px;border-radius:{i}px">x</div>' for i in range(4))
    page = StyledEmail(f"<html><body>{divs}</body></html>")
    # what a style uses is kept per process, for the caniemail data it was found in
    older = {slug: f for slug, f in features().items() if slug != "css-border-radius"}
    assert "css-border-radius" not in feature_uses(page, older)
    use = feature_uses(page, features())
    assert use["css-border-radius"].count == 8
    assert use["css-border-radius"].where() == "inline style of <div> (+7 more)"
