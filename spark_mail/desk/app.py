"""The reader desk's ASGI app: the pages behind the links in every email.

    unsubscribe path (from `unsubscribe_url`, default /unsubscribe)
        GET   a confirm page (a button, a POST form with a CSRF token); changes nothing
        POST  `List-Unsubscribe=One-Click` (RFC 8058): unsubscribes at once, 200
        POST  the confirm page's form: unsubscribe, or re-subscribe after a mistake
    poll path (from `poll_url`, default /poll/{slug}?answer={index})
        GET   records the vote at once and shows the results so far (+ a comment box)
        POST  the comment box
    /poll/{slug}/results   GET, read-only results (the web archive links here; under the
                           path of site_url, like the archive)
    /healthz               GET, 200 while the store answers
    /webhooks/{provider}   POST, an ESP's bounces and complaints (spark_mail/desk/webhooks/)
    anything else          the web archive (`site_dir`, default site/) as static files,
                           at the path of `site_url` (`/letters/...` for .../letters)

Every refusal is a page with a 4xx status and records nothing (RequestRefused). A HEAD,
or a browser's prefetch, of a poll link never votes. Nothing redirects to a URL taken from
the request.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from spark_mail.audience.addresses import canonical_address
from spark_mail.audience.suppressions import READER_HOW, SuppressionStore, lift, suppress
from spark_mail.clock import SYSTEM_CLOCK, Clock
from spark_mail.config import Settings
from spark_mail.desk import links, polls, webhooks
from spark_mail.desk.commits import GroupCommit
from spark_mail.desk.guard import Guard, SecurityMiddleware, client_address
from spark_mail.desk.pages import Pages
from spark_mail.errors import ConfigError, RequestRefused, StoreError
from spark_mail.personalize import require_secret

log = logging.getLogger("spark_mail.desk")
MAX_FIELDS = 20
STORE_RETRY_SECONDS = 60
LINK_QUERY = ("issue", "email", "token")  # what spark-mail appends to a reader's links
NOTICES = {
    polls.Outcome.COUNTED: "Thanks, your vote is in.",
    polls.Outcome.CHANGED: "Thanks, your vote is changed.",
    polls.Outcome.UNCHANGED: "You have already voted for this answer.",
    polls.Outcome.VOID: "We saw several answers from you within a few seconds (mail scanners "
    "open every link), so none of them counted. Pick your answer again in a moment.",
}


def incomplete() -> RequestRefused:
    return RequestRefused(
        400,
        "This link is incomplete",
        "Part of the link is missing. Open it from your email again, or copy the whole "
        "address if your mail program broke it in two.",
    )


class Desk:
    """The routes' handlers, sharing the store, the polls, the pages and the guard."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock,
        store: SuppressionStore,
        guard: Guard,
        sns_policy: webhooks.SnsPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.keys = links.Keys(require_secret(settings))
        self.clock = clock
        self.store = store  # reads, on the event loop
        self.commits = GroupCommit(SuppressionStore(store.path, timeout=store.timeout))
        self.guard = guard
        self.pages = Pages(settings)
        self.book = polls.PollBook(settings.issues_path)
        self.unsubscribe_route = links.unsubscribe_route(settings)
        self.poll_route = links.poll_route(settings)
        self.poll_query = (*LINK_QUERY, "reader", *self.poll_route.query)
        self.webhooks = webhooks.Webhooks(settings, clock, self.commits, guard, sns_policy)

    # -- helpers -------------------------------------------------------------------------
    def respond(self, page: tuple[int, list[tuple[bytes, bytes]], bytes]) -> Response:
        status, headers, body = page
        response = Response(body, status_code=status)
        response.raw_headers = [*headers, (b"content-length", str(len(body)).encode())]
        return response

    def refuse_token(self, request: Request, what: str) -> RequestRefused:
        self.guard.bad_token(client_address(request.scope))
        return RequestRefused(
            403,
            "This link does not check out",
            f"This {what} link has been changed or was not made for this newsletter. "
            "Please open the link in your email again.",
        )

    def signed_reader(self, request: Request, purpose: str) -> tuple[str, str]:
        """(issue slug, address) of a reader's own signed link; 4xx when it is not one."""
        query = request.query_params
        slug, email, token = query.get("issue"), query.get("email"), query.get("token")
        if not slug or not email or not token:
            raise incomplete()
        secret = self.keys.secret
        if not links.reader_token_ok(secret, slug, email, purpose, token):
            raise self.refuse_token(request, "unsubscribe" if purpose == "unsubscribe" else "poll")
        return slug, email

    async def form(self, request: Request) -> dict[str, str]:
        """The request's form fields (urlencoded or multipart); 400 for a body that is not
        UTF-8 or not a form."""
        body = await request.body()
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        try:
            if kind == "multipart/form-data":
                form = await request.form(max_files=0, max_fields=MAX_FIELDS)
                return {k: v for k, v in form.items() if isinstance(v, str)}
            text = body.decode("utf-8")
            pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS)
            return dict(pairs)
        except ValueError:  # UnicodeDecodeError, too many fields, bad multipart
            raise RequestRefused(
                400, "Unreadable request", "The form could not be read (it must be UTF-8)."
            ) from None

    def self_link(self, request: Request, names: tuple[str, ...]) -> str:
        """This page's own path with the link's query (for its forms): path-only, and only
        the names a desk link carries."""
        query = request.query_params
        kept = {name: query[name] for name in names if query.get(name)}
        return quote(request.url.path) + "?" + urlencode(kept)

    # -- unsubscribe ---------------------------------------------------------------------
    async def unsubscribe_page(self, request: Request) -> Response:
        self.guard.check_bad_tokens(client_address(request.scope))
        slug, email = self.signed_reader(request, "unsubscribe")
        return self.unsubscribe_answer(request, slug, email)

    def unsubscribe_answer(
        self, request: Request, slug: str, email: str, *, resubscribed: bool = False
    ) -> Response:
        """The page for the address's state now: the confirm button; unsubscribed by the
        reader (with Re-subscribe, for that unsubscribe only); kept off the list by what an
        ESP reported (nothing to undo here); or subscribed again."""
        row = None if resubscribed else self.store.suppression(email)
        if resubscribed:
            state = "resubscribed"
        elif row is None:
            state = "confirm"
        else:
            state = "done" if row.how in READER_HOW else "held"
        action = "resubscribe" if state == "done" else "unsubscribe"
        subject = self.csrf_subject(slug, email, row.at if row and state == "done" else "")
        return self.respond(
            self.pages.render(
                "unsubscribe.html",
                title="Subscribed" if resubscribed else "Unsubscribe",
                state=state,
                how=row.how if row else "",
                address=links.masked(email),
                action=self.self_link(request, LINK_QUERY),
                csrf=self.keys.csrf(action, subject, self.clock.now().timestamp()),
            )
        )

    @staticmethod
    def csrf_subject(slug: str, email: str, unsubscribed_at: str = "") -> str:
        """What a confirm form is signed for: the issue, the reader and, for Re-subscribe,
        the unsubscribe it undoes (a replayed form cannot undo a later one)."""
        return f"{slug}\0{canonical_address(email)}\0{unsubscribed_at}"

    async def unsubscribe_post(self, request: Request) -> Response:
        self.guard.check_bad_tokens(client_address(request.scope))
        slug, email = self.signed_reader(request, "unsubscribe")
        fields = await self.form(request)
        now = self.clock.now()
        if fields.get("List-Unsubscribe", "").strip() == "One-Click":
            await self.commits.run(
                suppress(email, how="one-click", issue=slug, at=now), durable=True
            )
            return self.unsubscribe_answer(request, slug, email)
        action = fields.get("action", "")
        if action not in ("unsubscribe", "resubscribe") or "csrf" not in fields:
            raise RequestRefused(
                400,
                "Nothing to do",
                "This request asks for nothing the page knows. Press the button on the page.",
            )
        if action == "unsubscribe":
            self.check_csrf(fields["csrf"], action, self.csrf_subject(slug, email))
            await self.commits.run(suppress(email, how="form", issue=slug, at=now), durable=True)
            return self.unsubscribe_answer(request, slug, email)
        row = self.store.suppression(email)
        since = row.at if row and row.how in READER_HOW else ""
        self.check_csrf(fields["csrf"], action, self.csrf_subject(slug, email, since))
        lifted = bool(since) and await self.commits.run(
            lift(email, issue=slug, at=now, since=since), durable=True
        )
        if not lifted or self.store.is_suppressed(email):
            # nothing of theirs to undo (any more), or what an ESP reported holds it
            return self.unsubscribe_answer(request, slug, email)
        return self.unsubscribe_answer(request, slug, email, resubscribed=True)

    def check_csrf(self, token: str, action: str, subject: str) -> None:
        verdict = self.keys.csrf_ok(token, action, subject, self.clock.now().timestamp())
        if verdict is None:
            raise RequestRefused(
                403, "This page has expired", "Please open the link in your email again."
            )
        if not verdict:
            raise RequestRefused(
                403, "The form does not check out", "Please open the link in your email again."
            )

    # -- polls -----------------------------------------------------------------------------
    def poll_click(self, request: Request) -> tuple[polls.PollInfo, str, dict[str, str]]:
        """(the poll, the voter id, the placeholder values) of a poll link; 4xx if bad."""
        self.guard.check_bad_tokens(client_address(request.scope))
        query = request.query_params
        values = links.placeholder_values(self.poll_route, request.path_params, query)
        slug = query.get("issue") or values.get("slug", "")
        token = query.get("token")
        if not slug or not token:
            raise incomplete()
        if values.get("slug", slug) != slug:
            raise self.refuse_token(request, "poll")  # signed for another issue
        secret = self.keys.secret
        if query.get("email"):
            _, email = self.signed_reader(request, "poll")
            voter = self.keys.voter("r", canonical_address(email))
        elif links.issue_token_ok(secret, slug, token):
            reader = links.reader_id(query.get("reader"))
            kind, who = ("e", reader) if reader else ("c", client_address(request.scope))
            voter = self.keys.voter(kind, who)
        else:
            raise self.refuse_token(request, "poll")
        info = self.book.get(slug)
        if info is None:
            raise RequestRefused(404, "No such poll", "This issue has no poll (any more).")
        return info, voter, values

    def option_of(self, info: polls.PollInfo, values: dict[str, str]) -> int:
        """The 1-based option a link names by {index} or {option}; 404 when none."""
        index = values.get("index", "")
        if links.plain_number(index, 4) and 1 <= int(index) <= len(info.options):
            return int(index)
        if "index" not in values and values.get("option") in info.options:
            return info.options.index(values["option"]) + 1
        raise RequestRefused(404, "No such answer", "This poll has no such answer.")

    def poll_answer(
        self, request: Request, info: polls.PollInfo, voter: str, notice: str, chosen: str = ""
    ) -> Response:
        found = polls.results(self.store, info)
        rows = list(zip(found.options, found.counts, found.shares(), strict=True))
        csrf = self.keys.csrf("comment", f"{info.slug}\0{voter}", self.clock.now().timestamp())
        return self.respond(
            self.pages.render(
                "poll.html",
                title=info.question,
                notice=notice,
                results=found,
                rows=rows,
                chosen=chosen,
                comment_action=self.self_link(request, self.poll_query) if voter else "",
                csrf=csrf,
                comment_chars=polls.COMMENT_CHARS,
            )
        )

    def refuse_closed(self, info: polls.PollInfo, now: dt.datetime) -> None:
        """410 once the poll has closed: no more votes, and no more comments."""
        if polls.is_closed(info, self.settings.poll_days, now):
            found = polls.results(self.store, info)
            raise RequestRefused(
                410,
                "This poll has closed",
                f"Thanks for answering, but this poll has closed ({found.total} votes).",
            )

    async def poll_vote(self, request: Request) -> Response:
        info, voter, values = self.poll_click(request)
        option = self.option_of(info, values)
        now = self.clock.now()
        self.refuse_closed(info, now)
        prefetch = request.headers.get("sec-purpose", request.headers.get("purpose", ""))
        if request.method == "HEAD" or "prefetch" in prefetch.lower():
            return self.poll_answer(request, info, "", "")  # looking is not voting
        outcome = await self.commits.run(polls.vote(info.slug, voter, option, now))
        chosen = "" if outcome is polls.Outcome.VOID else info.options[option - 1]
        return self.poll_answer(request, info, voter, NOTICES[outcome], chosen)

    async def poll_comment(self, request: Request) -> Response:
        info, voter, _values = self.poll_click(request)
        fields = await self.form(request)
        self.check_csrf(fields.get("csrf", ""), "comment", f"{info.slug}\0{voter}")
        now = self.clock.now()
        self.refuse_closed(info, now)
        text = polls.clean_comment(fields.get("comment", ""))
        if text and not await self.commits.run(polls.comment(info.slug, voter, text, now)):
            raise RequestRefused(400, "Vote first", "Pick an answer before you comment.")
        notice = "Thanks for your comment." if text else ""
        return self.poll_answer(request, info, voter, notice)

    async def poll_results(self, request: Request) -> Response:
        info = self.book.get(str(request.path_params["slug"]))
        if info is None or not (
            self.in_archive(info.slug) or polls.results(self.store, info).total
        ):
            raise RequestRefused(404, "No such poll", "This issue has no poll.")
        return self.poll_answer(request, info, "", "")

    def in_archive(self, slug: str) -> bool:
        """Whether the issue's web copy is in the archive. The results of a poll show once
        it is published there or its email has drawn a vote, never for a draft (its
        question would be out before the issue)."""
        from spark_mail.errors import SparkMailError
        from spark_mail.site.urls import site_urls

        try:
            file = site_urls(self.settings, strict=False).issue_file(slug)
        except SparkMailError:
            return False
        return (site_folder(self.settings) / file).is_file()

    async def health(self, request: Request) -> Response:
        self.store.check()
        return JSONResponse({"status": "ok"}, headers={"cache-control": "no-store"})

    # -- errors ----------------------------------------------------------------------------
    async def refused(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestRefused)
        response = self.respond(await self.pages.refusal(exc))
        if exc.retry_after:
            response.headers["retry-after"] = str(exc.retry_after)
        return response

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        titles = {404: "Page not found", 405: "Not allowed here"}
        title = titles.get(exc.status_code, "Bad request")
        response = self.respond(self.pages.message(exc.status_code, title, f"{title}."))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    async def store_error(self, request: Request, exc: Exception) -> Response:
        log.error("reader store: %s", exc)
        response = self.respond(
            self.pages.message(
                503,
                "Please try again",
                "The desk cannot record this right now. Please try again in a minute.",
            )
        )
        response.headers["retry-after"] = str(STORE_RETRY_SECONDS)  # RFC 8058 senders retry
        return response

    async def server_error(self, request: Request, exc: Exception) -> Response:
        log.exception("reader desk: unexpected error")
        return self.respond(self.pages.message(500, "Something went wrong", "Please try again."))


class SiteFiles(StaticFiles):
    """The web archive: files as they are, index.html for a folder, no listings. A folder
    named without its slash is sent to the same folder with it, by path only (never a
    host or URL from the request). Hidden files and folders (`.env`, `.spark-mail/`,
    `.git/`) are never served, should `site_dir` point at a folder that has them; only
    `.well-known/` is. `prefix`: the path of the site's root ("/letters" for
    site_url = https://host/letters), where it is mounted."""

    def __init__(self, directory: Path, prefix: str = "") -> None:
        super().__init__(directory=directory, html=True, check_dir=False)
        self.folder = directory
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.folder.is_dir():
            raise HTTPException(404)
        await super().__call__(scope, receive, send)

    async def get_response(self, path: str, scope: Scope) -> Response:
        hidden = [p for p in PurePosixPath(path).parts if p.startswith(".") and p != "."]
        if hidden and hidden != [".well-known"]:
            raise HTTPException(404)
        response = await super().get_response(path, scope)
        if 300 <= response.status_code < 400:
            parts = [p for p in PurePosixPath(path).parts if p not in ("/", ".", "..")]
            location = quote(self.prefix + "/" + "/".join(parts) + "/" if parts else "/")
            return Response(status_code=308, headers={"location": location})
        return response


def site_folder(settings: Settings) -> Path:
    """The web archive's folder; ConfigError when it holds the newsletter's own folder or
    its state folder (the desk would publish the subscribers, `.env`, the stores);
    SiteError when its symlinks cannot be followed."""
    from spark_mail.site.store import resolved
    from spark_mail.site.store import site_folder as archive_folder

    folder = archive_folder(settings)
    inside = resolved(folder)
    for own in (settings.root, settings.state_path):
        if resolved(own).is_relative_to(inside):
            raise ConfigError(
                f"site_dir {folder} holds {own}: serving it would publish the "
                "subscribers, .env and the reader store",
                hint="point site_dir at the folder `spark-mail site build` writes (default site/)",
            )
    return folder


def create_app(
    settings: Settings,
    *,
    clock: Clock = SYSTEM_CLOCK,
    store: SuppressionStore | None = None,
    sns_policy: webhooks.SnsPolicy | None = None,
) -> Any:
    """The desk for these settings (needs a signing secret: ConfigError without one).
    `sns_policy`: where SNS certificates may come from (tests only; see webhooks/ses.py)."""
    own_store = store is None
    store = store or SuppressionStore.for_settings(settings)
    guard = Guard(clock, settings.desk_rate_limit)
    desk = Desk(settings, clock=clock, store=store, guard=guard, sns_policy=sns_policy)
    unsubscribe = desk.unsubscribe_route.path
    site = links.site_path(settings)  # the archive and the poll results live under it
    routes = [
        Route("/healthz", desk.health, methods=["GET"]),
        Route(webhooks.ROUTE, desk.webhooks.handle, methods=["POST"]),
        Route(site + links.RESULTS_PATH, desk.poll_results, methods=["GET"]),
        Route(unsubscribe, desk.unsubscribe_page, methods=["GET"]),
        Route(unsubscribe, desk.unsubscribe_post, methods=["POST"]),
        Route(desk.poll_route.path, desk.poll_vote, methods=["GET"]),
        Route(desk.poll_route.path, desk.poll_comment, methods=["POST"]),
        Mount(site or "/", app=SiteFiles(site_folder(settings), site)),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        # Closed here, not left to the process's exit: main() freezes its objects out of the
        # last garbage collection, and an unclosed connection leaves the unsubscribes in
        # readers.sqlite3-wal (a copy of readers.sqlite3 alone would not have them).
        desk.commits.close()
        if own_store:
            store.close()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            RequestRefused: desk.refused,
            HTTPException: desk.http_error,
            StoreError: desk.store_error,
            Exception: desk.server_error,
        },
    )
    app.state.desk = desk
    hosts = links.allowed_hosts(settings)
    return SecurityMiddleware(app, hosts=hosts, guard=guard, refusal_page=desk.pages.refusal)
