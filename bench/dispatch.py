"""What a cron `dispatch` costs when nothing (or one issue) is due, and the ledger's speed.

    python bench/dispatch.py

A newsletter with ISSUES issue files, all sent long ago (in the ledger) but one: a run every
5 minutes reads every front matter and the ledger. Prints the time of an idle run (the
common case), per issue, as a share of the cron interval, and the ledger's claim -> sent
round trips per second (SQLite WAL, synchronous=FULL: each state change is on disk).

Targets: an idle run over 300 issues under 0.5 s; at least 100 claim -> sent per second.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from pathlib import Path

from spark_mail.config import load_settings
from spark_mail.ledger import open_ledger
from spark_mail.scheduling.cron import dispatch, due_issues

REPO = Path(__file__).resolve().parent.parent
ISSUES = 300
ROUNDS = 200
CRON_INTERVAL = 300.0
IDLE_TARGET, CLAIMS_TARGET = 0.5, 100.0
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(REPO / "spark-mail.toml", root / "spark-mail.toml")  # passes the checks
        settings = load_settings(
            start=root, env={}, overrides={"provider": "outbox", "late_window_hours": 1e6}
        )
        issues = root / "issues"
        issues.mkdir()
        start = NOW - dt.timedelta(days=ISSUES)
        for number in range(ISSUES):
            send_at = (start + dt.timedelta(days=number)).isoformat()
            (issues / f"issue-{number:04d}.md").write_text(
                f'---\ntitle: "Issue {number}"\ndate: 2025-01-01\nnumber: {number + 1}\n'
                f"send_at: {send_at}\n---\nHello, readers: issue {number}.\n"
            )
        with open_ledger(settings) as ledger:
            for number in range(ISSUES - 1):
                ledger.claim(f"issue-{number:04d}", "h", "outbox", "send", NOW)
                ledger.mark_sent(f"issue-{number:04d}", NOW)

        with open_ledger(settings) as ledger:
            began = time.perf_counter()
            due = due_issues(settings, NOW, ledger)
            planning = time.perf_counter() - began
        assert [d.slug for d in due] == [f"issue-{ISSUES - 1:04d}"], due

        began = time.perf_counter()
        report = dispatch(settings, NOW)  # sends the one due issue (outbox: a file)
        one_due = time.perf_counter() - began
        began = time.perf_counter()
        idle = dispatch(settings, NOW)
        idle_run = time.perf_counter() - began
        assert [i.outcome for i in report.items] == ["sent"], report.items
        assert idle.items == [], idle.items

        with open_ledger(settings) as ledger:
            began = time.perf_counter()
            for number in range(ROUNDS):
                ledger.claim(f"bench-{number}", "h", "outbox", "send", NOW)
                ledger.record_ids(f"bench-{number}", {"id": str(number)}, NOW)
                ledger.mark_sent(f"bench-{number}", NOW)
            claims = ROUNDS / (time.perf_counter() - began)

    print(f"issues in the folder:        {ISSUES}")
    print(f"plan (front matter + ledger): {planning * 1000:7.1f} ms")
    print(f"dispatch, one issue due:      {one_due * 1000:7.1f} ms (build, checks, send, ledger)")
    print(
        f"dispatch, nothing due:        {idle_run * 1000:7.1f} ms "
        f"({idle_run / ISSUES * 1e6:.0f} us per issue; "
        f"{idle_run / CRON_INTERVAL:.4%} of a 5-minute cron interval)"
    )
    print(
        f"ledger claim -> ids -> sent:  {claims:7.0f} per second "
        f"({1000 / claims:.1f} ms each, 3 durable transactions)"
    )
    print(
        f"targets: idle run {idle_run / IDLE_TARGET:.2f}x of {IDLE_TARGET} s; "
        f"ledger {claims / CLAIMS_TARGET:.1f}x of {CLAIMS_TARGET:.0f}/s"
    )


if __name__ == "__main__":
    main()
