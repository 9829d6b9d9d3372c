"""CSS inlining with premailer, configured for email built by MJML.

premailer's defaults break this kind of email; each setting below answers one trap:
- network: `allow_network=False` skips `<link>`, but cssutils still fetches `@import` while
  parsing a `<style>`. Every `<style>` MJML wrote is marked `data-premailer="ignore"`, so
  premailer never parses it (it keeps it as it is) and only our own inline CSS is parsed.
- doctype: premailer drops a lowercase `<!doctype html>` (it compares it with lxml's
  uppercase one); we make it uppercase first and restore it if it is still lost.
- `!important`: `strip_important=False`, or the kept dark-mode / @media rules lose it.
- merge tags: lxml %-encodes `{{ x }}` in href/src; we swap every merge tag for an
  alphanumeric placeholder before and put it back after.
- noise: cssutils logging is silenced.
- start-up: premailer imports `requests` (a third of a cold build's imports) only as the
  default session for fetching external style sheets, which are off here: premailer is
  imported with a stand-in `requests` (removed again right after, so any other code gets
  the real one) and is always given a session that refuses to fetch.
"""

from __future__ import annotations

import logging
import re
import sys
import types
from typing import Any

MERGE_TAG_RE = re.compile(
    r"\{\{\{.*?\}\}\}"  # {{{ triple }}} (Resend, Postmark)
    r"|\{\{.*?\}\}"  # {{ double }} (Buttondown, Liquid, Handlebars)
    r"|\{%.*?%\}"  # {% tag %}
    r"|%recipient(?:\.[A-Za-z0-9_]+)?%"  # Mailgun recipient variables
    r"|%(?:tag_|mailing_list_)?unsubscribe_url%"  # Mailgun unsubscribe
    r"|\*\|[A-Z0-9_:]+\|\*"  # Mailchimp-style
    r"|<%[^%]*%>",  # SendGrid unsubscribe groups
    re.S,
)
PLACEHOLDER = "spkmrgtag{}x"
PLACEHOLDER_RE = re.compile(r"spkmrgtag(\d+)x")
IMPORT_RE = re.compile(r"@import\s+[^;]+;", re.I)
STYLE_OPEN_RE = re.compile(r"<style(?![^>]*data-premailer)", re.I)
DOCTYPE = "<!DOCTYPE html>"


def protect_merge_tags(html: str) -> tuple[str, list[str]]:
    tags: list[str] = []

    def swap(match: re.Match[str]) -> str:
        tags.append(match.group(0))
        return PLACEHOLDER.format(len(tags) - 1)

    return MERGE_TAG_RE.sub(swap, html), tags


def restore_merge_tags(html: str, tags: list[str]) -> str:
    if not tags:
        return html
    return PLACEHOLDER_RE.sub(lambda m: tags[int(m.group(1))], html)


class NoNetwork:
    """The HTTP session premailer gets: spark-mail never lets it fetch anything."""

    def get(self, url: str, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"premailer tried to fetch {url}: rendering never uses the network")


def load_premailer() -> Any:
    """premailer's Premailer class, imported without loading `requests` (see above)."""
    if "premailer.premailer" not in sys.modules and "requests" not in sys.modules:
        sys.modules["requests"] = types.ModuleType("requests")  # the stand-in
        try:
            import premailer.premailer  # noqa: F401  (loaded with the stand-in in place)
        finally:
            del sys.modules["requests"]
    from premailer import Premailer

    return Premailer


def inline_css(html: str, css: str) -> str:
    """Inline `css` into `html`; rules that cannot be inlined (@media) are kept in <head>."""
    Premailer = load_premailer()  # heavy (lxml, cssutils): imported only when building

    protected, tags = protect_merge_tags(html)
    # cssutils fetches @import while parsing, whatever premailer's allow_network says: an
    # @import cannot be inlined anyway, so it moves to a <style> premailer does not parse.
    imports = IMPORT_RE.findall(css)
    if imports:
        css = IMPORT_RE.sub("", css)
        kept = "<style>" + "\n".join(imports) + "</style>"
        protected = protected.replace("</head>", kept + "</head>", 1)
    protected = STYLE_OPEN_RE.sub('<style data-premailer="ignore"', protected)
    if protected[:15].lower() == "<!doctype html>":
        protected = DOCTYPE + protected[15:]
    out = Premailer(
        protected,
        css_text=[css] if css.strip() else None,
        allow_network=False,
        allow_loading_external_files=False,
        disable_link_rewrites=True,
        strip_important=False,
        keep_style_tags=False,
        remove_classes=False,
        disable_validation=True,
        exclude_pseudoclasses=True,
        cssutils_logging_level=logging.CRITICAL,
        session=NoNetwork(),
    ).transform()
    if out.lstrip()[:9].lower() != "<!doctype":
        out = DOCTYPE + "\n" + out
    # Marks inside Outlook conditional comments are not elements, so premailer leaves them.
    out = out.replace(' data-premailer="ignore"', "")
    return restore_merge_tags(out, tags)
