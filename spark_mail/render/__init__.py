"""The render pipeline: Issue + Settings -> RenderedEmail. Pure: no clock, no network.

markdown (markdown-it-py) -> Jinja2 renders the layout's MJML -> mjml-python compiles it
-> premailer inlines the CSS;   the plain text comes from the same Markdown tokens.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

from markupsafe import Markup

from spark_mail.config import Settings
from spark_mail.errors import IssueError, located
from spark_mail.issue import Issue
from spark_mail.render import layout as layout_mod
from spark_mail.render import markdown as md
from spark_mail.render import text as text_mod
from spark_mail.render.inline import inline_css

GMAIL_CLIP_BYTES = 102 * 1024  # Gmail clips a larger HTML body (measured, not documented)


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
class RenderedEmail:
    """One issue, ready to send: everything a provider needs, nothing per recipient yet."""

    slug: str
    subject: str
    preheader: str
    from_address: str
    reply_to: str
    html: str
    text: str
    headers: dict[str, str]
    sections: tuple[str, ...]
    tags: tuple[str, ...] = ()
    date: dt.date | None = None
    send_at: dt.datetime | None = None
    source: Path | None = None
    timings: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def content_hash(self) -> str:
        digest = hashlib.sha256()
        for part in (self.subject, self.preheader, self.from_address, self.html, self.text):
            digest.update(part.encode())
            digest.update(b"\0")
        return digest.hexdigest()

    @property
    def idempotency_key(self) -> str:
        """Same issue + same content -> same key, so an ESP can drop a retried request."""
        return f"spark-mail-{self.slug}-{self.content_hash[:24]}"

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode())

    def to_mime(
        self, to: str | list[str] | None = None, subject: str | None = None
    ) -> EmailMessage:
        """A complete multipart/alternative message (text first, HTML preferred)."""
        msg = EmailMessage()
        msg["From"] = self.from_address
        if to:
            msg["To"] = ", ".join(to) if isinstance(to, list) else to
        if self.reply_to:
            msg["Reply-To"] = self.reply_to
        msg["Subject"] = subject or self.subject
        when = self.send_at or dt.datetime.combine(self.date or dt.date(1970, 1, 1), dt.time(8))
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        msg["Date"] = format_datetime(when)
        domain = parseaddr(self.from_address)[1].rpartition("@")[2] or "spark-mail.invalid"
        msg["Message-ID"] = f"<{self.slug}.{self.content_hash[:16]}@{domain}>"
        for name, value in self.headers.items():
            msg[name] = value
        msg.set_content(self.text, cte="quoted-printable")
        msg.add_alternative(self.html, subtype="html", cte="quoted-printable")
        # A boundary from the content, not random: the same issue gives the same bytes.
        msg.set_boundary(f"=_spark-mail_{self.content_hash[:32]}")
        return msg


def single_line(value: str, what: str, source: Path | str) -> str:
    """Refuse CR/LF in anything that becomes a header (header injection)."""
    if "\r" in value or "\n" in value:
        raise IssueError(source, f"{what} contains a line break", hint="keep it on one line")
    return value


def unsubscribe_headers(settings: Settings, unsubscribe_url: str | None = None) -> dict[str, str]:
    """RFC 8058 one-click unsubscribe: https (and mailto) + List-Unsubscribe-Post.
    `unsubscribe_url`: a reader's own link instead of the setting."""
    https = settings.unsubscribe_url if unsubscribe_url is None else unsubscribe_url
    targets = [f"<{u}>" for u in (https, settings.unsubscribe_mailto) if u]
    if settings.unsubscribe_mailto and not settings.unsubscribe_mailto.startswith("mailto:"):
        targets[-1] = f"<mailto:{settings.unsubscribe_mailto}>"
    if not targets:
        return {}
    headers = {"List-Unsubscribe": ", ".join(targets)}
    if settings.unsubscribe_url:
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return headers


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


def generic_reader(settings: Settings, slug: str) -> ReaderSource:
    """The `reader` of the one email for everyone: NoReader, or where links are signed the
    reader desk's IssueLinks (poll links carry the issue's token, see spark_mail.desk)."""
    from spark_mail.desk.links import generic_reader as issue_links

    return issue_links(settings, slug) or NoReader()


def build_context(
    issue: Issue,
    settings: Settings,
    blocks: list[md.Block],
    reader: ReaderSource | None = None,
) -> dict[str, Any]:
    reader = reader or generic_reader(settings, issue.slug)
    web_url = settings.web_url(issue.slug)
    unsubscribe_url = reader_unsubscribe_url(settings, reader)
    promo = issue.promo
    poll = issue.poll
    return {
        "newsletter": {
            "name": settings.name,
            "from_address": settings.from_address,
            "postal_address": settings.postal_address,
            "disclaimer": settings.disclaimer,
            "unsubscribe_url": settings.unsubscribe_url,
            "language": settings.language,
            "brand": settings.brand,
        },
        "issue": {
            "slug": issue.slug,
            "title": issue.title,
            "subtitle": issue.subtitle,
            "subject": issue.effective_subject,
            "preheader": issue.preheader,
            "number": issue.number,
            "date": long_date(issue.date),
            "iso_date": issue.date.isoformat(),
            "web_url": web_url,
            "tags": issue.tags,
        },
        "blocks": [
            {"kind": b.kind, "html": Markup(b.html), "sponsor": b.sponsor, "label": b.label}
            for b in blocks
        ],
        "promo": None
        if promo is None
        else {
            "label": promo.label,
            "title": promo.title,
            "body_html": Markup(md.inline_html(promo.body)),
            "image": promo.image,
            "image_alt": promo.image_alt,
            "cta_text": promo.cta_text,
            "cta_url": promo.cta_url,
        },
        "poll": None
        if poll is None
        else {
            "question": poll.question,
            "options": [
                {"text": o, "url": reader.link(poll_link(settings, issue.slug, o, i), "poll")}
                for i, o in enumerate(poll.options, start=1)
            ],
        },
        "share": {
            "text": issue.share.text or settings.share_text,
            "url": settings.share_url or web_url,
            "links": share_links(settings.share_url or web_url, issue.title),
        },
        "reader": LayoutReader(reader, unsubscribe_url),
    }


def reader_unsubscribe_url(settings: Settings, reader: ReaderSource) -> str:
    return reader.link(settings.unsubscribe_url, "unsubscribe") if settings.unsubscribe_url else ""


def plain_text(
    issue: Issue,
    settings: Settings,
    blocks: list[md.Block],
    reader: ReaderSource | None = None,
) -> str:
    reader = reader or generic_reader(settings, issue.slug)
    ctx_web = settings.web_url(issue.slug)
    parts: list[str] = []
    if ctx_web:
        parts.append(f"View this issue in your browser: {ctx_web}")
    heading = issue.title
    parts.append(f"{heading}\n{'=' * min(len(heading), text_mod.WIDTH)}")
    if issue.subtitle:
        parts.append(text_mod.wrap(issue.subtitle))
    parts.append(f"{settings.name} - {long_date(issue.date)}")
    for block in blocks:
        body = text_mod.tokens_to_text(block.tokens)
        parts.append(
            text_mod.boxed(block.label, block.sponsor, body) if block.kind == "sponsor" else body
        )
    if issue.promo:
        p = issue.promo
        body = text_mod.markdown_text(p.body)
        if p.cta_text:
            body = f"{body}\n\n{p.cta_text}: {p.cta_url}".strip()
        parts.append(text_mod.boxed(p.label, p.title, body))
    if issue.poll:
        lines = [text_mod.wrap(issue.poll.question)]
        lines += [
            f"- {o}: {reader.link(poll_link(settings, issue.slug, o, i), 'poll')}"
            for i, o in enumerate(issue.poll.options, start=1)
        ]
        parts.append("\n".join(lines))
    share_text = issue.share.text or settings.share_text
    share_url = settings.share_url or ctx_web
    if share_text:
        parts.append(text_mod.wrap(f"{share_text} {share_url}".strip()))
    footer = ["-- "]
    if settings.disclaimer:
        footer.append(text_mod.wrap(settings.disclaimer))
    if settings.postal_address:
        footer.append(settings.postal_address)
    if settings.unsubscribe_url:
        footer.append(f"Unsubscribe: {reader_unsubscribe_url(settings, reader)}")
    parts.append("\n\n".join(footer))
    return "\n\n".join(p for p in parts if p.strip()) + "\n"


def render_issue(
    issue: Issue, settings: Settings, reader: ReaderSource | None = None
) -> RenderedEmail:
    """Build one issue. Raises IssueError / LayoutError; never touches the network or clock.

    `reader`: where the layout's `reader.*` values come from; personalize passes one that
    leaves markers to fill in per reader. Without it the email is the generic copy.
    """
    timings: dict[str, float] = {}
    clock = time.perf_counter
    t0 = clock()
    subject = single_line(issue.effective_subject, "subject", issue.path)
    preheader = single_line(issue.preheader, "preheader", issue.path)
    single_line(settings.from_address, "the 'from' setting", settings.root / "spark-mail.toml")
    single_line(settings.reply_to, "the 'reply_to' setting", settings.root / "spark-mail.toml")

    blocks = md.split_blocks(md.parse(issue.body))
    t1 = clock()
    timings["markdown"] = t1 - t0

    layout_dir = layout_mod.find_layout(
        issue.layout, settings.layout_dirs(), located(issue.path, issue.layout_line)
    )
    context = build_context(issue, settings, blocks, reader)
    mjml_text = layout_mod.render_mjml(layout_dir, settings.layout_dirs(), context)
    mjml_text, css = layout_mod.split_inline_css(mjml_text)
    t2 = clock()
    timings["jinja"] = t2 - t1

    compiled = layout_mod.compile_mjml(mjml_text, layout_dir)
    t3 = clock()
    timings["mjml"] = t3 - t2

    html = inline_css(compiled, css)
    t4 = clock()
    timings["inline"] = t4 - t3

    text = plain_text(issue, settings, blocks, reader)
    timings["text"] = clock() - t4

    sections = ["header", "body"]
    sections += ["sponsor"] * sum(1 for b in blocks if b.kind == "sponsor")
    sections += [name for name in ("promo", "poll") if getattr(issue, name) is not None]
    sections += ["share", "footer"]
    return RenderedEmail(
        slug=issue.slug,
        subject=subject,
        preheader=preheader,
        from_address=settings.from_address,
        reply_to=settings.reply_to,
        html=html,
        text=text,
        headers=unsubscribe_headers(
            settings, reader_unsubscribe_url(settings, reader) if reader else None
        ),
        sections=tuple(sections),
        tags=issue.tags,
        date=issue.date,
        send_at=issue.send_at,
        source=issue.path,
        timings=timings,
    )


def build(path: Path | str, settings: Settings) -> RenderedEmail:
    """Load and render an issue file; the `parse` phase is timed too."""
    from spark_mail.issue import load_issue

    start = time.perf_counter()
    issue = load_issue(path)
    parsed = time.perf_counter() - start
    rendered = render_issue(issue, settings)
    rendered.timings["parse"] = parsed
    return rendered
