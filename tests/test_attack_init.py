"""Attacks on the newcomer path (issue 11): `spark-mail init`, `-C DIR`, the `.env` init
writes and how it is read, a cron-style `dispatch -C DIR` from another folder.

Each test names what a hostile user or a misbehaving machine did and what must happen.
Real processes where users meet them (kills, terminals, cron's environment, git)."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_first_newsletter import finish_draft
from test_init import ANSWERS, FLAGS, tree
from waiting import poll_until
from write_hooks import clean_env, hooked

from conftest import REPO, WARM_CLI, WarmProcess, run_cli
from spark_mail.config import load_settings
from spark_mail.errors import ConfigError
from spark_mail.init import GITIGNORE, create_newsletter, newsletter_spec

ESC = "\x1b[31m"


def killed_at_write(tmp: Path, at: int, *args: str, cwd: Path) -> tuple[int, str]:
    """`spark-mail ARGS` killed at its `at`-th write (or its exit code when it makes
    fewer), and what it printed on stderr."""
    process = hooked(tmp, f"count:{at}", "kill", *args, cwd=cwd)
    _, err = process.communicate(timeout=60)
    return process.wait(), err


def wait_for(path: Path, proc: WarmProcess, timeout: float = 60) -> None:
    """Until `path` exists (the hooked process got there) or the process ends."""
    poll_until(path.exists, path.name, process=proc, timeout=timeout, interval=0.01)


def release(go: Path) -> None:
    """Let a process paused by WRITE_HOOK go on: a byte down its GO pipe. Nobody reading
    (it ended, or never paused) is fine."""
    try:
        fd = os.open(go, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader
        return
    with os.fdopen(fd, "wb") as pipe:
        pipe.write(b"go")


def assert_complete_newsletter(folder: Path) -> None:
    """Every file init writes is there, whole: the settings load, .env is private and holds
    a full signing secret, .gitignore names every line once, no temporary file is left."""
    settings = load_settings(folder, env={})
    assert settings.name == "Tiny Big Spark" and settings.site_url == "https://news.example.com"
    assert len(settings.signing_secret) >= 40
    assert stat.S_IMODE((folder / ".env").stat().st_mode) == 0o600
    template = (REPO / ".env.example").read_text(encoding="utf-8")
    assert (folder / ".env.example").read_text(encoding="utf-8") == template
    lines = (folder / ".gitignore").read_text(encoding="utf-8").splitlines()
    for line in GITIGNORE:
        assert lines.count(line) == 1, lines
    assert (folder / "issues").is_dir()
    names = {p.name for p in folder.iterdir()}
    assert names <= {
        "issues",
        ".spark-mail",
        ".gitignore",
        ".env.example",
        ".env",
        "spark-mail.toml",
    }, names


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- init: answers, terminals, what it prints ------------------------------------------------


@pytest.mark.slow
def test_init_with_stdin_closed_names_the_missing_flags(tmp_path: Path) -> None:
    """Cron or a script with stdin closed (`<&-`): sys.stdin is None. It used to crash with
    an AttributeError traceback; it names the missing flags, exit 2, nothing written."""
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", sys.executable, "-m", "spark_mail", "init", "news",
         "--name", "News", "--postal-address", "1 Main St"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "init needs --from and --url" in one_error_line(result)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--name", f"News{ESC}"),
        ("--name", "News\x00"),
        ("--postal-address", "1 Main St\x07"),
        ("--from", f"Ne{ESC}ws <hello@news.example.com>"),
    ],
)
def test_init_refuses_control_characters_in_answers(tmp_path: Path, flag: str, value: str) -> None:
    """A name with an escape sequence used to be written raw into the settings file's first
    comment, a TOML syntax error every later command stopped at; it is refused, naming the
    flag, before anything is written."""
    with pytest.raises(ConfigError, match=re.escape(flag)) as caught:
        newsletter_spec({**ANSWERS, flag: value})
    assert "\x1b" not in str(caught.value) and "\x00" not in str(caught.value)


def test_init_below_an_unrelated_broken_pyproject_works(tmp_path: Path) -> None:
    """A broken pyproject.toml in a folder above (someone else's project) used to stop init
    with that file's TOML error, though the new spark-mail.toml is found first."""
    (tmp_path / "pyproject.toml").write_text("x = [\n")
    news = tmp_path / "news"
    news.mkdir()
    create_newsletter(news, newsletter_spec(ANSWERS))
    assert load_settings(news, env={}).name == "Tiny Big Spark"


def test_init_appends_to_a_gitignore_that_is_not_utf8(tmp_path: Path) -> None:
    """A Latin-1 .gitignore (git reads bytes) used to crash init with a UnicodeDecodeError
    traceback; its bytes are kept and the missing lines appended."""
    original = b"caf\xe9/\nbuild"
    (tmp_path / ".gitignore").write_bytes(original)
    create_newsletter(tmp_path, newsletter_spec(ANSWERS))
    written = (tmp_path / ".gitignore").read_bytes()
    assert written.startswith(original + b"\n")
    assert {line.encode() for line in GITIGNORE} <= set(written.splitlines())


@pytest.mark.slow
def test_init_says_when_git_tracks_the_existing_env(tmp_path: Path) -> None:
    """.env committed before init: the .gitignore line does not untrack it, so its secrets
    keep going into git. init used to say nothing; it says so and how to fix it."""
    if shutil.which("git") is None:
        pytest.skip("git is needed")
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".env").write_text("OTHER_TOOL_TOKEN=abc\n")
    os.chmod(tmp_path / ".env", 0o600)
    subprocess.run([*git, "add", ".env"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "env"], cwd=tmp_path, check=True)
    result = run_cli("init", *FLAGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ".env is tracked by git" in result.stderr
    assert "git rm --cached .env" in result.stderr
    assert "abc" not in result.stdout + result.stderr


def test_init_warns_when_the_existing_env_is_readable_by_others(tmp_path: Path) -> None:
    """An existing .env with mode 0644 is kept as it is (never changed behind the user's
    back) but no longer silently: a note says who can read it and how to fix it."""
    env = tmp_path / ".env"
    env.write_text("SPARK_MAIL_API_KEY=from-before\n")
    os.chmod(env, 0o644)
    result = create_newsletter(tmp_path, newsletter_spec(ANSWERS))
    assert stat.S_IMODE(env.stat().st_mode) == 0o644
    assert any("readable by others" in n and "chmod 600 .env" in n for n in result.notes)


def test_init_does_not_claim_it_created_an_existing_gitignore(tmp_path: Path) -> None:
    """An existing .gitignore that got lines appended used to be listed under "Created"."""
    (tmp_path / ".gitignore").write_text("node_modules/\n")
    result = create_newsletter(tmp_path, newsletter_spec(ANSWERS))
    assert ".gitignore" not in result.created
    assert any("existing .gitignore" in n for n in result.notes)


@pytest.mark.slow
def test_init_with_timezone_does_not_call_it_this_machines(tmp_path: Path) -> None:
    """`--timezone Europe/Paris` used to be reported as "this machine's"."""
    result = run_cli("init", *FLAGS, cwd=tmp_path, env={"TZ": "Asia/Tokyo"})
    assert result.returncode == 0, result.stderr
    assert "this machine's" not in result.stderr
    assert load_settings(tmp_path, env={}).timezone == "Europe/Paris"


@pytest.mark.parametrize(
    "url",
    [
        "https://exa mple.com",
        "https://news.example.com:99999",
        "https://news.example.com/a b",
        "https://editor:pw-s3cret-42@news.example.com",
        'https://news.example.com/"x"',
    ],
)
def test_init_refuses_a_url_that_is_no_site_address(url: str) -> None:
    """--url with a space, an impossible port, quotes or a user:password used to be written
    into every page URL (a password into the committed settings file and every email); it
    is refused, and a password is never repeated in the message."""
    with pytest.raises(ConfigError, match="--url") as caught:
        newsletter_spec({**ANSWERS, "--url": url})
    assert "pw-s3cret-42" not in str(caught.value)


def test_init_refuses_a_folder_named_spark_mail_toml(tmp_path: Path) -> None:
    """A folder where spark-mail.toml should go: init used to say it created a newsletter
    (exit 0) and wrote no settings at all."""
    (tmp_path / "spark-mail.toml").mkdir()
    before = tree(tmp_path)
    with pytest.raises(ConfigError, match=r"spark-mail\.toml"):
        create_newsletter(tmp_path, newsletter_spec(ANSWERS))
    assert tree(tmp_path) == before


@pytest.mark.slow
def test_control_characters_in_folder_names_never_reach_the_terminal(tmp_path: Path) -> None:
    """A folder name with an escape sequence used to be printed raw (init's output, its next
    commands, the -C error): a terminal would run it. It is shown escaped."""
    made = run_cli("init", f"news{ESC}", *FLAGS, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "\x1b" not in made.stdout + made.stderr
    assert "\\x1b" in made.stdout
    missing = run_cli("-C", f"nope{ESC}", "list", cwd=tmp_path)
    assert missing.returncode == 2
    assert "\x1b" not in missing.stderr and "\\x1b" in missing.stderr


# -- init: kills, Ctrl-C, two at once ----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("had_gitignore", [False, True], ids=["fresh", "own-gitignore"])
def test_init_killed_at_any_write_leaves_no_half_file_and_a_rerun_completes(
    tmp_path: Path, had_gitignore: bool
) -> None:
    """SIGKILL in the middle of each write in turn (half the data on disk). It used to leave
    a half .env that the re-run kept (no signing secret), or a half spark-mail.toml that the
    re-run called "a newsletter already" and every command refused as TOML; a half line in an
    existing .gitignore. Now the re-run completes a whole newsletter every time. (Each killed
    init is its own process, forked from conftest's warm interpreter.)"""
    own = "node_modules/\n"
    for n in range(1, 30):
        folder = tmp_path / f"kill-{n}"
        folder.mkdir()
        if had_gitignore:
            (folder / ".gitignore").write_text(own)
        returncode, err = killed_at_write(tmp_path, n, "init", *FLAGS, cwd=folder)
        if returncode == 0:
            break  # fewer than n writes: every write has been killed once
        assert returncode == -signal.SIGKILL, err
        rerun = run_cli("init", *FLAGS, cwd=folder)
        assert rerun.returncode == 0, f"write {n}: {rerun.stderr}"
        assert_complete_newsletter(folder)
        if had_gitignore:
            assert (folder / ".gitignore").read_text().startswith(own + "# spark-mail")
    else:
        raise AssertionError("init never finished")
    assert n > 3  # .gitignore, .env.example, .env and spark-mail.toml were each killed


@pytest.mark.slow
def test_two_inits_at_once_leave_one_whole_newsletter(tmp_path: Path) -> None:
    """A second init while the first is writing .env: the second used to keep the empty
    .env and finish, then the first failed on spark-mail.toml and its undo deleted .env,
    .gitignore and issues/ from under the newsletter the second reported created. Now the
    second says another init is running; the first completes."""
    folder = tmp_path / "news"
    folder.mkdir()
    first = hooked(
        tmp_path, r"text:SPARK_MAIL_SIGNING_SECRET=\S", "pause", "init", *FLAGS, cwd=folder
    )
    try:
        wait_for(tmp_path / "PAUSED", first)
        second = run_cli("init", *FLAGS, cwd=folder)
    finally:
        release(tmp_path / "GO")
        _, err = first.communicate(timeout=60)
    assert sorted([first.returncode, second.returncode])[0] == 0
    assert first.returncode == 0, err
    assert second.returncode != 0
    assert "another spark-mail init" in one_error_line(second)
    assert_complete_newsletter(folder)


@pytest.mark.slow
def test_ctrl_c_during_init_leaves_the_folder_as_it_was(tmp_path: Path) -> None:
    """Ctrl-C while .env is being written: every file this run made is removed (an existing
    .gitignore back as it was) and the next init completes, but it used to exit 130 without
    a word, so nobody could tell whether the folder was left half-made. It says so."""
    folder = tmp_path / "news"
    folder.mkdir()
    (folder / ".gitignore").write_text("node_modules/\n")
    before = tree(folder)
    proc = hooked(tmp_path, r"text:SPARK_MAIL_SIGNING_SECRET=\S", "int", "init", *FLAGS,
                  cwd=folder)  # fmt: skip
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err, err
    assert "Traceback" not in err
    assert tree(folder) == before
    assert run_cli("init", *FLAGS, cwd=folder).returncode == 0
    assert_complete_newsletter(folder)


# -- .env as people write it ------------------------------------------------------------------


def test_env_that_is_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    """A .env saved as Latin-1 used to end every command with a UnicodeDecodeError traceback;
    it is a ConfigError naming .env and its line, the secret on it never shown."""
    create_newsletter(tmp_path, newsletter_spec(ANSWERS))
    (tmp_path / ".env").write_bytes(
        b"SPARK_MAIL_PROVIDER=smtp\nSPARK_MAIL_SMTP_PASSWORD=caf\xe9-hunter2-pw\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, env={})
    message = str(caught.value)
    assert f"{tmp_path / '.env'}:2" in message and "UTF-8" in message
    assert "hunter2" not in message


def test_env_line_that_cannot_be_read_is_an_error_naming_the_line(tmp_path: Path) -> None:
    """An unclosed quote: python-dotenv printed "could not parse statement starting at line
    1" (no file) and dropped the password, so a send failed later at the SMTP login. It is
    one error naming .env:1, without the value."""
    create_newsletter(tmp_path, newsletter_spec(ANSWERS))
    (tmp_path / ".env").write_text(
        'SPARK_MAIL_SMTP_PASSWORD="hunter2-pw-unclosed\nSPARK_MAIL_SMTP_HOST=smtp.example.com\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, env={})
    message = str(caught.value)
    assert f"{tmp_path / '.env'}:1" in message
    assert "hunter2" not in message


def test_env_with_a_misspelt_setting_is_an_error_with_a_suggestion(tmp_path: Path) -> None:
    """SPARK_MAIL_SMTP_PASWORD (a typo) used to be ignored without a word, the password
    never used. It is refused like an unknown key in spark-mail.toml: file:line and a
    did-you-mean, the value never shown."""
    create_newsletter(tmp_path, newsletter_spec(ANSWERS))
    with (tmp_path / ".env").open("a") as fh:
        fh.write("SPARK_MAIL_SMTP_PASWORD=hunter2-pw\n")
    lines = (tmp_path / ".env").read_text().count("\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, env={})
    message = str(caught.value)
    assert f"{tmp_path / '.env'}:{lines}" in message
    assert "SPARK_MAIL_SMTP_PASWORD" in message and "SPARK_MAIL_SMTP_PASSWORD" in message
    assert "hunter2" not in message


@pytest.mark.parametrize("kind", ["folder", "broken-link"])
def test_env_that_is_not_a_file_is_an_error(tmp_path: Path, kind: str) -> None:
    """A .env that is a folder, or a link to a secrets file that is not there (an unmounted
    vault under cron), used to be skipped: no provider, no keys, the outbox "sent" the
    issue. It is an error naming .env."""
    create_newsletter(tmp_path, newsletter_spec(ANSWERS))
    env = tmp_path / ".env"
    env.unlink()
    if kind == "folder":
        env.mkdir()
    else:
        env.symlink_to(tmp_path / "vault" / "news.env")
    with pytest.raises(ConfigError, match=re.escape(str(env))):
        load_settings(tmp_path, env={})


# -- -C and dispatch from cron ----------------------------------------------------------------


@pytest.fixture
def inited(tmp_path: Path) -> Path:
    folder = tmp_path / "news"
    result = run_cli("init", str(folder), *FLAGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return folder


@pytest.mark.slow
def test_dispatch_with_no_issues_folder_fails_loudly(inited: Path, tmp_path: Path) -> None:
    """issues_dir mistyped (or issues/ gone): dispatch used to exit 0 without a word, so
    cron never sent and never said why. One line naming the folder and the setting, exit 2."""
    toml = inited / "spark-mail.toml"
    toml.write_text(re.sub(r'^# issues_dir = .*$', 'issues_dir = "isues"', toml.read_text(),
                           flags=re.M))  # fmt: skip
    result = run_cli("-C", str(inited), "dispatch", cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = one_error_line(result)
    assert str(inited / "isues") in line and "issues_dir" in line


@pytest.mark.slow
def test_dispatch_in_a_newsletter_without_issues_fails_loudly(inited: Path, tmp_path: Path) -> None:
    """-C at a newsletter with no issue file at all (the wrong copy, a fresh init): nothing
    can ever be due. dispatch used to exit 0 silently; it says so, exit 2."""
    result = run_cli("-C", str(inited), "dispatch", cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    line = one_error_line(result)
    assert f"no issue files in {inited / 'issues'}" in line and "spark-mail new" in line
    as_json = run_cli("-C", str(inited), "dispatch", "--json", cwd=tmp_path)
    assert as_json.returncode == 2


@pytest.mark.slow
def test_a_relative_dash_c_that_is_missing_names_the_full_path(tmp_path: Path) -> None:
    """`-C news` from cron's folder ($HOME or /): the error used to name only `news`, so the
    cron mail did not say where it looked. It names the full path."""
    cron_cwd = tmp_path / "home"
    cron_cwd.mkdir()
    result = run_cli("-C", "news", "dispatch", cwd=cron_cwd)
    assert result.returncode == 2
    assert str(cron_cwd / "news") in one_error_line(result)


# -- behaviour that held under attack (pinned) ------------------------------------------------


def test_env_written_the_ways_people_write_it_is_read_as_meant(tmp_path: Path) -> None:
    """A byte-order mark, CRLF line ends, `export`, quotes, an inline comment, a repeated key
    (the last wins), and secrets holding `#` and `=` are all read as a shell would."""
    create_newsletter(tmp_path, newsletter_spec(ANSWERS))
    (tmp_path / ".env").write_bytes(
        "\ufeffSPARK_MAIL_PROVIDER=smtp\r\n"
        "export SPARK_MAIL_SMTP_HOST=smtp.example.com\r\n"
        'SPARK_MAIL_SMTP_USER="hello@news.example.com"   # the login\r\n'
        "SPARK_MAIL_SMTP_PASSWORD=pa#ss=word\r\n"
        "SPARK_MAIL_SIGNING_SECRET='first-secret-of-sixteen'\r\n"
        "SPARK_MAIL_SIGNING_SECRET='s3cret #with hash = and equals'\r\n"
        "\r\n# a comment\r\n".encode()
    )
    settings = load_settings(tmp_path, env={})
    assert settings.provider == "smtp" and settings.smtp_host == "smtp.example.com"
    assert settings.smtp_user == "hello@news.example.com"
    assert settings.smtp_password.reveal() == "pa#ss=word"
    assert settings.signing_secret.reveal() == "s3cret #with hash = and equals"


def test_init_where_the_file_system_has_no_hard_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole files are linked into place; on a file system without hard links (FAT, some
    network shares) init still writes every file, each created without replacing one."""

    def no_links(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    create_newsletter(tmp_path, newsletter_spec(ANSWERS))
    assert_complete_newsletter(tmp_path)


@pytest.mark.slow
def test_init_with_stdin_a_pipe_that_stays_open_never_waits(tmp_path: Path) -> None:
    """stdin a pipe nobody writes to or closes: no prompt, no read; the missing flags are
    named at once (a hang here would block a provisioning script forever)."""
    pipe = tmp_path / "stdin"
    os.mkfifo(pipe)
    writer = os.open(pipe, os.O_RDWR)  # the writing end, held open (O_RDWR: no wait)
    try:
        proc = WARM_CLI.start(["init", "--name", "News"], cwd=tmp_path, env=clean_env(),
                              stdin=pipe)  # fmt: skip
        try:
            code = proc.wait(timeout=60)  # while its stdin is still open
        finally:
            if proc.poll() is None:
                proc.kill()
            _, err = proc.communicate()
    finally:
        os.close(writer)
    assert code == 2 and "init needs --from, --postal-address and --url" in err


@pytest.mark.slow
def test_nested_newsletters_the_nearest_settings_file_wins(tmp_path: Path) -> None:
    """A newsletter inside another one's folder (init allows it): from inside it, with -C,
    and for an issue path given from anywhere, its own spark-mail.toml is the one used."""
    outer, inner = tmp_path / "outer", tmp_path / "outer" / "team" / "inner"
    inner.mkdir(parents=True)
    create_newsletter(outer, newsletter_spec({**ANSWERS, "--name": "Outer"}))
    assert run_cli("init", str(inner), *FLAGS, cwd=tmp_path).returncode == 0
    assert load_settings(inner / "issues", env={}).name == "Tiny Big Spark"
    assert load_settings(outer / "team", env={}).name == "Outer"
    made = run_cli("-C", str(inner), "new", "Hello", "--date", "2025-01-20", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert Path(made.stdout.strip()).parent == inner / "issues"
    built = run_cli("build", made.stdout.strip(), cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert (inner / "dist" / "2025-01-20-hello").is_dir() and not (outer / "dist").exists()


def test_init_in_a_partly_made_folder_keeps_every_edited_file(tmp_path: Path) -> None:
    """A folder with an edited .env.example, an issue and an .env, but no settings file:
    init adds what is missing and leaves those byte for byte; a second init changes
    nothing."""
    (tmp_path / "issues").mkdir()
    (tmp_path / "issues" / "draft.md").write_text("---\ntitle: Mine\n---\nHello\n")
    (tmp_path / ".env.example").write_text("# my own notes\nSPARK_MAIL_PROVIDER=\n")
    (tmp_path / ".env").write_text("SPARK_MAIL_PROVIDER=outbox\n")
    os.chmod(tmp_path / ".env", 0o600)
    kept = {name: tree(tmp_path)[name] for name in ("issues/draft.md", ".env.example", ".env")}
    create_newsletter(tmp_path, newsletter_spec(ANSWERS))
    assert {name: tree(tmp_path)[name] for name in kept} == kept
    before = tree(tmp_path)
    with pytest.raises(ConfigError, match="nothing was changed"):
        create_newsletter(tmp_path, newsletter_spec(ANSWERS))
    assert tree(tmp_path) == before


@pytest.mark.slow
def test_init_through_a_symlinked_folder_and_dash_c_through_it(tmp_path: Path) -> None:
    """`init link` where link points at a folder: the files land in the folder, and
    `-C link` reaches the newsletter."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert run_cli("init", "link", *FLAGS, cwd=tmp_path).returncode == 0
    assert (real / "spark-mail.toml").is_file()
    listed = run_cli("-C", "link", "list", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr


@pytest.mark.slow
def test_dash_c_at_a_file_is_one_clear_error(inited: Path, tmp_path: Path) -> None:
    """-C at the settings file instead of its folder: one line, exit 2."""
    result = run_cli("-C", str(inited / "spark-mail.toml"), "dispatch", cwd=tmp_path)
    assert result.returncode == 2
    assert "not a folder" in one_error_line(result)


@pytest.mark.slow
def test_the_readme_cron_line_sends_with_crons_environment(inited: Path, tmp_path: Path) -> None:
    """The crontab line of the README's first section, paths replaced, run as cron does:
    `sh -c` from $HOME with only HOME, LOGNAME, SHELL, PATH=/usr/bin:/bin (no TERM, no
    locale). The due issue goes out (the outbox), the log line starts with its time."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    first = readme.split("## Start your own newsletter", 1)[1].split("\n## ", 1)[0]
    cron_line = re.search(r"```cron\n(.+?)\n```", first, re.S)
    assert cron_line is not None
    line = cron_line.group(1).split(None, 5)[5]  # the command after the five time fields
    spark_mail = Path(sys.executable).parent / "spark-mail"
    line = line.replace("/home/you/.local/bin/spark-mail", str(spark_mail))
    line = line.replace("/home/you/news", str(inited))
    made = run_cli("-C", str(inited), "new", "First", "--date", "2025-01-20", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    due = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=2)
    finish_draft(Path(made.stdout.strip()), due)
    home = tmp_path / "home"
    home.mkdir()
    cron_env = {"HOME": str(home), "LOGNAME": "you", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(["/bin/sh", "-c", line], cwd=home, env=cron_env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, (result.stdout, result.stderr)
    log = (inited / ".spark-mail" / "cron.log").read_text()
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\S* sent 2025-01-20-first via outbox",
                     log, re.M), log  # fmt: skip
    assert (inited / "outbox" / "2025-01-20-first" / "send.eml").is_file()
