"""Files spark-mail writes: each one atomically (temp file + rename), so a failure or a
crash never leaves half a file behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spark_mail.render import RenderedEmail


def write_atomic(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
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


def issue_files(folder: Path) -> list[Path]:
    """The issue files of a newsletter (`*.md` in its issues folder), in name order."""
    return sorted(folder.glob("*.md")) if folder.is_dir() else []


def build_dir(out_dir: Path, slug: str) -> Path:
    return out_dir / slug


def write_build(email: RenderedEmail, out_dir: Path) -> dict[str, Path]:
    """Write email.html, email.txt and email.eml into `out_dir/<slug>/`."""
    folder = build_dir(out_dir, email.slug)
    eml = email.to_mime().as_bytes()  # made before anything is written
    return {
        "html": write_atomic(folder / "email.html", email.html),
        "text": write_atomic(folder / "email.txt", email.text),
        "eml": write_atomic(folder / "email.eml", eml),
    }
