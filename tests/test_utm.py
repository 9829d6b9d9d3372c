"""UTM tags (setting `utm_source`): on every block's links, never on the reader desk's."""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import parse_qs, unquote, urlsplit

from conftest import REPO
from spark_mail.checks import run_checks
from spark_mail.config import Settings, load_settings
from spark_mail.render import RenderedEmail, build

SECOND_ISSUE = REPO / "tests" / "fixtures" / "issues" / "2025-02-03-shipping-small.md"
SLUG = SECOND_ISSUE.stem


def tagged_settings(**changes: str) -> Settings:
    return dataclasses.replace(load_settings(REPO), **{"utm_source": "tinybigspark", **changes})


def hrefs(email: RenderedEmail) -> list[str]:
    return [h.replace("&amp;", "&") for h in re.findall(r'href="([^"]+)"', email.html)]


def params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def link_to(email: RenderedEmail, start: str) -> str:
    return next(h for h in hrefs(email) if h.startswith(start))


def test_links_are_untagged_by_default():
    """Without utm_source no link gets a UTM parameter."""
    assert not any("utm_" in h for h in hrefs(build(SECOND_ISSUE, load_settings(REPO))))


def test_each_block_tags_its_links():
    """body, sponsor, promo, poll and share links carry source, medium, campaign, content."""
    email = build(SECOND_ISSUE, tagged_settings())
    expected = {
        "https://example.com/dora": "body",
        "https://acme.example.com/pipelines": "sponsor",
        "https://example.com/course/syllabus": "promo",
        "https://example.com/course?": "promo",
        "https://tinybigspark.com/poll/": "poll",
    }
    for start, block in expected.items():
        query = params(link_to(email, start))
        assert query["utm_source"] == "tinybigspark" and query["utm_medium"] == "email"
        assert query["utm_campaign"] == SLUG and query["utm_content"] == block, start
    shared = unquote(link_to(email, "https://x.com/intent/post"))
    assert f"utm_campaign={SLUG}&utm_content=share" in shared
    assert "utm_" not in link_to(email, "https://x.com/intent/post").split("?url=")[0]


def test_existing_parameters_are_kept_and_never_overwritten(newsletter):
    """A link's own ?ref= and utm_source stay as the author wrote them."""
    from conftest import write_issue

    body = "[A](https://example.com/a?ref=x) [B](https://example.com/b?utm_source=partner)\n"
    email = build(
        write_issue(newsletter, "u", "title: T\ndate: 2025-01-01", body), tagged_settings()
    )
    a, b = (
        params(link_to(email, "https://example.com/a")),
        params(link_to(email, "https://example.com/b")),
    )
    assert a["ref"] == "x" and a["utm_source"] == "tinybigspark"
    assert b["utm_source"] == "partner" and b["utm_content"] == "body"


def test_unsubscribe_and_reader_desk_links_are_never_tagged():
    """The unsubscribe link (HTML, text, header) and the desk's poll pages stay untouched."""
    email = build(SECOND_ISSUE, tagged_settings())
    assert link_to(email, "https://tinybigspark.com/unsubscribe") == (
        "https://tinybigspark.com/unsubscribe"
    )
    assert "utm_" not in email.headers["List-Unsubscribe"]
    assert "Unsubscribe: https://tinybigspark.com/unsubscribe\n" in email.text
    desk = tagged_settings(site_url="https://news.example.com", poll_url="")
    from spark_mail.config import with_site_pages

    desk = with_site_pages(dataclasses.replace(desk, base_url="", unsubscribe_url=""))
    on_desk = build(SECOND_ISSUE, desk)
    poll = link_to(on_desk, "https://news.example.com/poll/")
    assert "utm_" not in poll and "utm_" not in link_to(on_desk, "https://news.example.com/unsub")


def test_text_part_carries_the_same_tagged_links():
    """The plain-text part shows exactly the tagged URLs of the HTML."""
    email = build(SECOND_ISSUE, tagged_settings())
    dora = link_to(email, "https://example.com/dora")
    assert f"({dora})" in email.text.replace("\n", " ").replace("( ", "(")


def test_check_shows_the_tagged_links():
    """`check` reports the tags as an info note: how many links per block."""
    settings = tagged_settings()
    report = run_checks(build(SECOND_ISSUE, settings), settings)
    (note,) = [f for f in report.findings if f.rule_id == "utm.tagged"]
    assert note.severity == "info" and "utm_source=tinybigspark" in note.message
    assert "body 1" in note.message and "poll 4" in note.message and "sponsor 1" in note.message


def test_builds_in_one_process_never_share_another_tagging():
    """The body's blocks are made once per text and tagging (render.view.body_blocks): the
    same issue built untagged, tagged, tagged with another source and again untagged, in
    one process, gets each time its own links; a tagged build never changes the blocks an
    untagged one reuses."""
    body_link = "https://example.com/dora"

    def source(settings: Settings) -> str | None:
        return params(link_to(build(SECOND_ISSUE, settings), body_link)).get("utm_source")

    assert source(load_settings(REPO)) is None
    assert source(tagged_settings()) == "tinybigspark"
    assert source(tagged_settings(utm_source="other")) == "other"
    assert source(load_settings(REPO)) is None
    desk = tagged_settings(unsubscribe_url=body_link)
    assert source(desk) is None  # a link to the reader desk is never tagged
