"""`spark-mail list`: every issue with date, number, title, send time, status, size, checks."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from conftest import SAMPLE_SLUG, run_cli, write_issue
from spark_mail.config import load_settings
from spark_mail.drafting.listing import IssueRow, list_issues
from spark_mail.ledger import Ledger

PREHEADER = "preheader: A preheader long enough to fill the inbox preview line nicely."


NOW = dt.datetime(2025, 1, 20, 12, tzinfo=dt.UTC)


def rows_by_slug(newsletter: Path) -> dict[str, IssueRow]:
    listing = list_issues(load_settings(newsletter, env={}))
    return {row.slug: row for row in listing.rows}


@pytest.mark.slow
def test_list_shows_draft_and_scheduled_from_front_matter(newsletter: Path) -> None:
    """No ledger: send_at set means scheduled (shown in the newsletter's zone), otherwise
    draft; no ledger file is created."""
    write_issue(
        newsletter, "2025-02-01-later",
        f"title: Later\ndate: 2025-02-01\nnumber: 43\nsend_at: 2025-02-01T07:00:00\n{PREHEADER}",
    )  # fmt: skip
    rows = rows_by_slug(newsletter)
    sample, later = rows[SAMPLE_SLUG], rows["2025-02-01-later"]
    assert (sample.status, sample.number, sample.check) == ("draft", 42, "clean")
    assert sample.html_bytes > 10_000
    assert later.status == "scheduled" and later.send_at == "2025-02-01T07:00:00-05:00"
    assert not load_settings(newsletter, env={}).ledger_file.exists()


def test_list_takes_status_from_the_ledger(newsletter: Path) -> None:
    """With a ledger, a sent issue shows as sent."""
    settings = load_settings(newsletter, env={})
    with Ledger(settings.ledger_file) as ledger:
        ledger.claim(SAMPLE_SLUG, "hash", "buttondown", "send", NOW)
        ledger.mark_sent(SAMPLE_SLUG, NOW, {"email": "em_1"})
    assert rows_by_slug(newsletter)[SAMPLE_SLUG].status == "sent"


def test_list_tells_esp_scheduling_from_a_send_at(newsletter: Path) -> None:
    """An issue handed to the ESP's scheduler is "scheduled at ESP", not just "scheduled"."""
    settings = load_settings(newsletter, env={})
    at = dt.datetime(2025, 1, 20, 12, tzinfo=dt.UTC)
    with Ledger(settings.ledger_file) as ledger:
        ledger.claim(SAMPLE_SLUG, "hash", "resend", "send", at)
        ledger.mark_scheduled(SAMPLE_SLUG, at, {"broadcast_id": "b_1"}, at)
    assert rows_by_slug(newsletter)[SAMPLE_SLUG].status == "scheduled at ESP"


def test_broken_issue_is_an_error_row_not_a_stop(newsletter: Path) -> None:
    """A broken issue shows its error; the other issues are still listed."""
    (newsletter / "issues" / "2025-03-01-broken.md").write_text("---\ntitle: x\n")
    rows = rows_by_slug(newsletter)
    broken = rows["2025-03-01-broken"]
    assert broken.status == "error" and "never closed" in broken.error
    assert rows[SAMPLE_SLUG].status == "draft"


def test_check_result_counts_errors(newsletter: Path) -> None:
    """An issue with a TODO shows '1 error' in the check column."""
    write_issue(newsletter, "2025-02-02-todo", f"title: Todo\ndate: 2025-02-02\n{PREHEADER}",
                "TODO write this\n")  # fmt: skip
    row = rows_by_slug(newsletter)["2025-02-02-todo"]
    assert row.errors == 1 and row.check.startswith("1 error")


def test_list_command_json_and_table(newsletter: Path) -> None:
    """--json lists every issue for scripts; the table names the sample issue."""
    (newsletter / "issues" / "2025-03-01-broken.md").write_text("no front matter\n")
    result = run_cli("list", "--json", cwd=newsletter)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [i["slug"] for i in data["issues"]] == [SAMPLE_SLUG, "2025-03-01-broken"]
    assert data["issues"][0]["status"] == "draft" and data["issues"][1]["status"] == "error"
    table = run_cli("list", cwd=newsletter, env={"COLUMNS": "200"})
    assert table.returncode == 0 and "Engineering Leadership" in table.stdout
