"""Attacks on the ESPs of issue 15 (Mailgun, SendGrid, Amazon SES) and on the reader desk's
ESP webhooks (bounces and complaints for every ESP): a hostile sender of webhooks and a
misbehaving ESP against the promises "every reader gets each issue exactly once",
"a bad request is one clear answer" and "what comes back lands on the right reader and
the right issue".

Each test is one attack. Its docstring says the attack, what happened, and the right
behaviour. Real servers on 127.0.0.1 throughout: the fake ESP (tests/esp_server.py), moto's
SES stand-in behind it (tests/ses_support.py), the desk app with webhook signatures made
here with keys made here (tests/webhook_support.py).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import email
import email.policy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_attack_lifecycle import (
    copies,
    own_list,
    reader_states,
    readers,
    row,
    twice,
)
from test_send_guard import LAST, NEXT, guard_settings, record_last_send
from test_send_guard import readers as guard_readers
from test_webhooks import SENDGRID, Hooks, make_hooks, post_sns

import webhook_support as signed
from conftest import SAMPLE_SLUG
from esp_server import FakeEsp, moto_messages, settings_for
from provider_support import batches_of, sample_email, sample_readers, sample_template
from ses_support import verify_identity
from spark_mail.clock import FakeClock
from spark_mail.desk.webhooks import SnsPolicy
from spark_mail.errors import SparkMailError
from spark_mail.ledger import ReaderState, open_ledger
from spark_mail.providers import get_provider
from spark_mail.providers.base import EspError
from spark_mail.scheduling.esp import schedule_issue
from spark_mail.sending import SendRequest, send_issue
from spark_mail.sending.reputation import check_reputation

IDN_SENDER = "Tiny Büro <hello@bücher.de>"
IDN_SENDER_ASCII = "hello@xn--bcher-kva.de"


# -- helpers ---------------------------------------------------------------------------------
@pytest.fixture
def hooks(newsletter: Path) -> Hooks:
    return make_hooks(newsletter)


@pytest.fixture(scope="module")
def sns() -> Iterator[signed.SnsStandIn]:
    with signed.SnsStandIn().running() as stand_in:
        yield stand_in


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


def outcome(run: Any) -> str:
    """A run's outcome, or what it raised and said."""
    try:
        return str(run().outcome)
    except SparkMailError as exc:
        return f"{type(exc).__name__}: {exc}"


def send(settings: Any, clock: FakeClock) -> str:
    return outcome(lambda: send_issue(SAMPLE_SLUG, settings, SendRequest(mode="send"), clock=clock))


def sent_from(raw: str) -> tuple[str, str, str]:
    """(From display name, From address, Message-ID) of a raw message moto received."""
    message = email.message_from_string(raw, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    (sender,) = message["From"].addresses
    return sender.display_name, sender.addr_spec, str(message["Message-ID"])


# -- what comes back: the issue of an event ------------------------------------------------------
@pytest.mark.parametrize("provider", ["mailgun", "sendgrid"])
def test_a_webhook_event_keeps_the_issue_the_provider_tagged_the_message_with(
    esp: FakeEsp, newsletter: Path, hooks: Hooks, provider: str
) -> None:
    """spark-mail's Mailgun provider tags every message with the user variable
    `spark-mail-issue`, its SendGrid provider with the custom argument `spark_mail_issue`,
    and the ESPs echo exactly those in their events. The receivers read `issue` instead, so
    every Mailgun and SendGrid bounce and complaint was recorded without its issue:
    `audience suppressions` could not say which issue it was, and the guard counted last
    week's late complaints against this week's send. Right: the event names the issue the
    provider put on the message."""
    template = sample_template(esp, newsletter, provider)
    with get_provider(settings_for(esp, newsletter, provider)) as sender:
        sender.send_batch(template, sample_readers(1), "batch-1")
    (message,) = esp.delivered
    if provider == "mailgun":
        event = signed.mailgun_event("complained", "r0@example.com", "mg-issue-1")
        event["user-variables"] = message["variables"]  # what Mailgun echoes
        answer = hooks.post("mailgun", signed.mailgun_body(event), {})
    else:
        event = signed.sendgrid_event("spamreport", "r0@example.com", "sg-issue-1")
        del event["issue"]
        event.update(message["custom_args"])  # SendGrid puts custom args at the top level
        body = signed.dumps([event])
        answer = hooks.post("sendgrid", body, SENDGRID.headers(body))
    assert answer.status_code == 200, answer.text
    (suppression,) = hooks.suppressions()
    assert (suppression.how, suppression.issue) == ("complaint", SAMPLE_SLUG)


def test_an_editors_bounced_test_copy_does_not_count_against_the_list(newsletter: Path) -> None:
    """The editor typed `editr@example.com` as a test recipient; the test copy hard-bounces
    and Postmark reports it with the issue's metadata (test copies carry it too). The issue
    then went to 40 readers. The guard counted the editor's bounce as one of the issue's
    hard bounces (1 of 40 = 2.5%, over 2%) and refused the next issue, though no reader
    bounced. Right: only readers the ledger says the issue went to count."""
    settings = guard_settings(newsletter)
    hooks = make_hooks(newsletter, SPARK_MAIL_AUDIENCE="subscribers.csv")
    record_last_send(settings, LAST, guard_readers(40))
    bounce = signed.postmark_bounce("editr@example.com", 901, Metadata={"issue": LAST})
    assert (
        hooks.post("postmark", signed.dumps(bounce), signed.postmark_auth()).json()["suppressed"]
        == 1
    )
    check_reputation(settings, NEXT)  # no ReputationAtRisk


# -- webhooks: bodies that are not what an ESP sends -----------------------------------------------
@pytest.mark.parametrize("provider", ["mailgun", "ses", "sendgrid", "postmark", "resend"])
def test_deeply_nested_json_is_a_400_not_a_crash(hooks: Hooks, provider: str) -> None:
    """A 200 KB body of nested brackets (`[[[[...`): Python's JSON reader raises
    RecursionError, which the receivers did not expect, so Mailgun's and SES's routes (which
    read the body before any signature) crashed with a 500 and a traceback in the log for
    anyone on the internet. Right: 400, one line, nothing recorded, for every ESP (the
    others read it only after the signature: signed here)."""
    body = b"[" * 100_000 + b"]" * 100_000
    headers = {"content-type": "application/json"}
    if provider == "sendgrid":
        headers = SENDGRID.headers(body)
    elif provider == "postmark":
        headers = signed.postmark_auth()
    elif provider == "resend":
        headers = signed.resend_headers(body)
    answer = hooks.post(provider, body, headers)
    assert answer.status_code == 400, answer.text[:200]
    assert list(answer.json()) == ["error"]
    assert hooks.nothing_recorded()


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.s3.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.s3-accelerate.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.s3-us-west-2.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.s3-external-1.amazonaws.com/SimpleNotificationService-x.pem",
    ],
)
def test_an_s3_bucket_named_sns_is_no_place_for_sns_certificates(url: str) -> None:
    """SNS signing certificates were fetched from any `sns.<label>.amazonaws.com` host, and
    an S3 bucket named `sns` answers at `sns.s3.amazonaws.com` (and the legacy regional and
    accelerate spellings) over https: whoever holds that bucket could serve a certificate
    of their own and sign SES "bounces" and "complaints" that suppress any reader, and
    SubscribeURLs pointing there would be fetched. Right: the label after `sns.` must be an
    AWS region (`us-east-1`, `cn-north-1`, `us-gov-west-1`)."""
    assert not SnsPolicy().allows(url)
    for region in ("us-east-1", "eu-central-2", "ap-southeast-5", "cn-north-1", "us-gov-west-1"):
        domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
        assert SnsPolicy().allows(f"https://sns.{region}.{domain}/SimpleNotificationService-a.pem")


@pytest.mark.slow
def test_an_event_in_another_spelling_suppresses_the_reader(
    hooks: Hooks, sns: signed.SnsStandIn
) -> None:
    """An SES bounce for `Bob@XN--BCHER-KVA.DE` (SES reports the IDNA form, in capitals)
    suppresses the reader written `bob@bücher.de`. (Held: addresses compare canonically.)"""
    from spark_mail.audience.addresses import canonical_address

    answer = post_sns(hooks, sns.message("Notification", signed.ses_bounce("Bob@XN--BCHER-KVA.DE")))
    assert answer.status_code == 200, answer.text
    (suppression,) = hooks.suppressions()
    assert suppression.address == canonical_address("bob@bücher.de")


def test_a_late_sendgrid_delivery_is_taken_and_a_replay_changes_nothing(hooks: Hooks) -> None:
    """A signed SendGrid delivery whose timestamp is a day old (SendGrid retries a
    delivery the desk did not take for up to 24 hours and documents no freshness window)
    is recorded; the same delivery posted again records nothing, because every event is
    kept once by its `sg_event_id` (the desk never forgets one). That is why the SendGrid
    route has no 5-minute window like Mailgun's and Resend's: a window would lose the
    retries and protect nothing the event ids do not already protect. (Held.)"""
    body = signed.dumps(
        [signed.sendgrid_event("bounce", "late@example.com", "sg-late-1", type="bounce")]
    )
    headers = SENDGRID.headers(body, at=dt.datetime.now(dt.UTC).timestamp() - 86_400)
    first = hooks.post("sendgrid", body, headers)
    assert first.status_code == 200 and first.json()["recorded"] == 1, first.text
    replay = hooks.post("sendgrid", body, headers)
    assert replay.status_code == 200 and replay.json()["replayed"] == 1
    assert hooks.rows("esp_events") == 1


# -- providers: answers that are not a refusal of the reader ------------------------------------
@pytest.mark.slow
def test_a_lost_answer_to_creating_sendgrids_batch_id_is_not_a_maybe_sent_issue(
    esp: FakeEsp, newsletter: Path, clock: FakeClock
) -> None:
    """`schedule` of an own list on SendGrid first creates a batch id (POST /v3/mail/batch),
    which sends no mail. A 502 on that call made the issue `uncertain`: "check in the ESP
    whether it went out; if it did not, run ... --resend-uncertain", though nothing can
    have gone out. Right: it failed (nothing was sent), and the same command again
    schedules it."""
    settings = own_list(esp, newsletter, "sendgrid", 5)
    at = clock.now() + dt.timedelta(hours=2)
    esp.act_then(status=502, path="/v3/mail/batch")
    first = outcome(lambda: schedule_issue(SAMPLE_SLUG, settings, at=at, clock=clock))
    assert first.startswith("ProviderError") and "uncertain" not in first, first
    assert "nothing was sent" in first
    assert esp.delivered == []
    second = outcome(lambda: schedule_issue(SAMPLE_SLUG, settings, at=at, clock=clock))
    assert second == "scheduled" and len(copies(esp)) == 5


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["act-then-502", "refused-400"])
def test_a_schedule_that_stopped_says_to_schedule_again_not_to_send(
    esp: FakeEsp, newsletter: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """`schedule --at 14:00` of 250 readers through Mailgun (batches of 100 here; Mailgun takes
    1,000); the first batch is answered 502 after Mailgun queued it (or refused with a 400).
    The run said "run `spark-mail send ISSUE` again": doing that sent the other 150 readers
    at once, while the first 100 get the issue at 14:00. Right: the hint names the command
    that was interrupted, `spark-mail schedule ISSUE --at <the same time>`."""
    batches_of(monkeypatch, "mailgun", 100)
    settings = own_list(esp, newsletter, "mailgun", 250)
    at = clock.now() + dt.timedelta(hours=2)
    if fault == "act-then-502":
        esp.act_then(status=502, path="/messages")
    else:
        esp.fail(400, path="/messages")
    with pytest.raises(SparkMailError) as caught:
        schedule_issue(SAMPLE_SLUG, settings, at=at, clock=clock)
    hint = caught.value.hint or ""
    assert f"spark-mail schedule {SAMPLE_SLUG} --at {at.isoformat()}" in hint, hint
    assert "spark-mail send" not in hint


@pytest.mark.slow
def test_a_reader_sendgrid_refuses_is_named_and_the_rest_of_the_batch_goes(
    esp: FakeEsp, newsletter: Path, clock: FakeClock
) -> None:
    """SendGrid refuses a whole call when one `to` address is not to its liking (400,
    `field: personalizations.2.to.0.email`, "Does not contain a valid address."). The run
    stopped with `sendgrid: 400 personalizations.2.to.0.email ...` (an index, not the
    reader), and every later run stopped at the same batch: one reader kept everyone
    after them from getting the issue. Right: that reader is `refused` with SendGrid's
    reason (named in the summary), and the rest of the batch goes, each once."""
    settings = own_list(esp, newsletter, "sendgrid", 5)
    bad = readers(5)[2]
    esp.sendgrid.invalid.add(bad)
    first = send(settings, clock)
    assert first == "sent", first
    got = copies(esp)
    assert got[bad] == 0 and all(got[a] == 1 for a in readers(5) if a != bad)
    with open_ledger(settings) as ledger:
        refused = dict(ledger.readers_in(SAMPLE_SLUG, ReaderState.REFUSED))
    assert list(refused) == [bad] and "Does not contain a valid address" in refused[bad]


def test_the_mailgun_credential_an_error_answer_echoes_is_masked(
    esp: FakeEsp, newsletter: Path
) -> None:
    """Mailgun authenticates with HTTP basic auth: the request carries
    `Basic base64("api:KEY")`. An error answer (a proxy, a careless ESP) that repeats the
    Authorization header showed that base64 token unmasked, and base64 is no secret: the
    key can be read back from it; in a send and in `audience sync` alike. Right: the
    token is masked like the key itself."""
    token = base64.b64encode(f"api:{esp.api_key}".encode()).decode()
    settings = settings_for(esp, newsletter, "mailgun")
    for status in (400, 502, "sync"):
        esp.echo_key(400 if status == "sync" else int(status), at=120)
        caught = esp_error(settings, newsletter, sync=status == "sync")
        shown = f"{caught} {caught.hint}"
        assert token not in shown and esp.api_key not in shown, shown
        assert "********" in shown


@pytest.mark.parametrize("provider", ["sendgrid", "mailgun"])
def test_a_sender_domain_in_unicode_goes_out_in_idna(
    esp: FakeEsp, newsletter: Path, provider: str
) -> None:
    """`from = "Tiny Büro <hello@bücher.de>"`: SendGrid's `from.email` and Mailgun's `from`
    carried the domain in Unicode, while every recipient goes out in IDNA (and neither
    API describes internationalised addresses). Right: the sender's domain in IDNA, its
    display name kept as written."""
    template = sample_template(esp, newsletter, provider, SPARK_MAIL_FROM=IDN_SENDER)
    with get_provider(settings_for(esp, newsletter, provider)) as sender:
        sender.send_test(template.email, ["a@example.com"])
        sender.send_batch(template, sample_readers(1), "batch-1")
    if provider == "sendgrid":
        senders = {json.dumps(c.body["from"], ensure_ascii=False) for c in esp.calls("POST")}
        assert senders == {json.dumps({"email": IDN_SENDER_ASCII, "name": "Tiny Büro"},
                                      ensure_ascii=False)}  # fmt: skip
    else:
        from esp_server import parse_form

        senders = {dict(parse_form(c))["from"] for c in esp.calls("POST")}
        assert senders == {f"Tiny Büro <{IDN_SENDER_ASCII}>"}


# -- Amazon SES (moto) ---------------------------------------------------------------------------
@pytest.mark.slow
def test_ses_sends_with_a_sender_domain_in_unicode(
    esp: FakeEsp, newsletter: Path, ses_moto: str, clock: FakeClock
) -> None:
    """`from = "Tiny Büro <hello@bücher.de>"` (the domain verified in SES in its IDNA form):
    a test send crashed with a UnicodeEncodeError traceback (the Message-ID took the
    Unicode domain into an ASCII header) and the `From:` header would have carried the
    domain as an RFC 2047 encoded-word, which no mailbox reads as an address. Right: the
    raw message's From is `Tiny Büro` (encoded as a display name may be) at
    hello@xn--bcher-kva.de, its Message-ID ASCII, SES's FromEmailAddress the same address;
    the same for every reader's copy."""
    verify_identity(ses_moto, "xn--bcher-kva.de")
    email_ = dataclasses.replace(sample_email(newsletter), from_address=IDN_SENDER)
    with get_provider(settings_for(esp, newsletter, "ses", SPARK_MAIL_FROM=IDN_SENDER)) as ses:
        ses.send_test(email_, ["editor@example.com"])
    settings = own_list(esp, newsletter, "ses", 2, SPARK_MAIL_FROM=IDN_SENDER)
    assert send(settings, clock) == "sent"
    messages = moto_messages(ses_moto)
    assert len(messages) == 3
    for message in messages:
        name, address, message_id = sent_from(message["raw_data"])
        assert (name, address) == ("Tiny Büro", IDN_SENDER_ASCII)
        assert message_id.isascii() and message_id.endswith("@xn--bcher-kva.de>")
    calls = esp.calls("POST", "/v2/email/outbound-emails")
    assert {c.body["FromEmailAddress"] for c in calls} == {IDN_SENDER_ASCII}


@pytest.mark.slow
def test_ses_throttling_is_waited_out_not_taken_as_a_refusal(
    esp: FakeEsp, newsletter: Path, ses_moto: str, clock: FakeClock
) -> None:
    """SES refuses a burst over the account's MaxSendRate with a 400 ThrottlingException,
    "Maximum sending rate exceeded." (its documented answer; SES dropped the message). That
    400 was read as a clear refusal: the batch stopped, the run stopped ("failed"), the
    rest waited for someone to run it again. Right: like a 429, waited out and retried,
    every reader once."""
    settings = dataclasses.replace(own_list(esp, newsletter, "ses", 10), send_attempts=3)
    esp.ses.throttle = 2
    assert send(settings, clock) == "sent"
    got = copies(esp)
    assert len(got) == 10 and set(got.values()) == {1}
    assert len(esp.calls("POST", "/v2/email/outbound-emails")) == 12


@pytest.mark.slow
@pytest.mark.parametrize(
    "refusal", [(400, "ThrottlingException"), (429, "TooManyRequestsException")]
)
def test_ses_daily_quota_stops_the_run_at_once_and_a_later_run_sends_the_rest(
    esp: FakeEsp, newsletter: Path, ses_moto: str, clock: FakeClock, refusal: tuple[int, str]
) -> None:
    """The account may send 4 messages in 24 hours; the list has 10 readers. SES answers the
    fifth "Daily message quota exceeded." (a ThrottlingException, or a 429
    TooManyRequestsException). As a 429 it was retried with backoff like a momentary rate
    limit, every attempt refused again, and the message never said that only the 24-hour
    window frees it. Right: not retried (no wait of seconds helps), the run stops with one
    line naming SES's daily quota, the readers not sent stay sendable (none refused or
    uncertain), and the run after the quota frees up sends exactly them."""
    settings = dataclasses.replace(own_list(esp, newsletter, "ses", 10), send_attempts=3)
    esp.ses.quota_refusal = refusal
    quota = esp.ses.account["SendQuota"]
    quota["Max24HourSend"], quota["SentLast24Hours"] = 4.0, 0.0
    first = send(settings, clock)
    assert first.startswith("BatchSendFailed") and "daily sending quota" in first, first
    assert "24 hours" in first
    calls = esp.calls("POST", "/v2/email/outbound-emails")
    assert len(calls) == 5, len(calls)  # 4 sent, 1 refused, not repeated
    states = reader_states(settings, readers(10))
    assert sorted(states.values()).count(ReaderState.SENT) == 4
    assert ReaderState.UNCERTAIN not in states.values()
    assert ReaderState.REFUSED not in states.values()
    quota["Max24HourSend"], quota["SentLast24Hours"] = 50.0, 0.0  # a day later, raised
    assert send(settings, clock) == "sent"
    assert not twice(esp) and len(copies(esp)) == 10
    assert row(settings).state == "sent"


@pytest.mark.slow
def test_an_ses_permission_refusal_says_which_and_points_at_aws_credentials(
    esp: FakeEsp, newsletter: Path, ses_moto: str
) -> None:
    """The AWS identity may send but not read the account (no `ses:GetAccount`): SES answers
    403 AccessDeniedException naming the action. The error said only `ses: 403
    AccessDeniedException [read the account's sending limits] - check SPARK_MAIL_API_KEY`:
    SES takes no API key (boto3's credential chain does), and SES's own message (which
    permission) was dropped. Right: SES's message (it carries no secret: the AWS secret
    key never travels), and a hint at the AWS credentials and their SES permissions; the
    same for credentials SES does not know."""
    template = sample_template(esp, newsletter, "ses")
    esp.fail(403, path="/v2/email/account")
    with (
        get_provider(settings_for(esp, newsletter, "ses")) as ses,
        pytest.raises(EspError) as caught,
    ):
        ses.prepare_batches(template)
    shown = str(caught.value)
    assert "not authorized to perform: ses:GetAccount" in shown, shown
    assert "SPARK_MAIL_API_KEY" not in shown and "AWS_ACCESS_KEY_ID" in shown
    esp.ses.access_key = "AKIDSOMEONEELSE"
    with (
        get_provider(settings_for(esp, newsletter, "ses")) as ses,
        pytest.raises(EspError) as caught,
    ):
        ses.send_test(sample_email(newsletter), ["a@example.com"])
    shown = str(caught.value)
    assert "security token included in the request is invalid" in shown, shown
    assert "SPARK_MAIL_API_KEY" not in shown and "AWS_ACCESS_KEY_ID" in shown


# -- held: what the attacks above did not break ---------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("provider", ["mailgun", "sendgrid"])
@pytest.mark.parametrize("fault", [{"status": 502}, {"raw": "<html>502</html>"}, {"drop": True}])
def test_a_schedule_whose_answer_is_lost_never_hands_a_reader_over_twice(
    esp: FakeEsp,
    newsletter: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    provider: str,
    fault: dict[str, Any],
) -> None:
    """`schedule` of 150 readers (two calls: batches of 100 here, 1,000 at the ESP); the ESP
    takes the first call, then its answer is lost (a 502, an HTML page, a reset). `schedule`
    again, then dispatch once the time has passed: nobody is handed over twice, and whoever
    has no copy is reported uncertain (Mailgun settles the batch through its events API;
    SendGrid cannot be asked). (Held.)"""
    batches_of(monkeypatch, provider, 100)
    settings = own_list(esp, newsletter, provider, 150)
    at = clock.now() + dt.timedelta(hours=2)
    path = "/v3/mail/send" if provider == "sendgrid" else "/messages"
    if fault.get("drop"):
        esp.drop(path=path, method="POST")
    else:
        esp.act_then(path=path, method="POST", **fault)
    runs = [outcome(lambda: schedule_issue(SAMPLE_SLUG, settings, at=at, clock=clock))]
    runs.append(outcome(lambda: schedule_issue(SAMPLE_SLUG, settings, at=at, clock=clock)))
    clock.advance(3 * 3600)
    from spark_mail.scheduling.cron import dispatch

    dispatch(settings, clock.now(), clock=clock)
    assert not twice(esp), runs
    got = copies(esp)
    states = reader_states(settings, readers(150))
    missing = [a for a in readers(150) if got[a] == 0]
    assert all(states.get(a) == ReaderState.UNCERTAIN for a in missing), (runs, len(missing))


@pytest.mark.slow
def test_concurrent_deliveries_of_one_mailgun_token_record_it_once(hooks: Hooks) -> None:
    """Twenty copies of one signed Mailgun delivery at once (a proxy that repeats, workers
    racing), and three soft bounces of three messages at once: one copy is taken, the
    others are 401 (a token counts once), and the three soft bounces suppress, as if they
    had come one by one. (Held: the group commit serialises them.)"""
    import asyncio

    import httpx

    from desk_support import SITE

    def soft(n: int) -> bytes:
        event = signed.mailgun_event("failed", "s@example.com", f"mg-s{n}", severity="temporary")
        event["message"] = {"headers": {"message-id": f"m{n}@mg.example.com"}}
        return signed.mailgun_body(event)

    same = signed.mailgun_body(signed.mailgun_event("complained", "c@example.com", "mg-c"))

    async def post_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=hooks.client.app, client=("203.0.113.9", 1))
        async with httpx.AsyncClient(transport=transport, base_url=SITE) as client:
            bodies = [same] * 20 + [soft(n) for n in range(3)]
            return await asyncio.gather(
                *(client.post("/webhooks/mailgun", content=b) for b in bodies)
            )

    answers = asyncio.run(post_all())
    assert sorted(a.status_code for a in answers[:20]) == [200] + [401] * 19
    assert all(a.status_code == 200 for a in answers[20:])
    assert {(s.address, s.how) for s in hooks.suppressions()} == {
        ("c@example.com", "complaint"),
        ("s@example.com", "soft-bounces"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("status", [400, 403, "sync"])
def test_an_aws_session_token_an_ses_error_repeats_is_masked(
    esp: FakeEsp,
    newsletter: Path,
    ses_moto: str,
    monkeypatch: pytest.MonkeyPatch,
    status: int | str,
) -> None:
    """With temporary AWS credentials (an instance role, SSO, `aws sts`), every SES request
    carries the session token in `X-Amz-Security-Token`, and SES's SignatureDoesNotMatch
    message repeats the canonical request, token included. spark-mail masks only
    SPARK_MAIL_API_KEY, which SES does not use: the token was shown as SES wrote it, by a
    send and by `audience sync` (which showed SES's message whole, on as many lines as it
    had). Right: the session token (and the secret key, should it ever appear) is masked,
    and the error is one line."""
    token = "IQoJb3JpZ2luX2VjEBoaCXVzLWVhc3QtMSJHMEUCIQD-spark-mail-session-token"
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    esp.echo_key(403 if status == "sync" else int(status), at=120)
    settings = settings_for(esp, newsletter, "ses")
    shown = str(esp_error(settings, newsletter, sync=status == "sync"))
    assert token[:20] not in shown and "********" in shown, shown
    assert "\n" not in shown


def esp_error(settings: Any, newsletter: Path, *, sync: bool) -> EspError:
    """The EspError of `audience sync` (sync) or of a test send, which must fail."""
    from spark_mail.audience.sync import sync_suppressions

    with pytest.raises(EspError) as caught:
        if sync:
            sync_suppressions(settings)
        else:
            with get_provider(settings) as provider:
                provider.send_test(sample_email(newsletter), ["a@example.com"])
    return caught.value
