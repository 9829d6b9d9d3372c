"""`spark-mail send` as a real process against the fake ESP on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SAMPLE_SLUG, run_cli
from esp_server import esp_env

KEY = "re_live_Sup3rSecretKey"


def write_env(root: Path, env: dict[str, str]) -> None:
    """Settings go in .env, as an editor would keep them (the key too)."""
    (root / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))


def secret_leaks(root: Path, *outputs: str) -> list[str]:
    """Every output and every file spark-mail wrote (not .env itself) that holds the key."""
    found = [f"output {i}" for i, text in enumerate(outputs) if KEY in text]
    for path in root.rglob("*"):
        if path.is_file() and path.name != ".env" and KEY.encode() in path.read_bytes():
            found.append(str(path))
    return found


def test_send_yes_sends_once_then_refuses(esp, newsletter):
    """--yes sends (exit 0, JSON); the second send exits 1 with one line; one broadcast."""
    esp.api_key = KEY
    write_env(newsletter, esp_env(esp, "resend"))
    first = run_cli("send", SAMPLE_SLUG, "--yes", "--json", cwd=newsletter)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["outcome"] == "sent"
    second = run_cli("send", SAMPLE_SLUG, "--yes", cwd=newsletter)
    assert second.returncode == 1
    assert "already sent" in second.stderr and "Traceback" not in second.stderr
    assert len(esp.audience_sends) == 1
    assert secret_leaks(newsletter, first.stdout, first.stderr, second.stdout, second.stderr) == []


def test_send_without_a_terminal_or_yes_refuses(esp, newsletter):
    """From cron (no terminal) without --yes: exit 2, nothing sent."""
    write_env(newsletter, esp_env(esp, "resend"))
    result = run_cli("send", SAMPLE_SLUG, cwd=newsletter)
    assert result.returncode == 2
    assert "--yes" in result.stderr
    assert esp.calls() == []


@pytest.mark.slow
def test_dry_run_writes_requests_without_the_key_and_sends_nothing(esp, newsletter):
    """--dry-run: summary, files in dist/<slug>/dry-run/, no request, no key anywhere."""
    esp.api_key = KEY
    write_env(newsletter, esp_env(esp, "buttondown"))
    result = run_cli("send", SAMPLE_SLUG, "--dry-run", "--json", cwd=newsletter)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["mode"] == "dry-run" and summary["requests"] == 2
    assert (newsletter / "dist" / SAMPLE_SLUG / "dry-run" / "summary.json").is_file()
    assert esp.calls() == []
    assert secret_leaks(newsletter, result.stdout, result.stderr) == []


@pytest.mark.slow
def test_test_send_with_to_reaches_only_the_editor(esp, newsletter):
    """--test --to: one [TEST] message to that address; no broadcast."""
    write_env(newsletter, esp_env(esp, "resend"))
    result = run_cli("send", SAMPLE_SLUG, "--test", "--to", "ed@example.com", cwd=newsletter)
    assert result.returncode == 0, result.stderr
    (request,) = esp.calls()
    assert request.path == "/emails" and request.body["to"] == ["ed@example.com"]
    assert request.body["subject"].startswith("[TEST] ")


@pytest.mark.slow
def test_esp_error_is_one_line_with_exit_1(esp, newsletter):
    """A wrong key: one line naming SPARK_MAIL_API_KEY, exit 1, no traceback, key hidden."""
    env = esp_env(esp, "resend")
    env["SPARK_MAIL_API_KEY"] = KEY  # the server expects another key
    write_env(newsletter, env)
    result = run_cli("send", SAMPLE_SLUG, "--yes", cwd=newsletter)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "resend: 403 invalid_api_key" in lines[0] and "SPARK_MAIL_API_KEY" in lines[0]
    assert secret_leaks(newsletter, result.stdout, result.stderr) == []


def test_unknown_provider_suggests_the_right_one(newsletter):
    """SPARK_MAIL_PROVIDER=resnd: exit 2 and `did you mean 'resend'`."""
    result = run_cli(
        "send", SAMPLE_SLUG, "--dry-run", cwd=newsletter, env={"SPARK_MAIL_PROVIDER": "resnd"}
    )
    assert result.returncode == 2
    assert "did you mean 'resend'" in result.stderr


def test_header_injection_in_to_is_refused(esp, newsletter):
    """--to with CR/LF: exit 2, one line, nothing sent."""
    write_env(newsletter, esp_env(esp, "resend"))
    result = run_cli(
        "send", SAMPLE_SLUG, "--test", "--to", "a@example.com\r\nBcc: x@evil.test", cwd=newsletter
    )
    assert result.returncode == 2
    assert "line break" in result.stderr
    assert esp.calls() == []


def test_dry_run_and_test_exclude_each_other(newsletter):
    """--dry-run --test is a usage error."""
    result = run_cli("send", SAMPLE_SLUG, "--dry-run", "--test", cwd=newsletter)
    assert result.returncode == 2
    assert "exclude each other" in result.stderr
