"""The reader desk's store (readers.sqlite3): suppressions keyed by the canonical address,
read wherever the audience is read; the `poll results` and `audience suppressions` commands."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# -- the writer turn under attack: real processes, a real SQLite file ------------------------
HOLDER = """
import datetime as dt, os, signal, sys
from pathlib import Path
from spark_mail.audience.suppressions import SuppressionStore, suppress

store = SuppressionStore(Path(sys.argv[1]))
store.check()  # open, with the writer lock file open
# Each line is one write(2) to the pipe (atomic): a forked child's print() and its
# parent's could interleave: "childholding", then an empty line.
if sys.argv[2] == "fork" and os.fork() == 0:  # a child that never touches the store
    os.write(1, b"child\\n")
    signal.pause()
with store.transaction() as db:
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    suppress("held@example.com", how="form", issue="a", at=at)(db)
    os.write(1, b"holding\\n")
    if sys.argv[2] == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)  # kill -STOP mid-transaction
    else:
        signal.pause()
print("committed", flush=True)
"""


@contextlib.contextmanager
def holder(tmp_path: Path, how: str) -> Iterator[subprocess.Popen[str]]:
    """Another writer process, inside a transaction (it has taken the writer turn)."""
    import spark_mail

    path = tmp_path / ".spark-mail" / "readers.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(Path(spark_mail.__file__).parents[1])}
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), how],
        stdout=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(2 if how == "fork" else 1)]
        assert sorted(lines)[-1] == "holding\n", lines
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
        if process.stdout is not None:
            process.stdout.close()


def in_thread(work: Any, failsafe: float = 60) -> Any:
    """Run `work` on a thread: its result or exception, and a failure (not a hung test run)
    when it has not finished long after it should (a generous failsafe, not a timing)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(("ok", work()))
        except BaseException as exc:
            outcome.append(("raised", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(failsafe)
    assert outcome, "the writer hung waiting for its turn"
    kind, value = outcome[0]
    if kind == "raised":
        raise value
    return value


@pytest.mark.slow
def test_a_writer_killed_with_9_mid_transaction_frees_the_turn(tmp_path: Path):
    """The kernel lets go of a dead process's flock: the others write at once, and what
    the dead writer had not committed is not there."""
    with store_at(tmp_path) as store:
        store.check()
        with holder(tmp_path, "pause") as process:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(30)
            in_thread(
                lambda: store.unsubscribe("anna@example.com", how="form", issue="a", at=ISSUE_DAY)
            )
        assert store.addresses() == ["anna@example.com"]


def turn_threads_and_lock_descriptors(store: Path) -> tuple[int, int]:
    """Threads waiting for a writer turn, and this process's descriptors of the lock file."""
    lock = str(store.with_name(store.name + "-writer"))
    waiting = sum(t.name == "spark-mail-writer-turn" for t in threading.enumerate())
    descriptors = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            descriptors += os.readlink(f"/proc/self/fd/{fd}") == lock
    return waiting, descriptors


@pytest.mark.slow
def test_a_stopped_writer_makes_the_others_answer_locked_not_hang(tmp_path: Path):
    """A worker stopped (kill -STOP, a debugger, a frozen VM) while it holds the turn: the
    others waited on the flock forever (their requests hung, `audience sync` never
    returned). Like SQLite's busy timeout before, they give up after the store's timeout
    with "locked"; giving up again and again leaves no thread or descriptor behind each
    time, and once the stopped writer goes on, both writes are made."""
    path = tmp_path / ".spark-mail" / "readers.sqlite3"
    with store_at(tmp_path) as store:
        store.check()
    with SuppressionStore(path, timeout=0.2) as store, holder(tmp_path, "stop") as process:
        os.waitpid(process.pid, os.WUNTRACED)  # returns once it is stopped
        counts: list[tuple[int, int]] = []
        for _ in range(5):
            with pytest.raises(StoreError, match="locked") as err:
                in_thread(
                    lambda: store.unsubscribe(
                        "anna@example.com", how="form", issue="a", at=ISSUE_DAY
                    )
                )
            assert "readers.sqlite3" in str(err.value) and "\n" not in str(err.value)
            counts.append(turn_threads_and_lock_descriptors(path))
        # the first opened the store; then nothing grows (counted by what they are: the
        # test process has other threads and descriptors that come and go)
        assert counts[1:] == counts[:-1] and counts[0][0] <= 1
        os.kill(process.pid, signal.SIGCONT)
        assert process.stdout is not None and process.stdout.readline() == "committed\n"
        store.timeout = 30  # a failsafe: the turn is free the moment it committed
        assert in_thread(
            lambda: store.unsubscribe("anna@example.com", how="form", issue="a", at=ISSUE_DAY)
        )
        assert sorted(store.addresses()) == ["anna@example.com", "held@example.com"]


@pytest.mark.slow
def test_a_forked_child_does_not_keep_a_dead_parents_turn(tmp_path: Path):
    """A process forks (a worker pool) after opening the store; the child inherits the
    lock file's descriptor. The parent is killed with -9 mid-transaction: the child's copy
    of the descriptor kept the flock, and every writer waited for as long as the child lived."""
    with store_at(tmp_path) as store:
        store.check()
        store.timeout = 30  # a failsafe
        with holder(tmp_path, "fork") as process:
            os.kill(process.pid, signal.SIGKILL)  # the parent; its child lives on
            process.wait(30)
            in_thread(
                lambda: store.unsubscribe("anna@example.com", how="form", issue="a", at=ISSUE_DAY)
            )
        assert store.addresses() == ["anna@example.com"]


@pytest.mark.parametrize("spoil", ["dangling symlink", "fifo", "directory"])
def test_a_writer_lock_file_that_cannot_be_opened_is_one_line_naming_it(tmp_path: Path, spoil: str):
    """A symlink into nowhere, a FIFO (opening it for reading waited for a writer
    forever) or a directory where `readers.sqlite3-writer` should be: one StoreError naming that file
    (not the store). Once it is fixed the same store object
    works: it said "no such table ... restore it from a backup" (the failed open had left a
    connection that was never migrated)."""
    with store_at(tmp_path) as store:
        lock = store.path.with_name("readers.sqlite3-writer")
        lock.parent.mkdir(parents=True)
        if spoil == "fifo":
            os.mkfifo(lock)
        elif spoil == "directory":
            lock.mkdir()
        else:
            lock.symlink_to(tmp_path / "nowhere" / "lock")
        with pytest.raises(StoreError) as err:
            in_thread(
                lambda: store.unsubscribe("anna@example.com", how="form", issue="a", at=ISSUE_DAY)
            )
        said = str(err.value)
        assert said.startswith(f"{lock}: ") and "\n" not in said and "backup" not in said
        lock.rmdir() if spoil == "directory" else lock.unlink()
        assert store.unsubscribe("anna@example.com", how="form", issue="a", at=ISSUE_DAY)


def test_the_writer_lock_file_has_the_stores_mode_whatever_the_umask(tmp_path: Path):
    """Like SQLite's own -wal and -shm: a store its group may write (0660) gets a lock
    file its group may open; it was always 0600, so the second user could not write."""
    with store_at(tmp_path) as store:
        store.check()
        store.path.chmod(0o660)
        store.close()
        store.path.with_name("readers.sqlite3-writer").unlink()
        mask = os.umask(0o077)
        try:
            store.unsubscribe("anna@example.com", how="form", issue="a", at=ISSUE_DAY)
        finally:
            os.umask(mask)
        assert store.path.with_name("readers.sqlite3-writer").stat().st_mode & 0o777 == 0o660


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, another user)")
def test_a_command_run_as_root_leaves_a_lock_file_the_service_user_can_open():
    """`sudo spark-mail audience sync` on a desk run by its own user: the lock file root
    created was root's, mode 0600, and every unsubscribe on the desk was a 503 after it.
    (SQLite gives its -wal and -shm the store's owner when root makes them.)"""
    service = 65534  # nobody
    home = Path(tempfile.mkdtemp(prefix="spark-mail-"))  # pytest's folder is root's own, 0700
    state = home / ".spark-mail"
    try:
        as_root_then_service(home, state, service)
    finally:
        shutil.rmtree(home)


def as_root_then_service(home: Path, state: Path, service: int) -> None:
    import spark_mail

    with store_at(home) as store:
        store.check()
    for made in [home, state, *state.iterdir()]:
        os.chown(made, service, service)
    home.chmod(0o755)
    (state / "readers.sqlite3-writer").unlink()
    with store_at(home) as store:  # root's command
        store.unsubscribe("root@example.com", how="form", issue="a", at=ISSUE_DAY)
    write = (  # imported as root (the interpreter's files may be root's), then written as nobody
        "import datetime as dt, os, sys; from pathlib import Path;"
        "from spark_mail.audience.suppressions import SuppressionStore;"
        "store = SuppressionStore(Path(sys.argv[1]));"
        "os.setgid(65534); os.setuid(65534);"
        "store.unsubscribe('anna@example.com', how='form', issue='a', "
        "at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(spark_mail.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", write, str(state / "readers.sqlite3")],
        capture_output=True, text=True, env=env, cwd=home, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with store_at(home) as store:
        assert sorted(store.addresses()) == ["anna@example.com", "root@example.com"]


@pytest.mark.slow
def test_stores_dropped_without_close_leave_no_descriptor_open(tmp_path: Path):
    """A store that is never closed (a desk app a test or a program drops) closed its
    SQLite connection when collected, but the lock file's descriptor stayed open for good."""
    with store_at(tmp_path) as store:
        store.check()
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    for n in range(40):
        store_at(tmp_path).unsubscribe(f"r{n}@example.com", how="form", issue="a", at=ISSUE_DAY)
    gc.collect()
    assert len(os.listdir("/proc/self/fd")) <= before


@pytest.mark.slow
def test_many_stores_on_many_threads_of_one_process_all_write(tmp_path: Path):
    """Several store objects in one process each have their own lock file descriptor (an
    flock is per open file, so they take turns among themselves too): every write lands."""
    with store_at(tmp_path) as store:
        store.check()
    stores = [store_at(tmp_path) for _ in range(4)]
    errors: list[BaseException] = []

    def write(store: SuppressionStore, thread: int) -> None:
        try:
            for n in range(25):
                store.unsubscribe(f"t{thread}-{n}@example.com", how="form", issue="a", at=ISSUE_DAY)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(stores[t % 4], t)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for store in stores:
        store.close()
    assert errors == []
    with store_at(tmp_path) as store:
        assert len(store.addresses()) == 8 * 25
