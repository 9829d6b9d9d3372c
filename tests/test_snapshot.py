"""`spark-mail preview ISSUE --snapshot [DIR]`: PNGs at 375 and 600 px, light and dark."""

from __future__ import annotations

import struct
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from browser import CHROMIUM
from conftest import SAMPLE_ISSUE, run_cli
from spark_mail.config import load_settings
from spark_mail.drafting import snapshot
from spark_mail.errors import SnapshotError
from spark_mail.render import build

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")
NAMES = [f"{SAMPLE_ISSUE.stem}-{w}-{s}.png" for w in (375, 600) for s in ("light", "dark")]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def check_pngs(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)
    for name in NAMES:
        width, height = png_size(folder / name)
        assert width == int(name.split("-")[-2]) and height > 2000, (name, width, height)
    light, dark = (folder / NAMES[0]).read_bytes(), (folder / NAMES[1]).read_bytes()
    assert light != dark


@pytest.mark.slow
@needs_chromium
def test_snapshot_command_writes_four_pngs_over_chromiums_devtools_pipe_as_playwright_would(
    newsletter: Path, tmp_path: Path, browser: Any
):
    """A real `spark-mail preview ISSUE --snapshot DIR`: four full-page PNGs, then exit 0.
    With Chromium on PATH it is driven over its DevTools pipe, Playwright installed or not:
    Playwright's driver is not started, and its pictures are the same, byte for byte."""
    out = tmp_path / "shots"
    result = run_cli(
        "preview", SAMPLE_ISSUE.stem, "--snapshot", str(out), cwd=newsletter, timeout=180
    )
    assert result.returncode == 0, result.stderr
    check_pngs(out)
    assert result.stdout.count(".png") == 4
    assert snapshot.pick_shooter(CHROMIUM) is snapshot.with_devtools

    # Playwright's pictures (the page it shoots in, in the test process's Chromium)
    email = build(newsletter / "issues" / f"{SAMPLE_ISSUE.stem}.md", load_settings(newsletter))
    shots = snapshot.plan(tmp_path / "playwright", email.slug)
    (tmp_path / "playwright").mkdir()
    snapshot.shoot_in(browser, email.html, shots)
    check_pngs(tmp_path / "playwright")
    for shot in shots:
        assert shot.path.read_bytes() == (out / shot.path.name).read_bytes(), shot.path.name


def test_playwright_takes_them_only_where_chromium_is_not_on_path(
    monkeypatch: pytest.MonkeyPatch,
):
    """Playwright (with a browser of its own) where no Chromium is on PATH; without
    Playwright, Chromium on PATH is driven over its DevTools pipe all the same."""
    for name in ("playwright", "playwright.sync_api"):  # installed (not imported: ~0.4 s)
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    assert snapshot.pick_shooter(None) is snapshot.with_playwright
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)  # import fails
    assert snapshot.pick_shooter("/usr/bin/chromium") is snapshot.with_devtools


def test_without_any_chromium_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Neither Playwright nor Chromium: a SnapshotError that says what to install."""
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)
    monkeypatch.setattr(snapshot, "chromium_path", lambda: None)
    with pytest.raises(SnapshotError, match="install chromium"):
        snapshot.take_snapshots("<html><body>x</body></html>", "x", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_folder_without_snapshot_is_refused(newsletter: Path):
    """`preview ISSUE DIR` without --snapshot: a usage error, no server started."""
    result = run_cli("preview", SAMPLE_ISSUE.stem, "somewhere", "--no-open", cwd=newsletter)
    assert result.returncode == 2 and "a folder goes with --snapshot" in result.stderr
