"""The web pages: an issue's web copy and the listings, rendered by the layout's web templates.

An issue page gets the email's view model (render.build_context, without a reader) minus what
belongs to one reader: no preheader, no unsubscribe link, no per-reader tokens or merge tags.
The poll shows its question and options and links to its live results on the reader desk
(`site_url`), or is left out without one. Templates: `web.html` (an issue), `web-list.html`
(index, tags, one tag, 404) and `partials/web-*.html`, looked up in the issue's layout first,
then in the default one, so a layout may override any of them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup

from spark_mail.colors import parse_color, readable, to_hex
from spark_mail.config import Settings
from spark_mail.errors import located
from spark_mail.issue import Issue
from spark_mail.render import LayoutReader, NoReader, build_context
from spark_mail.render import layout as layout_mod
from spark_mail.render import markdown as md
from spark_mail.site.entries import NOT_FOUND_LATEST, Entry, make_entry, tag_groups
from spark_mail.site.urls import SiteUrls

ISSUE_TEMPLATE = "web.html"
ARTICLE_TEMPLATE = "partials/web-article.html"
LIST_TEMPLATE = "web-list.html"
LIST_LAYOUT = "default"  # the index, tag and 404 pages use the newsletter's default layout
DARK_CARD = "#161b22"
LIGHT_BOX = "#f6f8fa"  # the lightest background links stand on (sponsor boxes)


@dataclass(frozen=True)
class IssuePage:
    entry: Entry
    html: str
    article: str  # the issue's content alone: the feeds' full text


def palette(settings: Settings) -> dict[str, str]:
    """The brand's colours, adjusted where needed so that text on them passes WCAG AA."""
    accent = css_hex(settings.brand.accent_color, "#0b57d0")
    background = css_hex(settings.brand.background_color, "#f4f4f5")
    return {
        "accent": accent,
        "background": background,
        "link": readable(accent, LIGHT_BOX),
        "link_dark": readable(accent, DARK_CARD),
        "link_on_background": readable(accent, background),
        "text_on_background": readable("#1f2328", background),
        "muted_on_background": readable("#57606a", background),
    }


def css_hex(color: str, fallback: str) -> str:
    """Any CSS colour the email understands, as #rrggbb: nothing else reaches the pages'
    style sheet."""
    rgb = parse_color(color)
    return to_hex(rgb) if rgb is not None else fallback


def site_context(settings: Settings, urls: SiteUrls) -> dict[str, Any]:
    return {
        "name": settings.name,
        "language": settings.language,
        "home": urls.href(urls.root),
        "tags": urls.href(urls.tags_url),
        "rss": urls.href(urls.rss_url),
        "atom": urls.href(urls.atom_url),
        "rss_url": urls.rss_url,
        "atom_url": urls.atom_url,
        "logo_url": settings.brand.logo_url,
        "disclaimer": settings.disclaimer,
        "colors": palette(settings),
    }


def tag_links(tags: tuple[str, ...], urls: SiteUrls) -> list[dict[str, str]]:
    return [{"name": tag, "href": urls.href(urls.tag_url(tag))} for tag in tags]


def absolute(url: str) -> str:
    """Canonical and OpenGraph URLs must be absolute: a preview without a site has none."""
    return url if url.startswith(("https://", "http://")) else ""


def web_poll(issue: Issue, urls: SiteUrls) -> dict[str, Any] | None:
    results = urls.poll_results_url(issue.slug)
    if issue.poll is None or not results:
        return None
    return {
        "question": issue.poll.question,
        "options": list(issue.poll.options),
        "results_url": results,
    }


def issue_context(
    issue: Issue, settings: Settings, urls: SiteUrls, blocks: list[md.Block], entry: Entry
) -> dict[str, Any]:
    context = build_context(issue, settings, blocks)  # no reader: no tokens, generic links
    context["issue"] = {**context["issue"], "preheader": "", "web_url": entry.url}
    context["newsletter"] = {**context["newsletter"], "unsubscribe_url": ""}
    context["reader"] = LayoutReader(NoReader(), "")
    context["poll"] = web_poll(issue, urls)
    context["site"] = site_context(settings, urls)
    context["page"] = {
        "kind": "issue",
        "title": f"{entry.title} | {settings.name}",
        "heading": entry.title,
        "description": entry.description,
        "canonical": absolute(entry.url),
        "image": absolute(entry.image),
        "image_alt": entry.image_alt,
        "large_image": bool(issue.promo and issue.promo.image),
        "og_type": "article",
        "published": entry.published,
        "tags": tag_links(entry.tags, urls),
        "draft": entry.draft,
    }
    return context


def render(layout_dir: Path, settings: Settings, template: str, context: dict[str, Any]) -> str:
    return layout_mod.render_mjml(layout_dir, settings.layout_dirs(), context, template)


def render_issue_page(
    issue: Issue, settings: Settings, urls: SiteUrls, *, sent_at: str | None, zone: dt.tzinfo
) -> IssuePage:
    """The web copy of one issue; `sent_at` None: a preview of an issue not sent yet."""
    blocks = md.split_blocks(md.parse(issue.body))
    entry = make_entry(
        issue,
        settings,
        blocks,
        url=urls.issue_url(issue.slug),
        file=urls.issue_file(issue.slug),
        sent_at=sent_at,
        zone=zone,
    )
    context = issue_context(issue, settings, urls, blocks, entry)
    layout_dir = layout_mod.find_layout(
        issue.layout, settings.layout_dirs(), located(issue.path, issue.layout_line)
    )
    article = render(layout_dir, settings, ARTICLE_TEMPLATE, context)
    html = render(layout_dir, settings, ISSUE_TEMPLATE, {**context, "article": Markup(article)})
    return IssuePage(entry, html, article)


def listed(entry: Entry, urls: SiteUrls) -> dict[str, Any]:
    return {
        "title": entry.title,
        "subtitle": entry.subtitle,
        "number": entry.number,
        "date": entry.date,
        "published": entry.published,
        "href": urls.href(entry.url),
        "tags": tag_links(entry.tags, urls),
        "draft": entry.draft,
    }


LIST_PAGES = {  # kind -> (heading, intro); {name} and {tag} are filled in
    "index": ("{name}", "Every issue, newest first."),
    "tags": ("Topics", "Every tag used in an issue."),
    "tag": ("Issues about “{tag}”", "Newest first."),
    "not-found": ("Page not found", "There is no page at this address. The latest issues:"),
}


def render_list_page(
    kind: str,
    settings: Settings,
    urls: SiteUrls,
    entries: list[Entry],
    *,
    tag: str = "",
    canonical: str = "",
) -> str:
    """The index (`entries` newest first), the tag list, one tag's page or the 404 page."""
    heading, intro = (t.format(name=settings.name, tag=tag) for t in LIST_PAGES[kind])
    shown = entries[:NOT_FOUND_LATEST] if kind == "not-found" else entries
    groups = tag_groups(entries) if kind == "tags" else {}
    context = {
        "site": site_context(settings, urls),
        "page": {
            "kind": kind,
            "title": heading if kind == "index" else f"{heading} | {settings.name}",
            "heading": heading,
            "intro": intro,
            "description": f"{intro} The archive of {settings.name}.",
            "canonical": absolute(canonical),
            "image": absolute(settings.brand.logo_url),
            "image_alt": settings.name,
            "large_image": False,
            "og_type": "website",
            "published": "",
            "tags": [],
            "draft": False,
        },
        "entries": [listed(e, urls) for e in shown],
        "tags": [
            {"name": name, "href": urls.href(urls.tag_url(name)), "count": len(tagged)}
            for name, tagged in groups.values()
        ],
    }
    layout_dir = layout_mod.find_layout(LIST_LAYOUT, settings.layout_dirs())
    return render(layout_dir, settings, LIST_TEMPLATE, context)
