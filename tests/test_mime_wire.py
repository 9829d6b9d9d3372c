"""What goes over the wire, byte for byte: addresses a mailbox accepts (IDNA domains,
SMTPUTF8 only where a local part needs it) and a `List-Unsubscribe` header that Gmail's and
Yahoo's one-click button can read (plain ASCII, never an RFC 2047 encoded-word)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SAMPLE_SLUG
from esp_server import SIGNING_SECRET, FakeEsp, settings_for
from servers.smtp import Sink, serve, smtp_settings
from spark_mail.config import load_settings
from spark_mail.errors import AudienceError
from spark_mail.sending import send_issue

READERS = ["anna@müller.de", "josé@example.com", "bo@example.com"]


def subscribers(root: Path, readers: list[str]) -> None:
    (root / "subscribers.csv").write_text("email\n" + "\n".join(readers) + "\n", encoding="utf-8")


def headers_of(data: bytes) -> dict[str, bytes]:
    """The raw header block, unfolded only where the sender folded (CRLF + space)."""
    block = data.split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ").replace(b"\r\n\t", b" ")
    found: dict[str, bytes] = {}
    for line in block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        found[name.decode().lower()] = value.strip()
    return found


@pytest.fixture
def smtp(request: pytest.FixtureRequest) -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    controller = serve(sink, enable_SMTPUTF8=getattr(request, "param", True))
    yield sink, controller.port
    controller.stop()


def smtp_newsletter(root: Path, port: int) -> object:
    subscribers(root, READERS)
    return smtp_settings(
        root,
        port,
        SPARK_MAIL_AUDIENCE="subscribers.csv",
        SPARK_MAIL_SIGNING_SECRET=SIGNING_SECRET,
    )


@pytest.mark.slow
def test_smtp_puts_idna_domains_and_plain_list_unsubscribe_on_the_wire(
    smtp: tuple[Sink, int], newsletter: Path
) -> None:
    """Each reader's DATA: `To:` with the domain in IDNA (never `=?utf-8?`), SMTPUTF8 only
    for the reader whose local part needs it, and a per-reader `List-Unsubscribe` in plain
    ASCII, folded (if at all) only between its two items."""
    sink, port = smtp
    settings = smtp_newsletter(newsletter, port)
    send_issue(SAMPLE_SLUG, settings, mode="send")  # type: ignore[arg-type]
    by_rcpt = {m["to"][0]: m for m in sink.messages}
    assert set(by_rcpt) == {"anna@xn--mller-kva.de", "josé@example.com", "bo@example.com"}
    for rcpt, message in by_rcpt.items():
        headers = headers_of(message["data"])
        assert b"=?" not in headers["to"] and b"=?" not in headers["list-unsubscribe"], rcpt
        assert headers["to"].decode("utf-8") == rcpt
        value = headers["list-unsubscribe"]
        assert value.isascii() and re.fullmatch(rb"<https://[^>\s]+>, <mailto:[^>\s]+>", value)
        raw_block = message["data"].split(b"\r\n\r\n", 1)[0]
        raw = raw_block.split(b"List-Unsubscribe:", 1)[1].split(b"\r\nList-Unsubscribe-Post")[0]
        assert b"\r\n" not in raw.replace(b",\r\n <mailto:", b", <mailto:"), "folded inside a URL"
        assert message["smtputf8"] == (not rcpt.split("@")[0].isascii()), rcpt
    assert b"token=" in headers_of(by_rcpt["bo@example.com"]["data"])["list-unsubscribe"]


@pytest.mark.slow
@pytest.mark.parametrize("smtp", [False], indirect=True)
def test_a_local_part_the_server_cannot_carry_is_invalid_before_the_send(
    smtp: tuple[Sink, int], newsletter: Path
) -> None:
    """A server without SMTPUTF8: `josé@` is an invalid row found before anything is sent
    (not a failure in the middle of a batch); with --skip-invalid the others get it."""
    sink, port = smtp
    settings = smtp_newsletter(newsletter, port)
    with pytest.raises(AudienceError, match="not ASCII"):
        send_issue(SAMPLE_SLUG, settings, mode="send")  # type: ignore[arg-type]
    assert sink.messages == []
    send_issue(SAMPLE_SLUG, settings, mode="send", skip_invalid=True)  # type: ignore[arg-type]
    assert sorted(m["to"][0] for m in sink.messages) == ["anna@xn--mller-kva.de", "bo@example.com"]


def test_http_esps_get_ascii_domains_and_refuse_unicode_local_parts_up_front(
    esp: FakeEsp, newsletter: Path
) -> None:
    """Postmark gets `To` with the IDNA domain and the header values as plain strings;
    `josé@` (Postmark has no SMTPUTF8) is refused as an invalid row before any request."""
    subscribers(newsletter, READERS)
    settings = settings_for(esp, newsletter, "postmark", SPARK_MAIL_AUDIENCE="subscribers.csv")
    with pytest.raises(AudienceError, match="not ASCII"):
        send_issue(SAMPLE_SLUG, settings, mode="send")
    assert esp.calls("POST") == []
    send_issue(SAMPLE_SLUG, settings, mode="send", skip_invalid=True)
    (batch,) = esp.calls("POST", "/email/batchWithTemplates")
    messages = batch.body["Messages"]
    assert sorted(m["To"] for m in messages) == ["anna@xn--mller-kva.de", "bo@example.com"]
    for message in messages:
        (unsubscribe,) = [h["Value"] for h in message["Headers"] if h["Name"] == "List-Unsubscribe"]
        assert unsubscribe.isascii() and "=?" not in unsubscribe and "\n" not in unsubscribe


def test_outbox_files_carry_the_same_plain_headers(newsletter: Path) -> None:
    """The outbox's .eml files are what a mail server would get: the same checks hold."""
    subscribers(newsletter, READERS)
    settings = load_settings(
        newsletter,
        env={"SPARK_MAIL_AUDIENCE": "subscribers.csv", "SPARK_MAIL_SIGNING_SECRET": SIGNING_SECRET},
    )
    send_issue(SAMPLE_SLUG, settings, mode="send")
    files = sorted((newsletter / "outbox" / SAMPLE_SLUG).glob("send-*.eml"))
    assert len(files) == 3
    for file in files:
        headers = headers_of(file.read_bytes().replace(b"\n", b"\r\n").replace(b"\r\r", b"\r"))
        assert b"=?" not in headers["to"] and b"=?" not in headers["list-unsubscribe"]
        assert headers["list-unsubscribe"].isascii()
