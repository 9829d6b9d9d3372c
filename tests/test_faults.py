"""Never twice, never silently skipped: every provider, both paths, under every fault an
ESP or a proxy in front of it produces AFTER the ESP acted.

Each case sends an issue through the fake ESP (a real HTTP server on 127.0.0.1) with one
fault on the request that sends, then runs `send` again and `dispatch`, as a user and cron
would. The server's own record of what it delivered is the judge: no reader (or audience)
gets the issue twice, and every reader who got nothing is reported (uncertain), never
skipped in silence.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from conftest import SAMPLE_SLUG
from esp_server import FakeEsp, moto_messages, settings_for
from provider_support import spoilt_requests_end
from spark_mail.clock import FakeClock
from spark_mail.config import Settings
from spark_mail.errors import SparkMailError
from spark_mail.ledger import ReaderState, SendState, open_ledger
from spark_mail.scheduling.cron import dispatch
from spark_mail.sending import send_issue

# The request that actually sends, per provider and path.
SENDING = {
    ("resend", "esp"): "/send",
    ("buttondown", "esp"): "/publish",
    ("resend", "own"): "/emails/batch",
    ("postmark", "own"): "/email/batch",  # batchWithTemplates too
    ("mailgun", "own"): "/mg.example.com/messages",
    ("sendgrid", "own"): "/v3/mail/send",
    # SES: the fake ESP's front, forwarding to a real local SES stand-in (moto_server)
    ("ses", "own"): "/v2/email/outbound-emails",
}
HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
# fault name -> what the fake ESP does to the sending request
FAULTS: dict[str, dict[str, Any]] = {
    "act-then-502": {"status": 502},
    "act-then-504": {"status": 504},
    "act-then-500": {"status": 500},
    "act-then-html-200": {"raw": HTML_502},
    "act-then-wrong-json": {"shape": ["unexpected"]},
    "act-then-string-json": {"shape": "queued"},
    "act-then-reset": {"reset": True},
    "act-then-hang": {"hang": True},
    "act-then-slow-drip": {"drip": 0.03},  # a byte well within each read's timeout
    "429-with-retry-after": {"refuse": 429},
    "clear-refusal-422": {"refuse": 422},
}
# Two batches on every provider, so a fault hits one of them and the other is sent, settled
# or reported: batches of 5 readers here (the providers' own sizes, 50 to 1,000, took 60 to
# 150 readers for two batches on Resend and SES, and one batch on the others; what is
# checked does not depend on a batch's size, only on there being two)
BATCH_SIZE = 5
READERS = 8  # 5 + 3
DUE = dt.datetime(2025, 1, 20, 12, 0, tzinfo=dt.UTC)


def inject(esp: FakeEsp, path: str, fault: dict[str, Any]) -> None:
    if "refuse" in fault:
        esp.fail(fault["refuse"], retry_after=0.01, path=path, method="POST")
    elif fault.get("reset"):
        esp.drop(path=path, method="POST")
    else:
        esp.act_then(
            status=fault.get("status"),
            raw=fault.get("raw"),
            shape=fault.get("shape"),
            hang=fault.get("hang", False),
            drip=fault.get("drip", 0.0),
            path=path,
            method="POST",
        )


def newsletter_for(esp: FakeEsp, root: Path, provider: str, path: str) -> Settings:
    extra = {"SPARK_MAIL_SEND_RATE": "100"}
    if path == "own":
        lines = "".join(f"{address}\n" for address in _readers())
        (root / "subscribers.csv").write_text("email\n" + lines)
        extra["SPARK_MAIL_AUDIENCE"] = "subscribers.csv"
    settings = settings_for(esp, root, provider, **extra)
    # Short enough that a hang or a drip ends the attempt; attempts bounded.
    return dataclasses.replace(settings, send_timeout=1.0, send_attempts=2, send_backoff=0.01)


def copies(esp: FakeEsp) -> collections.Counter[str]:
    """How many copies each reader (or the ESP's audience, as "audience") got. For SES the
    judge is the stand-in behind the front: the raw messages moto_server received."""
    counted: collections.Counter[str] = collections.Counter()
    if esp.ses.upstream is not None:
        for message in moto_messages(esp.ses.upstream):
            for address in message["destinations"]:
                counted[address.lower()] += 1
        return counted
    for item in esp.delivered:
        if item["kind"] == "audience":
            counted["audience"] += 1
        elif item["kind"] != "test":
            for address in item["to"]:
                counted[address.lower()] += 1
    return counted


def attempt(run: Any) -> str:
    try:
        return str(run().outcome)
    except SparkMailError as exc:
        return type(exc).__name__


# The quick loop (`-m "not slow"`) sends through each provider and path once, each under
# another fault; the rest of the matrix is slow, and so is SES (a moto_server process, and
# moto takes ~30 ms a message).
QUICK = {
    ("resend", "esp"): "act-then-502",
    ("buttondown", "esp"): "act-then-reset",
    ("resend", "own"): "act-then-html-200",
    ("postmark", "own"): "act-then-wrong-json",
    ("mailgun", "own"): "act-then-string-json",
    ("sendgrid", "own"): "429-with-retry-after",
}
CASES = [
    pytest.param(
        provider,
        path,
        fault,
        id=f"{provider}-{path}-{fault}",
        marks=[] if QUICK.get((provider, path)) == fault else [pytest.mark.slow],
    )
    for provider, path in SENDING
    for fault in FAULTS
]


@pytest.mark.parametrize(("provider", "path", "fault"), CASES)
def test_no_reader_twice_and_nobody_silently_skipped(
    esp: FakeEsp,
    newsletter: Path,
    provider: str,
    path: str,
    fault: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """send (fault) -> send again -> dispatch: the ESP's record shows at most one copy
    each, and whoever got none is reported in the ledger."""
    if provider == "ses":
        request.getfixturevalue("ses_moto")  # moto_server behind the fake ESP's SES front
    if path == "own":
        from spark_mail.providers.registry import provider_class

        monkeypatch.setattr(provider_class(provider), "batch_size", BATCH_SIZE)
    settings = newsletter_for(esp, newsletter, provider, path)
    inject(esp, SENDING[(provider, path)], FAULTS[fault])
    if fault in ("act-then-hang", "act-then-slow-drip"):
        spoilt_requests_end(esp, monkeypatch)
    clock = FakeClock(DUE)
    outcomes = [attempt(lambda: send_issue(SAMPLE_SLUG, settings, mode="send", clock=clock))]
    clock.advance(60)
    outcomes.append(attempt(lambda: send_issue(SAMPLE_SLUG, settings, mode="send", clock=clock)))
    clock.advance(60)
    (newsletter / "issues" / f"{SAMPLE_SLUG}.md").write_text(
        (newsletter / "issues" / f"{SAMPLE_SLUG}.md")
        .read_text()
        .replace("\n---\n", "\nsend_at: 2025-01-20T07:00:00-05:00\n---\n", 1)
    )
    report = dispatch(settings, DUE, clock=clock)
    outcomes += [str(i.outcome) for i in report.items]
    got = copies(esp)
    assert max(got.values(), default=0) <= 1, (outcomes, got.most_common(3))
    with open_ledger(settings) as ledger:
        record = ledger.get(SAMPLE_SLUG)
        assert record is not None
        if path == "esp":
            expected = {"audience"} if record.state == SendState.SENT else set()
            assert set(got) == expected or record.state == SendState.UNCERTAIN, outcomes
            return
        missing = [a for a in _readers() if got[a] == 0]
        if missing:
            states = ledger.reader_states(SAMPLE_SLUG, missing)
            silent = [a for a in missing if states.get(a, ("?",))[0] != ReaderState.UNCERTAIN]
            assert not silent, (outcomes, silent[:3], record.state)
            assert record.state == SendState.UNCERTAIN
        elif can_find_out(settings):
            assert record.state == SendState.SENT, (outcomes, record)
        else:  # everyone got it, and an ESP that can neither be asked nor drop a repeat
            # cannot tell: uncertain is the honest answer (README "uncertain")
            assert record.state in (SendState.SENT, SendState.UNCERTAIN), (outcomes, record)


def can_find_out(settings: Settings) -> bool:
    """The provider can settle a batch that may have gone out: ask (BATCH_LOOKUP) or repeat
    it under an idempotency key it honours."""
    from spark_mail.providers.base import Capability
    from spark_mail.providers.registry import provider_class

    cls = provider_class(settings.provider)
    return cls.idempotent or Capability.BATCH_LOOKUP in cls.capabilities


def _readers() -> list[str]:
    return [f"reader{n:03d}@example.com" for n in range(READERS)]
