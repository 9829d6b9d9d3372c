"""The fake ESP's quick schema check (fastjsonschema, which knows draft 7, not 2020-12)
never passes a body that jsonschema's 2020-12 validator finds an error in, and does pass the
bodies spark-mail sends (else the fake ESP is only slow again)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from esp_server import _load_schemas, schema_checks

READER = {"email": "r0001@example.com", "name": "R1"}
# A body per schema, as spark-mail sends it (and a few fields it does not send)
SAMPLES: dict[str, Any] = {
    "postmark-SendEmailRequest": {
        "From": "Ed <ed@example.com>", "To": "r0001@example.com", "Subject": "Issue one",
        "HtmlBody": "<p>Hello</p>", "TextBody": "Hello", "MessageStream": "broadcast",
        "Metadata": {"issue": "issue-1", "batch": "b1"}, "TrackLinks": "None",
        "Headers": [{"Name": "List-Unsubscribe", "Value": "<https://example.com/u>"}],
    },
    "resend-SendEmailRequest": {
        "from": "ed@example.com", "to": ["r0001@example.com"], "subject": "Issue one",
        "html": "<p>Hello</p>", "text": "Hello", "headers": {"List-Unsubscribe": "<x>"},
        "tags": [{"name": "issue", "value": "issue-1"}], "reply_to": "ed@example.com",
    },
    "resend-CreateBroadcastOptions": {
        "from": "ed@example.com", "subject": "Issue one", "segment_id": "seg_1",
        "html": "<p>Hello</p>", "name": "issue-1", "send": False,
    },
    "resend-SendBroadcastOptions": {"scheduled_at": "2025-01-20T12:00:00Z"},
    "sendgrid-PostMailSend": {
        "personalizations": [
            {"to": [READER], "substitutions": {"[name]": "R1"}, "custom_args": {"b": "1"}},
            {"to": [{"email": "r0002@example.com"}], "send_at": 1737374400},
        ],
        "from": {"email": "ed@example.com", "name": "Ed"}, "subject": "Issue one",
        "content": [{"type": "text/plain", "value": "Hi"}, {"type": "text/html", "value": "<p>"}],
        "headers": {"X-Issue": "issue-1"}, "categories": ["issue-1"], "batch_id": "b1",
    },
    "mailgun-SendMessage": {
        "from": "ed@example.com", "to": ["r0001@example.com", "r0002@example.com"],
        "subject": "Issue one", "html": "<p>Hello</p>", "text": "Hello", "o:tag": ["issue-1"],
        "recipient-variables": "{}", "o:deliverytime": "Mon, 20 Jan 2025 12:00:00 +0000",
    },
    "buttondown-EmailInput": {
        "subject": "Issue one", "body": "Hello", "status": "about_to_send",
        "metadata": {"issue": "issue-1"}, "email_type": "public", "secondary_id": 3,
    },
    "buttondown-EmailUpdateInput": {"status": "scheduled", "publish_date": "2025-01-20T12:00Z"},
    "buttondown-SendDraftInput": {"recipients": ["ed@example.com"]},
}  # fmt: skip
ODD: list[Any] = [None, 0, -1, 2**40, 1.5, True, "", "x", "x" * 6000, [], ["x", "x"], [1],
                  {}, {"x": 1}, {"x": "y"}]  # fmt: skip


def variants(body: Any, schema: dict[str, Any] | None = None) -> Iterator[Any]:
    """`body` with each part replaced by odd values, removed, or repeated; with `schema`,
    also each of its top-level fields set to each odd value."""
    yield body
    yield from ODD
    if isinstance(body, dict):
        for key in [*list(body), "unexpected_field"]:
            yield {k: v for k, v in body.items() if k != key}
            for other in variants(body.get(key)):
                yield {**body, key: other}
        for key, sub in ((schema or {}).get("properties") or {}).items():
            for value in [*ODD, *(sub.get("enum") or [])[:1]]:
                yield {**body, key: value}
    elif isinstance(body, list) and body:
        yield body + body
        for other in variants(body[0]):
            yield [other, *body[1:]]


@pytest.mark.slow  # thousands of bodies through jsonschema
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_the_quick_check_passes_only_what_jsonschema_passes(name: str) -> None:
    assert set(SAMPLES) == set(_load_schemas())
    proven, validator = schema_checks(name)
    assert proven(SAMPLES[name]), "a body spark-mail sends needs jsonschema again"
    counted = {True: 0, False: 0}
    for body in variants(SAMPLES[name], validator.schema):
        if proven(body):
            assert validator.is_valid(body), (body, next(validator.iter_errors(body)).message)
        counted[proven(body)] += 1
    assert counted[False] > 20 and counted[True] > 10, counted
