"""The render pipeline: Issue + Settings -> RenderedEmail. Pure: no clock, no network.

markdown (markdown-it-py) -> Jinja2 renders the layout's MJML -> mjml-python compiles it
-> render/inline.py inlines the CSS;   the plain text comes from the same Markdown tokens.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any

from spark_mail.config import Settings
from spark_mail.errors import IssueError, located
from spark_mail.issue import Issue
from spark_mail.render import layout as layout_mod
from spark_mail.render import markdown as md
from spark_mail.render import text as text_mod
from spark_mail.render.inline import inline_css
from spark_mail.render.view import (
    LayoutReader,
    NoReader,
    ReaderSource,
    body_blocks,
    layout_context,
    long_date,
    make_view,
    poll_link,
    reader_unsubscribe_url,
    share_links,
)

__all__ = [
    "GMAIL_CLIP_BYTES",
    "LayoutReader",
    "NoReader",
    "ReaderSource",
    "RenderedEmail",
    "build",
    "build_context",
    "long_date",
    "plain_text",
    "poll_link",
    "reader_unsubscribe_url",
    "render_issue",
    "share_links",
    "unsubscribe_headers",
]

GMAIL_CLIP_BYTES = 102 * 1024  # Gmail clips a larger HTML body (measured, not documented)


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
    date_header: dt.datetime | None = None  # the Date: header; with an offset
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
        when = (
            self.date_header
            or self.send_at
            or dt.datetime.combine(self.date or dt.date(1970, 1, 1), dt.time(8))
        )
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


def build_context(
    issue: Issue,
    settings: Settings,
    blocks: list[md.Block],
    reader: ReaderSource | None = None,
) -> dict[str, Any]:
    """What the layout's Jinja sees for this issue (see render.view)."""
    return layout_context(make_view(issue, settings, blocks, reader))


def plain_text(
    issue: Issue,
    settings: Settings,
    blocks: list[md.Block],
    reader: ReaderSource | None = None,
) -> str:
    """The plain-text part for this issue (see render.view)."""
    return text_mod.email_text(make_view(issue, settings, blocks, reader))


def date_header(issue: Issue, settings: Settings) -> dt.datetime:
    """When the email says it was written: `send_at`, else 08:00 on the issue's date, both in
    the newsletter's time zone when they carry no offset (never the machine's clock)."""
    zone = settings.tzinfo()
    when = issue.send_at or dt.datetime.combine(issue.date, dt.time(8))
    return when if when.tzinfo is not None else when.replace(tzinfo=zone)


# The HTML of the last few emails by their MJML and inline CSS (MJML's compile and the
# inlining are pure functions of the two): a process that builds the same email again (a
# send checks its build, preview rebuilds on save, dispatch tries again) does not compile
# and inline it again (~3 of a build's ~8 ms). A compile or inlining that fails is not kept.
_KEEP_HTML = 8
_KEPT_HTML_LIMIT = 500_000  # characters of MJML, CSS and HTML: the sample email has ~55,000
_KEPT_HTML: dict[tuple[str, str], str] = {}
_kept_html_lock = threading.Lock()


def keep_html(key: tuple[str, str], html: str) -> None:
    if len(key[0]) + len(key[1]) + len(html) > _KEPT_HTML_LIMIT:
        return  # a huge issue (up to the 10 MB file cap) is not pinned in a long-lived process
    with _kept_html_lock:
        _KEPT_HTML.pop(key, None)  # newest last: the oldest goes first
        _KEPT_HTML[key] = html
        while len(_KEPT_HTML) > _KEEP_HTML:
            del _KEPT_HTML[next(iter(_KEPT_HTML))]


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

    blocks = body_blocks(issue, settings)
    t1 = clock()
    timings["markdown"] = t1 - t0

    layout_dir = layout_mod.find_layout(
        issue.layout, settings.layout_dirs(), located(issue.path, issue.layout_line)
    )
    view = make_view(issue, settings, blocks, reader)
    mjml_text = layout_mod.render_mjml(layout_dir, settings.layout_dirs(), layout_context(view))
    mjml_text, css = layout_mod.split_inline_css(mjml_text)
    t2 = clock()
    timings["jinja"] = t2 - t1

    html = _KEPT_HTML.get((mjml_text, css))
    if html is None:
        compiled = layout_mod.compile_mjml(mjml_text, layout_dir)
        t3 = clock()
        html = inline_css(compiled, css, issue.path)
        keep_html((mjml_text, css), html)
    else:
        t3 = t2  # the same MJML and CSS as an email of the last few: nothing to compile
    t4 = clock()
    timings["mjml"] = t3 - t2
    timings["inline"] = t4 - t3

    text = text_mod.email_text(view)
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
        headers=unsubscribe_headers(settings, view.unsubscribe_url if reader else None),
        sections=tuple(sections),
        tags=issue.tags,
        date=issue.date,
        send_at=issue.send_at,
        source=issue.path,
        date_header=date_header(issue, settings),
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
