"""Files spark-mail writes: each one atomically (temp file + rename), so a failure or a
crash never leaves half a file behind."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from spark_mail.errors import ConfigError, IssueError

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


# Temporary files of create_exclusive and replace_bytes are named TEMP_MARK...: a kill
# mid-write leaves one, which nothing reads and `remove_leftovers` takes away.
TEMP_MARK = ".spark-mail-tmp-"


def create_exclusive(path: Path, data: bytes | str, mode: int = 0o666) -> None:
    """Create `path` holding `data` whole, or not at all, and never replace anything there.

    The data goes to a temporary file beside it (with `mode`, less the umask, from the
    moment it exists: a secret file is never readable by others), which is then hard-linked
    to `path` (the link fails, FileExistsError, when the name is taken). A crash or a kill
    mid-write leaves no half `path`. Where the file system has no hard links, the file is
    created in place with O_EXCL (still never replacing one)."""
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f"{TEMP_MARK}{path.name}-{secrets.token_hex(4)}")
    try:
        _write_new(tmp, payload, mode)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links on this file system (FAT, some network shares)
            _write_new(path, payload, mode)
    finally:
        tmp.unlink(missing_ok=True)


def _write_new(path: Path, payload: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def replace_bytes(path: Path, data: bytes, like: os.stat_result | None = None) -> None:
    """Put `data` in the existing file `path` whole or not at all (a temporary file beside
    it, renamed over it), keeping its mode; `like`: also give it these times (an undo puts
    a file back as it was)."""
    target = path.resolve()  # a link (a shared .gitignore) keeps pointing at its file
    mode = stat.S_IMODE((like or target.stat()).st_mode)
    tmp = target.with_name(f"{TEMP_MARK}{target.name}-{secrets.token_hex(4)}")
    try:
        _write_new(tmp, data, 0o600)
        os.chmod(tmp, mode)
        if like is not None:
            os.utime(tmp, ns=(like.st_atime_ns, like.st_mtime_ns))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def remove_leftovers(folder: Path) -> None:
    """Take away the temporary files a killed writer left in `folder`."""
    for leftover in folder.glob(TEMP_MARK + "*"):
        with contextlib.suppress(OSError):
            leftover.unlink()


@contextlib.contextmanager
def exclusive_folder(folder: Path, busy: str) -> Iterator[None]:
    """Hold an OS lock on `folder` itself (flock on the folder, no lock file) for the
    block; another holder: ConfigError `busy`. The OS drops it when its holder dies, even by
    SIGKILL."""
    import fcntl

    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{folder}: {busy}", hint="wait for it to finish") from None
        yield
    finally:
        os.close(fd)


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


# Reading an issue file lives here, not in issue.py, so that hashing the issues (the web
# archive's incremental build) does not import the parser (PyYAML).
MAX_ISSUE_BYTES = 10 * 1024 * 1024  # Gmail clips an email at ~102 KB anyway


def read_issue_file(path: Path) -> bytes:
    """The bytes of a regular file of at most MAX_ISSUE_BYTES. Opened without blocking and
    checked before reading, so a FIFO or a device under an issue's name cannot hang a run."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise missing_issue(path) from None
    except IsADirectoryError:
        raise IssueError(path, "is a folder, not an issue file") from None
    except OSError as exc:
        raise IssueError(path, f"cannot read the file ({exc.strerror})") from None
    status = os.fstat(fd)
    mode = status.st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        if stat.S_ISDIR(mode):
            raise IssueError(path, "is a folder, not an issue file")
        raise IssueError(
            path,
            "is not a regular file (a pipe, socket or device): not read",
            hint="an issue is a Markdown file; remove or rename this one",
        )
    # Asked for the size fstat gives (+1), not the cap: a read of MAX_ISSUE_BYTES + 1 makes
    # a 10 MB buffer for every issue read (~70 us). Whatever reaches past that size (a file
    # that grew, one whose size says 0, as in /proc) is read on up to the cap.
    first = min(status.st_size, MAX_ISSUE_BYTES) + 1
    with os.fdopen(fd, "rb") as fh:
        try:
            raw = fh.read(first)
            if len(raw) == first and first <= MAX_ISSUE_BYTES:
                raw += fh.read(MAX_ISSUE_BYTES + 1 - first)
        except OSError as exc:
            raise IssueError(path, f"cannot read the file ({exc.strerror})") from None
    if len(raw) > MAX_ISSUE_BYTES:
        raise IssueError(
            path,
            f"is larger than {MAX_ISSUE_BYTES // (1024 * 1024)} MB: too large for an email",
            hint="an email is clipped at ~102 KB; shorten the issue",
        )
    return raw


def missing_issue(path: Path) -> IssueError:
    """The error for an issue file that is not there, with a "did you mean" from its folder."""
    import difflib

    near = [p.stem for p in path.parent.glob("*.md")] if path.parent.is_dir() else []
    close = difflib.get_close_matches(path.stem, near, n=3, cutoff=0.5)
    if close:
        hint = f"did you mean {' or '.join(close)}?"
    elif near:
        hint = "`spark-mail list` shows the issues there"
    else:
        hint = 'check the path; `spark-mail new "TITLE"` starts an issue'
    return IssueError(path, "no such file", hint=hint)
