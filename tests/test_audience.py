"""Subscribers CSV: streamed, validated, deduplicated, suppressed; `spark-mail audience check`."""

from __future__ import annotations

import json
import random
import string
import tracemalloc
from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email

from conftest import run_cli
from spark_mail.audience import (
    AddressValidator,
    AudienceError,
    AudienceReport,
    check_audience,
    iter_readers,
)


def write_csv(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", newline="")
    else:
        path.write_bytes(text)
    return path


def read_all(path: Path, suppression: Path | None = None) -> tuple[list, AudienceReport]:
    report = AudienceReport(path)
    readers = list(iter_readers(path, suppression, report=report))
    return readers, report


def test_valid_rows_are_yielded_with_their_fields(tmp_path: Path):
    """Each valid row becomes a Reader with its address, every column and its line."""
    csv_file = write_csv(
        tmp_path / "s.csv", "email,first_name,plan\nann@example.com,Ann,pro\nbo@example.org,,\n"
    )
    readers, report = read_all(csv_file)
    assert [(r.email, r.line) for r in readers] == [("ann@example.com", 2), ("bo@example.org", 3)]
    assert readers[0].fields == {"email": "ann@example.com", "first_name": "Ann", "plan": "pro"}
    assert (report.total, report.valid, report.invalid, report.duplicates) == (2, 2, 0, 0)
    assert report.ok


def test_header_names_are_matched_loosely_with_bom_and_semicolons(tmp_path: Path):
    """A spreadsheet export (BOM, `;` delimiter, `Email` / `First Name`) reads the same."""
    csv_file = write_csv(
        tmp_path / "s.csv", "\ufeffEmail;First Name\nann@example.com;Ann\n".encode()
    )
    readers, _ = read_all(csv_file)
    assert readers[0].email == "ann@example.com"
    assert readers[0].fields["first_name"] == "Ann"


def test_duplicates_are_case_insensitive_first_kept_and_reported_with_lines(tmp_path: Path):
    """A later row of the same address (any case) is skipped and named with both lines."""
    csv_file = write_csv(
        tmp_path / "s.csv",
        "email,first_name\nAnn@Example.com,first\nbo@example.com,Bo\nann@EXAMPLE.COM,second\n",
    )
    readers, report = read_all(csv_file)
    assert [r.fields["first_name"] for r in readers] == ["first", "Bo"]
    assert report.duplicates == 1
    (dup,) = report.duplicate_rows
    assert dup.line == 4 and dup.email == "ann@EXAMPLE.COM" and "line 2" in dup.reason
    assert report.ok  # duplicates are skipped, not an error


def test_invalid_addresses_are_reported_with_line_numbers(tmp_path: Path):
    """Bad addresses, an empty address and a header-injection attempt are invalid rows."""
    csv_file = write_csv(
        tmp_path / "s.csv",
        'email,name\nok@example.com,a\nnot-an-address,b\n,c\nx@localhost,d\n"x\r\nBcc: y@z.com",e\n',
    )
    readers, report = read_all(csv_file)
    assert [r.email for r in readers] == ["ok@example.com"]
    assert [(p.line, p.email) for p in report.invalid_rows] == [
        (3, "not-an-address"),
        (4, ""),
        (5, "x@localhost"),
        (6, "x\r\nBcc: y@z.com"),
    ]
    assert "no email address" in report.invalid_rows[1].reason
    assert "invalid address" in report.invalid_rows[0].reason
    assert not report.ok and report.invalid == 4


def test_malformed_rows_are_reported_and_the_rest_still_read(tmp_path: Path):
    """Too many fields and a stray quote are invalid rows with their line; later rows count."""
    csv_file = write_csv(
        tmp_path / "s.csv",
        'email,name\na@example.com,A\nb@example.com,B,extra\nc@example.com,"C"c\n\nd@example.com,D\n',
    )
    readers, report = read_all(csv_file)
    assert [r.email for r in readers] == ["a@example.com", "d@example.com"]
    assert [r.line for r in readers] == [2, 6]  # the blank line 5 is skipped, lines stay true
    reasons = {p.line: p.reason for p in report.invalid_rows}
    assert set(reasons) == {3, 4}
    assert "3 fields but the header has 2" in reasons[3]
    assert "doubled" in reasons[4]


def test_unclosed_quote_is_reported_at_the_line_it_starts(tmp_path: Path):
    """An unclosed quote swallows the rest of the file: reported where it starts."""
    csv_file = write_csv(
        tmp_path / "s.csv", 'email,name\na@example.com,A\n"b@example.com,B\nc@example.com,C\n'
    )
    readers, report = read_all(csv_file)
    assert [r.email for r in readers] == ["a@example.com"]
    (problem,) = report.invalid_rows
    assert problem.line == 3 and "never closed" in problem.reason


def test_non_utf8_bytes_are_an_error_for_that_line_not_a_crash(tmp_path: Path):
    """A Latin-1 byte makes its row invalid (line and byte named); other rows are read."""
    csv_file = write_csv(
        tmp_path / "s.csv",
        b"email,first_name\na@example.com,Ann\nb@example.com,Ren\xe9\nc@example.com,Cy\n",
    )
    readers, report = read_all(csv_file)
    assert [r.email for r in readers] == ["a@example.com", "c@example.com"]
    (problem,) = report.invalid_rows
    assert problem.line == 3
    assert "not UTF-8" in problem.reason and "0xE9" in problem.reason


def test_suppression_columns_and_file_always_win(tmp_path: Path):
    """unsubscribed/bounced rows, listed addresses and addresses suppressed on ANY row
    (even a later one) are never yielded."""
    csv_file = write_csv(
        tmp_path / "s.csv",
        "email,unsubscribed,bounced\n"
        "keep@example.com,no,\n"
        "gone@example.com,yes,\n"
        "bounce@example.com,,TRUE\n"
        "later@example.com,,\n"
        "listed@example.com,0,false\n"
        "LATER@example.com,1,\n"
        "dated@example.com,,2024-05-01\n",
    )
    suppression = tmp_path / "suppressed.txt"
    suppression.write_text("# complaints\nListed@Example.com  # 2024-02\n", encoding="utf-8")
    readers, report = read_all(csv_file, suppression)
    assert [r.email for r in readers] == ["keep@example.com"]
    assert report.suppressed == 6
    assert report.suppressed_by == {
        "unsubscribed": 2,
        "bounced": 2,
        "suppression file": 1,
        "suppressed on another row": 1,
    }


def test_suppression_file_may_be_a_csv_with_an_email_column(tmp_path: Path):
    """An exported CSV (with an email column among others) works as a suppression file."""
    csv_file = write_csv(tmp_path / "s.csv", "email\na@example.com\nb@example.com\n")
    suppression = write_csv(tmp_path / "sup.csv", "reason,Email\nbounce,b@example.com\n")
    readers, report = read_all(csv_file, suppression)
    assert [r.email for r in readers] == ["a@example.com"] and report.suppressed == 1


def test_missing_suppression_file_is_an_error_not_ignored(tmp_path: Path):
    """A configured suppression file that is missing stops everything (never send blind)."""
    csv_file = write_csv(tmp_path / "s.csv", "email\na@example.com\n")
    with pytest.raises(AudienceError, match="suppression file not found"):
        read_all(csv_file, tmp_path / "missing.txt")


def test_missing_email_column_is_one_clear_error_naming_the_file(tmp_path: Path):
    """No `email` column: one error with the file, the columns found and the fix."""
    csv_file = write_csv(tmp_path / "s.csv", "mail,name\na@example.com,A\n")
    with pytest.raises(AudienceError) as info:
        read_all(csv_file)
    message = str(info.value)
    assert str(csv_file) in message and "no 'email' column" in message
    assert "mail, name" in message and "header row" in message


@pytest.mark.parametrize("content", ["", "email,first_name\n", "\n\n"])
def test_an_empty_list_is_an_error(tmp_path: Path, content: str):
    """An empty file or a header without rows is an error, not a send to nobody."""
    csv_file = write_csv(tmp_path / "s.csv", content)
    with pytest.raises(AudienceError, match=r"empty|no readers|no 'email' column"):
        read_all(csv_file)


def test_missing_file_is_an_error(tmp_path: Path):
    """A subscribers file that does not exist is one clear error."""
    with pytest.raises(AudienceError, match="subscribers file not found"):
        read_all(tmp_path / "nope.csv")


@pytest.mark.slow
def test_fast_address_check_agrees_with_email_validator():
    """The regex + per-domain fast path gives email-validator's verdict on tricky input."""
    rng = random.Random(6)
    alphabet = string.ascii_letters + string.digits + ".-_+!#$%&'*/=?^`{|}~@ ()\"\\,;:<>[]"
    domains = ["example.com", "EXAMPLE.org", "x.test", "localhost", "a-.com", "xn--bcher-kva.com",
               "ex_a.com", "1.2.3.4", "b.c", "-a.com", "a..b.com", "sub.example.co.uk"]  # fmt: skip
    samples = ["a" * 64 + "@example.com", "a" * 65 + "@example.com", "a@" + "b" * 250 + ".com"]
    for n in range(3000):
        letters = alphabet if n % 2 else string.ascii_letters + ".+-_"  # half mostly valid
        local = "".join(rng.choice(letters) for _ in range(rng.randint(0, 12)))
        samples.append(f"{local}@{rng.choice(domains)}")
    validator = AddressValidator()
    valid = 0
    for address in samples:
        try:
            expected: str | None = validate_email(address, check_deliverability=False).normalized
        except EmailNotValidError:
            expected = None
        try:
            got: str | None = validator.normalise(address)
        except ValueError:
            got = None
        assert got == expected, address
        valid += got is not None
    assert 500 < valid < len(samples) - 500  # both verdicts are well exercised


@pytest.mark.slow
def test_a_25_mb_list_streams_without_loading_the_file(tmp_path: Path):
    """10,000 readers with 2.5 KB rows (a ~25 MB file) are read with memory far below the
    file's size.

    10,000 rows of 2.5 KB rather than 100,000 of 250 bytes: the file is as big, and under
    tracemalloc every allocation is slow, so the time goes with the rows (6 s -> 0.5 s). The
    bound goes with the rows too: 200 bytes a reader (20 MB for 100,000 before), so keeping
    a reader's row (2.5 KB), or anything over 200 bytes a reader, fails as it did."""
    csv_file = tmp_path / "big.csv"
    readers = 10_000
    padding = "x" * 2500
    with csv_file.open("w", encoding="utf-8") as fh:
        fh.write("email,first_name,notes\n")
        fh.writelines(f"r{i}@example{i % 50}.com,R{i},{padding}\n" for i in range(readers))
    size = csv_file.stat().st_size
    tracemalloc.start()
    try:
        report = check_audience(csv_file)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.valid == readers
    # The dedupe index costs ~100 bytes a reader; the rows themselves are never all kept.
    assert peak < readers * 200 < size, (peak, size)


# -- the command -------------------------------------------------------------------------


def test_audience_check_reports_and_exits_1_on_invalid_rows(newsletter: Path):
    """`audience check` prints counts and each bad row with file:line; exit 1 when invalid."""
    write_csv(
        newsletter / "subscribers.csv",
        "email,first_name\na@example.com,A\nbad-address,B\nA@example.com,dup\n",
    )
    result = run_cli("audience", "check", "subscribers.csv", cwd=newsletter)
    assert result.returncode == 1, result.stderr
    assert "subscribers.csv:3: 'bad-address' invalid address" in result.stdout
    assert "subscribers.csv:4: 'A@example.com' duplicate of line 2" in result.stdout
    assert "Readers to send to" in result.stdout


def test_audience_check_prints_a_row_with_markup_as_written(newsletter: Path):
    """A row's text is shown as written, never read as console markup (repr() doubled the
    backslash that escaped it: `x[b]y` came out bold, `x[/]` crashed)."""
    write_csv(newsletter / "subscribers.csv", "email\na@example.com\nx[b]y\nx[/]\nx\\[b]\n")
    result = run_cli("audience", "check", "subscribers.csv", cwd=newsletter)
    assert result.returncode == 1, result.stderr
    assert "subscribers.csv:3: 'x[b]y' invalid address" in result.stdout
    assert "subscribers.csv:4: 'x[/]' invalid address" in result.stdout
    assert "subscribers.csv:5: 'x\\\\[b]' invalid address" in result.stdout


def test_audience_check_uses_the_setting_and_prints_json(newsletter: Path):
    """With `audience` set (here via the environment) --json gives counts; exit 0 if clean."""
    write_csv(newsletter / "list.csv", "email,unsubscribed\na@example.com,\nb@example.com,yes\n")
    result = run_cli(
        "audience", "check", "--json", cwd=newsletter, env={"SPARK_MAIL_AUDIENCE": "list.csv"}
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["total"], report["valid"], report["suppressed"]) == (2, 1, 1)
    assert report["invalid_rows"] == [] and report["path"].endswith("list.csv")


def test_audience_check_without_a_file_says_how_to_set_one(newsletter: Path):
    """No path and no setting: exit 2 with one line naming the setting; no traceback."""
    result = run_cli("audience", "check", cwd=newsletter)
    assert result.returncode == 2
    assert "SPARK_MAIL_AUDIENCE" in result.stderr and "Traceback" not in result.stderr


def test_audience_check_missing_column_exits_2_with_one_line(newsletter: Path):
    """A file without an email column: exit 2, one line naming the file."""
    write_csv(newsletter / "s.csv", "name\nAnn\n")
    result = run_cli("audience", "check", "s.csv", cwd=newsletter)
    assert result.returncode == 2
    assert "s.csv:1: no 'email' column" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
