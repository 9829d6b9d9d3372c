"""The kept findings of the HTML-only rules (checks.html_findings) against what the rules
give uncached: threads checking emails that differ only where one rule looks, with
different clients, more emails than are kept, and `caniemail refresh` in between."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest

from conftest import SAMPLE_ISSUE
from spark_mail.checks import html_findings
from spark_mail.checks.a11y import a11y_findings
from spark_mail.checks.caniemail import DATA_FILE, features, resolve_clients
from spark_mail.checks.clients import client_findings
from spark_mail.checks.outlook import outlook_width_findings
from spark_mail.checks.styles import StyledEmail
from spark_mail.config import load_settings
from spark_mail.render import build

EXTRAS = [
    "",
    '<div style="display:flex">flex</div>',  # clients.*
    '<table width="900"><tr><td>wide</td></tr></table>',  # layout.outlook-width
    '<p style="color:#eeeeee;background:#ffffff">pale</p>',  # a11y.contrast
    "<h4>a heading too deep</h4>",  # a11y.heading-order
    '<a href="https://example.com/x">click here</a>',  # a11y.link-text
]
CLIENT_SETS = [None, "gmail", "outlook", "outlook-windows,gmail-web", "apple-mail-macos"]
# 6 threads x 20 checks of 35 keys (the cache keeps 8), a refresh every 10 checks: nearly
# every check is a miss (~12 ms of CPU); 40 a thread, a refresh every 12, took 2.9 s of CPU
CHECKS_PER_THREAD = 20


def data_of(data: dict) -> int:
    """0: the vendored caniemail data, 1: the refreshed one (where no client drops anything)."""
    return 0 if any(feature.support for feature in data.values()) else 1


def uncached(html: str, clients: str | None, html_only: dict[str, tuple]) -> tuple:
    """The three rules' findings, called directly. `html_only`: the findings of the two
    rules that read nothing but the HTML (Outlook's widths, accessibility: neither takes
    the clients or the caniemail data), made once per HTML and kept here (html -> (outlook,
    a11y)), not once per HTML, clients and data (7 HTMLs, 70 keys)."""
    page = StyledEmail(html)
    chosen = None if clients is None else resolve_clients(clients)
    if html not in html_only:
        html_only[html] = (tuple(outlook_width_findings(html)), tuple(a11y_findings(page)))
    outlook, a11y = html_only[html]
    return (*outlook, *client_findings(page, chosen), *a11y)


@pytest.mark.slow
def test_kept_findings_are_the_rules_findings_under_threads_churn_and_refresh(
    newsletter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    base = build(newsletter / "issues" / SAMPLE_ISSUE.name, load_settings()).html
    htmls = [base.replace("</body>", extra + "</body>", 1) for extra in EXTRAS]
    htmls.append(base.replace(' lang="', ' xml:lang="', 1))  # a11y.lang only
    keys = [(html, clients) for html in htmls for clients in CLIENT_SETS]  # 35 > the 8 kept

    everywhere = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    for feature in everywhere["features"].values():
        feature["support"] = {}  # no client drops anything
    refreshed = tmp_path / "caniemail.json"
    refreshed.write_text(json.dumps(everywhere), encoding="utf-8")
    files = [DATA_FILE, refreshed]
    expected: list[dict] = []
    html_only: dict[str, tuple] = {}
    try:
        for data_file in files:
            monkeypatch.setattr("spark_mail.checks.caniemail.DATA_FILE", data_file)
            features.cache_clear()
            expected.append({key: uncached(*key, html_only) for key in keys})
        assert expected[0] != expected[1]
        assert len({expected[0][key] for key in keys}) > len(CLIENT_SETS)  # each change counts

        refreshes = [0]
        stop = threading.Event()
        wrong: list[str] = []
        compared = [0]

        done = threading.Condition()
        checks = [0]

        def refresher() -> None:  # a refresh after every 10 checks, mid-flight for others
            while not stop.is_set():
                with done:
                    seen = checks[0]
                    done.wait_for(lambda seen=seen: checks[0] >= seen + 10 or stop.is_set())
                refreshes[0] += 1
                data_file = files[refreshes[0] % 2]
                monkeypatch.setattr("spark_mail.checks.caniemail.DATA_FILE", data_file)
                features.cache_clear()  # what refresh() does once it has written the file

        def checker(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(CHECKS_PER_THREAD):
                html, clients = key = rng.choice(keys)
                chosen = None if clients is None else resolve_clients(clients)
                before = features()
                found = html_findings(StyledEmail(html), chosen)
                if features() is before:  # no refresh during the check
                    compared[0] += 1
                    if found != expected[data_of(before)][key]:
                        wrong.append(f"{clients} {htmls.index(html)} data {data_of(before)}")
                with done:
                    checks[0] += 1
                    done.notify_all()

        threads = [threading.Thread(target=checker, args=(n,)) for n in range(6)]
        swapper = threading.Thread(target=refresher)
        swapper.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with done:
            stop.set()
            done.notify_all()
        swapper.join()
        assert wrong == []
        assert compared[0] > 30 and refreshes[0] >= 10, (compared, refreshes)  # both happened
    finally:
        monkeypatch.undo()
        features.cache_clear()
