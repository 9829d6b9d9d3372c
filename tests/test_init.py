"""`spark-mail init`: a newsletter from an empty folder, and nothing touched where one exists."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from conftest import REPO, run_cli, run_on_terminal
from spark_mail.config import PACKAGE_LAYOUTS, load_settings
from spark_mail.errors import ConfigError
from spark_mail.init import (
    create_newsletter,
    machine_timezone,
    newsletter_spec,
    settings_toml,
)

FLAGS = (
    "--name", "Tiny Big Spark", "--from", "hello@news.example.com",
    "--postal-address", "548 Market St #41620, San Francisco, CA 94104",
    "--url", "https://news.example.com", "--timezone", "Europe/Paris",
)  # fmt: skip
ANSWERS = {
    "--name": "Tiny Big Spark",
    "--from": "hello@news.example.com",
    "--postal-address": "548 Market St, San Francisco",
    "--url": "https://news.example.com",
}


def tree(folder: Path) -> dict[str, tuple[int, bytes | None, int]]:
    """Every path under `folder` with its mode, content and modification time."""
    found = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        content = path.read_bytes() if path.is_file() else None
        found[str(path.relative_to(folder))] = (st.st_mode, content, st.st_mtime_ns)
    return found


def readme_settings() -> set[str]:
    """The keys of the README's settings table ("The newsletter settings")."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The newsletter settings", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {key for row in rows for key in re.findall(r"`([a-z_]+)`", row)}


def test_generated_settings_list_every_documented_setting_and_load_back(tmp_path: Path) -> None:
    """spark-mail.toml names every setting the README documents (set or commented) and loads
    back with the answers, the page URLs under --url written out."""
    spec = newsletter_spec(ANSWERS, reply_to="editors@news.example.com", timezone="Asia/Tokyo")
    text = settings_toml(spec)
    keys = set(re.findall(r"^(?:# )?([a-z_]+) = ", text, re.M))
    documented = readme_settings()
    assert {"name", "site_url", "audience", "ledger_timeout", "logo_url"} <= documented
    assert documented - keys == set()
    assert tomllib.loads(text)["brand"] == {}  # [brand] is last and holds only its own keys
    create_newsletter(tmp_path, spec, secret="s" * 43)
    settings = load_settings(tmp_path, env={})
    assert settings.name == "Tiny Big Spark"
    assert settings.from_address == "Tiny Big Spark <hello@news.example.com>"
    assert settings.reply_to == "editors@news.example.com"
    assert settings.timezone == "Asia/Tokyo"
    assert settings.base_url == "https://news.example.com/issues/{slug}/"
    assert settings.unsubscribe_url == "https://news.example.com/unsubscribe"
    assert settings.poll_url == "https://news.example.com/poll/{slug}?answer={index}"
    assert 'unsubscribe_url = "https://news.example.com/unsubscribe"' in text
    assert settings.signing_secret.reveal() == "s" * 43


@pytest.mark.slow
def test_init_makes_a_private_env_that_git_ignores(tmp_path: Path) -> None:
    """init DIR with flags and no terminal: .env is 0600 with a fresh signing secret, and git
    ignores .env, .spark-mail/, dist/, outbox/, .venv/ and site/; the secret is never printed."""
    if shutil.which("git") is None:
        pytest.skip("git is needed")
    result = run_cli("init", "news", *FLAGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    news = tmp_path / "news"
    env = news / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    secret = re.search(r"^SPARK_MAIL_SIGNING_SECRET=(\S+)$", env.read_text(), re.M)
    assert secret and len(secret.group(1)) >= 40
    assert secret.group(1) not in result.stdout + result.stderr
    assert secret.group(1) not in (news / ".env.example").read_text()
    assert (news / "issues").is_dir()
    assert "spark-mail -C news new" in result.stdout  # the next three commands
    assert "--test --to hello@news.example.com" in result.stdout
    subprocess.run(["git", "init", "-q"], cwd=news, check=True)
    ignored = [".env", ".spark-mail/", "dist/", "outbox/", ".venv/", "site/"]
    check = subprocess.run(
        ["git", "check-ignore", *ignored], cwd=news, capture_output=True, text=True
    )
    assert check.stdout.split() == ignored
    kept = subprocess.run(
        ["git", "check-ignore", "spark-mail.toml", ".env.example", "issues/x.md"], cwd=news
    )
    assert kept.returncode == 1  # none of those is ignored


def test_env_is_never_readable_by_others(tmp_path: Path) -> None:
    """With a permissive umask (0) .env is still 0600 while the settings file is 0666: the
    mode comes from the call that creates the file."""
    old = os.umask(0)
    try:
        create_newsletter(tmp_path, newsletter_spec(ANSWERS))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "spark-mail.toml").stat().st_mode) == 0o666


@pytest.mark.slow
def test_init_without_a_terminal_names_every_missing_flag_and_writes_nothing(
    tmp_path: Path,
) -> None:
    """No terminal and no --from / --url: one line naming both, exit 2, the folder untouched."""
    result = run_cli("init", "--name", "News", "--postal-address", "1 Main St", cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "init needs --from and --url" in lines[0]
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_init_refuses_a_newsletter_folder_and_changes_nothing(tmp_path: Path) -> None:
    """A second init in the same folder exits non-zero and leaves every file as it was."""
    assert run_cli("init", *FLAGS, cwd=tmp_path).returncode == 0
    before = tree(tmp_path)
    again = run_cli("init", *FLAGS, "--layout", "mine", cwd=tmp_path)
    assert again.returncode != 0
    assert "is a newsletter already" in again.stderr and "nothing was changed" in again.stderr
    assert tree(tmp_path) == before


@pytest.mark.slow
def test_init_asks_on_a_terminal_and_asks_again_after_a_bad_answer(tmp_path: Path) -> None:
    """On a terminal the missing answers are prompted for; a bad URL is asked again."""
    code, printed = run_on_terminal(
        "init", "--timezone", "UTC", cwd=tmp_path,
        answers=[
            ("name", "Prompted News"),
            ("Sender address", "hi@prompted.example.com"),
            ("Postal address", "2 Side St, Springfield"),
            ("public site", "http://insecure.example.com"),
            ("public site", "prompted.example.com"),
        ],
    )  # fmt: skip
    assert code == 0, printed
    assert "not an https site address" in printed
    settings = load_settings(tmp_path, env={})
    assert settings.name == "Prompted News"
    assert settings.site_url == "https://prompted.example.com"
    assert settings.postal_address == "2 Side St, Springfield"


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--url", "http://news.example.com", "not an https site address"),
        ("--from", "not an address", "not an email address"),
        ("--timezone", "Mars/Olympus", "not a time zone"),
        ("--layout", "../x", "not a folder name"),
    ],
)
def test_init_checks_every_answer_before_writing(
    tmp_path: Path, flag: str, value: str, message: str
) -> None:
    """A bad flag value is a ConfigError naming the flag, raised before any file exists."""
    answers = {**ANSWERS, flag: value}
    with pytest.raises(ConfigError, match=re.escape(flag)) as caught:
        newsletter_spec(
            answers,
            timezone=answers.get("--timezone", "UTC"),
            layout=answers.get("--layout"),
        )
    assert message in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_layout_flag_copies_the_default_layout_to_customise(tmp_path: Path) -> None:
    """--layout mine: layouts/mine/ is a full copy of the packaged default layout."""
    result = create_newsletter(tmp_path, newsletter_spec(ANSWERS, layout="mine"))
    copied = tmp_path / "layouts" / "mine"
    packaged = PACKAGE_LAYOUTS / "default"
    assert "layouts/mine/" in result.created
    names = sorted(str(p.relative_to(copied)) for p in copied.rglob("*.mjml"))
    assert names == sorted(str(p.relative_to(packaged)) for p in packaged.rglob("*.mjml"))
    assert (copied / "email.mjml").read_bytes() == (packaged / "email.mjml").read_bytes()


def test_init_in_an_existing_project_keeps_its_files(tmp_path: Path) -> None:
    """An existing .gitignore gets only the missing lines; an existing .env is not touched."""
    (tmp_path / ".gitignore").write_text("node_modules/\ndist\n")
    (tmp_path / ".env").write_text("OTHER_TOOL=1\n")
    result = create_newsletter(tmp_path, newsletter_spec(ANSWERS))
    ignore = (tmp_path / ".gitignore").read_text().splitlines()
    assert ignore[:2] == ["node_modules/", "dist"] and "dist/" not in ignore
    assert {".env", ".spark-mail/", "outbox/", ".venv/", "site/"} <= set(ignore)
    assert (tmp_path / ".env").read_text() == "OTHER_TOOL=1\n"
    assert ".env" not in result.created and any("kept the existing .env" in n for n in result.notes)


def test_a_failed_init_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    """A write that fails half-way (layouts/ is a file) removes what the run had created."""
    (tmp_path / "layouts").write_text("not a folder")
    before = tree(tmp_path)
    with pytest.raises(ConfigError, match="nothing was changed"):
        create_newsletter(tmp_path, newsletter_spec(ANSWERS, layout="mine"))
    assert tree(tmp_path) == before


def test_machine_timezone_reads_tz_then_localtime_then_says_it_uses_utc(tmp_path: Path) -> None:
    """TZ wins when it names a zone; else /etc/localtime's link; else UTC, with a note."""
    zoneinfo = tmp_path / "usr" / "share" / "zoneinfo" / "America"
    zoneinfo.mkdir(parents=True)
    (zoneinfo / "Chicago").write_bytes(b"TZif")
    link = tmp_path / "localtime"
    link.symlink_to(zoneinfo / "Chicago")
    nothing = tmp_path / "missing"
    assert machine_timezone(":Asia/Tokyo", link, nothing) == ("Asia/Tokyo", "")
    assert machine_timezone(None, link, nothing) == ("America/Chicago", "")
    assert machine_timezone("EST5EDT,M3.2.0,M11.1.0", link, nothing) == ("America/Chicago", "")
    zone, note = machine_timezone(None, nothing, nothing)
    assert zone == "UTC" and "UTC" in note and "--timezone" in note
