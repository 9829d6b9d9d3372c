"""Where everything of the web archive lives: its URLs and the files behind them.

The site root is `site_url`, else the origin of `base_url` (`https://host/`). An issue's page
is the file its `base_url` names under that root: `.../issues/{slug}/` and `.../p/{slug}`
become `issues/<slug>/index.html` and `p/<slug>/index.html` (static hosts serve a folder's
index.html and redirect the bare path to it); `.../{slug}.html` stays a file.

Links between pages are root-relative (`/p/<slug>`), so the same files work on the public
host and on the reader desk on 127.0.0.1; canonical, OpenGraph and feed URLs are absolute.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from spark_mail.config import Settings
from spark_mail.errors import ConfigError, SiteError

INDEX = "index.html"
RSS = "feed.xml"
ATOM = "atom.xml"
SITEMAP = "sitemap.xml"
NOT_FOUND = "404.html"
TAGS = "tags/index.html"
MANIFEST = ".spark-mail-site.json"  # the build record: marks the folder as ours, keys the cache
RESERVED = {
    INDEX: "the archive index",
    RSS: "the RSS feed",
    ATOM: "the Atom feed",
    SITEMAP: "the sitemap",
    NOT_FOUND: "the not-found page",
    TAGS: "the list of tags",
    MANIFEST: "spark-mail's build record",
}
PAGE_SUFFIXES = (".html", ".htm")
TAG_SEPARATORS_RE = re.compile(r"[\W_]+")  # anything but letters and digits, of any script
TAG_SLUG_CHARS, TAG_SLUG_BYTES = 80, 200  # a file name is at most 255 bytes


@dataclass(frozen=True)
class SiteUrls:
    """The site's root, the web copy pattern and where poll results live."""

    root: str  # absolute and ending in "/" (just "/" for a preview without any URL setting)
    base_url: str  # an issue's web copy; "{slug}" is replaced
    poll_results: str = ""  # "" without a reader desk (site_url): the poll is left out

    def absolute(self, relative: str = "") -> str:
        return self.root + relative

    def href(self, url: str) -> str:
        """The root-relative link to a URL of this site (`/p/slug`), for links between pages."""
        return urlsplit(url).path or "/"

    def issue_url(self, slug: str) -> str:
        return self.base_url.replace("{slug}", slug)

    def issue_file(self, slug: str) -> str:
        """The file of an issue's page in the site folder (a posix path)."""
        url = self.issue_url(slug)
        relative = url[len(self.root) :] if url.startswith(self.root) else urlsplit(url).path
        file = file_for(relative.lstrip("/"))
        if file is None:
            raise SiteError(
                f"issue {slug!r}: its web copy {url} is not a plain path in the site",
                hint="rename the issue file (letters, digits, '-') or fix base_url",
            )
        return file

    def poll_results_url(self, slug: str) -> str:
        return self.poll_results.replace("{slug}", quote(slug)) if self.poll_results else ""

    def tag_url(self, tag: str) -> str:
        return self.absolute(f"tags/{quote(tag_slug(tag))}/")

    @property
    def rss_url(self) -> str:
        return self.absolute(RSS)

    @property
    def atom_url(self) -> str:
        return self.absolute(ATOM)

    @property
    def tags_url(self) -> str:
        return self.absolute("tags/")


def tag_slug(tag: str) -> str:
    """A tag's folder: its letters and digits in any script (NFKC, case-folded), anything
    else one '-' (`AI`, `ai` and `AI!` are one tag; `日本語` and `中文` are two), at most
    200 bytes. A tag of punctuation alone is named after its hash."""
    text = unicodedata.normalize("NFKC", tag).casefold()
    slug = TAG_SEPARATORS_RE.sub("-", text).strip("-")[:TAG_SLUG_CHARS]
    while len(slug.encode()) > TAG_SLUG_BYTES:
        slug = slug[:-1]
    slug = slug.strip("-")
    return slug or "tag-" + hashlib.sha256(text.encode()).hexdigest()[:10]


def tag_file(tag: str) -> str:
    return f"tags/{tag_slug(tag)}/{INDEX}"


def file_for(relative: str) -> str | None:
    """The file a URL path (relative to the root) is served from; None if it is not a plain
    path (`..`, backslashes, empty segments)."""
    decoded = unquote(relative)
    segments = decoded.split("/")
    inner = segments[:-1] if decoded.endswith("/") else segments
    if decoded and any(s in {"", ".", ".."} or "\\" in s or "\0" in s for s in inner):
        return None
    if not decoded or decoded.endswith("/"):
        return decoded + INDEX
    if decoded.lower().endswith(PAGE_SUFFIXES):
        return decoded
    return f"{decoded}/{INDEX}"


def site_urls(settings: Settings, *, strict: bool = True) -> SiteUrls:
    """The site's URLs from the settings. `strict` (a real build) refuses what would publish
    pages where the emails do not point; without it (the preview) anything goes."""
    root = settings.site_url or origin(settings.base_url)
    poll = f"{settings.site_url.rstrip('/')}/poll/{{slug}}/results" if settings.site_url else ""
    if not strict and not (root and "{slug}" in settings.base_url):
        return SiteUrls(root="/", base_url="/issues/{slug}/", poll_results=poll)
    if not root:
        raise ConfigError(
            "the web archive needs the site's address: no site_url or base_url setting",
            hint='set site_url = "https://news.example.com" in spark-mail.toml',
        )
    parts = urlsplit(root)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"site_url {root!r} is not an http(s) address",
            hint='write it in full, e.g. site_url = "https://news.example.com"',
        )
    root = root if root.endswith("/") else root + "/"
    check_base_url(settings.base_url, root)
    return SiteUrls(root=root, base_url=settings.base_url, poll_results=poll)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/" if parts.scheme and parts.netloc else ""


def check_base_url(base_url: str, root: str) -> None:
    if "{slug}" not in base_url:
        raise ConfigError(
            f"base_url {base_url!r} has no {{slug}}: every issue would be the same page",
            hint=f'write e.g. base_url = "{root}issues/{{slug}}/"',
        )
    if not base_url.startswith(root):
        raise ConfigError(
            f"base_url {base_url!r} is not under the site's address {root}",
            hint="put the web copies under site_url, or change site_url",
        )
    if "?" in base_url or "#" in base_url:
        raise ConfigError(
            f"base_url {base_url!r} has a query or fragment: a static site has one file per path",
            hint=f'write e.g. base_url = "{root}issues/{{slug}}/"',
        )


class PathClaims:
    """Every file of the site with who claimed it: two claims on one path (compared without
    case: macOS and many CDNs ignore it), or a file where another needs a folder, are refused."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[str, str]] = {}  # casefolded path -> (path, owner)
        for path, owner in RESERVED.items():
            self.claim(path, owner)

    def claim(self, path: str, owner: str) -> None:
        key = path.casefold()
        taken = self.files.get(key)
        if taken is not None:
            raise collision(owner, path, taken[1])
        self.files[key] = (path, owner)

    def check_folders(self) -> None:
        """A page's folder must not be another page's file (`feed.xml/index.html`)."""
        for path, owner in self.files.values():
            parts = path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                taken = self.files.get("/".join(parts[:depth]).casefold())
                if taken is not None:
                    raise collision(owner, path, taken[1])


def collision(owner: str, path: str, other: str) -> SiteError:
    return SiteError(
        f"{owner}: its page {path} collides with {other}",
        hint="rename the issue file, or change base_url so that every issue has its own path",
    )
