"""`spark-mail audience sync`: copy the ESP's own suppression list into the desk's store.

ESPs that deliver to your own list keep a list of addresses they will not deliver to any
more: hard bounces, spam complaints, unsubscribes through their own links. `sync` reads it
through the ESP's API and suppresses the same addresses in the reader desk's store, so
`audience check` counts them, every own-list send skips them, and they stay suppressed if
you move to another ESP. It only adds: an address the ESP lets go again stays suppressed
here (suppression always wins; `audience suppressions` says why and since when).

    postmark   GET /message-streams/broadcast/suppressions/dump
    ses        SESv2 ListSuppressedDestinations (boto3: `pip install 'spark-mail[ses]'`;
               credentials from boto3's usual chain, SPARK_MAIL_API_URL as its endpoint)
    mailgun    GET /v3/<mailgun_domain>/bounces, /complaints, /unsubscribes (1,000 a page)
    sendgrid   GET /v3/suppression/bounces, /spam_reports, /unsubscribes (500 a page)

The HTTP ones go through spark_mail/providers/http.py's request machinery (retries, rate
limit, one-line errors with the key masked).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

from spark_mail.audience.events import suppress_listed
from spark_mail.audience.suppressions import SuppressionStore
from spark_mail.clock import SYSTEM_CLOCK, Clock
from spark_mail.config import Settings
from spark_mail.errors import ConfigError, EspError, UnsupportedOperation
from spark_mail.providers.base import SendResult
from spark_mail.providers.http import MESSAGE_LIMIT, HttpProvider
from spark_mail.providers.mailgun import MailgunAuth
from spark_mail.secrets import shorten

if TYPE_CHECKING:
    from spark_mail.render import RenderedEmail

WRITE_CHUNK = 500  # addresses per transaction
MAX_PAGES = 100_000  # a paging loop that never ends is the ESP's bug, not a reason to hang
MAILGUN_PAGE = 1000
SENDGRID_PAGE = 500
MAILGUN_LISTS = {"bounces": "bounce", "complaints": "complaint", "unsubscribes": "esp-unsubscribe"}
SENDGRID_LISTS = {
    "bounces": "bounce",
    "spam_reports": "complaint",
    "unsubscribes": "esp-unsubscribe",
}
POSTMARK_REASONS = {
    "HardBounce": "bounce",
    "SpamComplaint": "complaint",
    "ManualSuppression": "esp-unsubscribe",
}
SES_REASONS = {"BOUNCE": "bounce", "COMPLAINT": "complaint"}


@dataclass(frozen=True)
class Listed:
    """One address on the ESP's suppression list."""

    address: str
    how: str  # "bounce", "complaint" or "esp-unsubscribe"
    at: dt.datetime
    detail: str = ""


@dataclass
class SyncReport:
    provider: str
    listed: int = 0  # addresses on the ESP's list
    added: Counter[str] = field(default_factory=Counter)  # newly suppressed here, by how
    already: int = 0  # suppressed here before

    def to_json(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "listed": self.listed,
            "added": sum(self.added.values()),
            "added_by": dict(self.added),
            "already": self.already,
        }


def sync_suppressions(settings: Settings, *, clock: Clock = SYSTEM_CLOCK) -> SyncReport:
    """Pull the configured ESP's suppression list into the desk's store (see above)."""
    from spark_mail.providers.registry import provider_name

    written = (settings.provider or "outbox").strip().lower()
    name = written if written in READERS else provider_name(settings.provider)
    reader = READERS.get(name)
    if reader is None:
        raise ConfigError(
            f"{name}: keeps no suppression list spark-mail can read",
            hint=f"`audience sync` works with {', '.join(READERS)}; the desk's webhooks "
            "record bounces and complaints as they happen (README: Bounces and complaints)",
        )
    report = SyncReport(name)
    entries = reader(settings, clock)
    with SuppressionStore.for_settings(settings) as store:
        while chunk := list(islice(entries, WRITE_CHUNK)):
            operations = [suppress_listed(e.address, e.how, e.at, name, e.detail) for e in chunk]
            for entry, added in zip(chunk, store.run(operations, durable=True), strict=True):
                report.listed += 1
                if added:
                    report.added[entry.how] += 1
                else:
                    report.already += 1
    return report


class ListReader(HttpProvider):
    """The HTTP machinery of the providers (retries, rate limit, masked one-line errors)
    for reading an ESP's suppression list. It sends nothing."""

    capabilities = frozenset()

    def send_test(self, email: RenderedEmail, recipients: Sequence[str]) -> SendResult:
        raise UnsupportedOperation(f"{self.name}: reads suppression lists only")

    def get_json(self, path: str, what: str, shape: type = dict, **params: str) -> Any:
        return self.json(self.request("GET", path, what, params=params or None), what, shape)

    def relative(self, url: str) -> str:
        """An ESP's "next page" URL as a path under our base URL (never another host)."""
        prefix = self.base_url + "/"
        if not url.startswith(prefix):
            raise EspError(f"{self.name}: a next page outside {self.base_url} ({url[:80]})")
        return url[len(prefix) :]


class MailgunLists(MailgunAuth, ListReader):
    name = "mailgun"
    default_base_url = "https://api.mailgun.net"

    def parse_error(self, body: Any) -> tuple[str, str]:
        return "", str(body.get("message", "")) if isinstance(body, dict) else ""

    def entries(self, domain: str, clock: Clock) -> Iterator[Listed]:
        for kind, how in MAILGUN_LISTS.items():
            path = f"v3/{domain}/{kind}?limit={MAILGUN_PAGE}"
            for _ in range(MAX_PAGES):
                page = self.get_json(path, f"list {kind}")
                items = [i for i in page.get("items") or [] if isinstance(i, dict)]
                for item in items:
                    at = parse_when(item.get("created_at"), clock)
                    detail = " ".join(str(item.get(k) or "") for k in ("code", "error")).strip()
                    yield Listed(str(item.get("address", "")), how, at, detail)
                following = (page.get("paging") or {}).get("next")
                if not items or not isinstance(following, str):
                    break
                path = self.relative(following)


class SendgridLists(ListReader):
    name = "sendgrid"
    default_base_url = "https://api.sendgrid.com"

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.api_key.reveal()}"}

    def parse_error(self, body: Any) -> tuple[str, str]:
        errors = body.get("errors") if isinstance(body, dict) else None
        first = errors[0] if isinstance(errors, list) and errors else {}
        return "", str(first.get("message", "")) if isinstance(first, dict) else ""

    def entries(self, clock: Clock) -> Iterator[Listed]:
        for kind, how in SENDGRID_LISTS.items():
            for page in range(MAX_PAGES):
                offset = str(page * SENDGRID_PAGE)
                path = f"v3/suppression/{kind}"
                items = self.get_json(
                    path, f"list {kind}", list, limit=str(SENDGRID_PAGE), offset=offset
                )
                for item in items:
                    if isinstance(item, dict):
                        at = parse_when(item.get("created"), clock)
                        detail = str(item.get("reason") or "").strip()
                        yield Listed(str(item.get("email", "")), how, at, detail)
                if len(items) < SENDGRID_PAGE:
                    break


def parse_when(value: object, clock: Clock) -> dt.datetime:
    from spark_mail.desk.webhooks.base import parse_time

    return parse_time(value, clock.now())


def postmark_entries(settings: Settings, clock: Clock) -> Iterator[Listed]:
    from spark_mail.providers.postmark import STREAM, PostmarkProvider

    postmark = PostmarkProvider(settings, clock=clock)
    what = "read the suppression list"
    try:
        answer = postmark.json(
            postmark.request("GET", f"message-streams/{STREAM}/suppressions/dump", what), what
        )
    finally:
        postmark.close()
    for item in answer.get("Suppressions") or []:
        how = POSTMARK_REASONS.get(str(item.get("SuppressionReason")), "esp-unsubscribe")
        detail = f"{item.get('SuppressionReason', '')} ({item.get('Origin', '')})"
        yield Listed(
            str(item.get("EmailAddress", "")), how, parse_when(item.get("CreatedAt"), clock), detail
        )


def mailgun_entries(settings: Settings, clock: Clock) -> Iterator[Listed]:
    if not settings.mailgun_domain:
        raise ConfigError(
            "mailgun: no sending domain",
            hint="set mailgun_domain in spark-mail.toml (or SPARK_MAIL_MAILGUN_DOMAIN)",
        )
    mailgun = MailgunLists(settings, clock=clock)
    try:
        yield from mailgun.entries(settings.mailgun_domain, clock)
    finally:
        mailgun.close()


def sendgrid_entries(settings: Settings, clock: Clock) -> Iterator[Listed]:
    sendgrid = SendgridLists(settings, clock=clock)
    try:
        yield from sendgrid.entries(clock)
    finally:
        sendgrid.close()


def ses_entries(settings: Settings, clock: Clock) -> Iterator[Listed]:
    """The account's suppression list through boto3 (imported here: an optional extra)."""
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError, NoRegionError
    except ImportError:
        raise ConfigError(
            "ses: boto3 is not installed", hint="pip install 'spark-mail[ses]'"
        ) from None
    from spark_mail.providers.ses import aws_masked

    session = boto3.session.Session()

    def ses_text(text: str) -> str:
        return shorten(aws_masked(session, text), 2 * MESSAGE_LIMIT)

    try:
        client = session.client("sesv2", endpoint_url=settings.api_url or None)
        token = ""
        for _ in range(MAX_PAGES):
            page = client.list_suppressed_destinations(
                PageSize=1000, **({"NextToken": token} if token else {})
            )
            for item in page.get("SuppressedDestinationSummaries", []):
                reason = str(item.get("Reason", ""))
                at = item.get("LastUpdateTime")
                when = at if isinstance(at, dt.datetime) else clock.now()
                yield Listed(
                    str(item.get("EmailAddress", "")),
                    SES_REASONS.get(reason, "bounce"),
                    when,
                    reason,
                )
            token = page.get("NextToken") or ""
            if not token:
                break
    except NoRegionError:
        raise ConfigError(
            "ses: no AWS region", hint="set AWS_REGION (or a region in ~/.aws/config)"
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        message = f"{error.get('Code', 'error')} ({error.get('Message', '')})"
        raise EspError(
            f"ses: {ses_text(message)} [list the suppressed destinations]",
            hint="check the AWS credentials and their ses:ListSuppressedDestinations permission",
        ) from None
    except BotoCoreError as exc:
        raise EspError(f"ses: {ses_text(str(exc))} [list the suppressed destinations]") from None


READERS: dict[str, Callable[[Settings, Clock], Iterator[Listed]]] = {
    "postmark": postmark_entries,
    "ses": ses_entries,
    "mailgun": mailgun_entries,
    "sendgrid": sendgrid_entries,
}
