"""Markers spark-mail uses inside one render (merge-tag placeholders, per-reader markers)
cannot be forged from an issue's text: text that looks like them stays text, never a
traceback, never a reader's value (issue 9, item 12); and a bad gzip answer from the ESP
is an unconfirmed send, settled by the next run."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from conftest import SAMPLE_SLUG, run_cli, write_issue
from esp_server import FakeEsp, esp_env
from spark_mail.checks import run_checks
from spark_mail.config import load_settings
from spark_mail.render import build
from spark_mail.render.inline import inline_css
from spark_mail.sending import send_issue

LOOKALIKES = "spkmrgtag0x spkmrgtag5x spkrdr0x spkrdr1x SPKRDR2X"


def test_merge_tag_placeholders_in_the_text_stay_text():
    """Inlining HTML that holds a merge tag and text shaped like the placeholders: each
    stays exactly as written (before: an IndexError, or the tag in the wrong place)."""
    html = f"<html><body><p>{{{{ x }}}} {LOOKALIKES}</p></body></html>"
    out = inline_css(html, "p { color: red }")
    assert f"{{{{ x }}}} {LOOKALIKES}</p>" in out


def test_issue_with_lookalike_markers_builds_and_check_names_the_merge_tag(newsletter: Path):
    """`build` keeps the look-alikes as text; `check` reports the `{{ x }}` clearly."""
    path = write_issue(
        newsletter, "markers", "title: Markers\ndate: 2025-02-03", f"Use {{{{ x }}}} {LOOKALIKES}\n"
    )
    settings = load_settings(newsletter, env={})
    built = build(path, settings)
    assert f"{{{{ x }}}} {LOOKALIKES}" in built.html
    assert f"{{{{ x }}}} {LOOKALIKES}" in built.text
    report = run_checks(built, settings, links=False)
    assert "template.unresolved" in {f.rule_id for f in report.errors}


def reader_copies(root: Path) -> dict[str, email.message.EmailMessage]:
    copies = {}
    for path in (root / "outbox" / "markers").glob("send-*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        copies[str(message["To"])] = message  # type: ignore[assignment]
    return copies


def test_lookalike_markers_never_become_a_readers_value(newsletter: Path):
    """Own list through the outbox: each reader's copy shows the look-alikes as written,
    and no copy holds another reader's address."""
    write_issue(newsletter, "markers", "title: Markers\ndate: 2025-02-03", f"Look: {LOOKALIKES}\n")
    (newsletter / "subscribers.csv").write_text("email\nann@example.com\nbob@example.com\n")
    settings = load_settings(
        newsletter,
        env={
            "SPARK_MAIL_AUDIENCE": "subscribers.csv",
            "SPARK_MAIL_SIGNING_SECRET": "marker-test-signing-secret-0123",
        },
    )
    result = send_issue("markers", settings, mode="send")
    assert result.summary and result.summary["sent"] == 2
    copies = reader_copies(newsletter)
    assert set(copies) == {"ann@example.com", "bob@example.com"}
    for address, message in copies.items():
        other = ({"ann@example.com", "bob@example.com"} - {address}).pop()
        for kind in ("html", "plain"):
            part = message.get_body((kind,))
            assert part is not None
            content = part.get_content()
            assert f"Look: {LOOKALIKES}" in content, (address, kind)
            assert other not in content and other.replace("@", "%40") not in content


@pytest.mark.slow
def test_bad_gzip_answer_is_one_unconfirmed_line_and_the_next_run_settles_it(
    newsletter: Path, esp: FakeEsp
):
    """Resend sends the broadcast, then every answer is a body that claims gzip and is not:
    exit 1 with one `error:` line saying it may have gone out (no traceback); the next
    `send` asks Resend and records it sent; the readers got it once."""
    env = esp_env(esp, "resend", SPARK_MAIL_SEND_RATE="100")  # Resend's 2/s: not waited out
    esp.act_then(gzip=True, path="/send", times=3)
    first = run_cli("send", SAMPLE_SLUG, "--yes", cwd=newsletter, env=env)
    assert first.returncode == 1 and "Traceback" not in first.stderr, first.stderr
    errors = [line for line in first.stderr.splitlines() if " error: " in f" {line}"]
    assert len(errors) == 1 and "it may have gone out" in errors[0], first.stderr
    second = run_cli("send", SAMPLE_SLUG, "--yes", cwd=newsletter, env=env)
    assert second.returncode == 0, second.stderr
    assert "an interrupted earlier send went out" in second.stdout
    assert len(esp.audience_sends) == 1
