"""The reader desk in process (httpx's ASGI transport, a FakeClock, a real SQLite store):
every route, its statuses, and the bad input that must get a clear 4xx and record nothing."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from conftest import SAMPLE_SLUG, write_issue
from desk_support import (
    ISSUE_DAY,
    InProcess,
    desk_settings,
    form_of,
    path_of,
    reader_links,
)
from spark_mail.audience.suppressions import SuppressionStore, store_path
from spark_mail.clock import FakeClock
from spark_mail.config import Settings
from spark_mail.desk import guard
from spark_mail.desk.app import create_app
from spark_mail.desk.polls import PollBook, results

READER = "Anna.Reader@Example.com"


@dataclasses.dataclass
class Desk:
    settings: Settings
    clock: FakeClock
    client: InProcess
    store: SuppressionStore

    def votes(self, slug: str = SAMPLE_SLUG) -> list[int]:
        info = PollBook(self.settings.issues_path).get(slug)
        assert info is not None
        return results(self.store, info).counts

    def rows(self, table: str) -> int:
        return self.store.read(f"SELECT COUNT(*) FROM {table}")[0][0] if self.store.exists() else 0

    def nothing_recorded(self) -> bool:
        return all(
            self.rows(t) == 0
            for t in ("suppressions", "suppression_events", "votes", "poll_counts")
        )


def make_desk(root: Path, **env: str) -> Desk:
    settings = desk_settings(root, **env)
    clock = FakeClock(ISSUE_DAY)
    store = SuppressionStore(store_path(settings))
    return Desk(settings, clock, InProcess(create_app(settings, clock=clock, store=store)), store)


@pytest.fixture
def desk(newsletter: Path) -> Desk:
    return make_desk(newsletter)


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


# -- unsubscribe ------------------------------------------------------------------------


def test_unsubscribe_get_shows_a_confirm_page_and_changes_nothing(desk: Desk):
    """A GET (a mail scanner, a reader's first click) only shows the button."""
    page = desk.client.get(reader_links(desk.settings, READER).unsubscribe)
    assert page.status_code == 200
    assert "Unsubscribe?" in page.text and "Tiny Big Spark" in page.text
    assert "An•••@Example.com" in page.text and READER not in page.text.split("<form")[0]
    assert '<button type="submit">Unsubscribe</button>' in page.text
    assert desk.nothing_recorded()


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_post_unsubscribes_at_once(desk: Desk, encoding: str):
    """RFC 8058: POST List-Unsubscribe=One-Click to the link: 200, suppressed, no step."""
    link = reader_links(desk.settings, READER).unsubscribe
    body: dict[str, Any] = {"data": {"List-Unsubscribe": "One-Click"}}
    if encoding == "multipart":
        body = {"files": {"List-Unsubscribe": (None, "One-Click")}}
    answer = desk.client.post(link, **body)
    assert answer.status_code == 200
    assert desk.store.suppressed(["anna.reader@example.com"]) == {"anna.reader@example.com"}
    [row] = desk.store.suppressions()
    assert (row.how, row.issue, row.at) == ("one-click", SAMPLE_SLUG, "2025-01-20T12:00:00+00:00")


def test_confirm_form_unsubscribes_and_resubscribe_undoes_it(desk: Desk):
    """The page's button unsubscribes ("form"); the next page offers re-subscribe."""
    page = desk.client.get(reader_links(desk.settings, READER).unsubscribe)
    action, fields = form_of(page.text)
    done = desk.client.post(action, data=fields)
    assert done.status_code == 200 and "You're unsubscribed" in done.text
    assert desk.store.is_suppressed(READER)
    assert desk.store.suppressions()[0].how == "form"
    again = desk.client.get(reader_links(desk.settings, READER).unsubscribe)
    assert "You're unsubscribed" in again.text  # a second visit shows the state, no button
    action, fields = form_of(done.text)
    assert fields["action"] == "resubscribe"
    back = desk.client.post(action, data=fields)
    assert back.status_code == 200 and "Welcome back" in back.text
    assert not desk.store.is_suppressed(READER)
    events = desk.store.read("SELECT action, how FROM suppression_events ORDER BY id")
    assert events == [("unsubscribe", "form"), ("resubscribe", "re-subscribe")]


@pytest.mark.parametrize(
    ("kind", "how"),
    [("hard-bounce", "bounce"), ("complaint", "complaint"), ("soft-bounce", "soft-bounces")],
)
def test_a_resubscribe_does_not_lift_what_the_esp_reported_meanwhile(
    desk: Desk, kind: str, how: str
):
    """The reader unsubscribed, then the ESP reported a hard bounce (or a complaint, or
    three soft bounces) for the address: the report was kept as an event, not as the
    suppression (the first record is kept). Re-subscribe lifted the reader's row and with it
    the only thing keeping a dead address off the list: the next send mailed it. Now the
    ESP's report suppresses it again and the page says it is held."""
    from spark_mail.audience.events import EspEvent, EventKind, record_events

    page = desk.client.get(reader_links(desk.settings, READER).unsubscribe)
    action, fields = form_of(page.text)
    done = desk.client.post(action, data=fields)
    now = dt.datetime(2025, 1, 21, tzinfo=dt.UTC)
    count = 3 if kind == "soft-bounce" else 1
    events = [
        EspEvent("postmark", f"e{n}", EventKind(kind), READER, now, message_id=f"m{n}")
        for n in range(count)
    ]
    desk.store.run([record_events(events, now)])
    assert desk.store.suppressions()[0].how == "form"  # the reader's row stands meanwhile
    action, fields = form_of(done.text)
    back = desk.client.post(action, data=fields)
    assert back.status_code == 200 and "Welcome back" not in back.text
    assert "You're unsubscribed" in back.text
    assert desk.store.is_suppressed(READER)
    [row] = desk.store.suppressions()
    assert (row.how, row.provider) == (how, "postmark")


@pytest.mark.parametrize(
    "tamper",
    ["forged", "other reader's", "expired", "missing", "wrong action"],
)
def test_confirm_form_needs_its_own_fresh_csrf_token(desk: Desk, tamper: str):
    """The form's CSRF token is signed for this reader and action, and expires in a day."""
    page = desk.client.get(reader_links(desk.settings, READER).unsubscribe)
    action, fields = form_of(page.text)
    if tamper == "forged":
        fields["csrf"] = fields["csrf"][:-2] + "AA"
    elif tamper == "other reader's":
        other = desk.client.get(reader_links(desk.settings, "bob@example.com").unsubscribe)
        fields["csrf"] = form_of(other.text)[1]["csrf"]
    elif tamper == "expired":
        desk.clock.advance(25 * 3600)
    elif tamper == "missing":
        del fields["csrf"]
    else:
        fields["action"] = "resubscribe"
    answer = desk.client.post(action, data=fields)
    assert answer.status_code in (400, 403), answer.text
    if tamper == "expired":
        assert "expired" in answer.text
    assert desk.nothing_recorded()


def tampered_links(desk: Desk) -> dict[str, str]:
    links = reader_links(desk.settings, READER)
    token = dict(parse_qsl(urlsplit(links.unsubscribe).query))["token"]
    poll_token = dict(parse_qsl(urlsplit(links.polls[0]).query))["token"]
    other = reader_links(desk.settings, "bob@example.com").unsubscribe
    return {
        "altered token": with_query(
            links.unsubscribe, token=token[:-1] + ("A" if token[-1] != "A" else "B")
        ),
        "truncated token": with_query(links.unsubscribe, token=token[:10]),
        "another reader's token": with_query(
            links.unsubscribe, token=dict(parse_qsl(urlsplit(other).query))["token"]
        ),
        "foreign issue": with_query(links.unsubscribe, issue="2025-02-03-another-issue"),
        "poll token used to unsubscribe": with_query(links.unsubscribe, token=poll_token),
        "non-ASCII token": with_query(links.unsubscribe, token="ü" * 22),
        "altered address": with_query(links.unsubscribe, email="mallory@example.com"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "altered token",
        "truncated token",
        "another reader's token",
        "foreign issue",
        "poll token used to unsubscribe",
        "non-ASCII token",
        "altered address",
    ],
)
def test_bad_unsubscribe_tokens_get_403_and_record_nothing(desk: Desk, case: str):
    """Forged, altered, truncated, foreign-issue tokens: a clear page, nothing written."""
    link = tampered_links(desk)[case]
    for answer in (
        desk.client.get(link),
        desk.client.post(link, data={"List-Unsubscribe": "One-Click"}),
    ):
        assert answer.status_code == 403
        assert "does not check out" in answer.text and "Traceback" not in answer.text
    assert desk.nothing_recorded()


@pytest.mark.parametrize("drop", ["issue", "email", "token"])
def test_an_incomplete_link_gets_400(desk: Desk, drop: str):
    """A link a mail program cut short: 400 and a hint, nothing recorded."""
    parts = urlsplit(reader_links(desk.settings, READER).unsubscribe)
    query = {k: v for k, v in parse_qsl(parts.query) if k != drop}
    link = parts._replace(query=urlencode(query)).geturl()
    answer = desk.client.post(link, data={"List-Unsubscribe": "One-Click"})
    assert answer.status_code == 400 and "incomplete" in answer.text
    assert desk.nothing_recorded()


def test_a_post_that_asks_for_nothing_is_refused(desk: Desk):
    """A POST with neither the one-click body nor the form: 400."""
    link = reader_links(desk.settings, READER).unsubscribe
    answer = desk.client.post(link, data={"List-Unsubscribe": "Maybe"})
    assert answer.status_code == 400
    assert desk.nothing_recorded()


def test_huge_bodies_are_refused_with_413(desk: Desk):
    """Over 16 KB, announced by Content-Length or streamed: 413, nothing written."""
    link = reader_links(desk.settings, READER).unsubscribe
    big = b"List-Unsubscribe=One-Click&x=" + b"a" * (guard.MAX_BODY_BYTES + 1)
    announced = desk.client.post(link, content=big)
    assert announced.status_code == 413

    async def chunks():
        for _ in range(20):
            yield b"a" * 1024

    streamed = desk.client.post(link, content=chunks())
    assert streamed.status_code == 413 and "too large" in streamed.text
    assert desk.nothing_recorded()


def test_a_body_that_is_not_utf8_is_refused_with_400(desk: Desk):
    """Bytes that are not UTF-8: 400 and a clear page, never a traceback."""
    link = reader_links(desk.settings, READER).unsubscribe
    headers = {"content-type": "application/x-www-form-urlencoded"}
    answer = desk.client.post(link, content=b"List-Unsubscribe=One-\xff\xfeClick", headers=headers)
    assert answer.status_code == 400 and "UTF-8" in answer.text
    assert desk.nothing_recorded()


# -- the guard ----------------------------------------------------------------------------


def test_unknown_host_names_are_refused(desk: Desk):
    """DNS rebinding: a page under another host name gets 400, not the desk."""
    link = path_of(reader_links(desk.settings, READER).unsubscribe)
    answer = desk.client.get(link, headers={"host": "attacker.example"})
    assert answer.status_code == 400 and "does not answer for that site" in answer.text
    assert desk.client.get("/healthz", headers={"host": "localhost:8040"}).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/unsubscribe", "/no/such/page"])
def test_every_response_sends_the_security_headers(desk: Desk, path: str):
    """No referrer (tokens stay here), no framing, no sniffing, on every status."""
    answer = desk.client.get(path)
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_desk_pages_allow_no_script_and_only_their_own_stylesheet(desk: Desk):
    """The strict CSP: nothing by default, the inline stylesheet by its hash."""
    page = desk.client.get(reader_links(desk.settings, READER).unsubscribe)
    csp = page.headers["content-security-policy"]
    assert csp.startswith("default-src 'none'; style-src 'sha256-")
    assert "form-action 'self'" in csp and "script" not in csp and "<script" not in page.text
    assert page.headers["cache-control"] == "no-store"


def test_repeated_bad_tokens_are_slowed_down_then_let_through(desk: Desk):
    """After 10 bad tokens an address gets 429 (even with a good link) until it waits."""
    bad = tampered_links(desk)["altered token"]
    good = reader_links(desk.settings, READER).unsubscribe
    for _ in range(guard.BAD_TOKENS):
        assert desk.client.get(bad).status_code == 403
    slowed = desk.client.get(good)
    assert slowed.status_code == 429 and int(slowed.headers["retry-after"]) == 60
    other = InProcess(desk.client.app, client="198.51.100.9")
    assert other.get(good).status_code == 200  # another address is not affected
    desk.clock.advance(61)
    assert desk.client.get(good).status_code == 200


def test_a_get_flood_gets_429_and_writes_nothing(newsletter: Path):
    """More than desk_rate_limit requests a minute from one address: 429, no vote."""
    flooded = make_desk(newsletter, SPARK_MAIL_DESK_RATE_LIMIT="5")
    link = reader_links(flooded.settings, READER).polls[0]
    flooded.client.get("/healthz")
    for _ in range(4):
        assert flooded.client.get("/no-such-page").status_code == 404
    answer = flooded.client.get(link)
    assert answer.status_code == 429 and "Too many requests" in answer.text
    assert flooded.nothing_recorded()
    flooded.clock.advance(60)
    assert flooded.client.get(link).status_code == 200


# -- polls -----------------------------------------------------------------------------


def test_a_poll_click_counts_at_once_and_shows_the_results(desk: Desk):
    """One click: the vote is in, the page shows a bar per option and a comment box."""
    page = desk.client.get(reader_links(desk.settings, READER).polls[1])
    assert page.status_code == 200
    assert "Thanks, your vote is in." in page.text
    assert page.text.count('class="bar"') == 3 and 'class="fill w100"' in page.text
    assert 'name="comment"' in page.text
    assert desk.votes() == [0, 1, 0]


def test_a_later_click_on_another_option_changes_the_vote(desk: Desk):
    """More than 5 s later, another option: a change of mind, still one vote."""
    links = reader_links(desk.settings, READER).polls
    desk.client.get(links[0])
    desk.clock.advance(6)
    page = desk.client.get(links[2])
    assert "your vote is changed" in page.text
    assert desk.votes() == [0, 0, 1]
    desk.client.get(links[2])
    assert desk.votes() == [0, 0, 1]


def test_a_scanner_opening_every_option_counts_for_none(desk: Desk):
    """Every option within a few seconds: none counts; the reader's later click does."""
    links = reader_links(desk.settings, READER).polls
    for link in links:
        desk.client.get(link)
        desk.clock.advance(1)
    assert desk.votes() == [0, 0, 0]
    desk.clock.advance(30)
    desk.client.get(links[1])
    assert desk.votes() == [0, 1, 0]


def test_votes_are_one_per_reader_however_the_address_is_written(desk: Desk):
    """The same reader under two spellings is one voter; another reader is another."""
    desk.client.get(reader_links(desk.settings, "anna.reader@example.com").polls[0])
    desk.client.get(reader_links(desk.settings, READER).polls[0])
    desk.client.get(reader_links(desk.settings, "bob@example.com").polls[0])
    assert desk.votes() == [2, 0, 0]
    stored = desk.store.read("SELECT voter FROM votes")
    assert all("@" not in voter for (voter,) in stored)  # pseudonymous, no addresses


def test_head_and_prefetch_of_a_poll_link_never_vote(desk: Desk):
    """Looking at a link (HEAD, a browser's prefetch) is not clicking it."""
    link = reader_links(desk.settings, READER).polls[0]
    assert desk.client.request("HEAD", link).status_code == 200
    assert desk.client.get(link, headers={"sec-purpose": "prefetch"}).status_code == 200
    assert desk.nothing_recorded()


@pytest.mark.parametrize("case", ["unknown option", "option 0", "unknown issue", "not a slug"])
def test_unknown_issues_and_options_get_404_and_record_nothing(desk: Desk, case: str):
    """A well-signed link to an answer or a poll that does not exist: 404."""
    from spark_mail.personalize import sign_token

    link = reader_links(desk.settings, READER).polls[0]
    if case in ("unknown option", "option 0"):
        link = with_query(link, answer="7" if case == "unknown option" else "0")
    else:
        slug = "2030-01-01-no-such-issue" if case == "unknown issue" else "not a slug!"
        token = sign_token(desk.settings.signing_secret, slug, READER, "poll")
        link = f"/poll/{slug}?" + urlencode(
            {"answer": 1, "issue": slug, "email": READER, "token": token}
        )
    answer = desk.client.get(link)
    assert answer.status_code == 404 and "No such" in answer.text
    assert desk.nothing_recorded()


def test_a_poll_link_signed_for_another_issue_is_refused(desk: Desk):
    """The token of issue A on the poll of issue B: 403."""
    write_issue(
        desk.settings.root,
        "2025-01-27-next",
        "title: Next\ndate: 2025-01-27\npoll:\n  question: Q?\n  options: [A, B]",
    )
    link = reader_links(desk.settings, READER).polls[0]
    foreign = link.replace(f"/poll/{SAMPLE_SLUG}?", "/poll/2025-01-27-next?")
    assert desk.client.get(foreign).status_code == 403
    assert desk.nothing_recorded()


def test_a_closed_poll_gets_410_and_records_nothing(desk: Desk):
    """Votes are taken for poll_days (30) after the issue's date."""
    desk.clock.advance(31 * 86400)
    answer = desk.client.get(reader_links(desk.settings, READER).polls[0])
    assert answer.status_code == 410 and "closed" in answer.text
    assert desk.nothing_recorded()


def test_a_comment_is_kept_as_one_short_line(desk: Desk):
    """The comment box: one line, at most 280 characters, a later one replaces it."""
    page = desk.client.get(reader_links(desk.settings, READER).polls[0])
    action, fields = form_of(page.text)
    thanks = desk.client.post(action, data={**fields, "comment": "Great\nissue!\x00 " + "x" * 400})
    assert thanks.status_code == 200 and "Thanks for your comment" in thanks.text
    [(comment,)] = desk.store.read("SELECT comment FROM votes")
    assert comment.startswith("Great issue! xxx") and len(comment) == 280
    forged = desk.client.post(action, data={"csrf": "1.AAAA", "comment": "spam"})
    assert forged.status_code == 403


def test_a_comment_without_a_vote_is_refused(desk: Desk):
    """A comment form replayed for a reader who never voted: 400, nothing kept."""
    page = desk.client.get(reader_links(desk.settings, READER).polls[0])
    action, fields = form_of(page.text)
    desk.store.read("SELECT 1")
    with desk.store.transaction() as db:
        db.execute("DELETE FROM votes")
    answer = desk.client.post(action, data={**fields, "comment": "hello"})
    assert answer.status_code == 400
    assert desk.rows("votes") == 0


def test_the_results_page_is_read_only(desk: Desk):
    """GET /poll/{slug}/results shows the bars and records nothing; unknown: 404."""
    from spark_mail.site.urls import site_urls

    copy = (
        desk.settings.root / "site" / site_urls(desk.settings, strict=False).issue_file(SAMPLE_SLUG)
    )
    copy.parent.mkdir(parents=True)
    copy.write_text("the web copy")  # published in the archive (drafts' polls stay hidden)
    page = desk.client.get(f"/poll/{SAMPLE_SLUG}/results")
    assert page.status_code == 200 and "How would you rate today" in page.text
    assert 'name="comment"' not in page.text
    assert desk.client.get("/poll/2030-01-01-nope/results").status_code == 404
    assert desk.nothing_recorded()


# -- polls on an ESP's list: the issue's signed link ---------------------------------------


def esp_poll_links(settings: Settings) -> list[str]:
    """The poll links of the one email built for an ESP's list (no reader)."""
    import re

    from spark_mail.render import build

    email = build(settings.issues_path / f"{SAMPLE_SLUG}.md", settings)
    return re.findall(r"^- [^:\n]+: (https://.+)$", email.text, re.M)


@pytest.mark.slow
def test_esp_list_poll_links_dedupe_by_the_subscriber_id_merge_tag(newsletter: Path):
    """With poll_reader_tag, each reader's id (filled in by the ESP) is one voter."""
    esp = make_desk(newsletter, SPARK_MAIL_POLL_READER_TAG="{{ subscriber.id }}")
    links = esp_poll_links(esp.settings)
    assert (
        "issue=" in links[0] and "token=" in links[0] and "reader={{ subscriber.id }}" in links[0]
    )
    from spark_mail.checks import run_checks
    from spark_mail.render import build

    report = run_checks(
        build(esp.settings.issues_path / f"{SAMPLE_SLUG}.md", esp.settings),
        esp.settings,
        links=False,
    )
    assert not [f for f in report.findings if f.rule_id == "template.unresolved"]
    filled = [link.replace("{{ subscriber.id }}", f"sub_{n % 2}") for n, link in enumerate(links)]
    esp.client.get(filled[0])  # reader sub_0
    esp.client.get(filled[1])  # reader sub_1
    esp.clock.advance(10)
    esp.client.get(filled[2])  # sub_0 changes their mind
    assert esp.votes() == [0, 1, 1]


def test_esp_list_poll_links_without_an_id_dedupe_by_client_address(newsletter: Path):
    """No merge tag: the client address stands in for the reader; forged issue token: 403."""
    esp = make_desk(newsletter)
    links = esp_poll_links(esp.settings)
    esp.client.get(links[0])
    esp.client.get(links[0])
    InProcess(esp.client.app, client="198.51.100.20").get(links[1])
    assert esp.votes() == [1, 1, 0]
    forged = with_query(links[0], token="A" * 22)
    assert esp.client.get(forged).status_code == 403
    unfilled = with_query(links[0], reader="{{ subscriber.id }}")
    esp.clock.advance(10)
    esp.client.get(unfilled)  # an unfilled tag is no id: the client address again
    assert esp.votes() == [1, 1, 0]


# -- routes, the archive, health, failures ------------------------------------------------


def test_routes_follow_the_configured_urls(newsletter: Path):
    """Custom unsubscribe_url and poll_url paths (slug and option in the query) work."""
    custom = make_desk(
        newsletter,
        SPARK_MAIL_UNSUBSCRIBE_URL="https://news.example.org/leave/now",
        SPARK_MAIL_POLL_URL="https://news.example.org/vote?i={slug}&o={option}",
    )
    links = reader_links(custom.settings, READER)
    assert urlsplit(links.unsubscribe).path == "/leave/now"
    one_click = custom.client.post(links.unsubscribe, data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200 and custom.store.is_suppressed(READER)
    vote = custom.client.get(links.polls[2])
    assert vote.status_code == 200 and custom.votes() == [0, 0, 1]


def test_the_web_archive_is_served_beside_the_desk(desk: Desk):
    """site/: files, index.html for folders, no listings; the desk's routes win."""
    site = desk.settings.root / "site"
    (site / "issues" / SAMPLE_SLUG).mkdir(parents=True)
    (site / "index.html").write_text("<h1>Archive</h1>")
    (site / "issues" / SAMPLE_SLUG / "index.html").write_text("<h1>Web copy</h1>")
    (site / "unsubscribe").mkdir()
    (site / "unsubscribe" / "index.html").write_text("shadowed")
    assert desk.client.get("/").text == "<h1>Archive</h1>"
    assert desk.client.get(f"/issues/{SAMPLE_SLUG}/").text == "<h1>Web copy</h1>"
    assert desk.client.get("/issues/").status_code == 404  # a folder without index: no listing
    moved = desk.client.get(f"/issues/{SAMPLE_SLUG}")
    assert moved.status_code == 308 and moved.headers["location"] == f"/issues/{SAMPLE_SLUG}/"
    assert desk.client.get("/unsubscribe").status_code == 400  # the desk, not the file
    assert desk.client.get("/../spark-mail.toml").status_code == 404


def test_no_redirect_leads_off_the_site(desk: Desk):
    """A folder named with a doubled slash redirects to a path on this site only."""
    (desk.settings.root / "site" / "evil.example").mkdir(parents=True)
    (desk.settings.root / "site" / "evil.example" / "index.html").write_text("x")
    moved = desk.client.get("https://tinybigspark.com//evil.example")
    assert moved.status_code == 308 and moved.headers["location"] == "/evil.example/"


def test_without_an_archive_other_paths_are_404_pages(desk: Desk):
    """No site/ folder: a clear 404 page."""
    answer = desk.client.get("/issues/x/")
    assert answer.status_code == 404 and "Page not found" in answer.text


def test_health_answers_while_the_store_does(desk: Desk):
    """/healthz: 200 JSON; a corrupt store: 503, a clear page, nothing else breaks."""
    assert desk.client.get("/healthz").json() == {"status": "ok"}
    desk.store.close()
    store_path(desk.settings).write_bytes(b"this is not a database" * 100)
    for name in ("readers.sqlite3-wal", "readers.sqlite3-shm"):
        (desk.settings.state_path / name).unlink(missing_ok=True)
    broken = desk.client.get("/healthz")
    assert broken.status_code == 503 and "try again" in broken.text
    vote = desk.client.get(reader_links(desk.settings, READER).polls[0])
    assert vote.status_code == 503 and "Traceback" not in vote.text


def test_serve_refuses_to_start_without_a_signing_secret(newsletter: Path):
    """No secret: a ConfigError saying how to make one (the CLI shows it in one line)."""
    from spark_mail.config import load_settings
    from spark_mail.errors import ConfigError

    with pytest.raises(ConfigError, match="SIGNING_SECRET"):
        create_app(load_settings(newsletter, env={}))


def test_requests_from_this_machine_are_not_limited(newsletter: Path):
    """A proxy without --proxy-headers (or a health check) is 127.0.0.1: no rate limit and
    no bad-token slow-down, or one reader's bad link would slow down every reader."""
    local = make_desk(newsletter, SPARK_MAIL_DESK_RATE_LIMIT="2")
    proxy = InProcess(local.client.app, client="127.0.0.1")
    bad = tampered_links(local)["altered token"]
    for _ in range(guard.BAD_TOKENS + 2):
        assert proxy.get(bad).status_code == 403
    assert proxy.get(reader_links(local.settings, READER).unsubscribe).status_code == 200
