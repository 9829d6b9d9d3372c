"""mime_bytes: each reader's message as it goes on the wire, built fast, is the message
mime_for builds: the same headers, the same bodies once decoded, CRLF lines of at most 998."""

from __future__ import annotations

import dataclasses
import email
import email.policy

import pytest

from provider_support import sample_readers, sample_template
from spark_mail.audience import Reader
from spark_mail.providers.mime import mime_bytes, mime_for


def parsed(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


@pytest.mark.parametrize(
    "address",
    ["r0@example.com", "josé@example.com", "anna@müller.de"],
    ids=["ascii", "utf8", "idna"],
)
def test_the_fast_message_is_the_message_mime_for_builds(esp, newsletter, address):
    """Headers (but the per-copy Date and the boundary) and both bodies are equal after
    decoding; every line ends in CRLF and holds at most 998 characters."""
    template = sample_template(esp, newsletter, "smtp")
    copy = template.copy(Reader(address, {"email": address}, 2)).email(template.email)
    slow = mime_for(copy, address)
    fast = mime_bytes(copy, address, str(slow["Message-ID"]))
    assert b"\n" not in fast.replace(b"\r\n", b"")
    assert max(len(line) for line in fast.split(b"\r\n")) <= 998
    a, b = parsed(slow.as_bytes(policy=slow.policy.clone(linesep="\r\n"))), parsed(fast)
    assert sorted(a.keys()) == sorted(b.keys())
    for name in a:
        if name not in ("Date", "Content-Type"):  # the boundary is the skeleton's own
            assert a[name] == b[name], name
    assert a.get_content_type() == b.get_content_type() == "multipart/alternative"
    for kind in ("plain", "html"):
        assert a.get_body((kind,)).get_content() == b.get_body((kind,)).get_content()
    assert b["To"] == slow["To"] and "=?" not in b["To"]


def test_a_header_that_needs_folding_or_encoding_is_folded_like_mime_for(esp, newsletter):
    """A 1,200-character or non-ASCII header value goes through the email package."""
    template = sample_template(esp, newsletter, "smtp")
    (reader,) = sample_readers(1)
    copy = template.copy(reader).email(template.email)
    long = " ".join(["<https://example.com/" + "x" * 90 + ">"] * 12)
    copy = dataclasses.replace(copy, headers={**copy.headers, "X-Long": long, "X-Name": "Zoë"})
    fast = mime_bytes(copy, reader.email, "<id@example.com>")
    assert max(len(line) for line in fast.split(b"\r\n")) <= 998
    message = parsed(fast)
    assert message["X-Long"] == long and message["X-Name"] == "Zoë"
