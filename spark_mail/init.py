"""`spark-mail init`: a new newsletter in an empty (or existing) folder.

It writes, and never overwrites:

    spark-mail.toml   every setting, filled from the answers, the optional ones commented
    issues/           where `spark-mail new` puts issues
    .env              secrets for this machine (mode 0600 from the moment it exists), from the
                      .env.example template with a fresh SPARK_MAIL_SIGNING_SECRET
    .env.example      the same template without secrets, to commit
    .gitignore        keeps .env, .spark-mail/, dist/, outbox/, site/ and .venv/ out of git
                      (an existing one gets the missing lines appended)
    .spark-mail/      the state folder (a cron line can log into it from the start)
    layouts/NAME/     with --layout NAME: a copy of the default layout to customise

A folder that already holds a newsletter is refused before anything is written; every answer
is checked before the first file is written, the settings file is written last, and a
failure half-way removes what this run created, so a failed init leaves the folder as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shlex
import shutil
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
    find_settings_file,
)
from spark_mail.errors import ConfigError
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
GITIGNORE = (".env", ".spark-mail/", "dist/", "outbox/", "site/", ".venv/")


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
    """The folder to create the newsletter in; refused when it already holds one."""
    folder = folder.expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder}: is a file, not a folder", hint="pass a folder to init")
    found = find_settings_file(folder) if folder.is_dir() else None
    if found is not None and found[0].parent == folder:
        raise ConfigError(
            f"{folder} is a newsletter already ({found[0].name}): nothing was changed",
            hint=f"edit {found[0].name}, or run init in another folder",
        )
    return folder


def create_new(path: Path, text: str, mode: int = 0o666) -> None:
    """Create `path` with `text`; never replaces a file (O_EXCL) and has `mode` (less the
    umask) from the moment it exists, so a secret file is never readable by others."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def create_newsletter(folder: Path, spec: NewsletterSpec, secret: str | None = None) -> InitResult:
    """Write the newsletter's files into `folder` (see the module docstring)."""
    folder = check_folder(folder)
    layout_dir = folder / "layouts" / spec.layout if spec.layout else None
    if layout_dir is not None and layout_dir.exists():
        raise ConfigError(f"{layout_dir} exists already: nothing was changed")
    result = InitResult(folder)
    try:
        with contextlib.ExitStack() as undo:
            if not folder.exists():
                folder.mkdir(parents=True)
                undo.callback(shutil.rmtree, folder, ignore_errors=True)
            for relative, make in _steps(folder, spec, layout_dir, secret, result):
                undone = make()
                if undone is not None:
                    undo.callback(undone)
                    result.created.append(relative)
            undo.pop_all()  # everything is written: keep it
    except OSError as exc:
        where = exc.filename or folder
        raise ConfigError(
            f"{where}: cannot write it ({exc.strerror or exc}); nothing was changed",
            hint="check the folder's permissions and free space",
        ) from None
    return result


Step = tuple[str, Callable[[], Callable[[], Any] | None]]


def _steps(
    folder: Path, spec: NewsletterSpec, layout_dir: Path | None, secret: str | None,
    result: InitResult,
) -> list[Step]:  # fmt: skip
    """Each file as (its name, a function that writes it and returns how to undo it, or None
    when it left an existing file alone). The settings file comes last."""

    def folder_step(name: str) -> Callable[[], Callable[[], Any] | None]:
        def make() -> Callable[[], Any] | None:
            path = folder / name
            if path.is_dir():
                return None
            path.mkdir()
            return path.rmdir

        return make

    def layout() -> Callable[[], Any] | None:
        if layout_dir is None:
            return None
        shutil.copytree(PACKAGE_LAYOUTS / "default", layout_dir)
        return lambda: shutil.rmtree(layout_dir, ignore_errors=True)

    def gitignore() -> Callable[[], Any] | None:
        return _ignore_lines(folder / ".gitignore", result)

    def env_example() -> Callable[[], Any] | None:
        return _new_file(folder / ".env.example", ENV_TEMPLATE.read_text(encoding="utf-8"))

    def env() -> Callable[[], Any] | None:
        undo = _new_file(folder / ".env", env_text(secret or secrets.token_urlsafe(32)), 0o600)
        if undo is None:
            result.notes.append(
                "kept the existing .env as it is: copy the SPARK_MAIL_ lines you need from "
                ".env.example (own-list sends need a SPARK_MAIL_SIGNING_SECRET)"
            )
        return undo

    def settings_file() -> Callable[[], Any] | None:
        return _new_file(folder / SETTINGS_FILE, settings_toml(spec))

    name = f"layouts/{spec.layout}/" if spec.layout else ""
    state = Settings().state_dir  # so a cron line can log into it before the first send
    return [
        ("issues/", folder_step("issues")), (f"{state}/", folder_step(state)), (name, layout),
        (".gitignore", gitignore), (".env.example", env_example), (".env", env),
        (SETTINGS_FILE, settings_file),
    ]  # fmt: skip


def _new_file(path: Path, text: str, mode: int = 0o666) -> Callable[[], Any] | None:
    if path.exists():
        return None
    create_new(path, text, mode)
    return path.unlink


def _ignore_lines(path: Path, result: InitResult) -> Callable[[], Any] | None:
    """Create .gitignore, or append the lines an existing one lacks (undo: restore it)."""
    if not path.exists():
        create_new(
            path, "# spark-mail: secrets, state and build output\n" + "\n".join(GITIGNORE) + "\n"
        )
        return path.unlink
    before = path.read_text(encoding="utf-8")
    present = {line.strip() for line in before.splitlines()}
    lacking = [
        line for line in GITIGNORE if line not in present and line.rstrip("/") not in present
    ]
    if not lacking:
        return None
    separator = "" if before.endswith("\n") or not before else "\n"
    with path.open("a", encoding="utf-8") as fh:
        fh.write(
            f"{separator}# spark-mail: secrets, state and build output\n"
            + "\n".join(lacking)
            + "\n"
        )
    result.notes.append(f"added {', '.join(lacking)} to the existing .gitignore")
    return lambda: path.write_text(before, encoding="utf-8")


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
