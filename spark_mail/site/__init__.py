"""The web archive: a static site of every sent issue, with an index, tag pages, RSS and Atom
feeds and a sitemap, built from the same issue files and layouts as the emails.

    build_site(settings, out=None, include_unsent=False) -> SiteResult   `spark-mail site build`
    site_folder(settings) -> Path        where the site is built and served from (the desk)
    rebuild_site_after_send(settings)    after a send: rebuild into site_dir, if it is set
                                         (waiting at most AFTER_SEND_LOCK_WAIT for another)
    web_page(path, settings) -> str      one issue's web copy (the preview's web pane)

How it fits together: urls.py (where each page lives, collisions), sources.py (which issue
files, from the ledger), entries.py (what a listing or feed knows of an issue), pages.py (the
web copy's view model, the layout's web templates), feeds.py (RSS, Atom, sitemap), store.py
(the site folder, atomic swap, the build record that makes rebuilds incremental, the lock),
build.py (one build).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_mail.clock import SYSTEM_CLOCK, Clock
from spark_mail.config import Settings
from spark_mail.site.store import site_folder

if TYPE_CHECKING:
    from spark_mail.site.build import SiteResult, build_site

# How long the rebuild after a send waits for another build of the site (a cold build of
# 500 issues takes ~6 s) before it gives up: a stuck build must not keep a send (or a cron
# dispatch) from ending and reporting what went out.
AFTER_SEND_LOCK_WAIT = 300.0


def rebuild_site_after_send(
    settings: Settings, *, clock: Clock = SYSTEM_CLOCK
) -> SiteResult | None:
    """Rebuild the site into `site_dir` after a send, so the email's "View in browser" link
    works the moment it arrives. A no-op without `site_dir`. Atomic: on any error the old
    site stays as it was and the error is raised (the caller reports it; the send stands)."""
    if not settings.site_dir:
        return None
    from spark_mail.site.build import build_site

    return build_site(settings, lock_wait=AFTER_SEND_LOCK_WAIT, clock=clock)


def web_page(path: Path, settings: Settings) -> str:
    """The web copy of one issue file as the site would publish it (sent or not), for the
    preview: it works without any URL setting (links are then relative to `/`)."""
    from spark_mail.issue import load_issue
    from spark_mail.ledger import SendState, open_ledger
    from spark_mail.scheduling.times import zone as time_zone
    from spark_mail.site.pages import render_issue_page
    from spark_mail.site.urls import site_urls

    issue = load_issue(path)
    with open_ledger(settings) as ledger:
        record = ledger.get(issue.slug)
    sent_at = record.sent_at if record is not None and record.state == SendState.SENT else None
    urls = site_urls(settings, strict=False)
    page = render_issue_page(issue, settings, urls, sent_at=sent_at, zone=time_zone(settings))
    return page.html


if not TYPE_CHECKING:  # mypy reads the import above; a __getattr__ it saw would type any name

    def __getattr__(name: str) -> Any:
        """build_site and SiteResult, imported from build.py when first asked for: the desk
        reads the site folder (urls.py, store.py) and never builds, and build.py brings the
        sources, entries, feeds and a process pool (~20 ms of each desk worker's start)."""
        if name in ("SiteResult", "build_site"):
            from spark_mail.site import build

            return getattr(build, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SiteResult", "build_site", "rebuild_site_after_send", "site_folder", "web_page"]
