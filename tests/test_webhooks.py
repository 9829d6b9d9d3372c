"""ESP event webhooks on the reader desk, in process (httpx's ASGI transport, a real SQLite
store): for every ESP a real signature made here with a key made here, a replayed event and
a forged one; what a bounce, a complaint and soft bounces in a row suppress."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import SAMPLE_SLUG, run_cli
from desk_support import InProcess, desk_settings, local_client, serve_process
from spark_mail.audience.suppressions import Suppression, SuppressionStore, store_path
from spark_mail.clock import FakeClock
from spark_mail.config import Settings, load_settings
from spark_mail.desk.app import create_app
from spark_mail.desk.webhooks import SnsPolicy
from spark_mail.errors import ConfigError
from webhook_support import (
    MAILGUN_KEY,
    POSTMARK_AUTH,
    RESEND_SECRET,
    TOPIC,
    SendgridKeys,
    SnsStandIn,
    dumps,
    mailgun_body,
    mailgun_event,
    postmark_auth,
    postmark_bounce,
    resend_event,
    resend_headers,
    rsa_key,
    sendgrid_event,
    ses_bounce,
    ses_complaint,
)

READER = "Gone.Reader@Example.com"
KEY = "gone.reader@example.com"
SENDGRID = SendgridKeys()
LOCAL_SNS = SnsPolicy(hosts=re.compile(r"127\.0\.0\.1"), schemes=frozenset({"http"}))


@dataclasses.dataclass
class Hooks:
    settings: Settings
    client: InProcess
    store: SuppressionStore

    def post(self, provider: str, body: bytes, headers: dict[str, str]) -> Any:
        return self.client.post(f"/webhooks/{provider}", content=body, headers=headers)

    def suppressions(self) -> list[Suppression]:
        return self.store.suppressions() if self.store.exists() else []

    def rows(self, table: str) -> int:
        return self.store.read(f"SELECT COUNT(*) FROM {table}")[0][0] if self.store.exists() else 0

    def nothing_recorded(self) -> bool:
        return all(
            self.rows(t) == 0
            for t in ("suppressions", "suppression_events", "esp_events", "webhook_tokens")
        )


def make_hooks(root: Path, *, sns_policy: SnsPolicy | None = LOCAL_SNS, **env: str) -> Hooks:
    settings = desk_settings(
        root,
        SPARK_MAIL_POSTMARK_WEBHOOK_AUTH=POSTMARK_AUTH,
        SPARK_MAIL_RESEND_WEBHOOK_SECRET=RESEND_SECRET,
        SPARK_MAIL_MAILGUN_WEBHOOK_SIGNING_KEY=MAILGUN_KEY,
        SPARK_MAIL_SENDGRID_WEBHOOK_PUBLIC_KEY=SENDGRID.public_base64,
        SPARK_MAIL_SES_SNS_TOPIC_ARNS=TOPIC,
        **env,
    )
    store = SuppressionStore(store_path(settings))
    clock = FakeClock(dt.datetime.now(dt.UTC))
    app = create_app(settings, clock=clock, store=store, sns_policy=sns_policy)
    return Hooks(settings, InProcess(app), store)


@pytest.fixture
def hooks(newsletter: Path) -> Hooks:
    return make_hooks(newsletter)


@pytest.fixture(scope="module")
def sns() -> Any:
    with SnsStandIn().running() as stand_in:
        yield stand_in


def only(hooks: Hooks) -> Suppression:
    [suppression] = hooks.suppressions()
    return suppression


# -- Postmark ---------------------------------------------------------------------------------
def test_postmark_hard_bounce_suppresses_once_with_its_reason(hooks: Hooks):
    """A Postmark HardBounce with the right basic auth suppresses; its replay does nothing."""
    body = dumps(postmark_bounce(READER, bounce_id=42))
    answer = hooks.post("postmark", body, postmark_auth())
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "status": "ok", "recorded": 1, "replayed": 0, "delivered": 0, "suppressed": 1
    }  # fmt: skip
    suppression = only(hooks)
    assert (suppression.address, suppression.how, suppression.provider) == (
        KEY,
        "bounce",
        "postmark",
    )
    assert (suppression.event_id, suppression.issue) == ("42", SAMPLE_SLUG)
    assert "550 5.1.1" in suppression.detail
    assert suppression.reason.startswith(
        f"bounce (postmark, event 42, issue {SAMPLE_SLUG}: HardBounce"
    )
    replay = hooks.post("postmark", body, postmark_auth())
    assert replay.status_code == 200 and replay.json()["replayed"] == 1
    assert hooks.rows("esp_events") == 1 and hooks.rows("suppression_events") == 1


@pytest.mark.parametrize(
    "headers",
    [
        postmark_auth("postmark-hooks:wrong-password"),
        postmark_auth("someone:" + POSTMARK_AUTH.split(":")[1]),
        {},
        {"authorization": "Basic !!!not-base64"},
        {"authorization": "Bearer " + POSTMARK_AUTH},
    ],
    ids=["wrong-password", "wrong-user", "none", "garbage", "not-basic"],
)
def test_postmark_without_the_password_gets_401_and_records_nothing(hooks: Hooks, headers: Any):
    """A Postmark webhook without the configured user and password is refused."""
    answer = hooks.post("postmark", dumps(postmark_bounce(READER)), headers)
    assert answer.status_code == 401
    assert POSTMARK_AUTH.split(":")[1] not in answer.text
    assert hooks.nothing_recorded()


def test_postmark_spam_complaint_and_soft_bounce(hooks: Hooks):
    """SpamComplaint suppresses as a complaint; one soft bounce only records the event."""
    complaint = postmark_bounce("a@example.com", 1, "SpamComplaint", RecordType="SpamComplaint")
    assert hooks.post("postmark", dumps(complaint), postmark_auth()).status_code == 200
    soft = postmark_bounce("b@example.com", 2, "SoftBounce")
    assert hooks.post("postmark", dumps(soft), postmark_auth()).json()["suppressed"] == 0
    assert [(s.address, s.how) for s in hooks.suppressions()] == [("a@example.com", "complaint")]
    assert hooks.rows("esp_events") == 2


# -- Resend (Svix) ----------------------------------------------------------------------------
def test_resend_signed_complaint_suppresses_and_its_retry_does_nothing(hooks: Hooks):
    """Svix-signed email.complained suppresses; Svix's retry (same svix-id, new signature)
    records nothing more."""
    body = dumps(resend_event("email.complained", READER))
    answer = hooks.post("resend", body, resend_headers(body, event_id="msg_complaint_1"))
    assert answer.status_code == 200, answer.text
    suppression = only(hooks)
    assert (suppression.how, suppression.provider, suppression.event_id) == (
        "complaint", "resend", "msg_complaint_1"
    )  # fmt: skip
    assert suppression.issue == SAMPLE_SLUG
    retry = hooks.post("resend", body, resend_headers(body, event_id="msg_complaint_1"))
    assert retry.status_code == 200 and retry.json()["replayed"] == 1
    assert hooks.rows("esp_events") == 1


@pytest.mark.parametrize("forgery", ["other-secret", "changed-body", "old", "future", "no-headers"])
def test_resend_forged_or_stale_signature_gets_401(hooks: Hooks, forgery: str):
    """A Svix signature made with another secret, over another body, or 10 minutes off."""
    body = dumps(resend_event("email.bounced", READER, bounce={"type": "Permanent"}))
    headers = resend_headers(body)
    if forgery == "other-secret":
        headers = resend_headers(body, secret="whsec_" + "QUJD" * 8)
    elif forgery == "changed-body":
        body = body.replace(b"Gone.Reader", b"Someone.Else")
    elif forgery in ("old", "future"):
        headers = resend_headers(body, at=time.time() + (600 if forgery == "future" else -600))
    else:
        headers = {"content-type": "application/json"}
    answer = hooks.post("resend", body, headers)
    assert answer.status_code == 401
    assert hooks.nothing_recorded()


def test_resend_bounce_types(hooks: Hooks):
    """Permanent bounces suppress; a Transient one is a soft bounce; delivered is no event."""
    for index, kind in enumerate(["Transient", "Permanent"]):
        address = f"r{index}@example.com"
        body = dumps(resend_event("email.bounced", address, bounce={"type": kind, "message": "x"}))
        assert hooks.post("resend", body, resend_headers(body)).status_code == 200
    delivered = dumps(resend_event("email.delivered", "r2@example.com"))
    assert hooks.post("resend", delivered, resend_headers(delivered)).json()["delivered"] == 1
    assert [(s.address, s.how) for s in hooks.suppressions()] == [("r1@example.com", "bounce")]


# -- SES through SNS ----------------------------------------------------------------------------
def post_sns(hooks: Hooks, message: dict[str, Any]) -> Any:
    return hooks.post(
        "ses", dumps(message), {"x-amz-sns-message-type": str(message.get("Type", ""))}
    )


def test_ses_subscription_is_confirmed_through_its_subscribe_url(hooks: Hooks, sns: SnsStandIn):
    """A signed SubscriptionConfirmation: the desk fetches the SubscribeURL."""
    message = sns.message("SubscriptionConfirmation", "You have chosen to subscribe ...")
    answer = post_sns(hooks, message)
    assert answer.status_code == 200, answer.text
    assert sns.confirmed == [f"/confirm?Token={message['Token']}"]
    assert hooks.nothing_recorded()


@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_bounce_and_complaint_through_sns_suppress(hooks: Hooks, sns: SnsStandIn, version: str):
    """SignatureVersion 1 (SHA1) and 2 (SHA256): a Permanent bounce and a complaint suppress;
    the replayed SNS message records nothing."""
    headers = [{"name": "List-Unsubscribe",
                "value": f"<https://tinybigspark.com/unsubscribe?issue={SAMPLE_SLUG}&email=x&token=y>"}]  # fmt: skip
    bounce = sns.message("Notification", ses_bounce(READER, headers=headers), version=version)
    assert post_sns(hooks, bounce).status_code == 200
    complaint = sns.message("Notification", ses_complaint("c@example.com"), version=version)
    assert post_sns(hooks, complaint).status_code == 200
    found = {s.address: s for s in hooks.suppressions()}
    assert (found[KEY].how, found[KEY].provider, found[KEY].event_id) == (
        "bounce", "ses", bounce["MessageId"]
    )  # fmt: skip
    assert found[KEY].issue == SAMPLE_SLUG  # from the List-Unsubscribe link
    assert found["c@example.com"].how == "complaint"
    replay = post_sns(hooks, bounce)
    assert replay.status_code == 200 and replay.json()["replayed"] == 1
    assert hooks.rows("esp_events") == 2


@pytest.mark.parametrize(
    "forgery", ["other-key", "changed-message", "other-topic", "no-signature", "version-3", "raw"]
)
def test_ses_forged_sns_messages_get_401(hooks: Hooks, sns: SnsStandIn, forgery: str):
    """Signed with another key, altered after signing, from a topic not configured, or not
    an SNS envelope at all: refused, nothing recorded."""
    message = sns.message("Notification", ses_bounce(READER))
    if forgery == "other-key":
        message = sns.message("Notification", ses_bounce(READER), key=rsa_key("other"))
    elif forgery == "changed-message":
        message["Message"] = ses_bounce("someone.else@example.com")
    elif forgery == "other-topic":
        message = sns.message("Notification", ses_bounce(READER), topic=TOPIC + "-other")
    elif forgery == "no-signature":
        del message["Signature"]
    elif forgery == "version-3":
        message["SignatureVersion"] = "3"
    else:
        message = json.loads(message["Message"])  # raw message delivery: no envelope
    answer = post_sns(hooks, message)
    assert answer.status_code == 401, answer.text
    assert hooks.nothing_recorded()


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
        "https://s3.amazonaws.com/cert.pem",
        "https://user@sns.us-east-1.amazonaws.com/cert.pem",
    ],
)
def test_sns_certificates_come_only_from_https_sns_hosts(url: str):
    """The production policy: https, an sns.<region>.amazonaws.com host, nothing else."""
    assert not SnsPolicy().allows(url)
    assert SnsPolicy().allows("https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem")


def test_production_policy_refuses_a_local_certificate(newsletter: Path, sns: SnsStandIn):
    """Without the test policy, a certificate on 127.0.0.1 is never even fetched."""
    hooks = make_hooks(newsletter, sns_policy=None)
    fetched = sns.certificate_fetches
    answer = post_sns(hooks, sns.message("Notification", ses_bounce(READER)))
    assert answer.status_code == 401 and "amazonaws.com" in answer.json()["error"]
    assert sns.certificate_fetches == fetched and hooks.nothing_recorded()


def test_ses_subscribe_url_elsewhere_is_not_fetched(newsletter: Path, sns: SnsStandIn):
    """A correctly signed confirmation whose SubscribeURL is off the allowed hosts: 401."""
    hooks = make_hooks(newsletter)
    message = sns.message("SubscriptionConfirmation", "subscribe")
    message["SubscribeURL"] = "https://evil.example/confirm"
    text = "".join(
        f"{n}\n{message[n]}\n"
        for n in ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
    )
    import base64

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signature = sns.key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA1())
    message["Signature"] = base64.b64encode(signature).decode()
    confirmed = len(sns.confirmed)
    assert post_sns(hooks, message).status_code == 401
    assert len(sns.confirmed) == confirmed


# -- Mailgun ------------------------------------------------------------------------------------
def test_mailgun_signed_failure_suppresses_and_a_reused_token_is_refused(hooks: Hooks):
    """failed/permanent suppresses; the same body again (same token) gets 401; Mailgun's
    retry with a fresh token records nothing new."""
    event = mailgun_event("failed", READER, "mg-event-1", severity="permanent",
                          reason="bounce", **{"delivery-status": {"code": 550, "description": "No such user"}})  # fmt: skip
    body = mailgun_body(event)
    answer = hooks.post("mailgun", body, {"content-type": "application/json"})
    assert answer.status_code == 200, answer.text
    suppression = only(hooks)
    assert (suppression.how, suppression.provider, suppression.event_id, suppression.issue) == (
        "bounce", "mailgun", "mg-event-1", SAMPLE_SLUG
    )  # fmt: skip
    assert "550 No such user" in suppression.detail
    reused = hooks.post("mailgun", body, {"content-type": "application/json"})
    assert reused.status_code == 401 and "used before" in reused.json()["error"]
    retry = hooks.post("mailgun", mailgun_body(event), {"content-type": "application/json"})
    assert retry.status_code == 200 and retry.json()["replayed"] == 1
    assert hooks.rows("esp_events") == 1


@pytest.mark.parametrize("forgery", ["other-key", "other-token", "old", "no-signature"])
def test_mailgun_forged_signature_gets_401(hooks: Hooks, forgery: str):
    """Signed with another key, a token swapped after signing, or 10 minutes old: refused.
    (Mailgun signs timestamp + token, not the body: a captured body cannot come again
    because its token is refused the second time, see above.)"""
    event = mailgun_event("complained", READER, "mg-event-2")
    body = mailgun_body(event, key="another-key" if forgery == "other-key" else MAILGUN_KEY,
                        at=time.time() - 600 if forgery == "old" else None)  # fmt: skip
    if forgery == "other-token":
        signed = json.loads(body)
        signed["signature"]["token"] = "f" * 50
        body = dumps(signed)
    elif forgery == "no-signature":
        body = dumps({"event-data": event})
    answer = hooks.post("mailgun", body, {"content-type": "application/json"})
    assert answer.status_code == 401
    assert hooks.nothing_recorded()


# -- SendGrid ----------------------------------------------------------------------------------
def test_sendgrid_signed_batch_suppresses_bounces_and_spam_reports(hooks: Hooks):
    """An ECDSA-signed batch: bounce and spamreport suppress, a blocked bounce is soft, an
    open is ignored; the replayed batch records nothing."""
    events = [
        sendgrid_event("bounce", READER, "sg-1", type="bounce", status="5.1.1",
                       reason="550 5.1.1 unknown user"),
        sendgrid_event("spamreport", "s@example.com", "sg-2"),
        sendgrid_event("bounce", "blocked@example.com", "sg-3", type="blocked"),
        sendgrid_event("open", "o@example.com", "sg-4"),
        sendgrid_event("delivered", "d@example.com", "sg-5"),
    ]  # fmt: skip
    body = dumps(events)
    answer = hooks.post("sendgrid", body, SENDGRID.headers(body))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "status": "ok", "recorded": 3, "replayed": 0, "delivered": 1, "suppressed": 2
    }  # fmt: skip
    found = {s.address: (s.how, s.event_id, s.issue) for s in hooks.suppressions()}
    assert found == {
        KEY: ("bounce", "sg-1", SAMPLE_SLUG),
        "s@example.com": ("complaint", "sg-2", SAMPLE_SLUG),
    }
    replay = hooks.post("sendgrid", body, SENDGRID.headers(body))
    assert replay.json()["replayed"] == 3 and hooks.rows("esp_events") == 3


@pytest.mark.parametrize("forgery", ["other-key", "changed-body", "other-timestamp", "none"])
def test_sendgrid_forged_signature_gets_401(hooks: Hooks, forgery: str):
    """A signature by another key, over another body or timestamp, or none: refused."""
    body = dumps([sendgrid_event("spamreport", READER, "sg-9")])
    headers = (SendgridKeys() if forgery == "other-key" else SENDGRID).headers(body)
    if forgery == "changed-body":
        body = body.replace(b"Gone.Reader", b"Someone.Else")
    elif forgery == "other-timestamp":
        headers["x-twilio-email-event-webhook-timestamp"] = str(int(time.time()) + 1)
    elif forgery == "none":
        headers = {"content-type": "application/json"}
    assert hooks.post("sendgrid", body, headers).status_code == 401
    assert hooks.nothing_recorded()


def test_a_sendgrid_key_that_is_not_one_stops_the_desk(newsletter: Path):
    """A wrong verification key is found when the desk starts, in one line."""
    settings = desk_settings(newsletter, SPARK_MAIL_SENDGRID_WEBHOOK_PUBLIC_KEY="bm90IGEga2V5")
    with pytest.raises(ConfigError, match="sendgrid_webhook_public_key"):
        create_app(settings)


# -- shared rules --------------------------------------------------------------------------------
def test_three_soft_bounces_in_a_row_suppress(hooks: Hooks):
    """Three messages soft-bounced in a row suppress; repeats of one message count once; a
    delivery in between starts the count again."""

    def soft(address: str, bounce_id: int, message: str, when: str) -> None:
        record = postmark_bounce(
            address, bounce_id, "SoftBounce", MessageID=message, BouncedAt=when
        )
        assert hooks.post("postmark", dumps(record), postmark_auth()).status_code == 200

    def delivered(address: str, message: str, when: str) -> None:
        record = {"RecordType": "Delivery", "MessageID": message, "Recipient": address,
                  "DeliveredAt": when, "Metadata": {}}  # fmt: skip
        assert hooks.post("postmark", dumps(record), postmark_auth()).json()["delivered"] == 1

    for n in range(3):  # one message, retried: counts once
        soft("same@example.com", 10 + n, "m-1", f"2025-01-0{n + 1}T10:00:00Z")
    soft("gap@example.com", 20, "m-2", "2025-01-01T10:00:00Z")
    soft("gap@example.com", 21, "m-3", "2025-01-08T10:00:00Z")
    delivered("gap@example.com", "m-4", "2025-01-15T10:00:00Z")
    soft("gap@example.com", 22, "m-5", "2025-01-22T10:00:00Z")
    assert hooks.suppressions() == []
    for n in range(3):
        soft("three@example.com", 30 + n, f"m-3{n}", f"2025-01-0{n + 1}T10:00:00Z")
    suppression = only(hooks)
    assert (suppression.address, suppression.how) == ("three@example.com", "soft-bounces")
    assert suppression.detail.startswith("3 in a row")


def test_unknown_or_unset_provider_gets_404(newsletter: Path):
    """A provider spark-mail does not know, or whose webhook setting is missing: 404."""
    settings = desk_settings(newsletter)
    store = SuppressionStore(store_path(settings))
    client = InProcess(create_app(settings, store=store))
    for name in ("postmark", "resend", "ses", "mailgun", "sendgrid", "nope"):
        answer = client.post(f"/webhooks/{name}", content=b"{}")
        assert answer.status_code == 404, name
    assert not store.exists() or store.suppressions() == []


def test_webhooks_take_bigger_bodies_than_the_pages(hooks: Hooks):
    """A 200 KB SendGrid batch is read (the desk's pages stop at 16 KB); 3 MB is 413."""
    events = [sendgrid_event("delivered", f"d{i}@example.com", f"sg-d{i}") for i in range(1200)]
    body = dumps(events)
    assert len(body) > 150_000
    answer = hooks.post("sendgrid", body, SENDGRID.headers(body))
    assert answer.status_code == 200 and answer.json()["delivered"] == 1200
    huge = b"[" + b" " * (3 * 1024 * 1024) + b"]"
    assert hooks.post("sendgrid", huge, SENDGRID.headers(huge)).status_code == 413


def test_webhooks_are_not_rate_limited_but_forgeries_are_slowed_down(newsletter: Path):
    """An ESP's burst is not held to desk_rate_limit; ten forgeries from one address are
    followed by 429 for that address."""
    hooks = make_hooks(newsletter, SPARK_MAIL_DESK_RATE_LIMIT="3")
    for n in range(6):
        body = dumps(postmark_bounce(f"b{n}@example.com", 100 + n))
        assert hooks.post("postmark", body, postmark_auth()).status_code == 200
    for _ in range(10):
        forged = hooks.post("postmark", dumps(postmark_bounce(READER)), postmark_auth("x:y"))
        assert forged.status_code == 401
    slowed = hooks.post("postmark", dumps(postmark_bounce(READER, 7)), postmark_auth())
    assert slowed.status_code == 429


def test_unreadable_bodies_get_400_and_record_nothing(hooks: Hooks):
    """Postmark with the right password but a body that is not JSON: 400."""
    for body in (b"not json", b"\xff\xfe", b"[1, 2]"):
        assert hooks.post("postmark", body, postmark_auth()).status_code == 400
    assert hooks.nothing_recorded()


def test_webhook_secrets_may_not_live_in_the_settings_file(newsletter: Path):
    """A webhook secret in spark-mail.toml is refused (that file is committed); in .env it
    never shows in the settings' repr."""
    shown = repr(
        load_settings(newsletter, env={"SPARK_MAIL_MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY})
    )
    assert MAILGUN_KEY not in shown and "mailgun_webhook_signing_key=Secret('********')" in shown
    settings_file = newsletter / "spark-mail.toml"
    settings_file.write_text(
        'resend_webhook_secret = "whsec_x"\n' + settings_file.read_text(), encoding="utf-8"
    )
    with pytest.raises(ConfigError, match="is a secret"):
        load_settings(newsletter, env={})


@pytest.mark.slow
def test_a_real_serve_process_records_signed_events_and_refuses_forged_ones(newsletter: Path):
    """`spark-mail serve` with the webhook secrets in its environment: a Postmark bounce and
    a Mailgun complaint are recorded, a forged one is 401, `audience suppressions` shows
    the reasons, and the secrets appear nowhere in what it printed."""
    env = {
        "SPARK_MAIL_POSTMARK_WEBHOOK_AUTH": POSTMARK_AUTH,
        "SPARK_MAIL_MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY,
    }
    logs: list[str] = []
    with serve_process(newsletter, env=env, logs=logs) as base:
        bounce = dumps(postmark_bounce(READER, bounce_id=77))
        answer = local_client().post(
            f"{base}/webhooks/postmark", content=bounce, headers=postmark_auth()
        )
        assert answer.status_code == 200 and answer.json()["suppressed"] == 1, answer.text
        complaint = mailgun_body(mailgun_event("complained", "c@example.com", "mg-77"))
        answer = local_client().post(f"{base}/webhooks/mailgun", content=complaint)
        assert answer.status_code == 200 and answer.json()["suppressed"] == 1, answer.text
        forged = mailgun_body(mailgun_event("complained", "f@example.com", "mg-78"), key="guess")
        assert local_client().post(f"{base}/webhooks/mailgun", content=forged).status_code == 401
        again = local_client().post(
            f"{base}/webhooks/postmark", content=bounce, headers=postmark_auth()
        )
        assert again.json()["replayed"] == 1
    listed = run_cli("audience", "suppressions", "--json", cwd=newsletter)
    reasons = {s["address"]: s["reason"] for s in json.loads(listed.stdout)["suppressions"]}
    assert reasons == {
        KEY: f"bounce (postmark, event 77, issue {SAMPLE_SLUG}: HardBounce The server was "
        "unable to deliver your message (ex: unknown user). smtp;550 5.1.1 The email account "
        "that you tried to reach does not exist.)",
        "c@example.com": f"complaint (mailgun, event mg-77, issue {SAMPLE_SLUG})",
    }
    printed = "".join(logs)
    assert "ESP events at /webhooks/postmark, /webhooks/mailgun" in printed
    assert "webhook refused" in printed
    assert POSTMARK_AUTH.split(":")[1] not in printed and MAILGUN_KEY not in printed


def test_a_store_from_before_the_webhooks_keeps_its_unsubscribes(tmp_path: Path):
    """A readers.sqlite3 of the first schema is migrated in place: its unsubscribes stay,
    with no provider, and bounces can be recorded beside them."""
    import sqlite3

    from spark_mail.audience.events import EspEvent, EventKind, record_events
    from spark_mail.audience.suppressions import MIGRATIONS

    path = tmp_path / "readers.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0] + ";PRAGMA user_version = 1;")
    db.execute(
        "INSERT INTO suppressions VALUES ('old@example.com', '2024-12-01T10:00:00+00:00', "
        "'one-click', 'x')"
    )
    db.commit()
    db.close()
    now = dt.datetime.now(dt.UTC)
    with SuppressionStore(path) as store:
        event = EspEvent("ses", "e1", EventKind.COMPLAINT, "new@example.com", now)
        store.run([record_events([event], now)])
        found = {s.address: s.reason for s in store.suppressions()}
        assert store.read("PRAGMA user_version")[0][0] == len(MIGRATIONS)
    assert found == {
        "old@example.com": "one-click (issue x)",
        "new@example.com": "complaint (ses, event e1)",
    }


def test_odd_text_in_a_genuine_event_is_stored_not_crashed_on(hooks: Hooks):
    """JSON escapes that are not valid UTF-8 (a lone surrogate) and a huge event id in a
    genuine event: recorded with the text cleaned, and the desk keeps answering."""
    record = postmark_bounce("odd@example.com", 5, Description="bad \udcff byte")
    record["ID"] = "9" * 5000
    body = json.dumps(record).encode()  # ensure_ascii: "\\udcff" travels as an escape
    answer = hooks.post("postmark", body, postmark_auth())
    assert answer.status_code == 200, answer.text
    suppression = only(hooks)
    assert "bad ? byte" in suppression.detail and len(suppression.event_id) == 300
    assert hooks.post("postmark", body, postmark_auth()).json()["replayed"] == 1


def test_an_event_time_outside_the_calendar_is_taken_as_now(hooks: Hooks):
    """A genuine event dated in year 1 (with an offset that would leave the calendar)."""
    record = postmark_bounce("old@example.com", 6, BouncedAt="0001-01-01T00:00:00+01:00")
    answer = hooks.post("postmark", dumps(record), postmark_auth())
    assert answer.status_code == 200, answer.text
    assert only(hooks).at.startswith(str(dt.datetime.now(dt.UTC).year))


@pytest.mark.slow
def test_serve_with_a_wrong_sendgrid_key_stops_before_listening(newsletter: Path):
    """`serve` checks the webhook settings first: one line, exit 2, no traceback."""
    from desk_support import SECRET

    env = {"SPARK_MAIL_SIGNING_SECRET": SECRET, "SPARK_MAIL_SENDGRID_WEBHOOK_PUBLIC_KEY": "nope"}
    result = run_cli("serve", "--workers", "2", cwd=newsletter, env=env, timeout=30)
    assert result.returncode == 2
    assert "sendgrid_webhook_public_key" in result.stderr and "Traceback" not in result.stderr
