"""One broken issue file is one error line: it never stops `dispatch` or `list` from
handling the other issues, never hangs them, and never writes or deletes outside its own
folders (issue 9, items 6, 7 and 11)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SAMPLE_ISSUE, SAMPLE_SLUG, run_cli, write_issue
from spark_mail.config import load_settings
from spark_mail.errors import IssueError
from spark_mail.issue import KNOWN_KEYS, load_issue, parse_issue
from spark_mail.scheduling.cron import dispatch
from spark_mail.sending import send_issue
from spark_mail.sending.outcomes import Outcome

MINIMAL = "title: Hello\ndate: 2025-02-03\n"
NOW = dt.datetime(2025, 1, 20, 13, 0, tzinfo=dt.UTC)
DUE = "send_at: 2025-01-20T07:00:00-05:00\n"


def alias_bomb(levels: int = 6) -> str:
    """The 'billion laughs' in YAML: each level repeats the one before nine times."""
    lines = ["tags:", "  - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels):
        lines.append(f"  - &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


# Each file breaks the issue format in one way a run must survive: name -> front matter.
BROKEN = {
    "deep-tags": "tags: " + "[" * 20_000 + "]" * 20_000 + "\n",
    "huge-number": "number: " + "9" * 5_000 + "\n",
    "negative-number": "number: -1\n",
    "surrogate-title": 'subtitle: "\\ud800"\n',
    "separator-subject": 'subject: "a\\u2028b"\n',
    "alias-bomb": alias_bomb(),
}


def write_raw(root: Path, name: str, front: str, body: str = "Hello.\n") -> Path:
    path = root / "issues" / f"{name}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"---\n{MINIMAL}{front}---\n{body}", encoding="utf-8")
    return path


# -- load_issue: each broken file is one IssueError --------------------------------------


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_front_matter_is_one_issue_error_naming_the_file_and_line(tmp_path: Path, name: str):
    """Deep nesting, a 5,000-digit number, a lone surrogate, a line separator in a header
    field and an alias bomb are each an IssueError with the file and line, quickly."""
    path = write_raw(tmp_path, name, BROKEN[name])
    started = time.monotonic()
    with pytest.raises(IssueError) as caught:
        load_issue(path)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert re.match(rf"{re.escape(str(path))}:[45]: ", message), message
    assert "\n" not in message and message.isprintable()


def test_alias_and_anchor_are_refused_with_a_clear_line(tmp_path: Path):
    """Front matter has no use for YAML anchors and aliases: the line says so."""
    path = write_raw(tmp_path, "alias", "tags: &t [a]\nsubtitle: *t\n")
    with pytest.raises(IssueError, match=r":4: the front matter uses a YAML anchor or alias"):
        load_issue(path)


def test_front_matter_over_256_kb_is_refused_before_yaml_reads_it(tmp_path: Path):
    """A 300 KB front matter (here not even valid YAML) is refused for its size."""
    path = write_raw(tmp_path, "big", "tags: [" + "a, " * 100_000 + "\n")
    with pytest.raises(IssueError, match=r"front matter is \d+ KB; at most 256 KB is read"):
        load_issue(path)


@pytest.mark.parametrize("number", ["0", "42", "1000000000"])
def test_sane_issue_numbers_are_kept(tmp_path: Path, number: str):
    """Whole numbers from 0 to 10**9 are issue numbers."""
    assert load_issue(write_raw(tmp_path, "n", f"number: {number}\n")).number == int(number)


@pytest.mark.parametrize("number", ["1000000001", "-5", "1.5", "'7'"])
def test_absurd_issue_numbers_are_refused(tmp_path: Path, number: str):
    """Negative, over 10**9, fractional or quoted numbers are one clear error."""
    with pytest.raises(IssueError, match="'number' must be a whole number from 0 to"):
        load_issue(write_raw(tmp_path, "n", f"number: {number}\n"))


SINGLE_LINE_FIELDS = {
    "title": 'title: "{}"\n',
    "subtitle": 'subtitle: "{}"\n',
    "subject": 'subject: "{}"\n',
    "preheader": 'preheader: "{}"\n',
    "tags": 'tags: ["ok", "{}"]\n',
    "promo.title": 'promo:\n  title: "{}"\n',
    "promo.label": 'promo:\n  title: Buy\n  label: "{}"\n',
    "poll.question": 'poll:\n  question: "{}"\n  options: [a, b]\n',
    "poll.options": 'poll:\n  question: Q\n  options: [a, "{}"]\n',
    "share.text": 'share:\n  text: "{}"\n',
}


@pytest.mark.parametrize("field", sorted(SINGLE_LINE_FIELDS))
@pytest.mark.parametrize("char", ["\\r\\nBcc: x@example.com", "\\u2028", "\\u2029", "\\x1b[31m"])
def test_line_breaks_and_controls_in_single_line_fields_are_refused(
    tmp_path: Path, field: str, char: str
):
    """A field that becomes a header or a single line may not carry CR/LF, a Unicode line
    or paragraph separator or a control character."""
    front = SINGLE_LINE_FIELDS[field].format(f"a{char}b")
    if field == "title":
        path = tmp_path / "issues" / "t.md"
        path.parent.mkdir()
        path.write_text(f"---\ndate: 2025-02-03\n{front}---\nHi\n", encoding="utf-8")
    else:
        path = write_raw(tmp_path, "f", front)
    kind = "(the control character|the line separator|the paragraph separator|a line break \\()"
    with pytest.raises(IssueError, match=f"'{field}' contains {kind} ?U\\+"):
        load_issue(path)


def test_promo_body_keeps_its_line_breaks_but_not_control_characters(tmp_path: Path):
    """promo.body is Markdown: new lines are fine, an escape character is not."""
    fine = write_raw(tmp_path, "ok", 'promo:\n  title: T\n  body: "one\\n\\ntwo"\n')
    assert load_issue(fine).promo.body == "one\n\ntwo"  # type: ignore[union-attr]
    bad = write_raw(tmp_path, "bad", 'promo:\n  title: T\n  body: "a\\x1bb"\n')
    with pytest.raises(IssueError, match=r"'promo.body' contains the control character U\+001B"):
        load_issue(bad)


def test_control_character_in_the_text_is_refused_with_its_line(tmp_path: Path):
    """A NUL or escape byte in the Markdown is named with its line, not an MJML error."""
    path = write_raw(tmp_path, "ctl", "", body="fine\nalso fine\nbad \x00 byte\n")
    with pytest.raises(IssueError, match=r"ctl.md:7: the text contains the control character"):
        load_issue(path)


def test_folded_title_is_one_line(tmp_path: Path):
    """A title folded over several YAML lines (`>`) keeps working: it is one line."""
    path = tmp_path / "folded.md"
    path.write_text("---\ntitle: >\n  Two\n  lines\ndate: 2025-02-03\n---\nHi\n")
    assert load_issue(path).title == "Two lines"


def test_check_calls_a_separator_in_the_subject_an_error(newsletter: Path):
    """`check` does not call `subject: "a\\u2028b"` clean: exit 2, one line."""
    write_raw(newsletter, "sep", BROKEN["separator-subject"])
    result = run_cli("check", "sep", "--no-links", cwd=newsletter)
    assert result.returncode == 2
    assert "'subject' contains the line separator U+2028" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


# -- dispatch and list survive every broken file -----------------------------------------


def broken_newsletter(root: Path) -> Path:
    """Every broken file of BROKEN, plus issue-1 due at NOW; all due if they could load."""
    for name, front in BROKEN.items():
        write_raw(root, name, DUE + front)
    return write_issue(root, "issue-1", MINIMAL + DUE)


def test_dispatch_reports_each_broken_file_and_still_sends_the_due_issue(newsletter: Path):
    """In-process dispatch (outbox): one failed item per broken file, and issue-1 goes out."""
    broken_newsletter(newsletter)
    report = dispatch(load_settings(newsletter, env={}), NOW)
    outcomes = {item.slug: item.outcome for item in report.items}
    assert outcomes == {"issue-1": Outcome.SENT, **dict.fromkeys(BROKEN, Outcome.FAILED)}
    assert (newsletter / "outbox" / "issue-1" / "send.eml").is_file()
    for item in report.items:
        if item.slug != "issue-1":
            assert item.message.startswith(str(newsletter / "issues" / f"{item.slug}.md:"))


@pytest.mark.slow
def test_dispatch_and_list_processes_print_one_line_per_broken_file(newsletter: Path):
    """Real `spark-mail dispatch` and `list`: one error line per broken file, no traceback;
    the due issue is sent; list shows an error row for each broken file."""
    broken_newsletter(newsletter)
    sent = run_cli("dispatch", "--now", "2025-01-20T08:00", cwd=newsletter)
    assert sent.returncode == 1, sent.stderr
    assert "sent issue-1" in sent.stdout
    errors = sent.stderr.strip().splitlines()
    assert len(errors) == len(BROKEN) and "Traceback" not in sent.stderr, sent.stderr
    for name in BROKEN:
        assert sum(f"{name}.md:" in line for line in errors) == 1, (name, errors)
    listed = run_cli("list", "--json", cwd=newsletter)
    assert listed.returncode == 0, listed.stderr
    rows = {row["slug"]: row for row in json.loads(listed.stdout)["issues"]}
    assert {slug for slug, row in rows.items() if row["error"]} == set(BROKEN)
    assert rows["issue-1"]["status"] == "sent"
    table = run_cli("list", cwd=newsletter)
    assert table.returncode == 0 and "Traceback" not in table.stderr + table.stdout


# -- slugs: a safe single path segment ---------------------------------------------------


@pytest.mark.parametrize(
    "name", ["...md", ".md", ".hidden.md", "-rf.md", "tab\there.md", "esc\x1b[31m.md", "café.md"]
)
def test_unsafe_issue_file_names_are_refused(tmp_path: Path, name: str):
    """`...md` (slug `..`), `.md`, dot or dash first, control characters, non-ASCII: one
    printable line that suggests a name."""
    path = tmp_path / name
    path.write_text(f"---\n{MINIMAL}---\nHi\n")
    with pytest.raises(IssueError) as caught:
        load_issue(path)
    message = str(caught.value)
    assert "cannot be an issue" in message and "rename the file" in message
    assert message.isprintable(), message


def test_ledger_locks_use_the_same_slug_rule():
    """A lock file is never made for a name the slug rule refuses."""
    from spark_mail.errors import LedgerError
    from spark_mail.ledger.locks import IssueLocks

    locks = IssueLocks(Path("/nonexistent/ledger.sqlite3"))
    for bad in ("..", ".x", "-x", "a/b", ""):
        with pytest.raises(LedgerError):
            locks.path(bad)


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under root (files with their bytes), outside dist/ and .spark-mail/."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if not relative.startswith(("dist/", ".spark-mail/")):
            found[relative] = path.read_bytes() if path.is_file() else None
    return found


@pytest.mark.slow
def test_dotdot_issue_writes_nothing_outside_its_folders_and_deletes_nothing(newsletter: Path):
    """`issues/...md` (whose stem is `..`): build, send --dry-run and an outbox send are
    refused with one line; `<root>/dry-run/` survives and nothing new appears."""
    (newsletter / "issues" / "...md").write_text(f"---\n{MINIMAL}---\nHi\n")
    (newsletter / "dry-run").mkdir()
    (newsletter / "dry-run" / "keep.txt").write_text("mine")
    before = snapshot(newsletter)
    for args in (
        ("build", "issues/...md"),
        ("send", "issues/...md", "--dry-run"),
        ("send", "issues/...md", "--yes"),
    ):
        result = run_cli(*args, cwd=newsletter)
        assert result.returncode == 2, (args, result.stderr)
        assert "cannot be an issue" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert snapshot(newsletter) == before
    assert not (newsletter / "email.html").exists() and not (newsletter / "send.eml").exists()


@pytest.mark.slow
def test_outbox_files_of_similar_addresses_never_collide(newsletter: Path):
    """josé@, jos_@, josè@, josê@ and jose@ (one unsafe character apart): five readers
    recorded sent, five distinct files, each addressed to its reader."""
    readers = ["josé", "jos_", "josè", "josê", "jose"]
    readers = [f"{local}@example.com" for local in readers]
    (newsletter / "subscribers.csv").write_text("email\n" + "\n".join(readers) + "\n")
    settings = load_settings(
        newsletter,
        env={
            "SPARK_MAIL_AUDIENCE": "subscribers.csv",
            "SPARK_MAIL_SIGNING_SECRET": "outbox-signing-secret-0123456789",
        },
    )
    result = send_issue(SAMPLE_SLUG, settings, mode="send")
    assert result.summary and result.summary["sent"] == 5
    files = list((newsletter / "outbox" / SAMPLE_SLUG).glob("send-*.eml"))
    assert len(files) == 5
    recipients = {
        str(email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["To"])
        for f in files
    }
    assert recipients == set(readers)


# -- FIFOs and other non-regular files never block ---------------------------------------


def test_fifo_issue_is_refused_without_blocking(tmp_path: Path):
    """load_issue on a FIFO named like an issue: an IssueError at once, not a hang."""
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    raised: list[Exception] = []

    def load() -> None:
        try:
            load_issue(fifo)
        except Exception as exc:
            raised.append(exc)

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(timeout=5)
    if reader.is_alive():
        with fifo.open("wb"):  # a writer that closes at once: the blocked reader sees EOF
            pass
        reader.join(timeout=5)
        pytest.fail("load_issue blocked on a FIFO")
    assert isinstance(raised[0], IssueError) and "not a regular file" in str(raised[0])


@pytest.mark.parametrize("told", [None, 0, 10])  # the size fstat gives: true, /proc's, old
def test_an_issue_file_is_read_whole_up_to_the_cap_whatever_its_size_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, told: int | None
) -> None:
    """read_issue_file asks for the size fstat gives, not for the cap: a file that grew
    after fstat, or whose size says 0 (/proc), is still read to its end, and one over the
    cap is still refused (the cap made small here: 100 bytes)."""
    from spark_mail import files

    monkeypatch.setattr(files, "MAX_ISSUE_BYTES", 100)
    real_fstat = os.fstat

    def fstat(fd: int) -> os.stat_result:
        status = real_fstat(fd)
        if told is None:
            return status
        fields = list(status)
        fields[6] = told  # st_size
        return os.stat_result(fields)

    monkeypatch.setattr(files.os, "fstat", fstat)
    for size in (0, 1, 11, 99, 100):
        path = tmp_path / f"{size}.md"
        path.write_bytes((b"abcdefghij" * 10)[:size])
        assert files.read_issue_file(path) == path.read_bytes()
    for size in (101, 150):
        path = tmp_path / f"{size}.md"
        path.write_bytes(b"y" * size)
        with pytest.raises(IssueError, match="is larger than"):
            files.read_issue_file(path)


@pytest.mark.slow
def test_fifo_in_issues_does_not_block_dispatch_list_check_or_build(newsletter: Path):
    """Real processes with a deadline: a FIFO in issues/ is an error (row) for list and
    dispatch, which still send the due issue; check and build refuse it with one line."""
    os.mkfifo(newsletter / "issues" / "pipe.md")
    write_issue(newsletter, "issue-1", MINIMAL + DUE)
    sent = run_cli("dispatch", "--now", "2025-01-20T08:00", cwd=newsletter, timeout=30)
    assert sent.returncode == 1 and "sent issue-1" in sent.stdout, sent.stderr
    assert "pipe.md: is not a regular file" in sent.stderr
    listed = run_cli("list", "--json", cwd=newsletter, timeout=30)
    rows = {row["slug"]: row for row in json.loads(listed.stdout)["issues"]}
    assert "not a regular file" in rows["pipe"]["error"]
    for command in ("check", "build"):
        result = run_cli(command, "issues/pipe.md", cwd=newsletter, timeout=30)
        assert result.returncode == 2 and "not a regular file" in result.stderr
        assert "Traceback" not in result.stderr


def test_sample_issue_still_loads(tmp_path: Path):
    """The shipped sample passes every new rule."""
    shutil.copy(SAMPLE_ISSUE, tmp_path / SAMPLE_ISSUE.name)
    assert load_issue(tmp_path / SAMPLE_ISSUE.name).slug == SAMPLE_SLUG


# -- any front matter: an Issue or one IssueError ----------------------------------------

YAML_PIECES = [
    *sorted(KNOWN_KEYS),
    *":[]{}&*!|>-#'\"\n ,?%@`~\\\t.0123456789eE+_xé\u2028\x00",
    '"\\ud800"', '"\\x1b"', "2025-13-45", "9999-12-31T23:00-05:00", "!!timestamp", "!!binary",
    "!!python/object", "0x1F", "1:30:00", ".inf", "~", "<<", "&a", "*a",
]  # fmt: skip
YAML_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats()
    | st.text(max_size=20)
    | st.dates()
    | st.datetimes(timezones=st.none() | st.timezones()),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


def loads_or_refuses(front: str) -> None:
    """parse_issue gives an Issue or one printable IssueError, nothing else."""
    text = f"---\ntitle: T\ndate: 2025-01-20\n{front}\n---\nbody\n"
    try:
        parse_issue(Path("x.md"), text)
    except IssueError as exc:
        assert "\n" not in str(exc)
        str(exc).encode("utf-8")  # printable on any terminal: no lone surrogate


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(YAML_PIECES), max_size=40).map("".join))
def test_any_front_matter_text_is_an_issue_or_one_issue_error(front: str):
    """Random YAML-ish text: never another exception (ReaderError, AttributeError, ...)."""
    loads_or_refuses(front)


@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.dictionaries(st.sampled_from([*KNOWN_KEYS, "label", "question"]), YAML_VALUES))
def test_any_yaml_document_is_an_issue_or_one_issue_error(data: dict):
    """Valid YAML of every shape and type, as PyYAML writes it (explicit tags included).
    100 documents a run (hypothesis's default; ~30 ms each, nearly all of it hypothesis
    drawing the nested values): each run draws others, and a failure found is replayed
    first from hypothesis's database."""
    try:
        front = yaml.safe_dump(data, allow_unicode=True)
    except yaml.YAMLError:
        return
    loads_or_refuses(front)


@pytest.mark.parametrize(
    "send_at", ["9999-12-31T23:00:00-05:00", "'9999-12-31 23:59'", "0001-01-01T00:00:00+05:00"]
)
def test_send_at_at_the_edge_of_time_is_refused(tmp_path: Path, send_at: str):
    """A send_at near year 1 or 9999 overflows once read in UTC (schedule, the ledger):
    refused when the issue loads, with its line."""
    path = write_raw(tmp_path, "edge", f"send_at: {send_at}\n")
    with pytest.raises(IssueError, match=r"edge.md:4: 'send_at' .* is not a year from 1900"):
        load_issue(path)


def test_new_issue_from_a_very_long_title_gets_a_usable_slug(newsletter: Path):
    """`new` with a 300-character title names a file the slug rule accepts."""
    from spark_mail.drafting.new_issue import new_issue

    path = new_issue(load_settings(newsletter, env={}), "Word " * 60, dt.date(2025, 2, 3))
    assert load_issue(path).slug == path.stem and len(path.stem) <= 120
