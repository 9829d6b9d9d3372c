"""UTM tags (setting `utm_source`, off by default): where a reader came from, for the
analytics of the sites the issue links to.

Every http(s) link of a block gets `utm_source=<setting>`, `utm_medium=email`,
`utm_campaign=<issue slug>` and `utm_content=<block>` (body, sponsor, promo, poll, share).
- a parameter already in the link is kept as the author wrote it, never overwritten;
- never on the unsubscribe link, nor on the reader desk's pages (`site_url` + `/poll/...`,
  `/unsubscribe`): those are spark-mail's own, and their signed tokens must stay exact;
- never on merge-tag URLs (the ESP fills those in), mailto: or other schemes.
The share links carry the tagged web copy inside them (utm_content=share), so visits from a
shared link are counted; the X / LinkedIn addresses themselves stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from spark_mail.config import SITE_PAGES, Settings
from spark_mail.render.inline import MERGE_TAG_RE

Tagger = Callable[[str, str], str]  # (url, block) -> url
BLOCKS = ("body", "sponsor", "promo", "poll", "share")


def desk_prefixes(settings: Settings) -> tuple[str, ...]:
    """URL starts that lead to the reader desk: never tagged."""
    prefixes = [settings.unsubscribe_url] if settings.unsubscribe_url else []
    site = settings.site_url.rstrip("/")
    if site:
        for key in ("unsubscribe_url", "poll_url"):
            page = SITE_PAGES[key].split("{", 1)[0].split("?", 1)[0]
            prefixes.append(site + page)
    return tuple(p for p in prefixes if p)


def add_params(url: str, params: dict[str, str]) -> str:
    """`url` with the params it does not already have (before any #fragment); a name the
    author wrote in another case (`UTM_Source`) counts as there: analytics tools that
    fold case would otherwise see two sources."""
    parts = urlsplit(url)
    present = {k.casefold() for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
    missing = {k: v for k, v in params.items() if k.casefold() not in present}
    if not missing:
        return url
    query = parts.query + ("&" if parts.query else "") + urlencode(missing)
    return urlunsplit(parts._replace(query=query))


def make_tagger(settings: Settings, slug: str) -> Tagger | None:
    """The function that tags one block's link, or None when `utm_source` is not set."""
    source = settings.utm_source.strip()
    return tagger_for(source, desk_prefixes(settings) if source else (), slug)


def tagger_for(source: str, desk: tuple[str, ...], slug: str) -> Tagger | None:
    """make_tagger from what it reads of the settings: the source and the desk's prefixes."""
    if not source:
        return None
    skip = tuple(same_site(p) for p in desk)
    base = {"utm_source": source, "utm_medium": "email", "utm_campaign": slug}

    def tag(url: str, block: str) -> str:
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https") or MERGE_TAG_RE.search(url):
            return url
        if same_site(url).startswith(skip):
            return url
        return add_params(url, {**base, "utm_content": block})

    return tag


def same_site(url: str) -> str:
    """`HTTPS://Site.COM:443/unsubscribe?x` -> `https://site.com/unsubscribe?x`: scheme and
    host in one case, the default port dropped, so a desk page is known however written."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port in (None, {"http": 80, "https": 443}.get(scheme)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))
