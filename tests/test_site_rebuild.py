"""Rebuilding the web archive: incremental (only what a change touches is rendered again),
atomic (the old site stays whole on any error, and a reader never sees a half-built one),
and bad input refused with one line."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from conftest import SAMPLE_SLUG, run_cli, write_issue
from site_support import SECOND, add_issues, mark_sent, send_two, set_site_url, settings_for
from spark_mail.config import PACKAGE_LAYOUTS
from spark_mail.errors import LayoutError, SiteError
from spark_mail.site import build_site
from spark_mail.site.store import Staging, exchange


def inodes(site: Path) -> dict[str, int]:
    """Every file of the site with its inode: a file taken over unchanged keeps it."""
    return {str(p.relative_to(site)): p.stat().st_ino for p in site.rglob("*") if p.is_file()}


def snapshot(site: Path) -> dict[str, bytes]:
    return {str(p.relative_to(site)): p.read_bytes() for p in site.rglob("*") if p.is_file()}


def leftovers(newsletter: Path) -> list[str]:
    """Folders of unfinished builds beside the site."""
    return sorted(p.name for p in newsletter.iterdir() if p.name.startswith(".site.building"))


def test_a_rebuild_without_changes_renders_nothing(newsletter: Path) -> None:
    """Same issues, settings and layouts: every file is taken over from the last build."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    first = build_site(settings)
    before = inodes(newsletter / "site")
    again = build_site(settings)
    assert first.rendered > 0 and first.reused == 0
    assert again.rendered == 0 and again.reused == first.rendered
    after = inodes(newsletter / "site")
    assert {k: v for k, v in after.items() if k != ".spark-mail-site.json"} == {
        k: v for k, v in before.items() if k != ".spark-mail-site.json"
    }


def test_changing_one_issue_renders_only_what_shows_it(newsletter: Path) -> None:
    """Its page and the feeds (they carry its text); the listings show only its entry (title,
    date, tags...), which this change leaves as it was, so they are taken over."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    build_site(settings)
    before = inodes(newsletter / "site")
    path = newsletter / "issues" / f"{SECOND}.md"
    path.write_text(path.read_text().replace("One change at a time.", "Two changes, never."))
    build_site(settings)
    after = inodes(newsletter / "site")
    changed = {k for k in after if after[k] != before.get(k)} - {".spark-mail-site.json"}
    assert changed == {f"p/{SECOND}/index.html", "feed.xml", "atom.xml"}
    assert "Two changes, never." in (newsletter / "site" / "p" / SECOND / "index.html").read_text()
    assert "Two changes, never." in (newsletter / "site" / "feed.xml").read_text()
    fresh = build_site(settings, newsletter / "fresh")
    assert snapshot(newsletter / "site") == snapshot(fresh.folder)


@pytest.mark.slow
def test_a_changed_title_shows_in_every_listing_and_feed(newsletter: Path) -> None:
    """The cached entries are keyed by the issue file's hash: a new title is on the index,
    the 404 page, its tags' pages and in both feeds after an incremental build, exactly as a
    build from nothing makes them."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    build_site(settings)
    build_site(settings)  # the steady state: the next build recycles a folder
    before = inodes(newsletter / "site")
    path = newsletter / "issues" / f"{SECOND}.md"
    path.write_text(path.read_text().replace("title: Shipping small, often", "title: Ship it"))
    result = build_site(settings)
    site = newsletter / "site"
    after = inodes(site)
    changed = {k for k in after if after[k] != before.get(k)} - {".spark-mail-site.json"}
    shows_it = {"index.html", "404.html", "tags/engineering/index.html", "tags/delivery/index.html"}
    assert shows_it | {f"p/{SECOND}/index.html", "feed.xml", "atom.xml"} <= changed
    for file in [*shows_it, "feed.xml", "atom.xml", f"p/{SECOND}/index.html"]:
        text = (site / file).read_text()
        assert "Ship it" in text and "Shipping small, often" not in text, file
    assert f"p/{SAMPLE_SLUG}/index.html" not in changed and result.reused > 0
    fresh = build_site(settings, newsletter / "fresh")
    assert snapshot(site) == snapshot(fresh.folder)


def test_changed_settings_render_every_page_again(newsletter: Path) -> None:
    """The cached entries and pages belong to the settings they were made with: a new name
    is on every page and in the feeds, nothing is taken over."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    build_site(settings)
    toml = newsletter / "spark-mail.toml"
    toml.write_text(toml.read_text().replace('name = "Tiny Big Spark"', 'name = "Small Spark"'))
    result = build_site(settings_for(newsletter))
    assert result.reused == 0
    site = newsletter / "site"
    for file in ["index.html", "tags/engineering/index.html", "feed.xml", "atom.xml"]:
        assert "Small Spark" in (site / file).read_text(), file


@pytest.mark.slow
def test_a_layout_may_override_the_web_templates_and_every_page_follows(newsletter: Path):
    """The newsletter's own copy of the layout wins, and a change to it changes every page."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    build_site(settings)
    shutil.copytree(PACKAGE_LAYOUTS / "default", newsletter / "layouts" / "default")
    partial = newsletter / "layouts" / "default" / "partials" / "web-article.html"
    partial.write_text("<p>Our own web copy of {{ issue.title }}</p>\n")
    result = build_site(settings)
    page = (newsletter / "site" / "p" / SAMPLE_SLUG / "index.html").read_text()
    assert "Our own web copy of Engineering Leadership" in page
    assert result.reused == 0


def test_a_failed_build_leaves_the_old_site_as_it_was(newsletter: Path) -> None:
    """A broken web template: the error names it, the old site and nothing else remains."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    build_site(settings)
    before = snapshot(newsletter / "site")
    shutil.copytree(PACKAGE_LAYOUTS / "default", newsletter / "layouts" / "default")
    (newsletter / "layouts" / "default" / "web.html").write_text("{% if %}\n")
    with pytest.raises(LayoutError, match=r"web\.html"):
        build_site(settings)
    assert snapshot(newsletter / "site") == before
    assert leftovers(newsletter) == []


def test_a_write_failing_half_way_leaves_the_old_site(newsletter, monkeypatch) -> None:
    """The disk fills up after a few files: one clear error, the old site untouched."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    build_site(settings)
    before = snapshot(newsletter / "site")
    path = newsletter / "issues" / f"{SECOND}.md"
    path.write_text(path.read_text() + "\nMore.\n")
    real_write, written = Staging.write, []

    def write_then_fail(self: Staging, name: str, data: str | bytes) -> None:
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        written.append(name)
        real_write(self, name, data)

    monkeypatch.setattr(Staging, "write", write_then_fail)
    with pytest.raises(OSError):
        build_site(settings)
    assert snapshot(newsletter / "site") == before
    assert leftovers(newsletter) == []


@pytest.mark.slow
def test_a_reader_never_sees_a_half_built_site(newsletter: Path) -> None:
    """While the site is rebuilt again and again, every look at it finds a whole site: the
    index and the feeds, never a missing folder (two folders trade places in one step)."""
    a, b = newsletter / "a", newsletter / "b"
    a.mkdir()
    b.mkdir()
    if not exchange(a, b):
        pytest.skip("this system cannot swap two folders in one step (renameat2)")
    send_two(newsletter)
    settings = settings_for(newsletter)
    build_site(settings)
    site, stop, seen, problems = newsletter / "site", threading.Event(), [0], []

    def reader() -> None:
        while not stop.is_set():
            try:
                names = set(os.listdir(site))
                index = (site / "index.html").read_text()
            except OSError as exc:
                problems.append(repr(exc))
                continue
            if not {"index.html", "feed.xml", "p", "tags"} <= names or "</html>" not in index:
                problems.append(f"incomplete: {sorted(names)}")
            seen[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    path = newsletter / "issues" / f"{SECOND}.md"
    try:
        for n in range(12):
            path.write_text(path.read_text() + f"\nEdit {n}.\n")
            build_site(settings)
    finally:
        stop.set()
        thread.join()
    assert problems == [] and seen[0] > 0


@pytest.mark.slow
def test_colliding_issue_paths_fail_with_one_line_and_keep_the_old_site(newsletter: Path):
    """Launch.md and launch.md would be one page on a case-blind host: refused, exit 1."""
    send_two(newsletter)
    assert run_cli("site", "build", cwd=newsletter).returncode == 0
    before = snapshot(newsletter / "site")
    for name in ("Launch", "launch"):
        write_issue(newsletter, name, "title: Launch\ndate: 2025-03-01")
        mark_sent(newsletter, name, "2025-03-01T12:00:00+00:00")
    result = run_cli("site", "build", cwd=newsletter)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "collides with" in lines[0] and "Traceback" not in result.stderr
    assert "Launch.md" in lines[0] and "launch.md" in lines[0]
    assert snapshot(newsletter / "site") == before


def test_an_issue_on_the_index_path_is_refused(newsletter: Path) -> None:
    """base_url .../{slug}.html and an issue called index: it would replace the index."""
    add_issues(newsletter)
    set_site_url(newsletter, base_url="https://news.example.com/{slug}.html")
    write_issue(newsletter, "index", "title: Index\ndate: 2025-03-01")
    mark_sent(newsletter, "index", "2025-03-01T12:00:00+00:00")
    with pytest.raises(
        SiteError, match=r"issues/index.md: its page index.html collides with the archive index"
    ):
        build_site(settings_for(newsletter))
    assert not (newsletter / "site").exists() and leftovers(newsletter) == []


def test_base_url_without_slug_fails_with_one_line(newsletter: Path) -> None:
    """Every issue on one page is refused before anything is written (exit 2: settings)."""
    send_two(newsletter)
    set_site_url(newsletter, base_url="https://news.example.com/latest/")
    result = run_cli("site", "build", cwd=newsletter)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "has no {slug}" in result.stderr
    assert not (newsletter / "site").exists()


def test_an_unwritable_output_folder_fails_with_one_line(newsletter: Path) -> None:
    """--out under a file (no folder can be made there): one line naming it, exit 1."""
    send_two(newsletter)
    (newsletter / "taken").write_text("a file, not a folder\n")
    result = run_cli("site", "build", "--out", "taken/site", cwd=newsletter)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "cannot write the site" in result.stderr
    assert "taken/site" in result.stderr and "Traceback" not in result.stderr


def test_a_folder_spark_mail_did_not_build_is_never_replaced(newsletter: Path) -> None:
    """--out pointing at someone's files: refused, the files stay."""
    send_two(newsletter)
    (newsletter / "docs").mkdir()
    (newsletter / "docs" / "notes.txt").write_text("mine\n")
    result = run_cli("site", "build", "--out", "docs", cwd=newsletter)
    assert result.returncode == 1 and "refusing to replace it" in result.stderr
    assert (newsletter / "docs" / "notes.txt").read_text() == "mine\n"


def test_a_recycled_build_is_the_same_as_a_fresh_one(newsletter: Path) -> None:
    """The third build starts from the first one's folder: changed and removed issues come
    out exactly as a build into an empty folder makes them."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    build_site(settings)
    build_site(settings)
    path = newsletter / "issues" / f"{SECOND}.md"
    path.write_text(path.read_text().replace("One change at a time.", "Two changes, never."))
    (newsletter / "issues" / f"{SAMPLE_SLUG}.md").unlink()
    result = build_site(settings)
    assert result.issues == 1 and "is gone" in result.warnings[0]
    fresh = build_site(settings, newsletter / "fresh")
    assert snapshot(newsletter / "site") == snapshot(fresh.folder)
    assert not (newsletter / "site" / "p" / SAMPLE_SLUG).exists()


def test_a_failed_recycled_build_never_touches_the_live_site(newsletter, monkeypatch) -> None:
    """The recycled folder shares files with the live site: a new page is a new file, so a
    build that fails after writing it leaves the live page as it was."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    build_site(settings)
    build_site(settings)
    before = snapshot(newsletter / "site")
    path = newsletter / "issues" / f"{SECOND}.md"
    path.write_text(path.read_text().replace("One change at a time.", "Two changes, never."))
    real_write, written = Staging.write, []

    def fail_after_the_pages(self: Staging, name: str, data: str | bytes) -> None:
        if not name.startswith("p/"):
            raise OSError(28, "No space left on device")
        assert self.recycled
        real_write(self, name, data)
        written.append(name)

    monkeypatch.setattr(Staging, "write", fail_after_the_pages)
    with pytest.raises(OSError):
        build_site(settings)
    assert written == [f"p/{SECOND}/index.html"]
    assert snapshot(newsletter / "site") == before


def test_a_crashed_builds_folder_is_cleared_by_the_next_build(newsletter: Path) -> None:
    """A build killed half-way leaves `.site.building-*`; the next build removes it."""
    send_two(newsletter)
    crashed = newsletter / ".site.building-k3q9z_0a"  # as mkdtemp names it
    (crashed / "p").mkdir(parents=True)
    (crashed / "p" / "half.html").write_text("<p>half")
    build_site(settings_for(newsletter))
    assert not crashed.exists() and leftovers(newsletter) == []
