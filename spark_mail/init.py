"""`spark-mail init`: a new newsletter in an empty (or existing) folder.

It writes, and never overwrites:

    spark-mail.toml   every setting, filled from the answers, the optional ones commented
    issues/           where `spark-mail new` puts issues
    .env              secrets for this machine (mode 0600 from the moment it exists), from the
                      .env.example template with a fresh SPARK_MAIL_SIGNING_SECRET
    .env.example      the same template without secrets, to commit
    .gitignore        keeps .env, .spark-mail/, dist/, outbox/, site/, site-preview/ and .venv/
                      out of git
                      (an existing one gets the missing lines appended)
    .spark-mail/      the state folder (a cron line can log into it from the start)
    layouts/NAME/     with --layout NAME: a copy of the default layout to customise

A folder that already holds a newsletter is refused before anything is written; every answer
is checked before the first file is written (spark_mail/init_answers.py), the settings file
is written last, and a failure half-way (Ctrl-C included) removes what this run created and
puts an existing .gitignore back, so a failed init leaves the folder as it was. Each file
appears whole or not at all (files.create_exclusive), so a run killed outright leaves no
half file, and the next run completes the newsletter. One init at a time works in a folder
(an OS lock on it); it only says what it cannot fix itself: an existing .env others can
read, or one git already tracks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import secrets
import shlex
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spark_mail.config import (
    PACKAGE_LAYOUTS,
    SETTINGS_FILE,
    SITE_PAGES,
    Brand,
    Settings,
    settings_file_in,
)
from spark_mail.errors import ConfigError, printable
from spark_mail.files import create_exclusive, exclusive_folder, remove_leftovers, replace_bytes
from spark_mail.init_answers import (
    QUESTIONS,
    NewsletterSpec,
    machine_timezone,
    missing_error,
    missing_flags,
    newsletter_spec,
)

__all__ = [
    "GITIGNORE",
    "QUESTIONS",
    "InitResult",
    "NewsletterSpec",
    "check_folder",
    "create_newsletter",
    "editor_address",
    "machine_timezone",
    "missing_error",
    "missing_flags",
    "newsletter_spec",
    "next_commands",
    "settings_toml",
]

TEMPLATES = Path(__file__).resolve().parent / "templates"
ENV_TEMPLATE = TEMPLATES / "env.example"  # a link to the repository's .env.example
# spark-mail.toml with {placeholders}: str.format, so a literal brace is written {{ }}
SETTINGS_TEMPLATE = TEMPLATES / "spark-mail.toml.in"
SECRET_LINE = "SPARK_MAIL_SIGNING_SECRET="
GITIGNORE = (".env", ".spark-mail/", "dist/", "outbox/", "site/", "site-preview/", ".venv/")
GITIGNORE_HEADER = "# spark-mail: secrets, state and build output"


# -- the files ----------------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    """A TOML literal: JSON's strings, numbers and booleans are TOML's too (DEL escaped)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def settings_toml(spec: NewsletterSpec) -> str:
    """spark-mail.toml for `spec`; the commented defaults come from Settings itself."""
    defaults = Settings()
    values = {
        f.name: toml_value(getattr(defaults, f.name))
        for f in dataclasses.fields(Settings)
        if isinstance(getattr(defaults, f.name), str | int | float | bool)
    }
    values.update({f.name: toml_value(getattr(Brand(), f.name)) for f in dataclasses.fields(Brand)})
    pages = {key: toml_value(spec.site_url + page) for key, page in SITE_PAGES.items()}
    reply_to = (
        f"reply_to = {toml_value(spec.reply_to)}"
        if spec.reply_to
        else '# reply_to = "editors@example.com"'
    )
    return SETTINGS_TEMPLATE.read_text(encoding="utf-8").format_map(
        {
            **values,
            **pages,
            "title": spec.name.replace("\n", " "),
            "name": toml_value(spec.name),
            "from_address": toml_value(spec.from_address),
            "reply_to": reply_to,
            "postal_address": toml_value(spec.postal_address),
            "timezone": toml_value(spec.timezone),
            "site_url": toml_value(spec.site_url),
        }
    )


def env_text(secret: str) -> str:
    """.env: the template, with a signing secret filled in."""
    template = ENV_TEMPLATE.read_text(encoding="utf-8")
    template = template.replace("# Copy to .env (never committed) and fill in. ", "# ", 1)
    lines = template.splitlines(keepends=True)
    at = [i for i, line in enumerate(lines) if line.rstrip("\n") == SECRET_LINE]
    if len(at) != 1:
        raise ConfigError(f"{ENV_TEMPLATE}: expected one empty {SECRET_LINE} line")
    lines[at[0]] = f"{SECRET_LINE}{secret}\n"
    header = (
        "# This machine's spark-mail settings, secrets included: never commit it (git ignores\n"
        "# it). Made by `spark-mail init` from .env.example.\n"
    )
    return header + "".join(lines)


@dataclass
class InitResult:
    folder: Path
    created: list[str] = dataclasses.field(default_factory=list)  # relative, in order
    notes: list[str] = dataclasses.field(default_factory=list)  # what was kept or chosen


def check_folder(folder: Path) -> Path:
    """The folder to create the newsletter in; refused when it already holds one (only the
    folder itself counts: a newsletter or a broken pyproject.toml above is no reason)."""
    folder = folder.expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{printable(str(folder))}: is a file, not a folder",
                          hint="pass a folder to init")  # fmt: skip
    settings = folder / SETTINGS_FILE
    if (settings.exists() or settings.is_symlink()) and not settings.is_file():
        raise ConfigError(
            f"{printable(str(settings))}: is in the way (not a file); nothing was changed",
            hint="move it away, then run init again",
        )
    found = settings_file_in(folder) if folder.is_dir() else None
    if found is not None:
        raise ConfigError(
            f"{printable(str(folder))} is a newsletter already ({found[0].name}): nothing was "
            "changed",
            hint=f"edit {found[0].name}, or run init in another folder",
        )
    return folder


def create_newsletter(folder: Path, spec: NewsletterSpec, secret: str | None = None) -> InitResult:
    """Write the newsletter's files into `folder` (see the module docstring)."""
    folder = check_folder(folder)
    layout_dir = folder / "layouts" / spec.layout if spec.layout else None
    if layout_dir is not None and layout_dir.exists():
        raise ConfigError(f"{printable(str(layout_dir))} exists already: nothing was changed")
    result = InitResult(folder)
    made_folder = False
    try:
        made_folder = not folder.is_dir()
        folder.mkdir(parents=True, exist_ok=True)
        with exclusive_folder(folder, "another spark-mail init is writing in it"):
            check_folder(folder)  # again: another init may have finished meanwhile
            remove_leftovers(folder)  # what a killed init left
            with contextlib.ExitStack() as undo:
                for relative, make in _steps(folder, spec, layout_dir, secret, result):
                    undone = make()
                    if undone is not None:
                        undo.callback(undone)
                        if relative:
                            result.created.append(relative)
                undo.pop_all()  # everything is written: keep it
    except BaseException as exc:
        if made_folder:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only while empty: never what another init put there
        if isinstance(exc, OSError):
            where = printable(str(exc.filename or folder))
            raise ConfigError(
                f"{where}: cannot write it ({exc.strerror or exc}); nothing was changed",
                hint="check the folder's permissions and free space",
            ) from None
        raise
    result.notes.extend(git_notes(folder))
    return result


Undo = Callable[[], Any]
Step = tuple[str, Callable[[], Undo | None]]


def _steps(
    folder: Path, spec: NewsletterSpec, layout_dir: Path | None, secret: str | None,
    result: InitResult,
) -> list[Step]:  # fmt: skip
    """Each file as (its name as listed under "Created", a function that writes it and
    returns how to undo it, or None when it left an existing file alone). The settings file
    comes last, and is never skipped."""

    def folder_step(name: str) -> Callable[[], Undo | None]:
        def make() -> Undo | None:
            path = folder / name
            if path.is_dir():
                return None
            path.mkdir()
            return path.rmdir

        return make

    def layout() -> Undo | None:
        if layout_dir is None:
            return None
        shutil.copytree(PACKAGE_LAYOUTS / "default", layout_dir)
        return lambda: shutil.rmtree(layout_dir, ignore_errors=True)

    def env_example() -> Undo | None:
        return _new_file(folder / ".env.example", ENV_TEMPLATE.read_text(encoding="utf-8"))

    def env() -> Undo | None:
        path = folder / ".env"
        undo = _new_file(path, env_text(secret or secrets.token_urlsafe(32)), 0o600)
        if undo is None:
            result.notes.extend(kept_env_notes(path))
        return undo

    def settings_file() -> Undo | None:
        path = folder / SETTINGS_FILE
        create_exclusive(path, settings_toml(spec))
        return path.unlink

    ignore = folder / ".gitignore"
    name = f"layouts/{spec.layout}/" if spec.layout else ""
    state = Settings().state_dir  # so a cron line can log into it before the first send
    return [
        ("issues/", folder_step("issues")), (f"{state}/", folder_step(state)), (name, layout),
        ("" if ignore.exists() else ".gitignore", lambda: _ignore_lines(ignore, result)),
        (".env.example", env_example), (".env", env), (SETTINGS_FILE, settings_file),
    ]  # fmt: skip


def _new_file(path: Path, text: str, mode: int = 0o666) -> Undo | None:
    if path.exists() or path.is_symlink():
        return None
    create_exclusive(path, text, mode)
    return path.unlink


def kept_env_notes(path: Path) -> list[str]:
    """What to say about an existing .env, kept as it is."""
    notes = [
        "kept the existing .env as it is: copy the SPARK_MAIL_ lines you need from "
        ".env.example (own-list sends need a SPARK_MAIL_SIGNING_SECRET)"
    ]
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            notes.append(
                f"the existing .env is readable by others (mode {mode:04o}) and holds this "
                "machine's secrets: run `chmod 600 .env`"
            )
    return notes


def _ignore_lines(path: Path, result: InitResult) -> Undo | None:
    """Create .gitignore, or append the lines an existing one lacks (undo: put it back as it
    was). Read as bytes, as git does: any encoding is kept as it is."""
    if not path.exists():
        create_exclusive(path, GITIGNORE_HEADER + "\n" + "\n".join(GITIGNORE) + "\n")
        return path.unlink
    before, st = path.read_bytes(), path.stat()
    present = {line.strip().removeprefix(b"\xef\xbb\xbf") for line in before.splitlines()}
    lacking = [
        line for line in GITIGNORE
        if line.encode() not in present and line.rstrip("/").encode() not in present
    ]  # fmt: skip
    if not lacking:
        return None
    end = b"\r\n" if b"\r\n" in before else b"\n"
    block = end.join(line.encode() for line in (GITIGNORE_HEADER, *lacking)) + end
    replace_bytes(path, before + (end if before and not before.endswith(b"\n") else b"") + block)
    result.notes.append(f"added {', '.join(lacking)} to the existing .gitignore")
    return lambda: replace_bytes(path, before, like=st)


def git_notes(folder: Path) -> list[str]:
    """What git makes of .env here: tracked already (the ignore line does not untrack it),
    or still not ignored (another rule un-ignores it). Nothing outside a git work tree, or
    without git."""
    git = shutil.which("git")
    if git is None or not (folder / ".env").exists():
        return []

    def run(*args: str) -> int:
        try:
            done = subprocess.run(
                [git, "-C", str(folder), *args], capture_output=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return 128
        return done.returncode

    if run("ls-files", "--error-unmatch", "--", ".env") == 0:
        return [
            ".env is tracked by git, so its secrets go into every commit (ignoring it does "
            "not untrack it): run `git rm --cached .env`, commit, and change the secrets "
            "it held (git's history keeps them)"
        ]
    if run("check-ignore", "-q", "--", ".env") == 1:
        return ["git does not ignore .env here (another rule un-ignores it): fix .gitignore"]
    return []


def next_commands(folder: Path, cwd: Path, today: str, to: str) -> list[str]:
    """The three commands to run next: a first issue, its preview, a test send."""
    prefix = "spark-mail"
    if folder != cwd.resolve():
        shown = (
            folder.relative_to(cwd.resolve()) if folder.is_relative_to(cwd.resolve()) else folder
        )
        prefix += f" -C {shlex.quote(str(shown))}"
    slug = f"{today}-my-first-issue"
    return [
        f'{prefix} new "My first issue"',
        f"{prefix} preview {slug}",
        f"{prefix} send {slug} --test --to {shlex.quote(to)}",
    ]


def editor_address(spec: NewsletterSpec) -> str:
    """Where the first test copy goes: the reply-to address, else the sender's."""
    from email.utils import parseaddr

    return spec.reply_to or parseaddr(spec.from_address)[1]
