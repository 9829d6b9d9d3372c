"""Secrets never leak through an ESP's error text: the key is masked BEFORE the message is
cut, everywhere the text goes (stderr, --json, the ledger's last error and its events);
and a one-character key does not mask every such letter (issue 9, item 9)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from conftest import SAMPLE_SLUG, run_cli
from esp_server import FakeEsp, esp_env
from spark_mail.config import load_settings
from spark_mail.providers.resend import ResendProvider
from spark_mail.secrets import MASK, redact, shorten

KEY = "re_Zq8Xw4PaLm7Rt2VbN8sHj3Dk6Fy1Ge5Uc0"
PREFIX = KEY[:5]  # what a cut-then-mask would leave behind
DUE = "2025-01-20T07:00:00-05:00"


def ledger_texts(root: Path) -> str:
    """Every last_error and event detail in the ledger, as one text."""
    db = sqlite3.connect(root / ".spark-mail" / "ledger.sqlite3")
    try:
        rows = db.execute("SELECT last_error FROM sends").fetchall()
        rows += db.execute("SELECT detail FROM events").fetchall()
    finally:
        db.close()
    return "\n".join(str(value) for (value,) in rows)


def use_esp(root: Path, esp: FakeEsp) -> dict[str, str]:
    esp.api_key = KEY
    return esp_env(esp, "resend", SPARK_MAIL_SEND_RATE="100")  # Resend's 2/s: not waited out


@pytest.mark.parametrize("at", [280, 290, 295, 300])
def test_mask_first_then_cut_leaves_no_prefix(at: int):
    """A key straddling the 300-character cut: no part of it survives."""
    text = "x" * at + KEY + " is not valid"
    for limit in (300, 600):
        assert PREFIX not in shorten(redact(text, [KEY]), limit)


def test_esp_error_message_with_the_key_at_the_cut_is_masked(newsletter: Path):
    """HttpProvider.error(): a 422 whose message repeats the key at character 290."""
    message = "y" * 290 + KEY + " was refused"
    provider = ResendProvider(load_settings(newsletter, env={"SPARK_MAIL_API_KEY": KEY}))
    request = httpx.Request("POST", "https://api.resend.com/broadcasts")
    response = httpx.Response(422, json={"name": KEY, "message": message}, request=request)
    error = provider.error(response, "create the broadcast")
    assert PREFIX not in str(error) and PREFIX not in str(error.code)


@pytest.mark.slow
def test_echoed_key_never_reaches_stderr_or_the_ledger(newsletter: Path, esp: FakeEsp):
    """`send --yes` against an ESP whose 422 repeats the key near character 300: the one
    error line, the ledger's last_error and its events hold no part of the key."""
    env = use_esp(newsletter, esp)
    esp.echo_key(422, at=285, path="/broadcasts", method="POST")
    result = run_cli("send", SAMPLE_SLUG, "--yes", "--json", cwd=newsletter, env=env)
    assert result.returncode == 1, result.stderr
    assert MASK in result.stderr  # the echo is there, masked
    assert PREFIX not in result.stdout + result.stderr
    assert "failed" in run_cli("status", "--json", cwd=newsletter, env=env).stdout
    assert PREFIX not in ledger_texts(newsletter)


@pytest.mark.slow
def test_echoed_key_never_reaches_dispatch_json_or_retry_lines(newsletter: Path, esp: FakeEsp):
    """`dispatch --json`: a 429 echoing the key (retried: its log line on stderr), then
    503s echoing it until the retries give up (the JSON message, the ledger): no leak."""
    env = use_esp(newsletter, esp)
    issue = newsletter / "issues" / "due.md"
    issue.write_text(f"---\ntitle: Due\ndate: 2025-01-20\nsend_at: {DUE}\n---\nHello.\n")
    esp.echo_key(429, at=295, path="/broadcasts", method="POST")
    esp.echo_key(503, at=285, times=2, path="/broadcasts", method="POST")
    result = run_cli("dispatch", "--now", "2025-01-20T08:00", "--json", cwd=newsletter, env=env)
    assert result.returncode == 1, result.stderr
    (item,) = json.loads(result.stdout)["issues"]
    assert item["outcome"] in ("failed", "unconfirmed", "uncertain"), item
    assert MASK in item["message"] and "retrying" in result.stderr
    assert PREFIX not in result.stdout + result.stderr
    assert PREFIX not in ledger_texts(newsletter)


# -- short secrets ------------------------------------------------------------------------


def test_one_character_key_is_masked_only_as_a_word_of_its_own():
    """A key `k`: `Bearer k` and `key=k,` are masked; `keep looking` keeps its letters."""
    text = "Bearer k rejected; key=k, keep looking at kk and k9"
    masked = redact(text, ["k"])
    assert masked == f"Bearer {MASK} rejected; key={MASK}, keep looking at kk and k9"


def test_short_key_in_an_esp_error_keeps_the_message_readable(newsletter: Path):
    """Through HttpProvider.error(): only the key itself is masked."""
    provider = ResendProvider(load_settings(newsletter, env={"SPARK_MAIL_API_KEY": "k"}))
    request = httpx.Request("POST", "https://api.resend.com/broadcasts")
    body = {"name": "validation_error", "message": "API key k looks broken; check it"}
    error = provider.error(httpx.Response(422, json=body, request=request), "create")
    assert f"API key {MASK} looks broken; check it" in str(error)


def test_long_keys_are_masked_anywhere_even_inside_words():
    """From 8 characters on, a key is masked wherever it stands, glued to other text."""
    assert redact(f"token={KEY}abc", [KEY]) == f"token={MASK}abc"


def test_postmark_refusal_reasons_are_masked_before_they_are_kept(newsletter: Path):
    """A reader's refusal reason (stored in the ledger, listed in the summary) is ESP
    text too: masked, then cut; a message id of a sent reader is kept as it is."""
    from spark_mail.providers.postmark import PostmarkProvider

    settings = load_settings(newsletter, env={"SPARK_MAIL_API_KEY": KEY})
    provider = PostmarkProvider(settings)
    state, reason = provider._masked(("refused", "ErrorCode 406: " + "z" * 280 + KEY))
    assert state == "refused" and PREFIX not in reason and len(reason) <= 300
    assert provider._masked(("sent", "msg-1")) == ("sent", "msg-1")
