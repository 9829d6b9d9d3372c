"""Where the web archive puts each page, which settings it refuses, and the readable colours."""

from __future__ import annotations

import dataclasses

import pytest

from spark_mail.colors import AA_TEXT, contrast, parse_color, readable
from spark_mail.config import Settings, with_site_pages
from spark_mail.errors import ConfigError, SiteError
from spark_mail.site.pages import css_hex
from spark_mail.site.urls import PathClaims, file_for, site_urls


def settings(**values: str) -> Settings:
    return with_site_pages(dataclasses.replace(Settings(), **values))


@pytest.mark.parametrize(
    ("path", "file"),
    [
        ("issues/launch/", "issues/launch/index.html"),
        ("p/launch", "p/launch/index.html"),
        ("archive/launch.html", "archive/launch.html"),
        ("issues/caf%C3%A9/", "issues/café/index.html"),
        ("", "index.html"),
        ("p/../etc/passwd", None),
        ("p//x", None),
        ("p/a\\b", None),
    ],
)
def test_page_file_follows_the_url_path(path: str, file: str | None) -> None:
    """A folder URL gets index.html, a .html URL is the file, `..` and `//` are refused."""
    assert file_for(path) == file


def test_site_url_puts_issues_under_it_and_polls_on_the_desk() -> None:
    """site_url alone: pages at /issues/<slug>/, poll results at /poll/<slug>/results."""
    urls = site_urls(settings(site_url="https://news.example.com/letters"))
    assert urls.root == "https://news.example.com/letters/"
    assert urls.issue_url("one") == "https://news.example.com/letters/issues/one/"
    assert urls.issue_file("one") == "issues/one/index.html"
    assert urls.href(urls.issue_url("one")) == "/letters/issues/one/"
    assert urls.poll_results_url("one") == "https://news.example.com/letters/poll/one/results"


def test_site_root_defaults_to_the_origin_of_base_url() -> None:
    """Without site_url the root is base_url's origin, and the poll is left out."""
    urls = site_urls(settings(base_url="https://tinybigspark.com/p/{slug}"))
    assert urls.root == "https://tinybigspark.com/"
    assert urls.issue_file("x") == "p/x/index.html"
    assert urls.poll_results_url("x") == ""


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"base_url": "https://x.example.com/latest"}, "has no {slug}"),
        (
            {"site_url": "https://a.example.com", "base_url": "https://b.example.com/{slug}/"},
            "is not under the site's address",
        ),
        ({"base_url": "https://x.example.com/view?issue={slug}"}, "query or fragment"),
        ({}, "needs the site's address"),
        ({"site_url": "news.example.com"}, "is not an http(s) address"),
    ],
)
def test_settings_that_cannot_make_a_site_are_refused(values: dict[str, str], message: str):
    """A base_url without {slug}, off the site, with a query; no address at all."""
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        site_urls(settings(**values))


def test_preview_urls_work_without_any_setting() -> None:
    """The preview's web pane needs no site: links are then relative to /."""
    urls = site_urls(settings(), strict=False)
    assert urls.issue_file("x") == "issues/x/index.html" and urls.href(urls.tags_url) == "/tags/"


def test_two_pages_on_one_path_without_regard_to_case_are_refused() -> None:
    """p/Launch and p/launch are one file on macOS and many CDNs."""
    claims = PathClaims()
    claims.claim("p/Launch/index.html", "issues/Launch.md")
    with pytest.raises(
        SiteError, match=r"issues/launch\.md: its page .* collides with issues/Launch\.md"
    ):
        claims.claim("p/launch/index.html", "issues/launch.md")


def test_an_issue_on_the_index_or_a_feed_path_is_refused() -> None:
    """index.html is the archive's, and feed.xml cannot also be a folder."""
    with pytest.raises(SiteError, match="collides with the archive index"):
        PathClaims().claim("index.html", "issues/index.md")
    claims = PathClaims()
    claims.claim("feed.xml/index.html", "issues/feed.xml.md")
    with pytest.raises(SiteError, match="collides with the RSS feed"):
        claims.check_folders()


@pytest.mark.parametrize("background", ["#ffffff", "#f6f8fa", "#161b22", "#0d1117"])
def test_brand_accent_is_made_readable_on_each_background(background: str) -> None:
    """A light accent (#e8590c: 3.6:1 on white) is darkened or lightened to pass AA."""
    color = readable("#e8590c", background)
    assert contrast(parse_color(color), parse_color(background)) >= AA_TEXT  # type: ignore[arg-type]


def test_only_hex_reaches_the_pages_style_sheet() -> None:
    """A colour the email understands is written as #rrggbb; anything else is the fallback."""
    assert css_hex("red; } body { display: none", "#0b57d0") == "#0b57d0"
    assert css_hex("hsl(0, 100%, 50%)", "#0b57d0") == "#ff0000"
    assert css_hex("DarkOrange", "#0b57d0") == "#ff8c00"
