"""The view model: everything the HTML and the plain-text part say, computed once.

`make_view(issue, settings, blocks, reader)` resolves every URL (web copy, share links,
poll answers, this reader's unsubscribe link, UTM tags) and every colour of the layout in
one place; `layout_context(view)` hands it to the Jinja layout and `render.text.email_text`
writes the text part from the same object, so the two parts can never disagree.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol
from urllib.parse import quote

from markupsafe import Markup

from spark_mail.colors import AA_TEXT, readable
from spark_mail.config import Settings
from spark_mail.issue import Issue
from spark_mail.render import markdown as md
from spark_mail.render.utm import Tagger, desk_prefixes, make_tagger, tagger_for

# The default layout's fixed surfaces (cards, the sponsor box, the dark-mode cards).
CARD = "#ffffff"
SPONSOR_BOX = "#fafafa"
DARK_CARD = "#161b22"
MUTED = "#6b7280"
TEXT_CONTRAST = AA_TEXT + 0.1  # a hair above AA, so rounding in any checker cannot fail it


class ReaderSource(Protocol):
    """Where a layout's `reader` gets its values (see spark_mail.personalize)."""

    def field(self, name: str) -> Any:
        """A reader column (`first_name`, `email`, ...)."""
        ...

    def link(self, url: str, purpose: str) -> str:
        """`url` made this reader's own (unsubscribe, poll)."""
        ...


class NoReader:
    """`reader` when no reader is given (build, previews): fields are undefined, so a
    layout's `| default("there")` applies and a bare `{{ reader.x }}` renders empty (not
    an error: the per-reader copy fills it); links stay the newsletter's generic ones."""

    def field(self, name: str) -> Any:
        import jinja2

        return jinja2.Undefined(name=f"reader.{name}")

    def link(self, url: str, purpose: str) -> str:
        return url


class LayoutReader:
    """The `reader` a layout sees: `reader.first_name`, `reader["First Name"]`,
    `reader.email`, `reader.unsubscribe_url`."""

    def __init__(self, source: ReaderSource, unsubscribe_url: str) -> None:
        self._source = source
        self.unsubscribe_url = unsubscribe_url

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self[name]

    def __getitem__(self, name: str) -> Any:
        from spark_mail.audience import normalise_column  # the CSV's column names

        return self._source.field(normalise_column(name))


@dataclass(frozen=True)
class Link:
    text: str
    url: str


@dataclass(frozen=True)
class Palette:
    """The layout's colours, derived from the brand so every text colour reads at WCAG AA."""

    accent: str  # the brand colour itself: borders
    accent_text: str  # links and labels on the white cards and the sponsor box
    accent_text_dark: str  # the same under the dark-mode rules
    button: str  # the button's background, under white text
    muted_text: str  # small print on the cards and the sponsor box
    footer_text: str  # small print on the page background
    background: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Palette:
        brand = settings.brand
        accent_text = readable(brand.accent_color, SPONSOR_BOX, TEXT_CONTRAST)
        return cls(
            accent=brand.accent_color,
            accent_text=accent_text,
            accent_text_dark=readable(brand.accent_color, DARK_CARD, TEXT_CONTRAST),
            button=readable(brand.accent_color, CARD, TEXT_CONTRAST),
            muted_text=readable(MUTED, SPONSOR_BOX, TEXT_CONTRAST),
            footer_text=readable(MUTED, brand.background_color, TEXT_CONTRAST),
            background=brand.background_color,
        )


@dataclass(frozen=True)
class PromoView:
    label: str
    title: str
    body_html: Markup
    body_text: str
    image: str
    image_alt: str
    cta_text: str
    cta_url: str


@dataclass(frozen=True)
class EmailView:
    """One issue as one reader sees it, in both parts."""

    issue: Issue
    settings: Settings
    blocks: list[md.Block]
    reader: ReaderSource
    web_url: str
    unsubscribe_url: str  # this reader's ("" without an unsubscribe_url setting)
    poll_options: tuple[Link, ...]
    share_text: str
    share_url: str
    share_links: tuple[Link, ...]
    promo: PromoView | None
    colors: Palette

    @property
    def long_date(self) -> str:
        return long_date(self.issue.date)


def poll_link(settings: Settings, slug: str, option: str, index: int) -> str:
    template = settings.poll_url or settings.web_url(slug) or "#"
    return (
        template.replace("{slug}", quote(slug))
        .replace("{option}", quote(option))
        .replace("{index}", str(index))
    )


def share_links(web_url: str, title: str) -> list[dict[str, str]]:
    if not web_url:
        return []
    u, t = quote(web_url, safe=""), quote(title, safe="")
    return [
        {"name": "X", "url": f"https://x.com/intent/post?url={u}&text={t}"},
        {"name": "LinkedIn", "url": f"https://www.linkedin.com/sharing/share-offsite/?url={u}"},
        {"name": "Email", "url": f"mailto:?subject={t}&body={u}"},
    ]


def long_date(day: dt.date) -> str:
    return f"{day.strftime('%B')} {day.day}, {day.year}"


def reader_unsubscribe_url(settings: Settings, reader: ReaderSource) -> str:
    return reader.link(settings.unsubscribe_url, "unsubscribe") if settings.unsubscribe_url else ""


def body_blocks(issue: Issue, settings: Settings) -> list[md.Block]:
    """The issue's Markdown as blocks, its links UTM-tagged when `utm_source` is set."""
    source = settings.utm_source.strip()
    desk = desk_prefixes(settings) if source else ()
    return list(parsed_body(issue.body, issue.slug, source, desk))


@lru_cache(maxsize=32)
def parsed_body(body: str, slug: str, source: str, desk: tuple[str, ...]) -> tuple[md.Block, ...]:
    """body_blocks, once per issue text and tagging: a check, a send, the personalised
    render and the preview build the same issue again. Nobody changes a Block or its
    tokens (lru_cache: bounded, and safe in the preview's request threads)."""
    tokens = md.parse(body)
    tagger = tagger_for(source, desk, slug)
    if tagger is not None:
        md.rewrite_links(tokens, lambda url, kind: tagger(url, "body" if kind == "prose" else kind))
    return tuple(md.split_blocks(tokens))


def promo_view(issue: Issue, tagger: Tagger | None) -> PromoView | None:
    from spark_mail.render.text import tokens_to_text

    promo = issue.promo
    if promo is None:
        return None
    tokens = md.parse(promo.body) if promo.body.strip() else []
    if tagger is not None:
        md.rewrite_links(tokens, lambda url, kind: tagger(url, "promo"))
    return PromoView(
        label=promo.label,
        title=promo.title,
        body_html=Markup(md.to_html(tokens) if tokens else ""),
        body_text=tokens_to_text(tokens),
        image=promo.image,
        image_alt=promo.image_alt,
        cta_text=promo.cta_text,
        cta_url=tagger(promo.cta_url, "promo") if tagger and promo.cta_url else promo.cta_url,
    )


def generic_reader(settings: Settings, slug: str) -> ReaderSource:
    """The `reader` of the one email for everyone: NoReader, or where links are signed the
    reader desk's IssueLinks (poll links carry the issue's token, see spark_mail.desk)."""
    if not settings.signing_secret:
        return NoReader()  # unsigned links: the desk's modules (HMAC, tokens) are not needed
    from spark_mail.desk.links import generic_reader as issue_links

    return issue_links(settings, slug) or NoReader()


def make_view(
    issue: Issue,
    settings: Settings,
    blocks: list[md.Block],
    reader: ReaderSource | None = None,
) -> EmailView:
    reader = reader or generic_reader(settings, issue.slug)
    tagger = make_tagger(settings, issue.slug)
    tag = tagger or (lambda url, block: url)
    web_url = settings.web_url(issue.slug)
    share_url = (
        tag(settings.share_url or web_url, "share") if (settings.share_url or web_url) else ""
    )
    options: tuple[Link, ...] = ()
    if issue.poll is not None:
        options = tuple(
            Link(o, reader.link(tag(poll_link(settings, issue.slug, o, i), "poll"), "poll"))
            for i, o in enumerate(issue.poll.options, start=1)
        )
    return EmailView(
        issue=issue,
        settings=settings,
        blocks=blocks,
        reader=reader,
        web_url=web_url,
        unsubscribe_url=reader_unsubscribe_url(settings, reader),
        poll_options=options,
        share_text=issue.share.text or settings.share_text,
        share_url=share_url,
        share_links=tuple(Link(s["name"], s["url"]) for s in share_links(share_url, issue.title)),
        promo=promo_view(issue, tagger),
        colors=Palette.from_settings(settings),
    )


def layout_context(view: EmailView) -> dict[str, Any]:
    """What a layout's Jinja sees (the names are the layouts' public interface)."""
    issue, settings = view.issue, view.settings
    promo = view.promo
    return {
        "newsletter": {
            "name": settings.name,
            "from_address": settings.from_address,
            "postal_address": settings.postal_address,
            "disclaimer": settings.disclaimer,
            "unsubscribe_url": settings.unsubscribe_url,
            "language": settings.language,
            "brand": settings.brand,
            "colors": view.colors,
        },
        "issue": {
            "slug": issue.slug,
            "title": issue.title,
            "subtitle": issue.subtitle,
            "subject": issue.effective_subject,
            "preheader": issue.preheader,
            "number": issue.number,
            "date": view.long_date,
            "iso_date": issue.date.isoformat(),
            "web_url": view.web_url,
            "tags": issue.tags,
        },
        "blocks": [
            {"kind": b.kind, "html": Markup(b.html), "sponsor": b.sponsor, "label": b.label}
            for b in view.blocks
        ],
        "promo": None if promo is None else {**promo.__dict__},
        "poll": None
        if issue.poll is None
        else {
            "question": issue.poll.question,
            "options": [{"text": o.text, "url": o.url} for o in view.poll_options],
        },
        "share": {
            "text": view.share_text,
            "url": view.share_url,
            "links": [{"name": s.text, "url": s.url} for s in view.share_links],
        },
        "reader": LayoutReader(view.reader, view.unsubscribe_url),
    }
