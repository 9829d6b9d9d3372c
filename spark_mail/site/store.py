"""The site folder: built whole into a temporary folder next to it, then swapped in.

- Atomic: every build writes a fresh folder (`.<name>.building-*` beside the target) and only a
  complete one replaces the old site. On Linux the two folders trade places in one
  renameat2(RENAME_EXCHANGE) call, so a reader (the reader desk, a web server) finds either
  the whole old site or the whole new one, never neither; elsewhere two renames leave a gap
  of microseconds without a folder. An error anywhere leaves the old site as it was.
- The replaced site is kept beside the new one as `.<name>.previous` until the next build
  deletes it: a reader that was in the middle of it when the folders traded places (a file
  looked up, a folder listed) finishes undisturbed instead of finding files vanishing.
- Incremental: the build record (`.spark-mail-site.json`, inside the site so it is swapped
  with the pages it describes) maps each file to a hash of everything it was made from. A
  file whose hash is unchanged is hard-linked from the old site instead of rendered again.
- Safe: a folder that has files but no build record was not made by spark-mail and is never
  replaced (the build refuses instead of deleting someone's files), checked again just
  before the swap; the site never shares a folder with spark-mail's other folders
  (site_target); beside it, only the folders a build names itself are ever removed.
- One build at a time per newsletter: an OS lock in the state folder (a `send` rebuilding
  while `site build` runs waits for it instead of racing it, for a bounded time).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

from spark_mail.clock import SYSTEM_CLOCK, Clock
from spark_mail.config import Settings
from spark_mail.errors import ConfigError, SiteError
from spark_mail.site.urls import MANIFEST

DEFAULT_FOLDER = "site"
RECORD_VERSION = 1
AT_FDCWD = -100
RENAME_EXCHANGE = 2
TEMP_SUFFIX = r"[a-z0-9_]{8}"  # what mkdtemp adds to a folder's prefix
LOCK_POLL = 0.1  # seconds between looks at a lock held by another build


@dataclass
class Record:
    """The build record: what each file was made from, and the issues' entries."""

    key: str = ""  # the whole build's inputs: settings, layouts, spark-mail's version
    files: dict[str, str] = field(default_factory=dict)  # path -> hash of its inputs
    issues: dict[str, dict[str, Any]] = field(default_factory=dict)  # slug -> key, entry
    articles: dict[str, str] = field(default_factory=dict)  # issue key -> article (feed items)

    def to_json(self) -> str:
        data = {"version": RECORD_VERSION, "generator": "spark-mail", **self.__dict__}
        return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def read_record(folder: Path) -> Record | None:
    """The folder's build record; None when there is none, or one this version cannot use
    (another version's, or damaged: it is only a cache, so the build renders everything)."""
    try:
        data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
        return None
    key, files, issues, articles = (data.get(k) for k in ("key", "files", "issues", "articles"))
    if not (isinstance(key, str) and texts(files) and texts(articles) and isinstance(issues, dict)):
        return None
    if not all(isinstance(i, dict) and isinstance(i.get("key"), str) for i in issues.values()):
        return None
    return Record(key, files, issues, articles)


def texts(value: Any) -> TypeGuard[dict[str, str]]:
    """A JSON object of strings."""
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def is_replaceable(folder: Path) -> bool:
    """Missing, empty, or built by spark-mail (it has a build record of any version)."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    return (folder / MANIFEST).is_file() or not any(folder.iterdir())


def refuse_foreign(target: Path) -> None:
    """A folder holding files spark-mail did not put there is never replaced."""
    try:
        replaceable = is_replaceable(target)
    except OSError as exc:
        raise unwritable(target, exc) from None
    if not replaceable:
        raise SiteError(
            f"{target} is not a folder spark-mail built (it has no {MANIFEST}): "
            "refusing to replace it",
            hint="build into a new or empty folder with --out DIR",
        )


def site_target(folder: Path, others: dict[str, Path]) -> Path:
    """The folder to build into, its symlinks followed. Refused: one that is, holds or lies
    in another folder spark-mail writes (`others`: what it is -> where; what spark-mail
    wrote there later would be published, and the next build would delete it), and one
    holding files spark-mail did not put there."""
    target = resolved(folder)
    for what, other in others.items():
        place = resolved(other)
        if place == target or place in target.parents or target in place.parents:
            raise ConfigError(
                f"{target}: the web archive cannot be built there: it is or shares a folder "
                f"with {place} ({what}), and each build replaces the whole folder",
                hint='give the site a folder of its own: site_dir = "site" or --out DIR',
            )
    refuse_foreign(target)
    return target


def site_folder(settings: Settings) -> Path:
    """Where the site is built by default and served from: `site_dir`, else `site/`."""
    return settings.path(settings.site_dir or DEFAULT_FOLDER)


def resolved(folder: Path) -> Path:
    try:
        return folder.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop: RuntimeError before Python 3.13
        reason = exc.strerror if isinstance(exc, OSError) else "a symlink loop"
        raise SiteError(
            f"{folder}: cannot follow its symlinks ({reason})",
            hint="point site_dir or --out at a real folder",
        ) from None


@contextlib.contextmanager
def build_lock(
    state_dir: Path, *, wait: float | None = None, clock: Clock = SYSTEM_CLOCK
) -> Iterator[None]:
    """Held while a build runs. `wait`: give up (SiteError) when another build has held it
    this many seconds (the rebuild after a send must end); None waits as long as it takes."""
    lock = state_dir / "site.lock"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handle = lock.open("a")
    except OSError as exc:
        raise SiteError(f"{state_dir}: cannot create the site lock ({exc.strerror})") from None
    with handle:
        if wait is None:
            fcntl.flock(handle, fcntl.LOCK_EX)  # the OS frees it when the holder exits
        else:
            deadline = clock.monotonic() + wait
            while not try_lock(handle):
                if clock.monotonic() >= deadline:
                    raise SiteError(
                        f"another build of the web archive has held {lock} for {wait:.0f} s",
                        hint="run `spark-mail site build` when it is done (or stop it)",
                    )
                clock.sleep(LOCK_POLL)
        yield


def try_lock(handle: Any) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class Staging:
    """A new site being written next to `target`; `commit()` swaps it in, `discard()` drops it.

    `recycle`: start from the site before the last one (`.previous`, made with the same
    settings and layouts) instead of an empty folder: most of its files are the very files of
    the current site (hard links), so only what changed since is replaced, and no folder is
    made or deleted per page (on a busy disk that is most of an incremental build's time).
    A file is never written in place: it may be the live site's file too.
    """

    def __init__(self, target: Path, *, recycle: bool = False) -> None:
        self.target = target
        self.old = target if target.is_dir() else None
        self.folders: set[Path] = set()
        self.written: set[str] = set()
        self.previous = target.with_name(f".{target.name}.previous")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            remove_leftovers(target, keep_previous=recycle)
            prefix = f".{target.name}.building-"
            self.folder = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
            self.recycled = recycle and self.previous.is_dir()
            if self.recycled:
                os.rename(self.previous, self.folder)  # onto the empty folder just made
        except OSError as exc:
            raise unwritable(target, exc) from None

    def write(self, path: str, data: str | bytes) -> None:
        file = self.folder / path
        try:
            self.make_parent(file)
            if self.recycled:
                file.unlink(missing_ok=True)
            file.write_bytes(data.encode() if isinstance(data, str) else data)
        except OSError as exc:
            raise unwritable(self.target, exc) from None
        self.written.add(path)

    def reuse(self, path: str) -> bool:
        """Take `path` from the old site unchanged (a hard link; a copy across devices)."""
        if self.old is None:
            return False
        file, old = self.folder / path, self.old / path
        try:
            if not old.is_file():
                return False
            if self.recycled:
                if file.exists() and os.path.samefile(file, old):
                    self.written.add(path)
                    return True
                file.unlink(missing_ok=True)
            self.make_parent(file)
            try:
                os.link(old, file)
            except OSError:
                shutil.copyfile(old, file)
        except OSError as exc:
            raise unwritable(self.target, exc) from None
        self.written.add(path)
        return True

    def make_parent(self, file: Path) -> None:
        folder = file.parent
        if folder not in self.folders:  # one mkdir per folder, not one per file
            folder.mkdir(parents=True, exist_ok=True)
            self.folders.add(folder)

    def prune(self) -> None:
        """Remove what a recycled folder holds beyond this build's files. A file this user
        cannot remove (another user's, immutable) stays: it was in the site before."""
        prune_folder(str(self.folder), "", self.written)

    def commit(self, record: Record) -> None:
        self.write(MANIFEST, record.to_json())
        try:
            if self.recycled:
                self.prune()
            os.chmod(self.folder, 0o755)  # mkdtemp made it 0700: a web server must read it
            refuse_foreign(self.target)  # again: someone may have put a folder there since
            swap_in(self.folder, self.target, self.previous)
        except OSError as exc:
            raise unwritable(self.target, exc) from None

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def prune_folder(folder: str, relative: str, keep: set[str]) -> bool:
    """Remove the files under `folder` (at `relative`, a posix path, in the site) that are
    not in `keep`, and the folders left empty; True when `folder` is then empty. What this
    user cannot list or remove stays, as does a symlink to a folder (never followed).
    Strings and os.scandir, not Path: this looks at every file of the site on every build."""
    try:
        found = list(os.scandir(folder))
    except PermissionError:
        return False
    empty = True
    for item in found:
        name = relative + item.name
        if item.is_symlink() and item.is_dir():
            empty = False
        elif item.is_dir(follow_symlinks=False):
            if prune_folder(item.path, name + "/", keep):
                os.rmdir(item.path)
            else:
                empty = False
        elif name in keep:
            empty = False
        else:
            try:
                os.unlink(item.path)
            except PermissionError:
                empty = False
    return empty


def swap_in(new: Path, target: Path, previous: Path) -> None:
    """Put the folder `new` where `target` is; the old target becomes `previous`."""
    if not target.exists():
        os.rename(new, target)
    elif exchange(new, target):
        with contextlib.suppress(OSError):  # the new site is in place: the rest is tidying
            os.rename(new, previous)
    else:
        os.rename(target, previous)
        os.rename(new, target)


def remove_leftovers(target: Path, *, keep_previous: bool) -> None:
    """The folders of builds that crashed, and the site before the last one unless it is to
    be recycled (run under the build lock: no other build is using them)."""
    building = f".{target.name}.building-"
    names = re.escape(building) + TEMP_SUFFIX
    if not keep_previous:
        names += "|" + re.escape(f".{target.name}.previous")
    ours = re.compile(names)  # exactly the names it gives them: never a folder of yours
    for folder in target.parent.iterdir():
        if ours.fullmatch(folder.name) and folder.is_dir() and not folder.is_symlink():
            # What this user cannot delete (a file of root's, an immutable one) must not
            # stop every build from now on: it stays, under a name the next build retries.
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists() and not folder.name.startswith(building):
                os.rename(folder, tempfile.mkdtemp(prefix=building, dir=target.parent))


def exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux renameat2); False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # glibc before 2.28, musl
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # the file system cannot
        return False
    raise OSError(code, os.strerror(code), str(b))


def unwritable(target: Path, exc: OSError) -> SiteError:
    return SiteError(
        f"{target}: cannot write the site ({exc.strerror or exc}); the old site is unchanged",
        hint="check the folder's permissions and free space, or build elsewhere with --out DIR",
    )
