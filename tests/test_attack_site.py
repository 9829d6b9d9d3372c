"""Attacks on the web archive (`spark-mail site build`, the rebuild after a send, the desk
serving it): a hostile editor, odd settings, a misbehaving disk and two processes at once
against the promises "every "View in browser" link lands on a whole page", "nothing is
public before the readers have it" and "bad input is one line, the old site stays".

Each test is one attack; its docstring says what happened and what happens now. Tests
marked "pins" hold a behaviour that was already right (kept so that it stays right).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import feedparser
import httpx
import pytest
from write_hooks import hooked

from conftest import SAMPLE_SLUG, run_cli, write_issue
from desk_support import InProcess, desk_settings
from site_support import (
    DRAFT,
    SECOND,
    add_issues,
    get,
    mark_sent,
    send_two,
    serve_folder,
    set_site_url,
    settings_for,
)
from spark_mail.clock import FakeClock
from spark_mail.errors import ConfigError, IssueError, SiteError
from spark_mail.ledger import SendState, open_ledger
from spark_mail.sending import send_issue
from spark_mail.site import build_site
from spark_mail.site.store import Staging


# -- helpers -------------------------------------------------------------------------------------
def snapshot(site: Path) -> dict[str, bytes]:
    return {str(p.relative_to(site)): p.read_bytes() for p in site.rglob("*") if p.is_file()}


def set_setting(root: Path, line: str) -> None:
    """Put `key = value` first in spark-mail.toml (replacing the key's old line)."""
    toml = root / "spark-mail.toml"
    key = line.split("=", 1)[0].strip()
    kept = [
        row for row in toml.read_text(encoding="utf-8").splitlines()
        if row.split("=", 1)[0].strip() != key
    ]  # fmt: skip
    toml.write_text("\n".join([line, *kept]) + "\n", encoding="utf-8")


def sent_issue(root: Path, name: str, front: str, body: str = "Hello, readers.\n") -> None:
    write_issue(root, name, front, body)
    mark_sent(root, name, "2025-03-01T12:00:00+00:00")


def desk_get(app: Any, path: str, host: str) -> httpx.Response:
    """GET `path` from the desk app as a request for `host` would arrive."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url=f"https://{host}") as client:
            return await client.get(path, headers={"host": host})

    return asyncio.run(go())


# -- hostile issue text ----------------------------------------------------------------------------
def test_a_noncharacter_in_an_issue_is_one_line_not_a_feed_traceback(newsletter: Path) -> None:
    """A title with U+FFFF (YAML's "\\uffff"): the feed writer (lxml) raised ValueError "All
    strings must be XML compatible", a traceback naming no file (and after a send, a warning
    that does not say which issue). Now the issue file is refused with its line, like any
    other character no text may carry, and nothing is written."""
    sent_issue(newsletter, "odd", 'title: "Odd \\uffff title"\ndate: 2025-03-01')
    with pytest.raises(IssueError, match=r"odd\.md.*U\+FFFF"):
        build_site(settings_for(newsletter))
    assert not (newsletter / "site").exists()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("site_url", "https://editor:hunter2pass@news.example.com"),
        ("base_url", "https://editor:hunter2pass@tinybigspark.com/p/{slug}"),
    ],
)
def test_a_password_in_the_site_address_is_refused_not_published(
    newsletter: Path, setting: str, value: str
) -> None:
    """site_url (or base_url) with a user and password (a staging site behind basic auth):
    every page's canonical link, the feeds and the sitemap published the password, and the
    build printed it. Now the settings are refused (exit 2), without repeating it."""
    send_two(newsletter)
    if setting == "site_url":
        set_site_url(newsletter, value)
    else:
        set_setting(newsletter, f'base_url = "{value}"')
    with pytest.raises(ConfigError) as caught:
        build_site(settings_for(newsletter))
    message = f"{caught.value} {caught.value.hint}"
    assert "password" in message and "hunter2pass" not in message
    assert not (newsletter / "site").exists()


def test_an_issue_dated_near_year_one_previews_instead_of_crashing(newsletter: Path) -> None:
    """An unsent issue dated 0001-01-01 in a time zone east of UTC: --include-unsent read
    its date as a time in that zone and converting it to UTC overflowed (OverflowError, a
    traceback). Now the preview builds and shows the issue's date."""
    set_setting(newsletter, 'timezone = "Asia/Tokyo"')
    write_issue(newsletter, "ancient", "title: Ancient\ndate: 0001-01-01")
    build_site(settings_for(newsletter), include_unsent=True)
    page = (newsletter / "site-preview" / "p" / "ancient" / "index.html").read_text(
        encoding="utf-8"
    )
    assert "January 1, 1" in page


def test_tags_in_other_scripts_get_their_own_pages(newsletter: Path) -> None:
    """Tags 日本語 and 中文 both became the slug "issue": one page /tags/issue/ named after
    whichever came first, listing both issues. And an issue tagged C++ and C# (one tag by
    the documented punctuation rule) was listed twice on that tag's page ("2 issues").
    Now each script's tag has its own page at its own (percent-encoded) address, and an
    issue is listed once per tag page."""
    sent_issue(newsletter, "jp", "title: Japan issue\ndate: 2025-03-01\ntags: [日本語]")
    sent_issue(newsletter, "cn", 'title: China issue\ndate: 2025-03-02\ntags: [中文, "C++", "C#"]')
    build_site(settings_for(newsletter))
    site = newsletter / "site"
    tags = (site / "tags" / "index.html").read_text(encoding="utf-8")
    found = re.findall(r'<a href="(/tags/[^"]*)">([^<]+)</a> <span class="count">\(([^)]*)\)', tags)
    links = {name: (href, count) for href, name, count in found}
    assert {"日本語", "中文", "C++"} <= links.keys(), tags
    assert links["日本語"][0] != links["中文"][0]
    assert links["C++"][1] == "1 issue"
    with serve_folder(site) as base:
        for name, title, other in (("日本語", "Japan", "China"), ("中文", "China", "Japan")):
            href = links[name][0]
            assert href.isascii(), href
            status, page = get(base + href)
            assert status == 200 and title in page and other not in page, (name, href)
        status, page = get(base + links["C++"][0])
        assert page.count("China issue</a>") == 1


def test_a_preview_keeps_unsent_issues_out_of_the_feeds_and_sitemap(newsletter: Path) -> None:
    """--include-unsent put the draft in feed.xml and atom.xml (feed readers fetch and keep
    it: published for good) and in sitemap.xml (search engines asked to crawl a noindex
    page). Now the feeds and the sitemap carry only what was sent; the draft's page is
    still there to look at."""
    send_two(newsletter)
    build_site(settings_for(newsletter), include_unsent=True)
    site = newsletter / "site-preview"
    assert (site / "p" / DRAFT / "index.html").is_file()
    for name in ("feed.xml", "atom.xml"):
        feed = feedparser.parse((site / name).read_bytes())
        assert [e.title for e in feed.entries] == [
            "Shipping small, often",
            "Engineering Leadership: Tech, People, Product Mastery!",
        ], name
    sitemap = (site / "sitemap.xml").read_text(encoding="utf-8")
    assert DRAFT not in sitemap and "/tags/drafts/" not in sitemap


# -- odd site addresses, served by the desk ------------------------------------------------------------
def test_the_desk_serves_the_archive_under_the_site_urls_path(newsletter: Path) -> None:
    """site_url = https://host/letters: the emails link to /letters/issues/<slug>/, the
    pages to /letters/feed.xml and the poll to /letters/poll/<slug>/results; the desk
    served the archive only at / and answered all of those 404. Now it serves the archive
    and the poll results under the site's path, where every link points."""
    from spark_mail.desk.app import create_app

    send_two(newsletter)
    set_site_url(newsletter, "https://tinybigspark.com/letters")
    build_site(settings_for(newsletter))
    page_file = newsletter / "site" / "issues" / SECOND / "index.html"
    results = re.search(r'<a href="([^"]+)">See how readers answered', page_file.read_text())
    assert results is not None
    client = InProcess(create_app(desk_settings(newsletter)))
    page = client.get(f"/letters/issues/{SECOND}/")
    assert page.status_code == 200 and "Shipping small, often" in page.text
    assert client.get("/letters/feed.xml").status_code == 200
    assert client.get("/letters/tags/").status_code == 200
    moved = client.get(f"/letters/issues/{SECOND}")
    assert moved.status_code == 308 and moved.headers["location"] == f"/letters/issues/{SECOND}/"
    poll = client.get(urlsplit(results.group(1)).path)
    assert poll.status_code == 200 and "How often do you ship?" in poll.text


def test_the_desk_answers_a_unicode_site_under_its_dns_name(newsletter: Path) -> None:
    """site_url = https://bücher.example: browsers ask for it as xn--bcher-kva.example (the
    DNS name; that is the Host header they send), and the desk refused that host with 400
    for every page of the archive. Now both spellings of the host are served."""
    from spark_mail.desk.app import create_app

    send_two(newsletter)
    set_site_url(newsletter, "https://bücher.example")
    build_site(settings_for(newsletter))
    app = create_app(desk_settings(newsletter))
    answer = desk_get(app, f"/issues/{SECOND}/", "xn--bcher-kva.example")
    assert answer.status_code == 200 and "Shipping small, often" in answer.text
    assert desk_get(app, f"/issues/{SECOND}/", "evil.example").status_code == 400


@pytest.mark.slow
def test_long_unbroken_words_still_fit_a_phone(newsletter: Path, browser: Any) -> None:
    """A newsletter name, a tag and a button text with no break in them (a German compound,
    a product name): the header's name, the tag pills and the promo button kept their
    full width, and the pages scrolled sideways on a 375 px phone (668 px wide). Now
    they wrap like the rest of the text."""
    from browser import page_width, served_page

    set_setting(newsletter, 'name = "TheVeryLongNewsletterNameWithoutAnySpacesInItWhatsoever"')
    tag = "Donaudampfschifffahrtselektrizitaetenhauptbetriebswerkbauunterbeamtengesellschaft"
    sent_issue(
        newsletter,
        "longy",
        f"title: Long words\ndate: 2025-03-01\ntags: [{tag}]\npromo:\n  title: A promo\n"
        "  cta_text: Calltoactionwithaverylongwordthatneverendsandkeepsgoingonandon\n"
        "  cta_url: https://example.com/",
    )
    build_site(settings_for(newsletter))
    with serve_folder(newsletter / "site") as base:
        page = served_page(browser, width=375, height=800, scheme="light")
        for path in ("/", "/p/longy/", "/tags/"):
            page.goto(base + path)
            width, viewport = page_width(page)
            assert width <= viewport, f"{path} is {width} px wide on a phone"


# -- the site folder and the disk ----------------------------------------------------------------------
def test_a_site_folder_that_is_a_symlink_loop_is_one_line(newsletter: Path) -> None:
    """site -> site (a symlink to itself): Path.resolve raised RuntimeError "Symlink loop",
    a traceback. Now it is one line naming the folder."""
    send_two(newsletter)
    (newsletter / "site").symlink_to("site")
    with pytest.raises(SiteError, match="site"):
        build_site(settings_for(newsletter))


@pytest.mark.slow
def test_a_pipe_under_an_issues_name_does_not_hang_the_build(newsletter: Path) -> None:
    """issues/pipe.md is a FIFO: the build hashed each issue file with read_bytes(), which
    waits for a writer that never comes (`site build --include-unsent` hung for ever; so
    did every send's rebuild when the FIFO had a sent issue's name). Now it is refused with
    one line, as every other command refuses it."""
    send_two(newsletter)
    os.mkfifo(newsletter / "issues" / "pipe.md")
    try:
        result = run_cli("site", "build", "--include-unsent", cwd=newsletter, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("site build hung on a FIFO in issues/")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "pipe.md" in result.stderr
    assert "not a regular file" in result.stderr


def test_a_damaged_build_record_is_ignored_not_a_traceback(newsletter: Path) -> None:
    """.spark-mail-site.json edited or damaged but still JSON (an entry without its title):
    the next build raised TypeError from the cached entry. The record is only a cache: now
    a record that cannot be used is ignored and every page is rendered again."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    build_site(settings)
    manifest = newsletter / "site" / ".spark-mail-site.json"
    data = json.loads(manifest.read_text(encoding="utf-8"))
    for issue in data["issues"].values():
        del issue["entry"]["title"]
    data["files"]["index.html"] = ["not", "a", "hash"]
    manifest.write_text(json.dumps(data), encoding="utf-8")
    result = build_site(settings)
    assert result.issues == 2
    assert "Shipping small, often" in (newsletter / "site" / "index.html").read_text()


def test_folders_beside_the_site_that_spark_mail_did_not_make_are_kept(newsletter: Path) -> None:
    """A copy of the old site kept as .site.previous.keep (or .site.previous-2024): the
    next build deleted it with its own leftovers, because it removed every folder whose
    name merely started with ".site.previous". Now only its own folders are removed."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    build_site(settings)
    kept = []
    for name in (".site.previous.keep", ".site.previous-2024", ".site.building-notes"):
        (newsletter / name).mkdir()
        (newsletter / name / "notes.txt").write_text("mine\n")
        kept.append(newsletter / name / "notes.txt")
    build_site(settings)
    build_site(settings)
    assert [p.is_file() for p in kept] == [True, True, True]


@pytest.mark.slow
def test_a_file_the_build_cannot_delete_does_not_stop_every_later_build(newsletter: Path):
    """A file in the site that this user cannot delete (a certbot webroot's challenge
    written by root into site/.well-known/, here an immutable file): once the site was
    replaced it sat in .site.previous, and from then on every build (and every send's
    rebuild) failed with "cannot write the site", though the site folder itself was fine.
    Now what cannot be cleared away is left where it is and the builds go on."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    build_site(settings)
    stuck = newsletter / "site" / ".well-known" / "acme-challenge" / "token"
    stuck.parent.mkdir(parents=True)
    stuck.write_text("challenge\n")
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a file undeletable here (chattr +i)")
    try:
        for n in range(4):
            path = newsletter / "issues" / f"{SECOND}.md"
            path.write_text(path.read_text() + f"\nEdit {n}.\n")
            build_site(settings)
            page = (newsletter / "site" / "p" / SECOND / "index.html").read_text()
            assert f"Edit {n}." in page
    finally:
        for file in newsletter.glob("**/.well-known/acme-challenge/token"):
            subprocess.run(["chattr", "-i", str(file)], check=True)


@pytest.mark.parametrize("folder", ["dist", "outbox", ".spark-mail"])
def test_the_site_is_never_built_into_another_spark_mail_folder(newsletter: Path, folder: str):
    """site_dir = "dist" (the name many site generators use), before dist/ existed: the
    archive was built there, then `spark-mail build DRAFT` wrote the draft's email into the
    live site (served by the desk, published by the next sync), and the next rebuild
    swapped the email builds out and deleted them. The same with outbox/ (editor test
    copies, each reader's copy with its tokens) and the state folder. Now such a site
    folder is refused with one line (exit 2) before anything is written."""
    send_two(newsletter)
    set_setting(newsletter, f'site_dir = "{folder}"')
    if folder == ".spark-mail":
        shutil.rmtree(newsletter / ".spark-mail")
    with pytest.raises(ConfigError, match=re.escape(folder)):
        build_site(settings_for(newsletter))
    assert not (newsletter / folder / "index.html").exists()


def test_a_site_folder_replaced_during_the_build_is_not_swapped_away(
    newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a build runs, someone puts their own folder where the site was (a deploy
    script, an editor restoring a backup). The build swapped it out as .site.previous,
    which the next build deleted. Now the build checks again before it swaps, refuses,
    and the folder stays where it is."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    build_site(settings)
    site, real_write = newsletter / "site", Staging.write

    def replace_then_write(self: Staging, name: str, data: str | bytes) -> None:
        if not (site / "notes.txt").exists():
            shutil.rmtree(site)
            site.mkdir()
            (site / "notes.txt").write_text("mine\n")
        real_write(self, name, data)

    monkeypatch.setattr(Staging, "write", replace_then_write)
    path = newsletter / "issues" / f"{SECOND}.md"
    path.write_text(path.read_text() + "\nMore.\n")
    with pytest.raises(SiteError, match="refusing to replace"):
        build_site(settings)
    assert (site / "notes.txt").read_text() == "mine\n"


@pytest.mark.slow
def test_a_build_that_waited_for_another_uses_the_ledger_as_it_is_then(
    newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two builds at once: build B read which issues were sent, then waited for the lock
    held by build A; meanwhile an issue was sent (A, the send's rebuild, published it);
    then B built from what it had read before waiting, and the new issue's page vanished
    from the live site. Now a build reads the ledger and the issue files once it holds
    the lock."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    build_site(settings)
    write_issue(newsletter, "late", "title: Sent while B waited\ndate: 2025-03-01")
    waiting, real_flock = threading.Event(), fcntl.flock
    holder = (settings.state_path / "site.lock").open("a")
    real_flock(holder, fcntl.LOCK_EX)

    def flock(handle: Any, operation: int) -> None:
        waiting.set()
        real_flock(handle, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    errors: list[BaseException] = []

    def build_b() -> None:
        try:
            build_site(settings)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=build_b)
    thread.start()
    try:
        assert waiting.wait(30), "build B never reached the lock"
        mark_sent(newsletter, "late", "2025-03-01T12:00:00+00:00")  # A's send
    finally:
        real_flock(holder, fcntl.LOCK_UN)
        holder.close()
        thread.join()
    assert errors == []
    assert (newsletter / "site" / "p" / "late" / "index.html").is_file()


@pytest.mark.slow
def test_a_renamed_sent_issue_keeps_its_page_where_the_emails_point(newsletter: Path) -> None:
    """An issue file renamed after its send (a typo in the name fixed): the ledger knows it
    is the same issue (its text), but the archive said the sent issue "is gone" and dropped
    its page, so the "View in browser" link of every email already sent answered 404. Now
    the page stays at the address the emails carry."""
    add_issues(newsletter)
    settings = settings_for(newsletter)
    report = send_issue(SECOND, settings, mode="send", force=True, clock=FakeClock())
    assert report.outcome == "sent"
    build_site(settings)
    (newsletter / "issues" / f"{SECOND}.md").rename(newsletter / "issues" / "renamed.md")
    result = build_site(settings, include_unsent=True)
    page = newsletter / "site-preview" / "p" / SECOND / "index.html"
    assert page.is_file() and "One change at a time." in page.read_text(encoding="utf-8")
    assert not (newsletter / "site-preview" / "p" / "renamed").exists()  # not also a draft
    assert result.issues == 1 and result.warnings == []
    build_site(settings)  # the live site, rebuilt after the rename
    live = newsletter / "site" / "p" / SECOND / "index.html"
    assert live.is_file() and "One change at a time." in live.read_text(encoding="utf-8")


# -- the rebuild after a send ----------------------------------------------------------------------------
@pytest.mark.slow
def test_a_send_whose_rebuild_meets_a_stuck_build_still_returns(newsletter: Path) -> None:
    """Another process holds the site's lock and never lets go (a `site build` stopped
    with Ctrl-Z, a hung disk): the send went out, then its rebuild waited on the lock for
    ever, so the command never reported the send (and a cron dispatch never ended). Now
    the rebuild after a send waits a bounded time on the clock, then gives up with a
    warning; the send is reported as sent."""
    set_setting(newsletter, 'site_dir = "site"')
    settings = settings_for(newsletter)
    settings.state_path.mkdir(parents=True, exist_ok=True)
    holder = (settings.state_path / "site.lock").open("a")
    fcntl.flock(holder, fcntl.LOCK_EX)
    reports: list[Any] = []
    thread = threading.Thread(
        target=lambda: reports.append(
            send_issue(SAMPLE_SLUG, settings, mode="send", clock=FakeClock())
        ),
        daemon=True,
    )
    thread.start()
    try:
        thread.join(30)  # a guard only: with the fake clock the wait is no real time
        returned = not thread.is_alive()
    finally:
        fcntl.flock(holder, fcntl.LOCK_UN)
        holder.close()
        thread.join()
    assert returned, "the send never returned while another build held the lock"
    report = reports[0]
    assert report.outcome == "sent" and "another" in (report.site_problem or "")


def test_ctrl_c_during_the_rebuild_still_reports_the_send(
    newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the archive is rebuilt after a send: the issue had gone out (the ledger
    says sent) but KeyboardInterrupt left the send unreported ("interrupted", exit 130), so
    the editor was told nothing went out. Now the interrupted rebuild is a warning and the
    send is reported as sent."""
    import spark_mail.site

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(spark_mail.site, "rebuild_site_after_send", interrupted)
    set_setting(newsletter, 'site_dir = "site"')
    settings = settings_for(newsletter)
    try:
        report = send_issue(SAMPLE_SLUG, settings, mode="send", clock=FakeClock())
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C in the rebuild hid the send's report")
    assert report.outcome == "sent" and "interrupted" in (report.site_problem or "")


# -- pins: behaviours that were right already ----------------------------------------------------------
def test_pins_template_syntax_in_an_issue_is_shown_never_run(newsletter: Path) -> None:
    """Pins: an issue about templates (`{{ 7*7 }}`, `{% if %}`, `*|FNAME|*`) is shown as
    written, escaped; no issue text is ever rendered as a template (the author's own words
    on the web copy are not a merge tag to strip)."""
    sent_issue(
        newsletter,
        "templates",
        'title: "Using {{ 7*7 }} and </script>"\ndate: 2025-03-01',
        "Write `{% if reader %}` or *|FNAME|* or %recipient.name%.\n",
    )
    build_site(settings_for(newsletter))
    page = (newsletter / "site" / "p" / "templates" / "index.html").read_text(encoding="utf-8")
    assert "<h1>Using {{ 7*7 }} and &lt;/script&gt;</h1>" in page and ">49<" not in page
    assert "<code>{% if reader %}</code>" in page


@pytest.mark.slow
def test_pins_a_scheduled_issue_is_not_published_by_another_sends_rebuild(newsletter: Path):
    """Pins: an issue handed to the ESP's scheduler (not out yet) stays off the site when
    another issue's send rebuilds it."""
    write_issue(newsletter, "later", "title: Scheduled for later\ndate: 2025-03-01")
    settings = settings_for(newsletter)
    with open_ledger(settings) as ledger:
        at = FakeClock().now()
        ledger.claim("later", "buttondown", "esp", "schedule", at)
        ledger.mark_scheduled("later", "2030-01-01T08:00:00+00:00", {"id": "x"}, at)
        assert ledger.get("later").state == SendState.SCHEDULED  # type: ignore[union-attr]
    set_setting(newsletter, 'site_dir = "site"')
    report = send_issue(SAMPLE_SLUG, settings_for(newsletter), mode="send", clock=FakeClock())
    assert report.outcome == "sent" and report.site_problem is None
    site = newsletter / "site"
    assert (site / "p" / SAMPLE_SLUG / "index.html").is_file()
    everything = b"".join(snapshot(site).values()).decode()
    assert "Scheduled for later" not in everything


@pytest.mark.slow
def test_pins_a_build_killed_mid_way_leaves_the_old_site_whole(
    newsletter: Path, tmp_path: Path
) -> None:
    """Pins: `site build` killed with SIGKILL while it renders: the old site is exactly as
    it was, and the next build clears the half-made folder and succeeds."""
    send_two(newsletter)
    for n in range(60):
        sent_issue(newsletter, f"issue-{n:03d}", f"title: Issue {n}\ndate: 2025-03-01")
    assert run_cli("site", "build", cwd=newsletter).returncode == 0
    before = snapshot(newsletter / "site")
    set_setting(newsletter, 'name = "A new name for every page"')  # every page is redone
    # Killed half-way through writing the first page that names issue 30: a point inside
    # the build, whatever the machine's speed (a kill timed from outside could come after
    # a quick build had ended).
    process = hooked(tmp_path, r"text:Issue 30\b", "kill", "site", "build", cwd=newsletter)
    _, err = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, err
    assert list(newsletter.glob(".site.building-*/p"))  # it was writing the new pages
    assert snapshot(newsletter / "site") == before
    again = run_cli("site", "build", cwd=newsletter)
    assert again.returncode == 0, again.stderr
    assert not list(newsletter.glob(".site.building-*"))
    assert "A new name for every page" in (newsletter / "site" / "index.html").read_text()


@pytest.mark.slow
def test_pins_nothing_unsent_reaches_the_site_after_test_and_dry_runs(newsletter: Path) -> None:
    """Pins: editor test copies and dry runs record no send, so a later rebuild publishes
    nothing of them; the draft stays off the site."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    for mode in ("test", "dry-run"):
        send_issue(DRAFT, settings, mode=mode, clock=FakeClock(), to=["ed@example.com"])
    build_site(settings)
    assert not (newsletter / "site" / "p" / DRAFT).exists()
    everything = b"".join(snapshot(newsletter / "site").values()).decode()
    assert "Not out yet" not in everything and "Secret plans" not in everything


@pytest.mark.slow
def test_a_preview_inside_or_around_the_live_site_is_refused(newsletter: Path) -> None:
    """`--include-unsent --out site/preview` was built: the unsent issues sat in a folder
    inside the live site, published with it and served by the desk at /preview/p/<draft>/.
    Now a preview folder inside the live site (by any spelling or symlink), or holding it,
    is refused like the live folder itself; nothing is written."""
    send_two(newsletter)
    assert run_cli("site", "build", cwd=newsletter).returncode == 0
    before = snapshot(newsletter / "site")
    (newsletter / "elsewhere").symlink_to(newsletter / "site")
    for out in ("site/preview", "site/p/", "elsewhere/preview", str(newsletter / "site" / "x")):
        result = run_cli("site", "build", "--include-unsent", "--out", out, cwd=newsletter)
        assert result.returncode == 2, (out, result.stdout, result.stderr)
        assert "live site" in result.stderr and result.stderr.count("\n") == 1
    assert snapshot(newsletter / "site") == before
    set_setting(newsletter, 'site_dir = "public/site"')
    assert run_cli("site", "build", cwd=newsletter).returncode == 0
    (newsletter / "public" / "site" / ".spark-mail-site.json").rename(
        newsletter / "public" / ".spark-mail-site.json"
    )  # a folder spark-mail built, holding the live site
    with pytest.raises(ConfigError, match="live site"):
        build_site(settings_for(newsletter), newsletter / "public", include_unsent=True)
    assert (newsletter / "public" / "site" / "index.html").is_file()


@pytest.mark.slow
def test_site_dir_naming_the_preview_folder_says_to_give_the_preview_one(newsletter: Path):
    """With site_dir = "site-preview" the live site is site-preview/, so a preview has no
    default folder: refused (exit 2), and the hint said "leave out --out" to someone who
    had. Now it says to give the preview a folder; `--out` elsewhere builds it."""
    send_two(newsletter)
    set_setting(newsletter, 'site_dir = "site-preview"')
    assert run_cli("site", "build", cwd=newsletter).returncode == 0
    before = snapshot(newsletter / "site-preview")
    result = run_cli("site", "build", "--include-unsent", cwd=newsletter)
    assert result.returncode == 2, result.stdout
    assert "live site" in result.stderr and "--out DIR" in result.stderr
    assert "leave out --out" not in result.stderr
    assert snapshot(newsletter / "site-preview") == before
    again = run_cli("site", "build", "--include-unsent", "--out", "draft-view", cwd=newsletter)
    assert again.returncode == 0, again.stderr
    assert (newsletter / "draft-view" / "p" / DRAFT / "index.html").is_file()
