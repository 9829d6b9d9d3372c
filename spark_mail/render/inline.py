"""CSS inlining with premailer, configured for email built by MJML.

premailer's defaults break this kind of email; each setting below answers one trap:
- network: `allow_network=False` skips `<link>`, but cssutils still fetches `@import` while
  parsing a `<style>`. Every `<style>` MJML wrote is marked `data-premailer="ignore"`, so
  premailer never parses it (it keeps it as it is) and only our own inline CSS is parsed.
- doctype: premailer drops a lowercase `<!doctype html>` (it compares it with lxml's
  uppercase one); we make it uppercase first and restore it if it is still lost.
- `!important`: `strip_important=False`, or the kept dark-mode / @media rules lose it.
- merge tags: lxml %-encodes `{{ x }}` in href/src; we swap every merge tag for an
  alphanumeric placeholder before and put it back after. The placeholder carries a nonce
  made from the HTML itself, so no issue text can forge one (it would have to contain a
  hash of itself).
- noise: cssutils logging is silenced.
"""

from __future__ import annotations

import hashlib
import logging
import re

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
PLACEHOLDER = "spkmrgtag{nonce}q{index}x"
IMPORT_RE = re.compile(r"@import\s+[^;]+;", re.I)
STYLE_OPEN_RE = re.compile(r"<style(?![^>]*data-premailer)", re.I)
DOCTYPE = "<!DOCTYPE html>"


def protect_merge_tags(html: str) -> tuple[str, list[str], str]:
    """(html with placeholders, the merge tags, the nonce of this html's placeholders)."""
    nonce = content_nonce(html)
    tags: list[str] = []

    def swap(match: re.Match[str]) -> str:
        tags.append(match.group(0))
        return PLACEHOLDER.format(nonce=nonce, index=len(tags) - 1)

    return MERGE_TAG_RE.sub(swap, html), tags, nonce


def restore_merge_tags(html: str, tags: list[str], nonce: str) -> str:
    if not tags:
        return html
    placeholder = re.compile(PLACEHOLDER.format(nonce=nonce, index=r"(\d+)"))
    return placeholder.sub(lambda m: tags[int(m.group(1))], html)


def content_nonce(text: str) -> str:
    """16 hex digits of a hash of `text`: a marker built with it cannot come from `text`."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def inline_css(html: str, css: str) -> str:
    """Inline `css` into `html`; rules that cannot be inlined (@media) are kept in <head>."""
    from premailer import Premailer  # heavy (lxml, cssutils): imported only when building

    protected, tags, nonce = protect_merge_tags(html)
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
    ).transform()
    if out.lstrip()[:9].lower() != "<!doctype":
        out = DOCTYPE + "\n" + out
    # Marks inside Outlook conditional comments are not elements, so premailer leaves them.
    out = out.replace(' data-premailer="ignore"', "")
    return restore_merge_tags(out, tags, nonce)
