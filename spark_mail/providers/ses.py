"""Amazon SES (v2 API) through boto3: delivery only; the subscriber list is your own.

Install with `pip install 'spark-mail[ses]'` (boto3 is imported only when SES is used).

- every copy is `SendEmail` with `Content.Raw`: the MIME message spark-mail builds
  (spark_mail/providers/mime.py), so the per-reader `List-Unsubscribe` and
  `List-Unsubscribe-Post` headers go out exactly as built; one reader per message, with the
  configuration set `ses_configuration_set` and the tags `issue` and `batch` (SES's event
  publishing shows them);
- test sends: one raw message, the editors in `To` (at most 50);
- own-list batches: 50 readers per ledger transaction, one request each, 4 at a time, at
  the account's `MaxSendRate` (read with `GetAccount` before the first batch;
  SPARK_MAIL_SEND_RATE overrides it); SES's ThrottlingException ("Maximum sending rate
  exceeded.", a 400) is waited out like a 429; "Daily message quota exceeded." stops the
  run at once (no retry), the readers not sent left for a run after the 24-hour window;
- credentials and region come from boto3's own chain (AWS_ACCESS_KEY_ID / AWS_PROFILE /
  ~/.aws / an instance role; AWS_REGION), never from spark-mail's settings;
  SPARK_MAIL_API_URL replaces the endpoint (https://email.eu-west-1.amazonaws.com, a local
  stand-in), and an SES endpoint's region is the region signed for.

boto3 builds, signs and reads each request, but the HTTP exchange itself goes through
spark-mail's HttpProvider (a `before-send` hook), so SES gets THE retry rule and the whole-
request deadline like every other ESP: botocore's own retries are off, because it would
repeat a SendEmail that may have been acted on. SES has no idempotency key and no cheap
way to ask about one message: a request without a clear answer is `maybe_sent`, and a
batch in flight at a crash is `uncertain`.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from spark_mail.audience.addresses import deliverable_address
from spark_mail.config import Settings
from spark_mail.errors import ConfigError, EspError
from spark_mail.providers.base import (
    BatchResult,
    Capability,
    DeliveryOnlyProvider,
    SendResult,
    bare_address,
    batch_tag,
    deliver_each,
    sender,
)
from spark_mail.providers.http import HttpProvider, RateLimiter
from spark_mail.providers.mime import mime_bytes, mime_for, new_message_id
from spark_mail.render import RenderedEmail
from spark_mail.secrets import redact

if TYPE_CHECKING:
    from spark_mail.audience import Reader
    from spark_mail.personalize import PersonalizedTemplate

log = logging.getLogger("spark_mail.providers")
MAX_TO = 50
SES_HOST = re.compile(r"^email(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com$")
TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
DRY_RUN_CREDENTIALS = {"aws_access_key_id": "dry-run", "aws_secret_access_key": "dry-run"}
# SES's error types for "too fast" (its API's ThrottlingException is a 400), and the words
# of its daily-quota refusal (same types, not to be waited out)
THROTTLED = {"ThrottlingException", "Throttling", "TooManyRequestsException"}
DAILY_QUOTA = "daily message quota exceeded"
CREDENTIALS_HINT = (
    "check the AWS credentials boto3 finds (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
    "AWS_PROFILE, the instance role) and that they may use ses:SendEmail, ses:SendRawEmail "
    "and ses:GetAccount"
)
# botocore operation -> what the request does, for error lines
WHAT = {"SendEmail": "send", "GetAccount": "read the account's sending limits"}


class SesProvider(DeliveryOnlyProvider, HttpProvider):
    name = "ses"
    capabilities = frozenset({Capability.TEST, Capability.BATCH})
    batch_size = 50  # readers per ledger transaction; each is its own SendEmail
    needs_api_key = False
    default_base_url = "https://email.us-east-1.amazonaws.com"

    def endpoint(self) -> str:
        return f"https://email.{self.region}.amazonaws.com"

    def __init__(self, settings: Settings, **options: Any) -> None:
        self.session = _session()
        self.region = _region(settings.api_url, self.session.region_name)
        super().__init__(settings, **options)  # clock, recorder, retry
        credentials: dict[str, str] = {}
        if self.dry_run is not None:
            credentials = DRY_RUN_CREDENTIALS  # nothing is sent: nothing to sign for real
        elif self.session.get_credentials() is None:
            raise ConfigError(
                "ses: no AWS credentials found",
                hint="boto3 reads them from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
                "~/.aws/credentials (AWS_PROFILE) or the instance role; spark-mail's "
                "settings never hold them",
            )
        from botocore.config import Config

        self.ses = self.session.client(
            "sesv2",
            region_name=self.region,
            endpoint_url=self.base_url,
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
            **credentials,
        )
        self.ses.meta.events.register("before-send.sesv2", self._exchange)
        self.prepared = False

    def auth_headers(self) -> dict[str, str]:
        return {}  # boto3 signs each request (SigV4)

    def mask(self, text: str) -> str:
        """boto3's secrets masked: the session token of temporary credentials travels in
        every request (SES's SignatureDoesNotMatch message quotes it back), and the secret
        key should never show either."""
        return text if self.dry_run is not None else aws_masked(self.session, text)

    def parse_error(self, body: Any) -> tuple[str, str]:
        if isinstance(body, dict):
            return str(body.get("__type") or body.get("code") or ""), str(
                body.get("message") or body.get("Message") or ""
            )
        return "", ""

    def describe_error(self, response: httpx.Response, body: Any) -> tuple[str, str]:
        """SES names the error in `x-amzn-ErrorType` ("MessageRejected:http://...")."""
        code, message = super().describe_error(response, body)
        kind = response.headers.get("x-amzn-errortype", "").split(":", 1)[0]
        return kind or code.rpartition("#")[2], message

    def error(self, response: httpx.Response, what: str) -> EspError:
        """SES's answers about the account's sending limits in spark-mail's words: the
        daily quota used up is no refusal of the reader and no wait of seconds helps."""
        failure = super().error(response, what)
        if response.status_code in (401, 403):
            # SES's words say which permission or key: no secret of ours is in them (the
            # AWS secret key never travels), and there is no SPARK_MAIL_API_KEY to check.
            try:
                body = response.json()
            except ValueError:
                body = None
            message = self.describe_error(response, body)[1]
            shown = f" ({self.esp_text(message)})" if message else ""
            failure.message = f"ses: {response.status_code} {failure.code}{shown} [{what}]"
            failure.hint = CREDENTIALS_HINT
        elif DAILY_QUOTA in failure.message.lower():
            failure.message = (
                f"ses: the account's daily sending quota is used up (SES counts the last 24 "
                f"hours: {response.status_code} {failure.code}) [{what}]"
            )
            failure.code = "daily-quota"
            failure.hint = (
                "run the same command again once the quota frees up (or ask AWS for a higher "
                "one): it sends the readers not sent yet, nobody twice"
            )
        return failure

    def rate_limited(self, response: httpx.Response, failure: EspError) -> bool:
        """SES's "slow down": a 429, or a 400 ThrottlingException ("Maximum sending rate
        exceeded.": SES dropped the message); never the daily quota."""
        if failure.code == "daily-quota":
            return False
        return response.status_code == 429 or failure.code in THROTTLED

    @property
    def audience(self) -> str:
        return f"your subscriber list, through Amazon SES ({self.region})"

    def dry_run_answer(self, request: httpx.Request, body: Any) -> tuple[int, Any]:
        if request.method == "GET":
            quota = {"Max24HourSend": 50000.0, "MaxSendRate": 14.0, "SentLast24Hours": 0.0}
            return 200, {"SendQuota": quota, "SendingEnabled": True}
        return 200, {"MessageId": f"dry-run-{self.dry_run.count if self.dry_run else 0}"}

    # -- the HTTP exchange of every boto3 call -------------------------------------------
    def _exchange(self, request: Any, event_name: str = "", **_: Any) -> Any:
        """botocore's signed request, sent under THE retry rule; its answer back to
        botocore (which reads it). Errors are raised here, as every provider words them."""
        from botocore.awsrequest import AWSResponse

        operation = event_name.rpartition(".")[2]
        headers = {k: v if isinstance(v, str) else v.decode() for k, v in request.headers.items()}
        content_type = headers.pop("Content-Type", "application/json")
        body = request.body
        if isinstance(body, str):
            body = body.encode()
        url = str(request.url)
        path = url[len(self.base_url) :].lstrip("/") if url.startswith(self.base_url) else url
        response = self.request(
            request.method,
            path,
            WHAT.get(operation, operation),
            json_bytes=body or None,
            content_type=content_type,
            extra_headers=headers,
        )
        self.json(response, WHAT.get(operation, operation))  # a 2xx SES would send
        return AWSResponse(url, response.status_code, response.headers, _Raw(response.content))

    # -- sending -------------------------------------------------------------------------
    def _send_raw(self, email: RenderedEmail, raw: bytes, to: list[str], batch: str) -> str:
        tags = [{"Name": "issue", "Value": TAG_UNSAFE.sub("_", email.slug)[:256]}]
        if batch:
            tags.append({"Name": "batch", "Value": batch_tag(batch)})
        params: dict[str, Any] = {
            "FromEmailAddress": sender(email.from_address)[1],
            "Destination": {"ToAddresses": to},
            "Content": {"Raw": {"Data": raw}},
            "EmailTags": tags,
        }
        if self.settings.ses_configuration_set:
            params["ConfigurationSetName"] = self.settings.ses_configuration_set
        answer = self.ses.send_email(**params)
        message_id = str(answer.get("MessageId") or "")
        if not message_id:
            raise EspError("ses: the answer to send has no MessageId", maybe_sent=True)
        return message_id

    def send_test(self, email: RenderedEmail, recipients: Sequence[str]) -> SendResult:
        self.limit_test_recipients(recipients, MAX_TO)
        to = [bare_address(r) for r in recipients]
        before = self.requests_made
        message_id = self._send_raw(email, mime_for(email, to).as_bytes(), to, "")
        return SendResult(
            esp_ids={"message_id": message_id},
            requests=self.requests_made - before,
            recipients=len(recipients),
        )

    def prepare_batches(self, template: PersonalizedTemplate) -> None:
        """The account's sending rate (GetAccount) paces every batch, unless
        SPARK_MAIL_SEND_RATE says otherwise; a paused account is refused here."""
        super().prepare_batches(template)
        if self.prepared:
            return
        account = self.ses.get_account()
        if account.get("SendingEnabled") is False:
            raise EspError(
                "ses: sending is paused for this AWS account (GetAccount: SendingEnabled "
                "false), nothing was sent",
                hint="see the SES console's reputation dashboard",
            )
        if account.get("ProductionAccessEnabled") is False:
            log.warning(
                "ses: the account is in the SES sandbox: only verified addresses receive mail"
            )
        rate = float((account.get("SendQuota") or {}).get("MaxSendRate") or 0)
        if not self.settings.send_rate and rate > 0:
            self.limiter = RateLimiter(rate, self.clock)
        self.prepared = True

    def send_batch(
        self, template: PersonalizedTemplate, readers: Sequence[Reader], key: str
    ) -> BatchResult:
        """Each reader's copy as its own SendEmail (see deliver_each for a failure)."""
        before, sent_bytes = self.thread_tally()

        def deliver_one(reader: Reader) -> str:
            copy = template.copy(reader).email(template.email)
            raw = mime_bytes(copy, reader.email, new_message_id(copy))
            return self._send_raw(copy, raw, [deliverable_address(reader.email)], key)

        result = deliver_each(readers, deliver_one)
        result.requests, result.bytes_sent = (
            self.thread_tally()[0] - before,
            self.thread_tally()[1] - sent_bytes,
        )
        return result


class _Raw:
    """What botocore reads an answer's body from."""

    def __init__(self, content: bytes) -> None:
        self.content = content

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.content


def aws_masked(session: Any, text: str) -> str:
    """`text` with the secrets of a boto3 session's credentials masked (the secret key and
    the session token of temporary credentials, which every request carries): for SES's
    errors, whether a send or `audience sync` met them. Credentials that cannot be read
    now were not sent either: nothing to mask then."""
    from botocore.exceptions import BotoCoreError

    try:
        found = session.get_credentials()
        frozen = found.get_frozen_credentials() if found is not None else None  # refreshed
    except BotoCoreError:
        frozen = None
    return redact(text, [frozen.secret_key, frozen.token or ""] if frozen else [])


def _boto3() -> Any:
    try:
        import boto3
    except ImportError:
        raise ConfigError(
            "ses: needs boto3, which is not installed",
            hint="pip install 'spark-mail[ses]' (or: pipx inject spark-mail boto3)",
        ) from None
    return boto3


def _session() -> Any:
    """A new boto3 session (credentials and region read from boto3's chain, as always) on
    the process's one botocore data loader: botocore's endpoint and service files are
    parsed once a process (about 0.3 s of CPU), not again for each provider made, such as
    each due issue of a `dispatch`."""
    from botocore.session import Session as CoreSession

    boto3 = _boto3()
    core = CoreSession()
    loader = _data_loader(core.get_config_variable("data_path"))
    core.register_component("data_loader", loader)
    session = boto3.session.Session(botocore_session=core)
    loader.search_paths[:] = dict.fromkeys(loader.search_paths)  # boto3 adds its own each time
    return session


@functools.cache
def _data_loader(data_path: str | None) -> Any:
    from botocore.loaders import create_loader

    return create_loader(data_path)


def _region(api_url: str, chain_region: str | None) -> str:
    """The region to sign for: an SES endpoint's own (email.<region>.amazonaws.com), else
    boto3's (AWS_REGION, ~/.aws/config); a non-AWS endpoint (a stand-in) needs none."""
    match = SES_HOST.match(urlsplit(api_url.strip()).hostname or "")
    if match:
        return match.group(1)
    if chain_region:
        return chain_region
    if api_url:
        return "us-east-1"
    raise ConfigError(
        "ses: no AWS region",
        hint="set AWS_REGION (or region in ~/.aws/config), or SPARK_MAIL_API_URL="
        "https://email.<region>.amazonaws.com",
    )
