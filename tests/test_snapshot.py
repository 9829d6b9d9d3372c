"""`spark-mail preview ISSUE --snapshot [DIR]`: PNGs at 375 and 600 px, light and dark."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

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
def test_snapshot_command_writes_four_pngs(newsletter: Path, tmp_path: Path):
    """A real `spark-mail preview ISSUE --snapshot DIR`: four full-page PNGs, then exit 0."""
    out = tmp_path / "shots"
    result = run_cli(
        "preview", SAMPLE_ISSUE.stem, "--snapshot", str(out), cwd=newsletter, timeout=180
    )
    assert result.returncode == 0, result.stderr
    check_pngs(out)
    assert result.stdout.count(".png") == 4


@pytest.mark.slow
@needs_chromium
def test_snapshots_without_playwright_drive_chromium_over_its_devtools_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Without Playwright, one Chromium driven over its DevTools pipe takes the same four
    pictures."""
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)  # import fails
    email = build(SAMPLE_ISSUE, load_settings(SAMPLE_ISSUE.parent))
    snapshot.take_snapshots(email.html, email.slug, tmp_path)
    check_pngs(tmp_path)


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
