"""Files spark-mail writes: each one atomically (temp file + rename), so a failure or a
crash never leaves half a file behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from spark_mail.errors import ConfigError

if TYPE_CHECKING:
    from spark_mail.render import RenderedEmail


def write_atomic(path: Path, data: bytes | str) -> Path:
    make_folder(path.parent)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def file_in_the_way(folder: Path) -> Path | None:
    """The file standing where `folder` or one of its parents should be a folder, if any."""
    for candidate in (folder, *folder.parents):
        if candidate.exists() or candidate.is_symlink():
            return None if candidate.is_dir() else candidate
    return None


def refuse_file_in_the_way(folder: Path, setting: str = "") -> None:
    """One clear line when a file stands where `folder` must be. `setting` names what
    chose the folder (`--out`, `state_dir`), for the hint."""
    blocker = file_in_the_way(folder)
    if blocker is not None:
        raise ConfigError(
            f"{blocker}: is a file, but a folder is needed there (for {folder})",
            hint=f"move the file away, {_change(setting)}",
        )


def make_folder(folder: Path, setting: str = "") -> Path:
    """`mkdir -p folder`, refusing with one line when it cannot be made."""
    refuse_file_in_the_way(folder, setting)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{folder}: cannot create the folder ({exc.strerror})",
            hint=f"check its permissions, {_change(setting)}",
        ) from None
    return folder


def _change(setting: str) -> str:
    return f"or change {setting}" if setting else "or write somewhere else"


def issue_files(folder: Path) -> list[Path]:
    """The issue files of a newsletter (`*.md` in its issues folder), in name order."""
    return sorted(folder.glob("*.md")) if folder.is_dir() else []


def build_dir(out_dir: Path, slug: str) -> Path:
    return out_dir / slug


def write_build(email: RenderedEmail, out_dir: Path) -> dict[str, Path]:
    """Write email.html, email.txt and email.eml into `out_dir/<slug>/`."""
    folder = build_dir(out_dir, email.slug)
    eml = email.to_mime().as_bytes()  # made before anything is written
    make_folder(folder, "--out or the out_dir setting")
    return {
        "html": write_atomic(folder / "email.html", email.html),
        "text": write_atomic(folder / "email.txt", email.text),
        "eml": write_atomic(folder / "email.eml", eml),
    }
