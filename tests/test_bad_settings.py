"""Settings that cannot mean anything, or would reach a header broken, are refused when
settings load: one line naming the setting, nothing written, nothing sent (issue 9, items
10 and 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SAMPLE_SLUG, run_cli
from esp_server import FakeEsp, esp_env
from spark_mail.config import load_settings
from spark_mail.errors import ConfigError

HEADER_SETTINGS = {
    "unsubscribe_url": "https://tinybigspark.com/unsubscribe{}",
    "unsubscribe_mailto": "unsubscribe@tinybigspark.com{}",
    "from_address": "Tiny Big Spark <hello@tinybigspark.com>{}",
    "reply_to": "editors@tinybigspark.com{}",
    "name": "Tiny Big Spark{}",
}
INJECTIONS = ["\r\nBcc: victim@example.com", "\nX-Evil: 1", "\x00", "\u2028"]


def env_name(key: str) -> str:
    return "SPARK_MAIL_FROM" if key == "from_address" else f"SPARK_MAIL_{key.upper()}"


@pytest.mark.parametrize("key", sorted(HEADER_SETTINGS))
@pytest.mark.parametrize("injection", INJECTIONS)
def test_header_settings_with_line_breaks_are_refused_when_settings_load(
    tmp_path: Path, key: str, injection: str
):
    """CR/LF, NUL or a line separator in a setting that reaches a header: a ConfigError
    naming the setting, from the environment as from the settings file."""
    value = HEADER_SETTINGS[key].format(injection)
    with pytest.raises(ConfigError, match=f"setting '{key}' has a wrong value \\(it contains"):
        load_settings(tmp_path, env={env_name(key): value})
    toml_key = "from" if key == "from_address" else key
    # A JSON string is a TOML basic string: \r, \n and \uXXXX escapes alike.
    (tmp_path / "spark-mail.toml").write_text(f"{toml_key} = {json.dumps(value)}\n")
    with pytest.raises(ConfigError, match=f"spark-mail.toml: setting '{key}' has a wrong"):
        load_settings(tmp_path, env={})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("site_url", "https://editor:hunter2pass@news.example.com"),
        ("base_url", "https://editor:hunter2pass@news.example.com/p/{slug}"),
        ("unsubscribe_url", "https://editor:hunter2pass@news.example.com/unsubscribe"),
        ("poll_url", "https://hunter2pass@news.example.com/poll/{slug}?answer={index}"),
    ],
)
def test_a_password_in_an_address_readers_see_is_refused_unshown(
    tmp_path: Path, key: str, value: str
):
    """A staging site behind basic auth, its address with `user:password@`: every email's
    links and every archive page would carry the password. Refused when settings load,
    without repeating it."""
    with pytest.raises(ConfigError, match=f"setting '{key}'.*user name or password") as caught:
        load_settings(tmp_path, env={env_name(key): value})
    assert "hunter2pass" not in f"{caught.value} {caught.value.hint}"
    assert "***@news.example.com" in str(caught.value)


def test_refusal_is_one_printable_line(tmp_path: Path):
    """The value is shown escaped, so the error line itself cannot be split."""
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, env={"SPARK_MAIL_UNSUBSCRIBE_URL": "https://x.example/\r\nB: c"})
    assert str(caught.value).isprintable()
    assert "'https://x.example/\\r\\nB: c'" in str(caught.value)


def test_secret_with_a_line_break_is_refused_without_showing_it(tmp_path: Path):
    """An API key with a newline would break the Authorization header: refused, unshown."""
    with pytest.raises(ConfigError, match="setting 'api_key'") as caught:
        load_settings(tmp_path, env={"SPARK_MAIL_API_KEY": "re_secret\nvalue"})
    assert "re_secret" not in str(caught.value)


def test_undecodable_environment_value_is_refused(tmp_path: Path):
    """Bytes that are not UTF-8 in a variable arrive as lone surrogates: refused."""
    with pytest.raises(ConfigError, match="lone surrogate"):
        load_settings(tmp_path, env={"SPARK_MAIL_NAME": "Spark\udcff"})


def test_body_settings_may_span_lines(tmp_path: Path):
    """postal_address, disclaimer and share_text go into the body: line breaks are fine."""
    env = {"SPARK_MAIL_DISCLAIMER": "one\ntwo", "SPARK_MAIL_POSTAL_ADDRESS": "1 Road\nTown"}
    settings = load_settings(tmp_path, env=env)
    assert settings.disclaimer == "one\ntwo" and settings.postal_address == "1 Road\nTown"
    with pytest.raises(ConfigError, match="'disclaimer'"):
        load_settings(tmp_path, env={"SPARK_MAIL_DISCLAIMER": "bell\x07"})


@pytest.mark.slow
def test_check_and_dry_run_refuse_an_injected_unsubscribe_url(newsletter: Path, esp: FakeEsp):
    """`check` and `send --dry-run` exit 2 with one line; no dry-run files, no request."""
    env = esp_env(esp, "resend", SPARK_MAIL_UNSUBSCRIBE_URL="https://x.example/u\r\nBcc: v@x.io")
    for args in (("check", SAMPLE_SLUG, "--no-links"), ("send", SAMPLE_SLUG, "--dry-run")):
        result = run_cli(*args, cwd=newsletter, env=env)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "'unsubscribe_url'" in lines[0], lines
    assert not (newsletter / "dist").exists()
    assert esp.calls() == []


@pytest.mark.parametrize(
    "key",
    [
        "late_window_hours",
        "ledger_timeout",
        "send_timeout",
        "send_retry_seconds",
        "send_backoff",
        "link_timeout",
        "link_cache_hours",
        "progress_seconds",
        "send_rate",
    ],
)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-1", "1e999", "1e300"])
def test_number_settings_must_be_finite_and_sane(tmp_path: Path, key: str, value: str):
    """inf, nan, negative and absurd numbers are one ConfigError naming the setting."""
    with pytest.raises(ConfigError, match=f"setting '{key}' has a wrong value"):
        load_settings(tmp_path, env={f"SPARK_MAIL_{key.upper()}": value})


@pytest.mark.parametrize(
    ("key", "value"),
    [("send_timeout", "0"), ("link_timeout", "0"), ("smtp_port", "70000"), ("send_attempts", "-2")],
)
def test_limits_of_particular_settings(tmp_path: Path, key: str, value: str):
    """A zero timeout, a port above 65535, negative attempts: refused."""
    with pytest.raises(ConfigError, match=f"setting '{key}'"):
        load_settings(tmp_path, env={f"SPARK_MAIL_{key.upper()}": value})


def test_sane_numbers_still_load(tmp_path: Path):
    """Zero where zero means something (no late window, no wait) and ordinary values."""
    env = {"SPARK_MAIL_LATE_WINDOW_HOURS": "0", "SPARK_MAIL_LEDGER_TIMEOUT": "0.5"}
    settings = load_settings(tmp_path, env={**env, "SPARK_MAIL_SMTP_PORT": "465"})
    assert (settings.late_window_hours, settings.ledger_timeout) == (0.0, 0.5)
    assert settings.smtp_port == 465


# -- processes: one line, no traceback -------------------------------------------------


def one_error_line(result: object) -> str:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.slow
def test_infinite_late_window_and_nan_ledger_timeout_are_one_line(newsletter: Path):
    """`dispatch` with late_window_hours=inf and `status` with ledger_timeout=nan: exit 2."""
    result = run_cli("dispatch", cwd=newsletter, env={"SPARK_MAIL_LATE_WINDOW_HOURS": "inf"})
    assert result.returncode == 2 and "'late_window_hours'" in one_error_line(result)
    result = run_cli("status", cwd=newsletter, env={"SPARK_MAIL_LEDGER_TIMEOUT": "nan"})
    assert result.returncode == 2 and "'ledger_timeout'" in one_error_line(result)


@pytest.mark.slow
def test_build_out_pointing_at_a_file_is_one_line(newsletter: Path):
    """`build --out FILE`: a file stands where the folder must be: exit 2, file unchanged."""
    target = newsletter / "notes.txt"
    target.write_text("keep me")
    result = run_cli("build", SAMPLE_SLUG, "--out", "notes.txt", cwd=newsletter)
    assert result.returncode == 2
    assert "notes.txt: is a file, but a folder is needed there" in one_error_line(result)
    assert target.read_text() == "keep me"


@pytest.mark.slow
def test_state_dir_pointing_at_a_file_is_one_line_for_every_command(newsletter: Path):
    """state_dir = a file: status, send and dispatch each say so in one line (exit 2)."""
    (newsletter / "state").write_text("not a folder")
    env = {"SPARK_MAIL_STATE_DIR": "state"}
    write_due_issue(newsletter)
    for args in (("status",), ("send", SAMPLE_SLUG, "--yes"), ("dispatch", "--now", NOW)):
        result = run_cli(*args, cwd=newsletter, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert "state: is a file, but a folder is needed" in one_error_line(result)
    assert not (newsletter / "outbox").exists()


NOW = "2025-01-20T08:00"


def write_due_issue(root: Path) -> None:
    (root / "issues" / "due.md").write_text(
        "---\ntitle: Due\ndate: 2025-01-20\nsend_at: 2025-01-20T07:00:00-05:00\n---\nHi\n"
    )


@pytest.mark.slow
def test_schedule_at_the_end_of_time_is_one_line(newsletter: Path):
    """`schedule --at 9999-12-31T23:00-05:00` has no UTC time: exit 2, one line."""
    result = run_cli("schedule", SAMPLE_SLUG, "--at", "9999-12-31T23:00-05:00", cwd=newsletter)
    assert result.returncode == 2
    assert "--at: '9999-12-31T23:00-05:00'" in one_error_line(result)


@pytest.mark.slow
def test_unclosed_ipv6_api_url_is_one_line(newsletter: Path):
    """SPARK_MAIL_API_URL=http://[::1 is not a URL: exit 2, one line, nothing sent."""
    env = {
        "SPARK_MAIL_PROVIDER": "resend",
        "SPARK_MAIL_API_KEY": "re_key_0123456789",
        "SPARK_MAIL_AUDIENCE_ID": "seg",
        "SPARK_MAIL_API_URL": "http://[::1",
    }
    result = run_cli("send", SAMPLE_SLUG, "--yes", cwd=newsletter, env=env)
    assert result.returncode == 2
    assert "SPARK_MAIL_API_URL 'http://[::1' is not an http(s) URL" in one_error_line(result)
