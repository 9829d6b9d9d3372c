"""A damaged ledger is one error line and nothing is sent; a ledger that cannot record a
send the ESP accepted says so and never leads to a second send (issue 9, item 8)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, SAMPLE_ISSUE, SAMPLE_SLUG, run_cli, write_issue
from esp_server import FakeEsp, esp_env, settings_for
from spark_mail.errors import SendUnconfirmed
from spark_mail.ledger import SendState, open_ledger
from spark_mail.ledger.sends import SendsTable
from spark_mail.scheduling.cron import dispatch
from spark_mail.sending import send_issue
from spark_mail.sending.outcomes import Outcome

NOW = "2025-01-20T08:00"
DUE = "send_at: 2025-01-20T07:00:00-05:00"


def due_issue(root: Path) -> Path:
    return write_issue(root, "issue-1", f"title: Issue one\ndate: 2025-01-20\n{DUE}")


def ledger_file(root: Path) -> Path:
    return root / ".spark-mail" / "ledger.sqlite3"


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def truncate(path: Path) -> None:
    path.write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def foreign_database(path: Path) -> None:
    path.unlink()
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    db.commit()
    db.close()


def not_sqlite(path: Path) -> None:
    truncate(path)
    path.write_text("slug,state\nissue-1,sent\n")


DAMAGE = {"empty": truncate, "foreign": foreign_database, "not-sqlite": not_sqlite}
EXPECTED = {
    "empty": "the ledger file is empty (0 bytes)",
    "foreign": "is a SQLite database but not a spark-mail ledger",
    "not-sqlite": "the ledger is unreadable (not a SQLite file)",
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_ledger_file_is_one_line_and_nothing_is_sent_again(
    newsletter: Path, esp: FakeEsp, damage: str
):
    """After a real send, the ledger is emptied (a truncated copy), replaced by another
    SQLite database, or by a text file: `send` and `dispatch` each print one line, exit 1,
    and the ESP sees no second send."""
    env = esp_env(esp, "resend", SPARK_MAIL_SEND_RATE="100")  # Resend's 2/s: not waited out
    due_issue(newsletter)
    first = run_cli("dispatch", "--now", NOW, cwd=newsletter, env=env)
    assert first.returncode == 0 and len(esp.audience_sends) == 1, first.stderr
    DAMAGE[damage](ledger_file(newsletter))
    requests = len(esp.calls())
    for args in (("send", "issue-1", "--yes"), ("dispatch", "--now", NOW)):
        result = run_cli(*args, cwd=newsletter, env=env)
        assert result.returncode == 1, (args, result.stderr)
        line = one_line(result)
        assert EXPECTED[damage] in line and "ledger.sqlite3" in line, line
    assert len(esp.calls()) == requests and len(esp.audience_sends) == 1


def damage_row(root: Path, sql: str) -> None:
    db = sqlite3.connect(ledger_file(root))
    db.execute(sql)
    db.commit()
    db.close()


ROW_DAMAGE = {
    "unknown-state": "UPDATE sends SET state = 'exploded'",
    "esp-ids-not-json": "UPDATE sends SET esp_ids = 'not json {'",
    "esp-ids-a-list": "UPDATE sends SET esp_ids = '[1, 2]'",
    "dropped-events": "DROP TABLE events",
    "dropped-sends": "DROP TABLE sends",
}


@pytest.fixture(scope="module")
def dispatched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A newsletter whose due issue-1 `dispatch` sent (to the outbox): made once, copied
    into each case's folder before that case damages its ledger."""
    root = tmp_path_factory.mktemp("dispatched") / "newsletter"
    (root / "issues").mkdir(parents=True)
    shutil.copy(REPO / "spark-mail.toml", root / "spark-mail.toml")
    shutil.copy(SAMPLE_ISSUE, root / "issues" / SAMPLE_ISSUE.name)
    due_issue(root)
    assert run_cli("dispatch", "--now", NOW, cwd=root).returncode == 0
    return root


@pytest.mark.slow
@pytest.mark.parametrize("damage", sorted(ROW_DAMAGE))
def test_damaged_ledger_rows_are_one_line_for_status_dispatch_and_list(
    newsletter: Path, dispatched: Path, damage: str
):
    """An unknown state, esp_ids that are not a JSON object, a dropped table: `status` and
    `dispatch` print one line (exit 1), `list` still lists with one warning line."""
    shutil.copytree(dispatched, newsletter, dirs_exist_ok=True)
    damage_row(newsletter, ROW_DAMAGE[damage])
    for args in (("status",), ("status", "issue-1"), ("dispatch", "--now", NOW)):
        result = run_cli(*args, cwd=newsletter)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "ledger.sqlite3" in one_line(result)
    listed = run_cli("list", cwd=newsletter)
    assert listed.returncode == 0, listed.stderr
    assert one_line(listed).startswith("warning: send status from front matter only")
    as_json = json.loads(run_cli("list", "--json", cwd=newsletter).stdout)
    rows = {row["slug"]: row for row in as_json["issues"]}
    assert rows["issue-1"]["status"] == "scheduled" and as_json["notes"]


# -- the last write after the ESP accepted -------------------------------------------------


@pytest.fixture
def full_disk_on_mark_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    """mark_sent fails the way SQLite fails on a full disk: inside its transaction."""

    def mark_sent(self: SendsTable, *args: object, **kwargs: object) -> None:
        with self.database.transaction():
            raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(SendsTable, "mark_sent", mark_sent)


def test_full_disk_after_the_esp_accepted_says_so_and_the_next_run_settles(
    newsletter: Path, esp: FakeEsp, full_disk_on_mark_sent: None, monkeypatch: pytest.MonkeyPatch
):
    """`send`: Buttondown published, then the ledger could not record it. The error says
    the ESP accepted it (never "nothing was sent"); the next send asks Buttondown and
    records `sent` without publishing again. It is `unconfirmed` (the next run settles it),
    never `failed`."""
    settings = settings_for(esp, newsletter, "buttondown")
    with pytest.raises(SendUnconfirmed) as caught:
        send_issue(SAMPLE_SLUG, settings, mode="send")
    message = str(caught.value)
    assert "buttondown accepted it" in message and "do NOT send it again" in message
    assert "nothing was sent" not in message and "move the ledger aside" not in message
    assert "database or disk is full" in message
    assert len(esp.audience_sends) == 1
    monkeypatch.undo()  # the disk has room again
    again = send_issue(SAMPLE_SLUG, settings, mode="send")
    assert again.outcome == Outcome.SENT_EARLIER
    assert len(esp.audience_sends) == 1
    with open_ledger(settings) as ledger:
        record = ledger.get(SAMPLE_SLUG)
    assert record is not None and record.state == SendState.SENT


@pytest.mark.slow
def test_full_disk_after_the_esp_accepted_in_dispatch_never_sends_twice(
    newsletter: Path, esp: FakeEsp, full_disk_on_mark_sent: None, monkeypatch: pytest.MonkeyPatch
):
    """`dispatch`: the issue's line says the ESP accepted it; the other due issue still
    goes out; the next run settles the first by asking the ESP, and sends nothing twice."""
    settings = settings_for(esp, newsletter, "resend")
    due_issue(newsletter)
    import datetime as dt

    from spark_mail.clock import FakeClock

    now = dt.datetime(2025, 1, 20, 13, 0, tzinfo=dt.UTC)
    clock = FakeClock(now)  # Resend's two requests a second, not waited out for real
    report = dispatch(settings, now, clock=clock)
    (item,) = report.items
    assert item.outcome == Outcome.UNCONFIRMED and "resend accepted it" in item.message
    assert "nothing was sent" not in item.message
    assert len(esp.audience_sends) == 1
    monkeypatch.undo()
    second = dispatch(settings, now, clock=clock)
    assert [i.outcome for i in second.items] == [Outcome.SENT_EARLIER]
    assert len(esp.audience_sends) == 1
    assert dispatch(settings, now, clock=clock).items == []
