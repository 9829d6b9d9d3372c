"""CSS selectors -> lxml XPath, for the inliner; translations are remembered between runs.

cssselect turns a selector into XPath. Importing it is about a fiftieth of a cold
`spark-mail build`, and a layout's selectors rarely change, so each translation (the XPath
text and the selector's specificity) is kept in a JSON file beside the compiled layouts
(spark_mail.render.layout: a per-user folder, mode 0700, checked). A run whose selectors
are all there never imports cssselect. The file is tied to the installed cssselect (its
path, size and modification time): another version starts a new file. A file that cannot be
read or written is ignored, and the selectors are translated as before; so is one that is
not a regular file of a bounded size (a link, a FIFO, a runaway file).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import stat
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

FILE_NAME = "spark-mail-selectors.json"
MAX_ENTRIES = 4096  # a layout has dozens; a bound keeps a runaway file small
MAX_BYTES = 8 << 20  # a file larger than this is not read (nor written)
Translation = tuple[str, tuple[int, int, int]] | None  # None: a selector cssselect refuses


class Translations:
    """The remembered translations (loaded on first use) and the ones new in this run."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.known: dict[str, Translation] | None = None
        self.new = False

    def get(self, selector: str) -> Translation:
        known = self._load()
        if selector in known:
            return known[selector]
        found = translate(selector)
        if len(known) < MAX_ENTRIES:
            known[selector] = found
            self.new = True
        return found

    def save(self) -> None:
        """Write the file when this run translated something new (atomically: a reader
        never sees half a file)."""
        if not (self.new and self.path and self.known is not None):
            return
        self.new = False
        payload = json.dumps({"cssselect": cssselect_stamp(), "selectors": self.known})
        if len(payload) > MAX_BYTES:  # ASCII (json.dumps escapes the rest): bytes = chars
            return
        with contextlib.suppress(OSError):
            fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".selectors-")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(payload)
                os.replace(temp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise

    def _load(self) -> dict[str, Translation]:
        if self.known is None:
            self.known = read_file(self.path) if self.path else {}
        return self.known


def read_file(path: Path) -> dict[str, Translation]:
    """The file's translations, or none when it is missing, damaged or made with another
    cssselect. Only a regular file of at most MAX_BYTES is read: no link, nothing that would
    block (a FIFO) or never end (/dev/zero)."""
    raw = read_bytes(path)
    try:
        data = json.loads(raw) if raw is not None else None
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
        return {}
    if not isinstance(data, dict) or data.get("cssselect") != cssselect_stamp():
        return {}
    selectors = data.get("selectors")
    if not isinstance(selectors, dict):
        return {}
    known: dict[str, Translation] = {}
    for selector, entry in selectors.items():
        if entry is None:
            known[selector] = None
        elif is_translation(entry):
            xpath, (a, b, c) = entry
            known[selector] = xpath, (a, b, c)
    return known


def read_bytes(path: Path) -> bytes | None:
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode) or status.st_size > MAX_BYTES:
                return None
            raw = file.read(MAX_BYTES + 1)
        except OSError:
            return None
    return raw if len(raw) <= MAX_BYTES else None


def is_translation(entry: Any) -> bool:
    """[xpath, [a, b, c]] as json.load gives it back."""
    return (
        isinstance(entry, list)
        and len(entry) == 2
        and isinstance(entry[0], str)
        and isinstance(entry[1], list)
        and len(entry[1]) == 3
        and all(type(n) is int for n in entry[1])
    )


@lru_cache(maxsize=1)
def cssselect_stamp() -> str:
    """Which cssselect made a translation: its file, size and modification time (found
    without importing it)."""
    spec = importlib.util.find_spec("cssselect")
    origin = spec.origin if spec else None
    if not origin:
        return "unknown"
    try:
        stat = os.stat(origin)
    except OSError:
        return "unknown"
    return f"{origin}:{stat.st_size}:{stat.st_mtime_ns}"


def translate(selector: str) -> Translation:
    from cssselect import HTMLTranslator, SelectorError, parse

    try:
        (parsed,) = parse(selector)
        return HTMLTranslator().selector_to_xpath(parsed), parsed.specificity()
    except (SelectorError, ValueError):
        return None


@lru_cache(maxsize=1)
def translations() -> Translations:
    from spark_mail.render.layout import cache_folder

    folder = cache_folder()
    return Translations(folder / FILE_NAME if folder else None)


@lru_cache(maxsize=512)
def compiled_selector(selector: str) -> tuple[Any, tuple[int, int, int]] | None:
    """(an lxml XPath for the selector, its specificity), or None when it cannot be used."""
    from lxml.etree import XPath

    found = translations().get(selector)
    if found is None:
        return None
    xpath, specificity = found
    return XPath(xpath), specificity
