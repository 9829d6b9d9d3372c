"""`spark-mail site build`: every sent issue's web copy, the index, tag pages, feeds, sitemap.

Which issues: those the ledger lists as `sent` (dated by their send), so nothing is published
before the readers have it; `include_unsent` adds the others as a preview (marked as such,
kept out of search engines). Incremental: each file's inputs are hashed (see store.py), so a
changed issue re-renders its page and the listings, feeds and sitemap that show it; the
rest is taken over from the previous build.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_mail import __version__
from spark_mail.clock import SYSTEM_CLOCK, Clock
from spark_mail.config import Settings
from spark_mail.errors import ConfigError, SparkMailError
from spark_mail.scheduling.times import zone as time_zone
from spark_mail.site import feeds
from spark_mail.site.entries import NOT_FOUND_LATEST, Entry, TagGroups, newest_first, tag_groups
from spark_mail.site.sources import Source, find_sources
from spark_mail.site.store import (
    Record,
    Staging,
    build_lock,
    read_record,
    refuse_foreign,
    resolved,
    site_folder,
    site_target,
)
from spark_mail.site.urls import (
    ATOM,
    INDEX,
    NOT_FOUND,
    RSS,
    SITEMAP,
    TAGS,
    PathClaims,
    SiteUrls,
    site_urls,
    tag_file,
)

if TYPE_CHECKING:  # pages.py brings the renderer (Jinja, Markdown): imported when a page is made
    from spark_mail.site.pages import IssuePage

FORMAT = "1"  # bump when the pages change in a way the inputs' hashes do not show
PREVIEW_FOLDER = "site-preview"  # --include-unsent: never the folder the archive is served from
PARALLEL_FROM = 24  # issues to render before worker processes pay off
MAX_WORKERS = 4


@dataclass
class SiteResult:
    folder: Path
    url: str
    issues: int = 0
    drafts: int = 0
    tags: int = 0
    rendered: int = 0  # files made anew
    reused: int = 0  # files taken over unchanged from the previous build
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder),
            "url": self.url,
            "issues": self.issues,
            "drafts": self.drafts,
            "tags": self.tags,
            "files_rendered": self.rendered,
            "files_reused": self.reused,
            "seconds": round(self.seconds, 3),
            "feeds": {"rss": self.url + RSS, "atom": self.url + ATOM},
            "warnings": self.warnings,
        }


def build_key(settings: Settings, urls: SiteUrls, include_unsent: bool) -> str:
    """A hash of everything every page depends on: settings (secrets print masked), URLs,
    the layouts' files and spark-mail's version."""
    digest = hashlib.sha256()
    for part in (FORMAT, __version__, repr(settings), repr(urls), str(include_unsent)):
        digest.update(part.encode() + b"\0")
    for folder in settings.layout_dirs():
        for file in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if file.is_file():
                digest.update(str(file.relative_to(folder)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def hash_of(*parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class SiteBuilder:
    """One build into a Staging folder; reuses the previous build's files where it can."""

    def __init__(
        self,
        settings: Settings,
        urls: SiteUrls,
        staging: Staging,
        previous: Record | None,
        key: str,
    ) -> None:
        self.settings, self.urls, self.staging = settings, urls, staging
        self.zone = time_zone(settings)
        self.record = Record(key=key)
        self.previous = previous if previous is not None and previous.key == key else Record()
        self.articles: dict[str, str] = {}  # issue key -> article rendered in this build
        self.claims = PathClaims()
        self.rendered = self.reused = 0

    def emit(self, path: str, inputs: Any, make: Callable[[], str | bytes]) -> None:
        """Write `path`, or take it from the previous build when its inputs are unchanged."""
        key = hash_of(self.record.key, path, inputs)
        self.record.files[path] = key
        if self.previous.files.get(path) == key and self.staging.reuse(path):
            self.reused += 1
            return
        self.staging.write(path, make())
        self.rendered += 1

    def issue_key(self, source: Source) -> str:
        """Everything an issue's page and entry depend on (the build's key covers the rest)."""
        return hash_of(self.record.key, source.digest, source.sent_at)

    def render_issue(self, source: Source) -> IssuePage:
        page = render_source(source, self.settings, self.urls, self.zone)
        self.articles[self.issue_key(source)] = page.article
        return page

    def page_html(self, source: Source, page: IssuePage | None) -> str:
        return (page or self.render_issue(source)).html

    def issue_pages(self, sources: list[Source]) -> list[Entry]:
        """Every issue's page; the entries newest first."""
        for source in sources:  # every path is claimed before anything is written
            self.claims.claim(self.urls.issue_file(source.slug), str(source.path))
        self.claims.check_folders()
        keys = {source.slug: self.issue_key(source) for source in sources}
        loaded = {
            slug: Entry.load(old.get("entry"))
            for slug, old in self.previous.issues.items()
            if keys.get(slug) == old["key"]
        }
        cached = {slug: entry for slug, entry in loaded.items() if entry is not None}
        fresh = self.render_all([s for s in sources if s.slug not in cached])
        entries = []
        for source in sources:
            key, page = keys[source.slug], fresh.get(source.slug)
            entry = page.entry if page is not None else cached[source.slug]
            self.emit(entry.file, key, partial(self.page_html, source, page))
            self.record.issues[source.slug] = {"key": key, "entry": entry.to_json()}
            entries.append(entry)
        return newest_first(entries)

    def render_all(self, sources: list[Source]) -> dict[str, IssuePage]:
        """Render issues, on every core when there are many (a cold build of hundreds)."""
        workers = min(os.cpu_count() or 1, MAX_WORKERS)
        # Forked workers start at once with everything imported; forking is only safe while
        # this process has no other thread (a lock held elsewhere would stay held).
        can_fork = "fork" in get_all_start_methods() and threading.active_count() == 1
        if len(sources) < PARALLEL_FROM or workers < 2 or not can_fork:
            return {s.slug: self.render_issue(s) for s in sources}
        pages: dict[str, IssuePage] = {}
        with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            render = partial(render_or_none, settings=self.settings, urls=self.urls)
            done = pool.map(render, sources, chunksize=max(1, len(sources) // (workers * 4)))
            for source, page in zip(sources, done, strict=True):
                # An error is raised again here, in this process, with its own type and text.
                pages[source.slug] = page or self.render_issue(source)
                self.articles[self.issue_key(source)] = pages[source.slug].article
        return pages

    def article(self, source: Source) -> str:
        """An issue's article for the feeds: from this build, the last one, or rendered now."""
        key = self.issue_key(source)
        article = self.articles.get(key) or self.previous.articles.get(key)
        if article is None:
            article = self.render_issue(source).article
        self.record.articles[key] = article
        return article

    def listings(self, entries: list[Entry], groups: TagGroups) -> None:
        """The index, the tag list, a page per tag and the 404 page. Their inputs: the
        entries they list (all a listing is given of an issue), so a change to an issue's
        text that its entry does not show leaves them as they were."""
        for name, _tagged in groups.values():
            self.claims.claim(tag_file(name), f"the tag page of {name!r}")
        self.claims.check_folders()
        shown = {e.slug: self.record.issues[e.slug]["entry"] for e in entries}
        listed = list(shown.values())
        urls, settings = self.urls, self.settings

        def page(kind: str, listing: list[Entry], **options: str) -> Callable[[], str]:
            def make() -> str:
                from spark_mail.site.pages import render_list_page

                return render_list_page(kind, settings, urls, listing, **options)

            return make

        self.emit(INDEX, listed, page("index", entries, canonical=urls.root))
        self.emit(TAGS, listed, page("tags", entries, canonical=urls.tags_url))
        self.emit(NOT_FOUND, listed[:NOT_FOUND_LATEST], page("not-found", entries))
        for name, tagged in groups.values():
            inputs = [name, [shown[e.slug] for e in tagged]]
            self.emit(tag_file(name), inputs,
                      page("tag", tagged, tag=name, canonical=urls.tag_url(name)))  # fmt: skip

    def feeds_and_sitemap(
        self, entries: list[Entry], groups: TagGroups, sources: dict[str, Source]
    ) -> None:
        """Only what was sent: a feed reader keeps every item it fetched, and a search
        engine should not be sent to a preview (an unsent issue's page is noindex)."""
        entries = [e for e in entries if not e.draft]
        groups = {slug: (name, sent) for slug, (name, tagged) in groups.items()
                  if (sent := [e for e in tagged if not e.draft])}  # fmt: skip
        items = feeds.feed_entries(entries)
        articles = {e.slug: self.article(sources[e.slug]) for e in items}
        made: dict[str, bytes] = {}

        def feed(index: int) -> bytes:
            if not made:
                made["rss"], made["atom"] = feeds.feeds(items, articles, self.settings, self.urls)
            return made["rss" if index == 0 else "atom"]

        keys = [self.record.issues[e.slug]["key"] for e in items]
        self.emit(RSS, keys, partial(feed, 0))
        self.emit(ATOM, keys, partial(feed, 1))
        newest = entries[0].published[:10] if entries else ""
        pages = [(self.urls.root, newest), (self.urls.tags_url, newest)]
        pages += [(e.url, e.published[:10]) for e in entries]
        pages += [
            (self.urls.tag_url(name), tagged[0].published[:10]) for name, tagged in groups.values()
        ]
        self.emit(SITEMAP, pages, lambda: feeds.sitemap(pages))


def render_source(source: Source, settings: Settings, urls: SiteUrls, zone: dt.tzinfo) -> IssuePage:
    from spark_mail.issue import load_issue
    from spark_mail.site.pages import render_issue_page

    issue = load_issue(source.path)
    if issue.slug != source.slug:  # renamed since its send: its page stays where it was
        issue = dataclasses.replace(issue, slug=source.slug)
    return render_issue_page(issue, settings, urls, sent_at=source.sent_at, zone=zone)


def render_or_none(source: Source, *, settings: Settings, urls: SiteUrls) -> IssuePage | None:
    """render_source in a worker process; None on an error (the parent renders that issue
    again to raise it: exceptions with their own arguments do not cross processes intact)."""
    try:
        return render_source(source, settings, urls, time_zone(settings))
    except SparkMailError:
        return None


def other_folders(settings: Settings) -> dict[str, Path]:
    """The folders spark-mail writes besides the site: never the site's, nor inside it."""
    return {
        "out_dir, the built emails": settings.out_path,
        "the outbox, its emails": settings.path("outbox"),  # see providers/outbox.py
        "state_dir, the ledger": settings.state_path,
        "issues_dir": settings.issues_path,
        "layouts_dir": settings.layout_dirs()[0],
    }


def refuse_live(target: Path, live: Path, by_default: bool) -> None:
    """A preview (--include-unsent) is never built into the live site, a folder inside it
    (published and served with it) or one holding it (each build replaces the whole folder)."""
    if target == live or live in target.parents or target in live.parents:
        raise ConfigError(
            f"{target}: --include-unsent would put issues not sent yet on the live site "
            f"{live} (the folder the archive is published and served from)",
            hint=(
                f"{PREVIEW_FOLDER}/ is, holds or lies in the live site here: give the preview a "
                "folder with --out DIR"
                if by_default
                else f"leave out --out (a preview goes to {PREVIEW_FOLDER}/) or give "
                "another folder, not in or around the live site"
            ),
        )


def build_site(
    settings: Settings,
    out: Path | None = None,
    *,
    include_unsent: bool = False,
    lock_wait: float | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> SiteResult:
    """Build the site into `out` (default: site_folder), atomically. Raises SparkMailError.
    `lock_wait`: give up after this many seconds when another build holds the lock."""
    start = time.perf_counter()
    urls = site_urls(settings)
    default = settings.path(PREVIEW_FOLDER) if include_unsent else site_folder(settings)
    if include_unsent:
        refuse_live(resolved(out or default), resolved(site_folder(settings)), out is None)
    target = site_target(out or default, other_folders(settings))
    with build_lock(settings.state_path, wait=lock_wait, clock=clock):
        # What to publish is read only now: a build that waited for another must not
        # publish the ledger as it was before the wait (an issue sent since would vanish).
        refuse_foreign(target)
        sources, warnings = find_sources(settings, include_unsent)
        key = build_key(settings, urls, include_unsent)
        previous = read_record(target.with_name(f".{target.name}.previous"))
        staging = Staging(target, recycle=previous is not None and previous.key == key)
        try:
            builder = SiteBuilder(settings, urls, staging, read_record(target), key)
            entries = builder.issue_pages(sources)
            groups = tag_groups(entries)
            builder.listings(entries, groups)
            builder.feeds_and_sitemap(entries, groups, {s.slug: s for s in sources})
            staging.commit(builder.record)
        except BaseException:
            staging.discard()
            raise
    if urls.root.startswith("http://"):
        warnings.append(f"the site's address {urls.root} is not https: feed readers and link "
                        "previews expect https")  # fmt: skip
    if not sources:
        warnings.append("no issue has been sent yet: the archive is empty "
                        "(--include-unsent previews every issue)")  # fmt: skip
    drafts = sum(1 for s in sources if s.sent_at is None)
    return SiteResult(
        folder=target, url=urls.root, issues=len(sources) - drafts, drafts=drafts, tags=len(groups),
        rendered=builder.rendered, reused=builder.reused,
        seconds=time.perf_counter() - start, warnings=warnings,
    )  # fmt: skip
