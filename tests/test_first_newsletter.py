"""From an empty folder to the first cron send, as a new user goes: `init` (flags, no
terminal) -> `new` -> `build` -> `send --test` to a real SMTP server (aiosmtpd on 127.0.0.1)
-> a cron-style `spark-mail -C DIR dispatch` from another folder sends the due issue to the
readers; `.env` stays private and out of git, and a second `init` changes nothing."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from test_init import FLAGS, tree

from conftest import run_cli
from servers.smtp import Sink, serve

ISO_TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"


def set_line(path: Path, key: str, value: str) -> None:
    """Set `KEY=value` / `key = value` in a settings file as an editor would: the line that
    sets it (or has it commented out) is replaced in place."""
    text = path.read_text(encoding="utf-8")
    sep = " = " if path.suffix == ".toml" else "="
    pattern = rf"^(# )?{re.escape(key)}\s*=.*$"
    assert re.search(pattern, text, re.M), f"{key} is not in {path.name}"
    path.write_text(re.sub(pattern, f"{key}{sep}{value}", text, count=1, flags=re.M))


def finish_draft(path: Path, send_at: dt.datetime) -> None:
    """What the editor does to the stub: replace every TODO, set send_at."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"https://example\.com/TODO", "https://news.example.com/offer", text)
    text = re.sub(r"TODO:? ?", "", text)
    text = re.sub(r"^# send_at: .*$", f"send_at: {send_at.isoformat()}", text, flags=re.M)
    path.write_text(text, encoding="utf-8")


@pytest.mark.slow
def test_a_new_newsletter_goes_from_init_to_its_first_cron_send(tmp_path: Path) -> None:
    """init -> new -> build -> send --test (SMTP) -> `-C DIR dispatch` from elsewhere sends
    the due issue to both readers, once; .env is 0600 and git-ignored; init again: no change."""
    if shutil.which("git") is None:
        pytest.skip("git is needed")
    created = run_cli("init", "news", *FLAGS, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    news = tmp_path / "news"

    today = dt.date.today().isoformat()
    made = run_cli("-C", "news", "new", "My first issue", "--date", today, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    issue = Path(made.stdout.strip())
    slug = issue.stem
    assert issue == news / "issues" / f"{today}-my-first-issue.md"
    assert "number: 1" in issue.read_text()
    finish_draft(issue, dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=2))
    built = run_cli("build", slug, cwd=news)
    assert built.returncode == 0, built.stderr
    assert (news / "dist" / slug / "email.html").is_file()
    checked = run_cli("check", slug, "--no-links", cwd=news)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    sink = Sink()
    smtp = serve(sink)
    try:
        env_file = news / ".env"
        set_line(env_file, "SPARK_MAIL_PROVIDER", "smtp")
        set_line(env_file, "SPARK_MAIL_SMTP_HOST", "127.0.0.1")
        set_line(env_file, "SPARK_MAIL_SMTP_PORT", str(smtp.port))
        set_line(env_file, "SPARK_MAIL_SMTP_TLS", "none")
        tested = run_cli("send", slug, "--test", "--to", "editor@example.com", cwd=news)
        assert tested.returncode == 0, tested.stderr
        assert [m["to"] for m in sink.messages] == [["editor@example.com"]]
        assert b"Subject: [TEST] My first issue" in sink.messages[0]["data"]

        (news / "subscribers.csv").write_text(
            "email,first_name\nada@example.com,Ada\nbo@example.com,Bo\n"
        )
        set_line(news / "spark-mail.toml", "audience", '"subscribers.csv"')
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        cron = run_cli("-C", str(news), "dispatch", cwd=elsewhere)
        assert cron.returncode == 0, cron.stdout + cron.stderr
        assert re.search(rf"^{ISO_TIME} sent {slug} via smtp", cron.stdout, re.M), cron.stdout
        readers = sorted(m["to"][0] for m in sink.messages[1:])
        assert readers == ["ada@example.com", "bo@example.com"]
        copy = email.message_from_bytes(sink.messages[1]["data"], policy=email.policy.default)
        assert copy["Subject"] == "My first issue" and copy["List-Unsubscribe"]
        again = run_cli("-C", str(news), "dispatch", cwd=elsewhere)
        assert again.returncode == 0 and len(sink.messages) == 3  # once
        assert list(elsewhere.iterdir()) == []
    finally:
        smtp.stop()

    assert stat.S_IMODE((news / ".env").stat().st_mode) == 0o600
    subprocess.run(["git", "init", "-q"], cwd=news, check=True)
    ignored = subprocess.run(["git", "check-ignore", ".env"], cwd=news, capture_output=True)
    assert ignored.returncode == 0 and ignored.stdout.strip() == b".env"

    before = tree(news)
    second = run_cli("init", "news", *FLAGS, cwd=tmp_path)
    assert second.returncode != 0 and "nothing was changed" in second.stderr
    assert tree(news) == before
