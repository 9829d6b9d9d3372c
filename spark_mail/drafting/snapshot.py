"""`spark-mail preview ISSUE --snapshot [DIR]`: PNGs of the email for a review or a PR.

Four full-page screenshots through headless Chromium: 375 px (a phone) and 600 px (the
desktop column), each light and dark (the layout's `prefers-color-scheme: dark` rules on).
With Chromium on PATH, spark-mail drives it itself over its DevTools pipe
(drafting/devtools.py), one process for the four pictures: the same PNGs, byte for byte, as
Playwright takes, without starting Playwright's driver (a Node.js process, ~2 s of CPU more
and ~3 s of wall time). Playwright is used where Chromium is not on PATH (a browser of its
own, `playwright install chromium`), and on Windows, where the pipe is not there; neither
there: Chromium's own `--screenshot`, two launches a picture, the page height measured
first with `--dump-dom`. No Chromium at all: one SnapshotError line saying what to install.

The snapshots never touch the network: images from the internet are not loaded (their boxes
keep the size the layout gives them and show their alt text), so nothing is tracked, and
the same issue gives the same pictures.
"""

from __future__ import annotations

import base64
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from spark_mail.config import Settings
from spark_mail.errors import SnapshotError

WIDTHS = (375, 600)
Scheme = Literal["light", "dark"]
SCHEMES: tuple[Scheme, ...] = ("light", "dark")
TIMEOUT_SECONDS = 60
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: no image or font is fetched
    # no renderer for the address bar's popup, which a window starts and no one opens here
    # (~1 s of CPU, a quarter of the four pictures'; the pictures are the same)
    "--disable-features=WebUIOmniboxPopup,WebUIOmniboxAimPopup",
]
HEIGHT_PROBE = (
    "<script>addEventListener('load', () => { document.title = 'height=' + "
    "document.documentElement.scrollHeight; });</script>"
)
HEIGHT_RE = re.compile(r"<title>height=(\d+)</title>")


@dataclass(frozen=True)
class Shot:
    width: int
    scheme: Scheme
    path: Path


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def plan(out_dir: Path, slug: str) -> list[Shot]:
    return [
        Shot(width, scheme, out_dir / f"{slug}-{width}-{scheme}.png")
        for width in WIDTHS
        for scheme in SCHEMES
    ]


INSTALL_HINT = (
    "install chromium (e.g. `apt-get install chromium`) or "
    "`pip install playwright && playwright install chromium`"
)


def take_snapshots(email_html: str, slug: str, out_dir: Path) -> list[Path]:
    """Write the four PNGs into `out_dir`; SnapshotError when no Chromium can take them.
    They are taken into a folder of their own inside `out_dir` and moved in at the end, so
    a failure leaves the PNGs already there (and a folder it had to make) as they were."""
    chromium = chromium_path()
    shooter = pick_shooter(chromium)
    made = make_folder(out_dir)
    work = Path(tempfile.mkdtemp(prefix=".snapshots-", dir=out_dir))
    try:
        shooter(email_html, plan(work, slug), chromium)
        for shot in plan(work, slug):
            shot.path.replace(out_dir / shot.path.name)
    except SnapshotError as exc:
        if chromium is None:
            exc.hint = f"no chromium on PATH: {INSTALL_HINT}"
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if made and not any(out_dir.iterdir()):
            out_dir.rmdir()
    return [shot.path for shot in plan(out_dir, slug)]


Shooter = Callable[[str, list[Shot], str | None], None]


def pick_shooter(chromium: str | None) -> Shooter:
    """What takes the pictures: the DevTools pipe to Chromium on PATH (POSIX), else
    Playwright (its own browser where Chromium is not on PATH), else Chromium's command
    line; SnapshotError when there is no Chromium to take them."""
    if chromium is not None and os.name == "posix":
        return with_devtools
    try:
        import playwright.sync_api  # noqa: F401  (optional: only a test dependency)
    except ImportError:
        if chromium is None:
            raise SnapshotError(
                "snapshots need headless Chromium, and neither Chromium nor Playwright is "
                "installed",
                hint=INSTALL_HINT,
            ) from None
        return with_chromium_cli
    return with_playwright


def make_folder(out_dir: Path) -> bool:
    """Make `out_dir` (and its parents); True when it was not there before."""
    if out_dir.is_dir():
        return False
    try:
        out_dir.mkdir(parents=True)
    except OSError as exc:  # a file there, or on the way there; no permission
        raise SnapshotError(
            f"cannot write snapshots into {out_dir}: "
            + (
                "a file is in the way of that folder"
                if isinstance(exc, FileExistsError | NotADirectoryError)
                else str(exc.strerror or exc)
            ),
            hint="give --snapshot a folder (it is made when missing), not a file",
        ) from None
    return True


def with_playwright(email_html: str, shots: list[Shot], chromium: str | None) -> None:
    from playwright.sync_api import Error, sync_playwright

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS[1:4])
            try:
                shoot_in(browser, email_html, shots)
            finally:
                browser.close()
    except Error as exc:
        raise SnapshotError(
            f"headless Chromium failed: {str(exc).splitlines()[0]}",
            hint="check that chromium starts (`chromium --headless --version`)",
        ) from None


def shoot_in(browser: Any, email_html: str, shots: list[Shot]) -> None:
    """Take the shots in a new page of Playwright's `browser`."""
    # One page, the email set once: each shot only resizes it and switches the colour
    # scheme (the same pictures as a fresh page per shot, in half the time)
    page = browser.new_page(viewport={"width": shots[0].width, "height": 800})
    page.route("**/*", block_network)
    page.set_content(email_html, timeout=TIMEOUT_SECONDS * 1000)
    for shot in shots:
        page.set_viewport_size({"width": shot.width, "height": 800})
        page.emulate_media(color_scheme=shot.scheme)
        page.screenshot(path=str(shot.path), full_page=True)
    page.close()


def block_network(route: Any) -> None:
    if route.request.url.startswith(("data:", "about:")):
        route.continue_()
    else:
        route.abort()


def with_devtools(email_html: str, shots: list[Shot], chromium: str | None) -> None:
    """One Chromium over its DevTools pipe: the email loaded once, then per shot the width
    and colour scheme set (as Playwright does) and the whole page captured."""
    from spark_mail.drafting.devtools import DevTools, failed

    assert chromium is not None
    with tempfile.TemporaryDirectory(prefix="spark-mail-snapshot-") as tmp:
        page = Path(tmp) / "email.html"
        page.write_text(email_html, "utf-8")
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}", "about:blank"]
        with DevTools(chromium, flags, timeout=TIMEOUT_SECONDS) as tools:
            try:
                session = tools.open_page()
                tools.call("Page.enable", session=session)
                tools.call("Page.navigate", {"url": page.as_uri()}, session)
                tools.wait_for("Page.loadEventFired", session)
                for shot in shots:
                    shot.path.write_bytes(_capture(tools, session, shot))
            except (KeyError, TypeError, ValueError) as exc:  # an answer not as the protocol has it
                raise failed(f"an answer not as the DevTools protocol has it ({exc!r})") from None


def _capture(tools: Any, session: str, shot: Shot) -> bytes:
    """The PNG of the whole page at the shot's width and colour scheme."""
    metrics = {"width": shot.width, "height": 800, "deviceScaleFactor": 1, "mobile": False}
    tools.call("Emulation.setDeviceMetricsOverride", metrics, session)
    scheme = [{"name": "prefers-color-scheme", "value": shot.scheme}]
    tools.call("Emulation.setEmulatedMedia", {"features": scheme}, session)
    size = tools.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": shot.width, "height": math.ceil(size["height"]), "scale": 1}
    picture = tools.call(
        "Page.captureScreenshot",
        {"format": "png", "clip": clip, "captureBeyondViewport": True},
        session,
    )
    return base64.b64decode(picture["data"])


def with_chromium_cli(email_html: str, shots: list[Shot], chromium: str | None) -> None:
    from spark_mail.drafting.preview import dark_html

    assert chromium is not None
    with tempfile.TemporaryDirectory(prefix="spark-mail-snapshot-") as tmp:
        folder = Path(tmp)
        for shot in shots:
            page = folder / f"{shot.width}-{shot.scheme}.html"
            html = dark_html(email_html) if shot.scheme == "dark" else email_html
            page.write_text(html.replace("</body>", HEIGHT_PROBE + "</body>", 1), "utf-8")
            profile = f"--user-data-dir={folder / 'profile'}"
            dom = run_chromium(
                [chromium, *CHROMIUM_FLAGS, profile, f"--window-size={shot.width},800",
                 "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
            )  # fmt: skip
            match = HEIGHT_RE.search(dom)
            height = int(match.group(1)) if match else 2400
            run_chromium(
                [chromium, *CHROMIUM_FLAGS, profile, f"--window-size={shot.width},{height}",
                 f"--screenshot={shot.path}", page.as_uri()]
            )  # fmt: skip
            if not shot.path.is_file():
                raise SnapshotError(f"headless Chromium wrote no screenshot to {shot.path}")


def run_chromium(args: list[str]) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SnapshotError(f"headless Chromium failed: {exc}") from None
    return done.stdout


def snapshot_issue(path: Path, settings: Settings, out_dir: Path | None = None) -> list[Path]:
    """Build the issue and write its snapshots (default: dist/<slug>/snapshots/)."""
    from spark_mail.render import build

    email = build(path, settings)
    folder = out_dir or settings.out_path / email.slug / "snapshots"
    return take_snapshots(email.html, email.slug, folder)
