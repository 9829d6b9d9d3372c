"""One published issue as the index, tag pages, feeds and sitemap see it (an Entry), and when
it counts as published: the send date from the ledger (a preview of an unsent issue: its
`send_at`, else its date)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from spark_mail.site.urls import tag_slug

if TYPE_CHECKING:  # the renderer is imported only by a build that renders a page
    from spark_mail.config import Settings
    from spark_mail.issue import Issue
    from spark_mail.render import markdown as md

DESCRIPTION_CHARS = 200  # what link previews show of a description
NOT_FOUND_LATEST = 5  # the issues the 404 page lists


@dataclass(frozen=True)
class Entry:
    """What a listing, feed or sitemap needs of one issue; stored in the build record."""

    slug: str
    title: str
    subtitle: str
    number: int | None
    tags: tuple[str, ...]
    published: str  # ISO 8601 in UTC: sortable as text
    date: str  # the publishing day, written out in the newsletter's time zone
    url: str  # the web copy, absolute
    file: str  # its file in the site folder
    description: str
    image: str
    image_alt: str
    draft: bool = False  # not sent yet (--include-unsent)

    @property
    def published_at(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.published)

    def to_json(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in FIELDS}  # asdict() is 10x slower
        data["tags"] = list(self.tags)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        return cls(**{**data, "tags": tuple(data["tags"])})

    @classmethod
    def load(cls, data: Any) -> Entry | None:
        """An entry as a build record keeps it; None when that copy is damaged (the record
        is a cache: the issue is then rendered again)."""
        try:
            entry = cls.from_json(data)
            entry.published_at  # noqa: B018 (parsed here, not in the middle of a feed)
        except (TypeError, ValueError, KeyError):
            return None
        texts = [getattr(entry, name) for name in FIELDS if name not in NOT_TEXT]
        well_formed = (
            all(isinstance(text, str) for text in [*texts, *entry.tags])
            and (entry.number is None or type(entry.number) is int)
            and isinstance(entry.draft, bool)
        )
        return entry if well_formed else None


FIELDS = tuple(f.name for f in fields(Entry))
NOT_TEXT = ("number", "tags", "draft")


def newest_first(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: (e.published, e.number or 0, e.slug), reverse=True)


TagGroups = dict[str, tuple[str, list[Entry]]]


def tag_groups(entries: list[Entry]) -> TagGroups:
    """Tag slug -> (its name as first written, its issues in the order given), by name;
    `AI` and `ai` are one tag."""
    groups: TagGroups = {}
    for entry in entries:
        slugs = {tag_slug(tag): tag for tag in reversed(entry.tags)}  # its first spelling
        for slug, tag in slugs.items():  # once per tag page, whatever spellings it has
            groups.setdefault(slug, (tag, []))[1].append(entry)
    return dict(sorted(groups.items(), key=lambda item: item[1][0].casefold()))


def published_time(issue: Issue, sent_at: str | None, zone: dt.tzinfo) -> dt.datetime:
    """When the issue went out (the ledger's sent_at), else when it is planned to."""
    if sent_at:
        when = dt.datetime.fromisoformat(sent_at)
    elif issue.send_at is not None:
        when = issue.send_at
    else:
        when = dt.datetime.combine(issue.date, dt.time())
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    try:
        return when.astimezone(dt.UTC)
    except OverflowError:  # a date near year 1 or 9999 leaves the calendar in UTC: keep it
        return when.replace(tzinfo=dt.UTC)


def description(issue: Issue, blocks: list[md.Block]) -> str:
    """For link previews and feeds: the preheader, else the subtitle, else the first words."""
    text = issue.preheader or issue.subtitle
    if not text:
        for block in blocks:
            inline = next((t for t in block.tokens if t.type == "inline"), None)
            if block.kind == "prose" and inline is not None:
                text = "".join(
                    " " if c.type in ("softbreak", "hardbreak") else c.content
                    for c in inline.children or []
                )
                break
    text = " ".join(text.split())
    if len(text) > DESCRIPTION_CHARS:
        text = text[: DESCRIPTION_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return text


def make_entry(
    issue: Issue,
    settings: Settings,
    blocks: list[md.Block],
    *,
    url: str,
    file: str,
    sent_at: str | None,
    zone: dt.tzinfo,
) -> Entry:
    from spark_mail.render import long_date

    when = published_time(issue, sent_at, zone)
    promo = issue.promo
    image = promo.image if promo and promo.image else settings.brand.logo_url
    return Entry(
        slug=issue.slug,
        title=issue.title,
        subtitle=issue.subtitle,
        number=issue.number,
        tags=issue.tags,
        published=when.isoformat(timespec="seconds"),
        date=long_date(when.astimezone(zone).date()),
        url=url,
        file=file,
        description=description(issue, blocks),
        image=image,
        image_alt=(promo.image_alt if promo and promo.image else settings.name),
        draft=sent_at is None,
    )
