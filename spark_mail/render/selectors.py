"""CSS selectors -> lxml XPath, for the inliner; translations are remembered between runs.

cssselect turns a selector into XPath. Importing it is about a fiftieth of a cold
`spark-mail build`, and a layout's selectors rarely change, so each translation (the XPath
text and the selector's specificity) is kept in a JSON file beside the compiled layouts
(spark_mail.render.layout: a per-user folder, mode 0700, checked). A run whose selectors
are all there never imports cssselect. The file is tied to the installed cssselect and to
this module (path, size and modification time of each): another version of either starts a
new file. A file that cannot be read or written is ignored, and the selectors are translated
as before; so is one that is not a regular file of a bounded size (a link, a FIFO, a runaway
file). A translation is used only when lxml compiles it and it selects elements; else
cssselect translates the selector again: nothing in the file can stop or change a build.
(Who can write the file can also write the compiled layouts beside it, which Python runs: a
forged translation is no threat of its own.)
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import Any

from spark_mail.errors import SparkMailError
from spark_mail.files import write_atomic
from spark_mail.render.simple_xpath import TreeIndex, plan

FILE_NAME = "spark-mail-selectors.json"
MAX_ENTRIES = 4096  # a layout has dozens; a bound keeps a runaway file small (see _kept)
MAX_BYTES = 8 << 20  # a file larger than this is not read (nor written)
Specificity = tuple[int, int, int]
Translation = tuple[str, Specificity] | None  # None: a selector the inliner cannot use


class Translations:
    """The remembered translations (loaded on first use) and the ones new in this run."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.known: dict[str, Translation] | None = None
        self.used: set[str] = set()  # the selectors of this run
        self.translated: set[str] = set()  # the ones cssselect translated in this run
        self.new = False

    def get(self, selector: str) -> Translation:
        known = self._load()
        self.used.add(selector)
        if selector not in known:
            self._remember(selector, translate(selector))
        return known[selector]

    def unusable(self, selector: str) -> Translation:
        """lxml could not use the selector's translation (an error, or it selected something
        other than elements): one read from the file (damaged, or written by hand) is
        translated again; cssselect's own is remembered as refused (a namespace prefix, as
        in `svg|rect`, that an HTML document does not have)."""
        found = None if selector in self.translated else translate(selector)
        self._remember(selector, found)
        return found

    def save(self) -> None:
        """Write the file when this run translated something new (atomically: a reader
        never sees half a file)."""
        if not (self.new and self.path and self.known is not None):
            return
        self.new = False
        payload = json.dumps({"cssselect": cssselect_stamp(), "selectors": self._kept()})
        if len(payload) > MAX_BYTES:  # ASCII (json.dumps escapes the rest): bytes = chars
            return
        if not self.path.parent.is_dir():  # the cache folder went away: not made again here
            return
        with contextlib.suppress(OSError, SparkMailError):  # the cache is only a speed-up
            write_atomic(self.path, payload)

    def _remember(self, selector: str, found: Translation) -> None:
        self._load()[selector] = found
        self.translated.add(selector)
        self.new = True

    def _kept(self) -> dict[str, Translation]:
        """At most MAX_ENTRIES translations: this run's selectors (last: the newest), and
        of the others the newest. A layout's edits pile up selectors no run uses again;
        without this, a full file would never take a new one."""
        known = self._load()
        used = [s for s in known if s in self.used][:MAX_ENTRIES]
        others = [s for s in known if s not in self.used]
        others = others[max(0, len(others) - (MAX_ENTRIES - len(used))) :]
        return {s: known[s] for s in (*others, *used)}

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
    """Which code made a translation: cssselect's file (found without importing it) and this
    module's, each by path, size and modification time. Another cssselect, or a spark-mail
    that translates otherwise, starts a new file."""
    spec = importlib.util.find_spec("cssselect")
    return f"{file_stamp(spec.origin if spec else None)}|{file_stamp(__file__)}"


def file_stamp(path: str | None) -> str:
    if not path:
        return "unknown"
    try:
        status = os.stat(path)
    except OSError:
        return "unknown"
    return f"{path}:{status.st_size}:{status.st_mtime_ns}"


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


def select(
    root: Any, selector: str, index: TreeIndex | None = None
) -> tuple[list[Any], Specificity] | None:
    """The elements under `root` that `selector` matches, and its specificity; None when the
    inliner cannot use the selector. Whatever the file holds, the result is elements or
    None: a translation lxml cannot use is made again, or refused (Translations.unusable).
    `index`: root's TreeIndex, for the translations of simple selectors (simple_xpath)."""
    remembered = translations()
    found = remembered.get(selector)
    while found is not None:
        xpath, specificity = found
        elements = elements_of(xpath, root, index)
        if elements is not None:
            return elements, specificity
        found = remembered.unusable(selector)
    return None


def elements_of(xpath: str, root: Any, index: TreeIndex | None = None) -> list[Any] | None:
    """The elements `xpath` selects under `root`: looked up in `index` (root's TreeIndex)
    when the XPath is a simple selector's (simple_xpath), else run by lxml; None when lxml
    cannot use it (see evaluate)."""
    if index is not None and (steps := plan(xpath)) is not None:
        return index.select(steps)
    return evaluate(compiled(xpath), root)


@lru_cache(maxsize=512)
def compiled(xpath: str) -> Any:
    """The lxml XPath of `xpath`, or None when lxml refuses it."""
    from lxml import etree

    try:
        return etree.XPath(xpath)
    except (etree.XPathError, ValueError):
        return None


def evaluate(xpath: Any, root: Any) -> list[Any] | None:
    """The elements `xpath` selects under `root`; None for an error or anything else (a
    number, a string, text nodes, attributes, comments)."""
    from lxml import etree

    if xpath is None:
        return None
    try:
        found = xpath(root)
    except (etree.XPathError, ValueError):
        return None
    if isinstance(found, list) and all(
        isinstance(node, etree._Element) and isinstance(node.tag, str) for node in found
    ):
        return found
    return None
