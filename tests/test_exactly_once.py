"""Never twice: each way round 1 could send an issue twice, replayed against the fake ESP
(a real HTTP server on 127.0.0.1) and judged by what the server itself recorded."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from conftest import SAMPLE_SLUG, write_issue
from esp_server import FakeEsp, settings_for
from provider_support import spoilt_requests_end
from spark_mail.clock import FakeClock
from spark_mail.config import Settings
from spark_mail.errors import AlreadySent, SendUnconfirmed, SparkMailError
from spark_mail.ledger import SendState, open_ledger
from spark_mail.scheduling.cron import dispatch
from spark_mail.sending import send_issue

DUE = dt.datetime(2025, 1, 20, 12, 0, tzinfo=dt.UTC)


def quick(settings: Settings, **changes: object) -> Settings:
    """A short timeout (a hanging ESP ends an attempt, yet a busy machine still answers in
    time) and few attempts."""
    return dataclasses.replace(
        settings,
        **{"send_timeout": 2.0, "send_attempts": 2, "send_backoff": 0.01, **changes},  # type: ignore[arg-type]
    )


def state(settings: Settings, slug: str = SAMPLE_SLUG) -> SendState | None:
    with open_ledger(settings) as ledger:
        record = ledger.get(slug)
    return None if record is None else record.state


def due_issue(root: Path, name: str, body: str = "Hello, readers.\n") -> None:
    front = 'title: "Due"\ndate: 2025-01-20\nsend_at: 2025-01-20T07:00:00-05:00'
    write_issue(root, name, front, body)


@pytest.mark.slow
def test_resend_send_timing_out_every_attempt_is_asked_about_not_sent_again(
    esp: FakeEsp, newsletter: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 1: /broadcasts/{id}/send times out on every attempt. The row is not `failed`:
    the next dispatch asks Resend about the recorded broadcast and creates no second one."""
    due_issue(newsletter, "issue-1")
    settings = quick(
        settings_for(esp, newsletter, "resend", SPARK_MAIL_SEND_RATE="100"),
        send_timeout=1.0,
    )
    esp.act_then(hang=True, times=2, path="/send")
    # each attempt ends by its deadline, cut to 0.2 s once the ESP has acted and hangs
    # (as in test_faults): the 1 s send_timeout is not waited out twice
    spoilt_requests_end(esp, monkeypatch)
    with pytest.raises(SendUnconfirmed, match="may have gone out"):
        send_issue("issue-1", settings, mode="send", clock=FakeClock(DUE))
    assert state(settings, "issue-1") == SendState.SENDING
    report = dispatch(settings, DUE, clock=FakeClock(DUE))
    assert [i.outcome for i in report.items] == ["sent-earlier"]
    assert len(esp.calls("POST", "/broadcasts")) == 1, "no second broadcast"
    assert len(esp.audience_sends) == 1
    assert state(settings, "issue-1") == SendState.SENT


@pytest.mark.slow
@pytest.mark.parametrize(
    ("provider", "path", "answer"),
    [
        ("postmark", "/email/batchWithTemplates", {"raw": "OK, queued"}),
        ("resend", "/emails/batch", {"status": 502, "raw": "<html>502 Bad Gateway</html>"}),
    ],
    ids=["postmark-200-not-json", "resend-html-502"],
)
def test_unreadable_batch_answer_is_not_sent_again_by_the_next_run(
    esp: FakeEsp, newsletter: Path, provider: str, path: str, answer: dict[str, object]
) -> None:
    """Item 2: a batch answered with a 200 that is not JSON, or an HTML 502 page, after the
    ESP sent it: the next run sends those readers nothing more (Resend: the same
    idempotency key, which the ESP drops; Postmark: its message search finds them)."""
    readers = [f"r{n:02d}@example.com" for n in range(30)]
    (newsletter / "subscribers.csv").write_text("email\n" + "\n".join(readers) + "\n")
    settings = quick(
        settings_for(
            esp,
            newsletter,
            provider,
            SPARK_MAIL_AUDIENCE="subscribers.csv",
            SPARK_MAIL_SEND_RATE="100",
        ),
        send_attempts=1,
    )
    esp.act_then(path=path, **answer)  # type: ignore[arg-type]
    with pytest.raises(SendUnconfirmed):
        send_issue(SAMPLE_SLUG, settings, mode="send")
    again = send_issue(SAMPLE_SLUG, settings, mode="send")
    assert again.outcome == "sent" and state(settings) == SendState.SENT
    delivered = [a for d in esp.delivered if d["kind"] != "test" for a in d["to"]]
    assert sorted(delivered) == readers  # everyone once
    batches = esp.calls("POST", path)
    if provider == "resend":
        keys = [r.header("Idempotency-Key") for r in batches]
        assert len(batches) == 2 and keys[0] == keys[1] and keys[0]
    else:
        assert len(batches) == 1, "never posted twice"


@pytest.mark.parametrize(
    "status", [500, *(pytest.param(code, marks=pytest.mark.slow) for code in (502, 503, 504))]
)
def test_postmark_5xx_after_processing_is_not_retried_and_not_called_sent(
    esp: FakeEsp, newsletter: Path, status: int
) -> None:
    """Item 3: Postmark answers 5xx after it processed the batch: no retry at once (every
    reader would get it twice), the run does not say `sent`, and the next run settles it
    by asking Postmark, without a second batch."""
    (newsletter / "subscribers.csv").write_text("email\na@example.com\nb@example.com\n")
    settings = settings_for(esp, newsletter, "postmark", SPARK_MAIL_AUDIENCE="subscribers.csv")
    esp.act_then(status=status, path="/email/batchWithTemplates")
    with pytest.raises(SendUnconfirmed):
        send_issue(SAMPLE_SLUG, settings, mode="send")
    assert len(esp.calls("POST", "/email/batchWithTemplates")) == 1
    assert state(settings) == SendState.SENDING
    assert send_issue(SAMPLE_SLUG, settings, mode="send").outcome == "sent"
    delivered = sorted(a for d in esp.delivered if d["kind"] != "test" for a in d["to"])
    assert delivered == ["a@example.com", "b@example.com"]


@pytest.mark.slow
def test_buttondown_publish_timeout_then_a_typo_fix_does_not_publish_twice(
    esp: FakeEsp, newsletter: Path
) -> None:
    """Item 4: publish times out (Buttondown did publish); the author fixes a typo; dispatch
    asks Buttondown about the recorded email, finds it sent, and publishes nothing."""
    due_issue(newsletter, "issue-1", "Hello, raeders.\n")
    settings = quick(settings_for(esp, newsletter, "buttondown"))
    esp.drop(times=2, path="/publish")  # published, then the connection closes unanswered
    with pytest.raises(SendUnconfirmed):
        send_issue("issue-1", settings, mode="send")
    due_issue(newsletter, "issue-1", "Hello, readers.\n")  # the typo, fixed
    report = dispatch(settings, DUE, clock=FakeClock(DUE))
    assert [i.outcome for i in report.items] == ["sent-earlier"]
    assert len(esp.audience_sends) == 1
    assert len(esp.calls("POST", r"/v1/emails")) == 1, "no second email created"


@pytest.mark.slow
def test_buttondown_draft_never_published_is_published_once_with_the_fixed_text(
    esp: FakeEsp, newsletter: Path
) -> None:
    """The other side of item 4: the publish never reached Buttondown (the email is still a
    draft); after the typo fix the next run updates that same draft and publishes it once."""
    due_issue(newsletter, "issue-1", "Hello, raeders.\n")
    settings = quick(settings_for(esp, newsletter, "buttondown"))
    esp.fail(500, times=3, path="/publish")  # refused unprocessed, but a 500 proves nothing
    with pytest.raises(SendUnconfirmed):
        send_issue("issue-1", settings, mode="send")
    due_issue(newsletter, "issue-1", "Hello, readers.\n")
    report = dispatch(settings, DUE, clock=FakeClock(DUE))
    assert [i.outcome for i in report.items] == ["sent"], report.items
    assert len(esp.audience_sends) == 1
    (email,) = esp.emails.values()
    assert "Hello, readers." in email["body"] and "raeders" not in email["body"]
    assert len(esp.calls("POST", r"/v1/emails")) == 1, "the same draft, updated"


@pytest.mark.slow
def test_a_refused_send_is_failed_and_the_next_run_sends_once(
    esp: FakeEsp, newsletter: Path
) -> None:
    """The other side of the rule: a 422 says why it did not act, so `failed`, and trying
    again is safe."""
    settings = settings_for(esp, newsletter, "resend", SPARK_MAIL_SEND_RATE="100")
    esp.fail(422, path="/broadcasts", method="POST")
    with pytest.raises(SparkMailError, match="422"):
        send_issue(SAMPLE_SLUG, settings, mode="send")
    assert state(settings) == SendState.FAILED
    assert send_issue(SAMPLE_SLUG, settings, mode="send").outcome == "sent"
    with pytest.raises(AlreadySent):
        send_issue(SAMPLE_SLUG, settings, mode="send")
    assert len(esp.audience_sends) == 1
