"""The issue file format: front matter fields, defaults, and every bad input."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from conftest import SAMPLE_ISSUE, write_issue
from spark_mail.errors import IssueError
from spark_mail.issue import load_issue, resolve_issue_path

MINIMAL = "title: Hello\ndate: 2025-02-03"


def test_sample_issue_has_every_section():
    """The shipped sample issue uses every part of the format."""
    issue = load_issue(SAMPLE_ISSUE)
    assert issue.title.startswith("Engineering Leadership")
    assert issue.date == dt.date(2025, 1, 20)
    assert issue.promo and issue.promo.label == "PROMO CONTENT"
    assert issue.poll and issue.poll.question == "How would you rate today's newsletter?"
    assert "::: sponsor Refind" in issue.body
    assert issue.share.text


def test_minimal_issue_gets_defaults(tmp_path: Path):
    """Only title and date are required; subject defaults to the title, layout to default."""
    issue = load_issue(write_issue(tmp_path, "min", MINIMAL))
    assert issue.effective_subject == "Hello"
    assert issue.layout == "default"
    assert issue.promo is None and issue.poll is None
    assert issue.slug == "min"


def test_optional_fields_are_typed(tmp_path: Path):
    """send_at keeps its offset, tags become a tuple, promo label defaults."""
    front = (
        MINIMAL
        + "\nsend_at: 2025-02-03T07:30:00+01:00\nnumber: 7\ntags: [a, b]\n"
        + "promo:\n  title: Buy\n  cta_text: Go\n  cta_url: https://x.example/\n"
        + "poll:\n  question: Q?\n  options: [yes, no]\n"
    )
    issue = load_issue(write_issue(tmp_path, "full", front))
    assert issue.send_at == dt.datetime(
        2025, 2, 3, 7, 30, tzinfo=dt.timezone(dt.timedelta(hours=1))
    )
    assert issue.number == 7
    assert issue.tags == ("a", "b")
    assert issue.promo is not None and issue.promo.label == "PROMO CONTENT"
    assert issue.poll is not None and issue.poll.options == ("yes", "no")


def test_send_at_without_offset_stays_naive(tmp_path: Path):
    """A send_at with no offset is kept naive, to be read in the newsletter's timezone."""
    issue = load_issue(write_issue(tmp_path, "naive", MINIMAL + "\nsend_at: '2025-02-03 07:30'"))
    assert issue.send_at == dt.datetime(2025, 2, 3, 7, 30)
    assert issue.send_at.tzinfo is None


def test_resolve_issue_by_slug(tmp_path: Path):
    """An issue can be named by its slug instead of its path."""
    path = write_issue(tmp_path, "2025-02-03-hello", MINIMAL)
    assert resolve_issue_path("2025-02-03-hello", tmp_path / "issues") == path


def bad(tmp_path: Path, text: str | bytes) -> IssueError:
    path = tmp_path / "issues" / "bad.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(IssueError) as info:
        load_issue(path)
    assert str(path) in str(info.value), "the error names the file"
    return info.value


def test_rejects_missing_front_matter(tmp_path: Path):
    """A file without front matter says so, at line 1."""
    err = bad(tmp_path, "# Just markdown\n")
    assert "no front matter" in str(err) and err.line == 1


def test_rejects_unclosed_front_matter(tmp_path: Path):
    """Front matter that is never closed says so."""
    assert "never closed" in str(bad(tmp_path, "---\ntitle: x\ndate: 2025-01-01\n"))


def test_rejects_yaml_syntax_error_with_line(tmp_path: Path):
    """A YAML error names the line in the file."""
    err = bad(tmp_path, "---\ntitle: x\ndate: 2025-01-01\npoll: [a, b\nsubject: y\n---\nbody\n")
    assert "not valid YAML" in str(err)
    assert err.line is not None and 4 <= err.line <= 6


@pytest.mark.parametrize("missing", ["title", "date"])
def test_rejects_missing_required_field(tmp_path: Path, missing: str):
    """title and date are required."""
    lines = {"title": "title: x", "date": "date: 2025-01-01"}
    del lines[missing]
    err = bad(tmp_path, f"---\n{next(iter(lines.values()))}\n---\nbody\n")
    assert f"no '{missing}'" in str(err)


@pytest.mark.parametrize("value", ["tomorrow", "2025-13-45", "20/01/2025"])
def test_rejects_date_that_is_not_a_date(tmp_path: Path, value: str):
    """A date that does not parse names the key's line and the format."""
    err = bad(tmp_path, f"---\ntitle: x\ndate: {value}\n---\nbody\n")
    assert "'date' is not a date" in str(err) and err.line == 3
    assert "YYYY-MM-DD" in str(err)


def test_rejects_bad_send_at(tmp_path: Path):
    """send_at must be ISO 8601."""
    err = bad(tmp_path, "---\ntitle: x\ndate: 2025-01-01\nsend_at: next monday\n---\nb\n")
    assert "'send_at' is not a date and time" in str(err) and err.line == 4


@pytest.mark.parametrize("count", [1, 6])
def test_rejects_poll_with_wrong_number_of_options(tmp_path: Path, count: int):
    """A poll has 2 to 5 options."""
    options = ", ".join(f"o{i}" for i in range(count))
    err = bad(
        tmp_path,
        f"---\ntitle: x\ndate: 2025-01-01\npoll:\n  question: Q\n  options: [{options}]\n---\n",
    )
    assert f"this one has {count}" in str(err) and err.line == 6


def test_rejects_unknown_key_with_suggestion(tmp_path: Path):
    """A typo in a key gets a 'did you mean'."""
    err = bad(tmp_path, "---\ntitle: x\ndate: 2025-01-01\npreheadr: hi\n---\n")
    assert "unknown front matter key 'preheadr'" in str(err) and "preheader" in str(err)
    assert err.line == 4


def test_rejects_wrong_types(tmp_path: Path):
    """number must be a whole number; promo must be a table."""
    assert "'number' must be a whole number" in str(
        bad(tmp_path, "---\ntitle: x\ndate: 2025-01-01\nnumber: seven\n---\n")
    )
    assert "'promo' must be a table" in str(
        bad(tmp_path, "---\ntitle: x\ndate: 2025-01-01\npromo: buy now\n---\n")
    )


def test_rejects_non_utf8_file(tmp_path: Path):
    """A file that is not UTF-8 names the line with the bad byte."""
    err = bad(tmp_path, b"---\ntitle: caf\xe9\ndate: 2025-01-01\n---\n")
    assert "not UTF-8" in str(err) and err.line == 2


def test_rejects_missing_and_unreadable_files(tmp_path: Path):
    """A missing file or a folder gives one clear message."""
    with pytest.raises(IssueError, match="no such file"):
        load_issue(tmp_path / "nope.md")
    with pytest.raises(IssueError, match="is a folder"):
        load_issue(tmp_path)


def test_yes_no_poll_options_stay_text(tmp_path: Path):
    """YAML 1.1 would turn Yes/No into booleans; a poll option must keep its words."""
    front = MINIMAL + "\npoll:\n  question: Useful?\n  options: [Yes, No, 'On']"
    issue = load_issue(write_issue(tmp_path, "yn", front))
    assert issue.poll is not None and issue.poll.options == ("Yes", "No", "On")


@pytest.mark.parametrize(
    "url",
    ["javascript:alert(document.cookie)", " JavaScript:alert(1)", "data:text/html,x", "/offer"],
)
def test_a_promo_button_goes_to_a_web_or_mail_address_only(tmp_path: Path, url: str):
    """A `javascript:` or `data:` button would run in the archive's web page; a bare path
    leads nowhere from a mailbox: refused with the line, before anything is built."""
    front = MINIMAL + f"\npromo:\n  title: Buy\n  cta_text: Go\n  cta_url: '{url}'\n"
    path = write_issue(tmp_path, "promo", front)
    with pytest.raises(IssueError, match=r"cta_url.*https://") as caught:
        load_issue(path)
    line = path.read_text().splitlines().index(f"  cta_url: '{url}'") + 1
    assert str(caught.value).startswith(f"{path}:{line}: ")
