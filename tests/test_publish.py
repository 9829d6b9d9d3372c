"""publish.send_issue: dry run, test send and the real send, against the fake ESP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import SAMPLE_SLUG, write_issue
from esp_server import settings_for
from spark_mail.errors import (
    AlreadySent,
    ChecksFailed,
    ConfigError,
    ProviderError,
    SendUncertain,
    SendUnconfirmed,
)
from spark_mail.ledger import Ledger, SendState
from spark_mail.sending import send_issue

# Real Resend sends at Resend's 2 requests a second wait half a second per broadcast, on
# the real clock: these tests are not about the rate.
FAST = {"SPARK_MAIL_SEND_RATE": "100"}


def ledger_state(settings) -> SendState | None:
    with Ledger(settings.ledger_file) as ledger:
        record = ledger.get(SAMPLE_SLUG)
    return None if record is None else record.state


@pytest.mark.slow
def test_dry_run_makes_no_network_call_and_writes_the_requests(esp, newsletter):
    """Dry run: zero requests reach the ESP, the requests land in dist/<slug>/dry-run/."""
    settings = settings_for(esp, newsletter, "resend", SPARK_MAIL_API_KEY="re_live_SECRET")
    result = send_issue(SAMPLE_SLUG, settings, mode="dry-run")
    assert esp.calls() == []
    folder = newsletter / "dist" / SAMPLE_SLUG / "dry-run"
    names = sorted(p.name for p in folder.iterdir())
    assert names == [
        "01-POST-broadcasts.json",
        "02-POST-broadcasts-dry-run-broadcast-1-send.json",
        "summary.json",
    ]
    create = json.loads((folder / "01-POST-broadcasts.json").read_text())
    assert create["headers"]["authorization"] == "Bearer ********"
    assert create["json"]["segment_id"] == "seg_test"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["provider"] == "resend" and summary["requests"] == 2
    assert result.requests == 2
    for path in folder.iterdir():
        assert "re_live_SECRET" not in path.read_text()
    assert not settings.ledger_file.exists()


@pytest.mark.slow
def test_dry_run_runs_the_same_requests_as_a_real_send(esp, newsletter):
    """The dry run's method + path sequence is the real send's (ids aside)."""
    settings = settings_for(esp, newsletter, "buttondown")
    send_issue(SAMPLE_SLUG, settings, mode="dry-run")
    folder = newsletter / "dist" / SAMPLE_SLUG / "dry-run"
    dry = [json.loads(p.read_text()) for p in sorted(folder.glob("0*.json"))]
    send_issue(SAMPLE_SLUG, settings, mode="send")
    real = esp.calls()
    assert [d["method"] for d in dry] == [r.method for r in real]
    assert [d["url"].rsplit("/", 1)[-1] for d in dry] == [r.path.rsplit("/", 1)[-1] for r in real]
    assert dry[0]["json"] == real[0].body


def test_test_send_never_reaches_the_audience_and_is_not_recorded(esp, newsletter):
    """--test: a [TEST] copy via send-draft; no publish, no ledger row; can be repeated."""
    settings = settings_for(esp, newsletter, "buttondown")
    first = send_issue(SAMPLE_SLUG, settings, mode="test", to=["ed@example.com"])
    send_issue(SAMPLE_SLUG, settings, mode="test")  # SPARK_MAIL_TEST_RECIPIENTS
    assert first.subject.startswith("[TEST] ")
    assert [r for r in esp.calls() if r.path.endswith("/publish")] == []
    assert esp.audience_sends == []
    tests = [d for d in esp.delivered if d["kind"] == "test"]
    assert [d["to"] for d in tests] == ["ed@example.com", "editor@example.com"]
    assert all(d["subject"].startswith("[TEST] ") for d in tests)
    assert ledger_state(settings) is None


def test_test_send_without_recipients_is_a_clear_error(esp, newsletter):
    """No --to and no SPARK_MAIL_TEST_RECIPIENTS: a ConfigError naming both."""
    settings = settings_for(esp, newsletter, "resend", SPARK_MAIL_TEST_RECIPIENTS="")
    with pytest.raises(ConfigError, match="SPARK_MAIL_TEST_RECIPIENTS"):
        send_issue(SAMPLE_SLUG, settings, mode="test")
    assert esp.calls() == []


@pytest.mark.parametrize(
    "bad", ["not-an-address", "a@example.com\r\nBcc: x@evil.test", "a@x.io, b@y.io"]
)
def test_bad_test_recipients_are_refused_before_sending(esp, newsletter, bad):
    """Invalid, header-injecting or list addresses: refused, nothing sent."""
    settings = settings_for(esp, newsletter, "resend")
    with pytest.raises(ConfigError):
        send_issue(SAMPLE_SLUG, settings, mode="test", to=[bad])
    assert esp.calls() == []


def test_send_twice_sends_once(esp, newsletter):
    """The second real send of an issue is refused by the ledger; one broadcast."""
    settings = settings_for(esp, newsletter, "resend", **FAST)
    result = send_issue(SAMPLE_SLUG, settings, mode="send")
    assert result.outcome == "sent"
    with pytest.raises(AlreadySent):
        send_issue(SAMPLE_SLUG, settings, mode="send")
    assert len(esp.audience_sends) == 1
    with Ledger(settings.ledger_file) as ledger:
        record = ledger.get(SAMPLE_SLUG)
    assert record is not None and record.state == SendState.SENT
    assert record.esp_ids == {"broadcast_id": esp.audience_sends[0]["id"]}


@pytest.mark.slow
def test_refused_send_is_failed_and_can_be_sent_later(esp, newsletter):
    """A 4xx: the ledger says failed with the reason; the next send goes out once."""
    settings = settings_for(esp, newsletter, "resend", **FAST)
    esp.fail(422, path="/broadcasts")
    with pytest.raises(ProviderError, match="resend: 422"):
        send_issue(SAMPLE_SLUG, settings, mode="send")
    assert ledger_state(settings) == SendState.FAILED
    send_issue(SAMPLE_SLUG, settings, mode="send")
    assert ledger_state(settings) == SendState.SENT
    assert len(esp.audience_sends) == 1


@pytest.mark.slow
def test_lost_answer_on_buttondown_is_unconfirmed_and_the_next_run_asks(esp, newsletter):
    """Buttondown publish answers never arrive: not `failed` but unconfirmed (the ESP may
    have acted); the next send asks Buttondown, finds it sent, and sends nothing."""
    settings = settings_for(esp, newsletter, "buttondown")
    esp.drop(times=3, path="/publish")
    with pytest.raises(SendUnconfirmed, match="may have gone out"):
        send_issue(SAMPLE_SLUG, settings, mode="send")
    assert ledger_state(settings) == SendState.SENDING
    again = send_issue(SAMPLE_SLUG, settings, mode="send")
    assert again.outcome == "sent-earlier"
    assert ledger_state(settings) == SendState.SENT
    assert len(esp.audience_sends) == 1


@pytest.mark.slow
def test_lost_batch_answer_on_postmark_is_settled_by_asking_postmark(esp, newsletter):
    """Postmark batch without an answer: unconfirmed; the next run finds the reader in
    Postmark's message search and records it sent, without a second batch."""
    (newsletter / "subscribers.csv").write_text("email\nreader@example.com\n")
    settings = settings_for(esp, newsletter, "postmark", SPARK_MAIL_AUDIENCE="subscribers.csv")
    esp.drop(path="/email/batch")  # processed, then the connection closes: no answer
    with pytest.raises(SendUnconfirmed):
        send_issue(SAMPLE_SLUG, settings, mode="send")
    batch = "/email/batch.*"  # full copies, or batchWithTemplates (the ESP merges)
    assert len(esp.calls("POST", batch)) == 1
    result = send_issue(SAMPLE_SLUG, settings, mode="send")
    assert result.outcome == "sent" and ledger_state(settings) == SendState.SENT
    assert len(esp.calls("POST", batch)) == 1
    assert len(esp.calls("GET", "/messages/outbound")) == 1


@pytest.mark.slow
def test_lost_batch_answer_postmark_cannot_confirm_is_uncertain(esp, newsletter):
    """Postmark's search does not show the batch (it lags): `uncertain`; sent again only
    with resend_uncertain."""
    (newsletter / "subscribers.csv").write_text("email\nreader@example.com\n")
    settings = settings_for(esp, newsletter, "postmark", SPARK_MAIL_AUDIENCE="subscribers.csv")
    esp.drop(path="/email/batch")
    esp.postmark_search_lag = True
    with pytest.raises(SendUnconfirmed):
        send_issue(SAMPLE_SLUG, settings, mode="send")
    with pytest.raises(SendUncertain, match="resend-uncertain"):
        send_issue(SAMPLE_SLUG, settings, mode="send")
    assert ledger_state(settings) == SendState.UNCERTAIN
    # Own list: the next run would send readers that certainly got nothing; this one holds
    # the uncertain reader and says so again.
    with pytest.raises(SendUncertain, match="resend-uncertain"):
        send_issue(SAMPLE_SLUG, settings, mode="send")
    batch = "/email/batch.*"
    assert len(esp.calls("POST", batch)) == 1
    send_issue(SAMPLE_SLUG, settings, mode="send", resend_uncertain=True)
    assert ledger_state(settings) == SendState.SENT
    assert len(esp.calls("POST", batch)) == 2


@pytest.mark.slow
def test_check_errors_block_a_send_unless_forced(esp, newsletter):
    """An issue with a leftover template tag is refused before any request; --force sends."""
    write_issue(newsletter, "broken", "title: Broken\ndate: 2025-02-01", "Hello {{ name }}\n")
    settings = settings_for(esp, newsletter, "resend", **FAST)
    with pytest.raises(ChecksFailed, match="--force"):
        send_issue("broken", settings, mode="send")
    assert esp.calls() == []
    assert not settings.ledger_file.exists() or ledger_state(settings) is None
    send_issue("broken", settings, mode="send", force=True)
    assert len(esp.audience_sends) == 1


@pytest.mark.slow
def test_outbox_is_the_default_and_works_without_an_account(newsletter):
    """No provider configured: test and send write .eml files into outbox/."""
    from spark_mail.config import load_settings

    settings = load_settings(newsletter, env={})
    send_issue(SAMPLE_SLUG, settings, mode="test", to=["ed@example.com"])
    result = send_issue(SAMPLE_SLUG, settings, mode="send")
    folder = newsletter / "outbox" / SAMPLE_SLUG
    assert sorted(p.name for p in folder.iterdir()) == ["send.eml", "test-1.eml"]
    assert result.provider == "outbox" and result.outcome == "sent"
    assert b"[TEST] " in (folder / "test-1.eml").read_bytes()
    with pytest.raises(AlreadySent):
        send_issue(SAMPLE_SLUG, settings, mode="send")


def test_own_list_provider_without_audience_names_the_setting(esp, newsletter):
    """Postmark with no subscribers file: a clear error, no ledger row, no request."""
    settings = settings_for(esp, newsletter, "postmark")
    with pytest.raises(ConfigError, match="audience"):
        send_issue(SAMPLE_SLUG, settings, mode="send")
    assert esp.calls() == []
    assert not Path(settings.ledger_file).exists() or ledger_state(settings) is None
