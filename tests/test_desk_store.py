"""The reader desk's store (readers.sqlite3): suppressions keyed by the canonical address,
read wherever the audience is read; the `poll results` and `audience suppressions` commands."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from conftest import SAMPLE_SLUG, run_cli
from desk_support import ISSUE_DAY, desk_settings
from spark_mail.audience import DESK_REASON, audience_paths, check_audience, iter_readers
from spark_mail.audience.subscribers import load_suppressed
from spark_mail.audience.suppressions import SuppressionStore, store_path
from spark_mail.desk.polls import PollBook, record_comment, record_vote
from spark_mail.errors import StoreError


def store_at(root: Path) -> SuppressionStore:
    return SuppressionStore(root / ".spark-mail" / "readers.sqlite3")


def test_rows_are_keyed_by_the_canonical_address(tmp_path: Path):
    """`Anna@EXAMPLE.com` unsubscribing suppresses every spelling of that address."""
    with store_at(tmp_path) as store:
        assert store.unsubscribe("Anna@EXAMPLE.com", how="one-click", issue="a", at=ISSUE_DAY)
        assert not store.unsubscribe("anna@example.com", how="form", issue="b", at=ISSUE_DAY)
        assert store.suppressed(["anna@example.com", "bob@example.com"]) == {"anna@example.com"}
        assert store.is_suppressed("ANNA@example.COM")
        [row] = store.suppressions()
        assert (row.address, row.how, row.issue) == ("anna@example.com", "one-click", "a")


def test_the_batch_check_answers_for_thousands_of_addresses(tmp_path: Path):
    """`suppressed(addresses)` takes a whole batch (more than SQLite's parameter limit)."""
    with store_at(tmp_path) as store:
        for n in range(0, 1200, 100):
            store.unsubscribe(f"r{n}@example.com", how="form", issue="a", at=ISSUE_DAY)
        batch = [f"r{n}@example.com" for n in range(40_000)]
        assert store.suppressed(batch) == {f"r{n}@example.com" for n in range(0, 1200, 100)}


def test_writers_take_turns_on_the_writer_lock_and_go_the_moment_it_is_free(tmp_path: Path):
    """Desk workers queue on an flock of `readers.sqlite3-writer`, not on SQLite's busy
    handler (which sleeps up to 100 ms between looks: the p99 of two workers went past
    100 ms). While another worker holds the turn, a write waits and writes nothing."""
    import fcntl
    import os
    import threading

    with store_at(tmp_path) as store:
        store.check()  # created and migrated
        lock = os.open(store.path.with_name("readers.sqlite3-writer"), os.O_RDWR)
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker's turn
        done = threading.Event()

        def write() -> None:
            with store_at(tmp_path) as other:
                other.unsubscribe("anna@example.com", how="form", issue="a", at=ISSUE_DAY)
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        try:
            assert not done.wait(0.3)  # a busy machine only makes this truer
            assert not store.is_suppressed("anna@example.com")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            os.close(lock)
        assert done.wait(30)
        writer.join()
        assert store.is_suppressed("anna@example.com")


def test_reading_a_store_that_does_not_exist_creates_nothing(tmp_path: Path):
    """A newsletter whose desk never ran has no suppressions and gets no file."""
    with store_at(tmp_path) as store:
        assert store.suppressed(["a@example.com"]) == set()
        assert store.suppressions() == []
    assert not (tmp_path / ".spark-mail").exists()


def test_a_corrupt_store_is_one_clear_error(tmp_path: Path):
    """Not a database: a StoreError naming the file and how to fix it."""
    path = tmp_path / "readers.sqlite3"
    path.write_bytes(b"garbage" * 1000)
    with pytest.raises(StoreError, match=r"readers.sqlite3: the reader store is unreadable") as err:
        SuppressionStore(path).suppressed(["a@example.com"])
    assert "backup" in str(err.value) and "\n" not in str(err.value)


def write_list(root: Path) -> Path:
    path = root / "subscribers.csv"
    rows = ["email,first_name", "anna@example.com,Anna", "BOB@example.com,Bob", "cy@example.com,Cy"]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_iter_readers_and_check_audience_skip_desk_unsubscribes(newsletter: Path):
    """A reader who unsubscribed on the desk is suppressed, with the desk as the reason,
    in the check and in both passes of a send."""
    settings = desk_settings(newsletter, SPARK_MAIL_AUDIENCE="subscribers.csv")
    write_list(newsletter)
    with SuppressionStore.for_settings(settings) as store:
        store.unsubscribe("Bob@Example.com", how="one-click", issue=SAMPLE_SLUG, at=ISSUE_DAY)
    paths = audience_paths(settings)
    assert paths.store == store_path(settings)
    report = check_audience(*paths)
    assert (report.valid, report.suppressed) == (2, 1)
    assert report.suppressed_by == {DESK_REASON: 1}
    assert [r.email for r in iter_readers(*paths)] == ["anna@example.com", "cy@example.com"]
    second = iter_readers(*paths, suppressed_keys=report.suppressed_keys)
    assert [r.email for r in second] == ["anna@example.com", "cy@example.com"]


def test_the_export_is_a_suppression_file(tmp_path: Path):
    """`--export` writes CSV with an email column, which works as suppression_file."""
    with store_at(tmp_path) as store:
        store.unsubscribe("anna@example.com", how="form", issue="x", at=ISSUE_DAY)
        assert store.export_csv(tmp_path / "out.csv") == 1
    text = (tmp_path / "out.csv").read_text()
    assert text.splitlines()[0] == "email,unsubscribed_at,how,issue,provider,event_id,detail"
    assert len(load_suppressed(tmp_path / "out.csv")) == 1


def test_votes_and_comments_are_stored_per_issue_and_voter(tmp_path: Path):
    """The store keeps the counts in step with the votes."""
    with store_at(tmp_path) as store:
        record_vote(store, "a", "r-1", 1, ISSUE_DAY)
        record_vote(store, "a", "r-2", 1, ISSUE_DAY)
        record_vote(store, "a", "r-2", 2, ISSUE_DAY + dt.timedelta(seconds=10))
        assert record_comment(store, "a", "r-1", "nice", ISSUE_DAY)
        assert not record_comment(store, "a", "r-3", "who?", ISSUE_DAY)
        counts = store.read("SELECT option, votes FROM poll_counts WHERE issue = 'a' ORDER BY 1")
        assert counts == [(1, 1), (2, 1)]


# -- the commands -------------------------------------------------------------------------


def seed_votes(root: Path) -> None:
    settings = desk_settings(root)
    info = PollBook(settings.issues_path).get(SAMPLE_SLUG)
    assert info is not None
    with SuppressionStore.for_settings(settings) as store:
        for voter, option in (("r-1", 1), ("r-2", 1), ("r-3", 3)):
            record_vote(store, SAMPLE_SLUG, voter, option, ISSUE_DAY)
        record_comment(store, SAMPLE_SLUG, "r-3", "More code, please", ISSUE_DAY)
        store.unsubscribe("bob@example.com", how="one-click", issue=SAMPLE_SLUG, at=ISSUE_DAY)


@pytest.mark.slow
def test_poll_results_json_has_the_documented_shape(newsletter: Path):
    """`poll results ISSUE --json`: issue, question, options (label, votes), votes, comments."""
    seed_votes(newsletter)
    result = run_cli("poll", "results", SAMPLE_SLUG, "--json", cwd=newsletter)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == {
        "issue": SAMPLE_SLUG,
        "question": "How would you rate today's newsletter?",
        "options": [
            {"label": "Loved it", "votes": 2},
            {"label": "It was good", "votes": 0},
            {"label": "Could be better", "votes": 1},
        ],
        "votes": 3,
        "comments": [{"text": "More code, please", "at": "2025-01-20T12:00:00+00:00"}],
    }


@pytest.mark.slow
def test_poll_results_prints_bars_and_lists_every_poll_without_an_issue(newsletter: Path):
    """Without ISSUE: every poll's totals; with it: bars, the total and the comments."""
    seed_votes(newsletter)
    listing = run_cli("poll", "results", cwd=newsletter)
    assert listing.returncode == 0, listing.stderr
    assert SAMPLE_SLUG in listing.stdout and "3 votes" in listing.stdout
    one = run_cli("poll", "results", SAMPLE_SLUG, cwd=newsletter, env={"COLUMNS": "120"})
    assert "Loved it" in one.stdout and "2 (67%)" in one.stdout and "More code" in one.stdout
    missing = run_cli("poll", "results", "2030-01-01-nope", cwd=newsletter)
    assert missing.returncode == 2 and "no such issue" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.slow
def test_audience_suppressions_lists_and_exports(newsletter: Path):
    """`audience suppressions --json` / `--export FILE`; `audience check` counts them."""
    seed_votes(newsletter)
    listed = run_cli("audience", "suppressions", "--json", cwd=newsletter)
    assert json.loads(listed.stdout)["suppressions"] == [
        {"address": "bob@example.com", "at": "2025-01-20T12:00:00+00:00", "how": "one-click",
         "issue": SAMPLE_SLUG, "provider": "", "event_id": "", "detail": "",
         "reason": f"one-click (issue {SAMPLE_SLUG})"}
    ]  # fmt: skip
    exported = run_cli("audience", "suppressions", "--export", "gone.csv", cwd=newsletter)
    assert exported.returncode == 0 and "1 suppressions written" in exported.stderr
    assert "bob@example.com" in (newsletter / "gone.csv").read_text()
    write_list(newsletter)
    check = run_cli("audience", "check", "subscribers.csv", "--json", cwd=newsletter)
    assert json.loads(check.stdout)["suppressed_by"] == {DESK_REASON: 1}
