"""`spark-mail site build`: what is published, the feeds, the pages' meta, and that every
email's "View in browser" link lands on a page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import feedparser
import pytest

from conftest import SAMPLE_SLUG, run_cli
from site_support import (
    DRAFT,
    SECOND,
    SITE_URL,
    get,
    send_two,
    serve_folder,
    set_site_url,
    settings_for,
)
from spark_mail.render import build
from spark_mail.site import build_site

VIEW_IN_BROWSER = re.compile(r'<a href="([^"]+)"[^>]*>View in browser</a>')


def pages(site: Path) -> dict[str, str]:
    return {str(p.relative_to(site)): p.read_text(encoding="utf-8") for p in site.rglob("*.html")}


def test_only_sent_issues_are_published_with_their_send_date(newsletter: Path) -> None:
    """The draft is nowhere; the sent issues are, newest first, dated by their send."""
    send_two(newsletter)
    result = build_site(settings_for(newsletter))
    site = newsletter / "site"
    assert (result.issues, result.drafts, result.folder) == (2, 0, site)
    assert (site / "p" / SAMPLE_SLUG / "index.html").is_file()
    assert (site / "p" / SECOND / "index.html").is_file()
    assert not (site / "p" / DRAFT).exists()
    everything = "".join(pages(site).values()) + (site / "feed.xml").read_text()
    assert "Not out yet" not in everything and "Secret plans" not in everything
    index = (site / "index.html").read_text()
    assert index.index("Shipping small, often") < index.index("Engineering Leadership")
    assert '<time datetime="2025-02-03T12:00:00+00:00">February 3, 2025</time>' in index


@pytest.mark.slow
def test_include_unsent_previews_every_issue_marked_as_such(newsletter: Path) -> None:
    """--include-unsent adds the draft, flagged on its page and kept out of search engines,
    in site-preview/: the live site (what is published and what the desk serves) is left as
    it was, draft-free."""
    send_two(newsletter)
    build_site(settings_for(newsletter))
    live = {p: p.read_bytes() for p in (newsletter / "site").rglob("*") if p.is_file()}
    result = build_site(settings_for(newsletter), include_unsent=True)
    assert (result.issues, result.drafts) == (2, 1)
    assert result.folder == newsletter / "site-preview"
    preview = newsletter / "site-preview"
    draft = (preview / "p" / DRAFT / "index.html").read_text()
    assert "has not been sent yet" in draft and '<meta name="robots" content="noindex">' in draft
    sent = (preview / "p" / SECOND / "index.html").read_text()
    assert "noindex" not in sent and "not been sent" not in sent
    assert {p: p.read_bytes() for p in (newsletter / "site").rglob("*") if p.is_file()} == live


@pytest.mark.slow
def test_a_preview_is_never_built_into_the_live_site(newsletter: Path) -> None:
    """`site build --include-unsent --out site` (or into the site_dir folder, by any
    spelling): one line, exit 2, nothing written. Unsent issues in the folder that is
    published and served would be public before the readers have them."""
    send_two(newsletter)
    assert run_cli("site", "build", cwd=newsletter).returncode == 0
    live = {p: p.read_bytes() for p in (newsletter / "site").rglob("*") if p.is_file()}
    for out in ("site", "./public/../site"):
        result = run_cli("site", "build", "--include-unsent", "--out", out, cwd=newsletter)
        assert result.returncode == 2, result.stderr
        assert "live site" in result.stderr and result.stderr.count("\n") == 1
        assert "Traceback" not in result.stderr
    assert {p: p.read_bytes() for p in (newsletter / "site").rglob("*") if p.is_file()} == live
    assert not (newsletter / "site-preview").exists()


def test_feeds_parse_with_full_content_and_absolute_https_links(newsletter: Path) -> None:
    """RSS 2.0 and Atom: no parser errors, the sent issues newest first, in full."""
    send_two(newsletter)
    build_site(settings_for(newsletter))
    for name, version in (("feed.xml", "rss20"), ("atom.xml", "atom10")):
        feed = feedparser.parse((newsletter / "site" / name).read_bytes())
        assert feed.bozo == 0, feed.get("bozo_exception")
        assert feed.version == version
        assert feed.feed.title == "Tiny Big Spark"
        assert [e.title for e in feed.entries] == [
            "Shipping small, often",
            "Engineering Leadership: Tech, People, Product Mastery!",
        ]
        first = feed.entries[0]
        assert first.link == f"https://tinybigspark.com/p/{SECOND}"
        assert first.published_parsed[:5] == (2025, 2, 3, 12, 0)
        assert "One change at a time." in first.content[0].value
        assert "Acme ships" in first.content[0].value  # sponsor boxes are part of the text
        assert first.summary.startswith("Why the teams that ship daily")
        assert {t.term for t in first.tags} == {"engineering", "Delivery"}
        links = [e.link for e in feed.entries] + [feed.feed.link]
        assert all(link.startswith("https://") for link in links)


@pytest.mark.slow
def test_every_view_in_browser_link_lands_on_its_page(newsletter: Path) -> None:
    """The link each built email carries answers 200 from the built site, with that issue."""
    send_two(newsletter)
    settings = settings_for(newsletter)
    build_site(settings)
    with serve_folder(newsletter / "site") as base:
        for slug, title in ((SAMPLE_SLUG, "Engineering Leadership"), (SECOND, "Shipping small")):
            email = build(newsletter / "issues" / f"{slug}.md", settings)
            links = set(VIEW_IN_BROWSER.findall(email.html))
            assert links == {f"https://tinybigspark.com/p/{slug}"}
            status, page = get(base + links.pop().removeprefix("https://tinybigspark.com"))
            assert status == 200 and title in page


def test_pages_hold_no_reader_tokens_merge_tags_preheader_or_unsubscribe(newsletter: Path):
    """The web copy is nobody's copy: no tokens, merge tags, preheader or unsubscribe link."""
    toml = newsletter / "spark-mail.toml"
    toml.write_text('audience = "subscribers.csv"\n' + toml.read_text(), encoding="utf-8")
    (newsletter / "subscribers.csv").write_text("email,first_name\nann@example.com,Ann\n")
    (newsletter / ".env").write_text(
        "SPARK_MAIL_SIGNING_SECRET=a-long-signing-secret-for-tests\n"
        "SPARK_MAIL_UNSUBSCRIBE_URL=https://esp.example.com/u/%recipient.token%\n"
    )
    send_two(newsletter)
    build_site(settings_for(newsletter), include_unsent=True)
    site = newsletter / "site-preview"
    files = {**pages(site), "feed.xml": (site / "feed.xml").read_text()}
    for name, text in files.items():
        for marker in ("{{", "{%", "%recipient", "token=", "ann@example.com", "nsubscribe"):
            assert marker not in text, f"{name} contains {marker!r}"
    body = files[f"p/{SECOND}/index.html"].split("<body>", 1)[1]
    assert "Why the teams that ship daily" not in body  # the preheader: only in the meta


def test_poll_links_to_its_live_results_on_the_reader_desk(newsletter: Path) -> None:
    """With site_url the poll shows its options and links to /poll/<slug>/results."""
    send_two(newsletter)
    set_site_url(newsletter)
    build_site(settings_for(newsletter))
    page = (newsletter / "site" / "issues" / SECOND / "index.html").read_text()
    assert "How often do you ship?" in page and "<li>Weekly</li>" in page
    assert f'href="{SITE_URL}/poll/{SECOND}/results"' in page
    assert "answer=" not in page  # no voting links: a vote belongs to a reader


def test_poll_is_left_out_without_a_reader_desk(newsletter: Path) -> None:
    """No site_url: no desk to show results, so no poll on the web copy."""
    send_two(newsletter)
    build_site(settings_for(newsletter))
    page = (newsletter / "site" / "p" / SECOND / "index.html").read_text()
    assert "How often do you ship?" not in page and "/poll/" not in page


def meta(page: str, key: str) -> list[str]:
    return re.findall(rf'<meta (?:property|name)="{re.escape(key)}" content="([^"]*)">', page)


def test_pages_carry_canonical_link_previews_and_feed_autodiscovery(newsletter: Path) -> None:
    """Canonical URL, OpenGraph/Twitter title, description and image, feed links everywhere."""
    send_two(newsletter)
    set_site_url(newsletter)
    build_site(settings_for(newsletter))
    site = newsletter / "site"
    page = (site / "issues" / SECOND / "index.html").read_text()
    url = f"{SITE_URL}/issues/{SECOND}/"
    assert f'<link rel="canonical" href="{url}">' in page
    assert meta(page, "og:url") == [url]
    assert meta(page, "og:title") == ["Shipping small, often"] == meta(page, "twitter:title")
    assert meta(page, "og:description") == [
        "Why the teams that ship daily break production less often than the rest."
    ]
    assert meta(page, "og:image") == ["https://news.example.com/promo.png"]
    assert meta(page, "twitter:card") == ["summary_large_image"]
    assert meta(page, "article:published_time") == ["2025-02-03T12:00:00+00:00"]
    sample = (site / "issues" / SAMPLE_SLUG / "index.html").read_text()
    assert meta(sample, "og:image") == ["https://tinybigspark.com/logo.png"]  # the logo
    for name, text in pages(site).items():
        assert (
            f'type="application/rss+xml" title="Tiny Big Spark (RSS)" href="{SITE_URL}/feed.xml"'
            in text
        ), name
        assert (
            f'type="application/atom+xml" title="Tiny Big Spark (Atom)" href="{SITE_URL}/atom.xml"'
            in text
        ), name


def test_tag_pages_list_their_issues_and_the_sitemap_lists_every_page(newsletter: Path) -> None:
    """A page per tag (tags differing only in case are one), all of them in sitemap.xml."""
    send_two(newsletter)
    set_site_url(newsletter)
    result = build_site(settings_for(newsletter))
    site = newsletter / "site"
    assert result.tags == 4  # leadership, engineering, management, Delivery
    engineering = (site / "tags" / "engineering" / "index.html").read_text()
    assert "Shipping small" in engineering and "Engineering Leadership" in engineering
    delivery = (site / "tags" / "delivery" / "index.html").read_text()
    assert "Shipping small" in delivery and "Engineering Leadership" not in delivery
    assert 'href="/tags/delivery/">Delivery</a>' in (site / "tags" / "index.html").read_text()
    sitemap = (site / "sitemap.xml").read_text()
    for url in (f"{SITE_URL}/", f"{SITE_URL}/issues/{SECOND}/", f"{SITE_URL}/tags/delivery/"):
        assert f"<loc>{url}</loc>" in sitemap
    assert "404" not in sitemap


def test_site_build_command_prints_a_summary_or_json(newsletter: Path) -> None:
    """The command: one summary line, or --json for scripts; --out picks the folder."""
    send_two(newsletter)
    text = run_cli("site", "build", cwd=newsletter)
    assert text.returncode == 0, text.stderr
    assert "2 sent issues, 4 tags" in text.stdout and "feed.xml" in text.stdout
    out = run_cli("site", "build", "--out", "public", "--include-unsent", "--json", cwd=newsletter)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["folder"] == str(newsletter / "public") and data["drafts"] == 1
    assert data["feeds"]["rss"] == "https://tinybigspark.com/feed.xml"
    assert (newsletter / "public" / "p" / DRAFT / "index.html").is_file()


def test_an_empty_archive_still_builds_and_says_why(newsletter: Path) -> None:
    """Nothing sent yet: an index that says so, empty feeds, and a warning."""
    result = build_site(settings_for(newsletter))
    assert result.issues == 0 and "no issue has been sent yet" in result.warnings[0]
    assert "No issues yet." in (newsletter / "site" / "index.html").read_text()
    assert feedparser.parse((newsletter / "site" / "atom.xml").read_bytes()).bozo == 0


def test_the_site_package_gives_its_names_to_mypy_and_no_others() -> None:
    """build_site and SiteResult come from build.py when first asked for (the desk never
    builds); mypy reads them from the TYPE_CHECKING import. A module __getattr__ that mypy
    sees types every other name of the package as Any: a misspelt `site.buld_site` would
    pass mypy and fail when run."""
    import ast
    import importlib

    import spark_mail.site as site

    assert site.build_site is importlib.import_module("spark_mail.site.build").build_site
    assert site.SiteResult.__module__ == "spark_mail.site.build"
    with pytest.raises(AttributeError):
        site.buld_site  # noqa: B018
    tree = ast.parse(Path(site.__file__).read_text())
    seen = [node.name for node in tree.body if isinstance(node, ast.FunctionDef)]
    assert "__getattr__" not in seen, "mypy reads the module's __getattr__"
