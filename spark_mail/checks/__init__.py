"""Pre-send checks: rules that run on the final RenderedEmail and return one Report.

Errors block a send (`check` exits 1); warnings are advice (they block too with `--strict`).
Link checking (network, spark_mail/checks/links.py) only runs with `links=True`.

    from spark_mail.checks import run_checks
    report = run_checks(email, settings, links=False)
    report.errors, report.warnings, report.ok, report.failed(strict), report.to_json()

    report.py   Finding, Severity, Report; RuleBook (a rule's severity and fix, once)
    html.py     links, images, visible text and boxes, read from that parse
    rules.py    the offline rules (Checker)
    outlook.py  layout.outlook-width: the email as desktop Outlook lays it out
    styles.py   the one lxml parse of the HTML + its CSS rules, which all rules share
    clients.py  clients.*: features mail clients drop (caniemail.py, data/caniemail.json)
    a11y.py     a11y.*: contrast (light and dark), lang, heading order, link text
    utm.py      utm.tagged: which links carry UTM tags
    links.py    the concurrent link checker and its cache; link_findings
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from spark_mail.checks.a11y import a11y_findings
from spark_mail.checks.caniemail import Client, features
from spark_mail.checks.clients import client_findings
from spark_mail.checks.outlook import outlook_width_findings
from spark_mail.checks.report import SEVERITY_ORDER, Finding, Report, Severity
from spark_mail.checks.rules import Checker
from spark_mail.checks.styles import StyledEmail
from spark_mail.checks.utm import utm_findings
from spark_mail.config import Settings
from spark_mail.render import RenderedEmail

__all__ = ["Finding", "Report", "Severity", "check_issue", "run_checks"]


def run_checks(
    email: RenderedEmail,
    settings: Settings,
    links: bool = False,
    *,
    now: float | None = None,
    clients: Sequence[Client] | None = None,
) -> Report:
    """All rules for one email. With links=False nothing touches the network.
    `clients`: the mail clients the `clients.*` rules look at (default: all they know)."""
    page = StyledEmail(email.html)  # the one parse of the HTML that all rules read
    checker = Checker(email, settings, page.root)
    findings = checker.run()
    findings.extend(html_findings(page, clients))
    findings.extend(utm_findings(checker.page.anchors))
    report = Report(
        slug=email.slug,
        findings=findings,
        html_bytes=email.html_bytes,
        link_count=len(checker.page.anchors),
    )
    if links:
        from spark_mail.checks.links import (  # httpx only when links are checked
            check_links,
            link_findings,
        )

        targets: dict[str, str] = {}
        for kind, url in checker.urls():
            if urlsplit(url).scheme.lower() in ("http", "https") and (
                kind == "image" or url not in targets
            ):
                targets[url] = kind  # an image's size is checked too
        report.links = check_links(targets, settings, now=now)
        report.links_checked = True
        report.findings.extend(link_findings(report.links))
    report.findings.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    return report


# The findings of the rules that read nothing but the HTML (and the clients asked about),
# for the last few emails checked: a process that checks the same HTML again (preview at
# each save, the desk, a dispatch that tries again) does not walk it again (~13 of a
# check's 17 ms). Each entry holds the caniemail data it was found with and counts only
# while that is still the data (`caniemail refresh` reloads it).
_KEEP = 8
_known: dict[tuple[str, tuple[Client, ...] | None], tuple[object, tuple[Finding, ...]]] = {}
_known_lock = threading.Lock()


def html_findings(page: StyledEmail, clients: Sequence[Client] | None) -> tuple[Finding, ...]:
    """Outlook's widths, the clients' features and accessibility: what depends on the HTML
    alone, each HTML's findings made once while it is among the last `_KEEP` checked."""
    key = (page.html, None if clients is None else tuple(clients))
    data = features()
    with _known_lock:
        kept = _known.get(key)
    if kept is not None and kept[0] is data:
        return kept[1]
    found = (
        *outlook_width_findings(page.html),
        *client_findings(page, clients),
        *a11y_findings(page),
    )
    with _known_lock:
        _known.pop(key, None)  # newest last: the oldest goes first
        _known[key] = (data, found)
        while len(_known) > _KEEP:
            del _known[next(iter(_known))]
    return found


def check_issue(
    issue: str | Path,
    settings: Settings,
    *,
    links: bool = True,
    clients: Sequence[Client] | None = None,
) -> Report:
    """Build an issue file (or slug in issues/) and check it: what `spark-mail check` runs.

    A missing file or broken front matter raises IssueError (exit 2) before any rule runs."""
    from spark_mail.issue import resolve_issue_path
    from spark_mail.render import build

    email = build(resolve_issue_path(issue, settings.issues_path), settings)
    return run_checks(email, settings, links=links, clients=clients)
