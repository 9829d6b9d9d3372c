"""RSS 2.0 and Atom feeds (feedgen) with each issue's full content, and sitemap.xml.

The feeds carry the newest FEED_ITEMS issues (a feed of every issue ever sent would grow
without end; readers keep what they fetched). Every date comes from the entries, never the
clock, so the same archive gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
from email.utils import parseaddr
from html import escape  # xml.sax.saxutils would import urllib.request

from spark_mail.config import Settings
from spark_mail.site.entries import Entry
from spark_mail.site.urls import SiteUrls

FEED_ITEMS = 20
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # "updated" of a feed with no issue yet


def feed_entries(entries: list[Entry]) -> list[Entry]:
    """The issues the feeds carry (`entries` newest first)."""
    return entries[:FEED_ITEMS]


def feeds(
    entries: list[Entry], articles: dict[str, str], settings: Settings, urls: SiteUrls
) -> tuple[bytes, bytes]:
    """(RSS 2.0, Atom) of `entries` (newest first), each with its article HTML in full."""
    from feedgen.feed import FeedGenerator

    updated = entries[0].published_at if entries else EPOCH
    author_name, author_email = parseaddr(settings.from_address)
    generator = FeedGenerator()
    generator.id(urls.root)
    generator.title(settings.name)
    generator.subtitle(f"The latest issues of {settings.name}, in full.")  # RSS: description
    generator.language(settings.language)
    generator.author({"name": author_name or settings.name, **_email(author_email)})
    generator.link(href=urls.root, rel="alternate")
    generator.generator("spark-mail")
    generator.updated(updated)
    generator.lastBuildDate(updated)
    if settings.brand.logo_url:
        generator.logo(settings.brand.logo_url)
    for entry in reversed(entries):  # feedgen puts each new entry first
        item = generator.add_entry()
        item.id(entry.url)
        item.guid(entry.url, permalink=True)
        item.title(entry.title)
        item.link(href=entry.url)
        item.published(entry.published_at)
        item.updated(entry.published_at)
        if entry.description:
            item.summary(entry.description)
        item.content(articles[entry.slug], type="html")
        for tag in entry.tags:
            item.category(term=tag)
    generator.link(href=urls.atom_url, rel="self")
    atom = generator.atom_str(pretty=True)
    generator.link(href=urls.rss_url, rel="self", replace=True)
    generator.link(href=urls.root, rel="alternate")
    return generator.rss_str(pretty=True), atom


def _email(address: str) -> dict[str, str]:
    return {"email": address} if "@" in address else {}


def sitemap(pages: list[tuple[str, str]]) -> bytes:
    """sitemap.xml: (absolute URL, last change as YYYY-MM-DD or "") per page."""
    rows = []
    for url, lastmod in pages:
        when = f"<lastmod>{lastmod}</lastmod>" if lastmod else ""
        rows.append(f"  <url><loc>{escape(url, quote=False)}</loc>{when}</url>")
    body = "\n".join(rows)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
        f"{body}\n</urlset>\n"
    ).encode()
