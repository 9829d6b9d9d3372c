"""SMTP provider against a real SMTP server (aiosmtpd) on 127.0.0.1: plain, STARTTLS + AUTH,
implicit TLS."""

from __future__ import annotations

import email as email_lib
import email.policy
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from conftest import SAMPLE_ISSUE, write_issue
from servers.smtp import Sink, free_port, serve, smtp_settings
from spark_mail.audience import Reader
from spark_mail.config import load_settings
from spark_mail.errors import ConfigError, EspError
from spark_mail.personalize import PersonalizedTemplate, prepare
from spark_mail.providers import get_provider
from spark_mail.providers.recorder import DryRunRecorder
from spark_mail.providers.smtp import SmtpProvider
from spark_mail.render import RenderedEmail, build

PASSWORD = "smtp-pass-s3cret"


def check_password(server: Any, session: Any, envelope: Any, mechanism: str, data: Any):
    ok = (
        isinstance(data, LoginPassword)
        and data.login == b"ed"
        and data.password == PASSWORD.encode()
    )
    return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535


@pytest.fixture
def email(newsletter: Path) -> RenderedEmail:
    return build(SAMPLE_ISSUE, load_settings(newsletter, env={}))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    # An EC key: made in a millisecond, where an RSA key took ~0.5 s of CPU on each worker
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-nodes", "-days", "1"),
            *("-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
def plain_server() -> Iterator[tuple[Sink, int]]:
    sink = Sink()
    controller = serve(sink)
    yield sink, controller.port
    controller.stop()


def test_test_send_is_multipart_with_unsubscribe_headers_and_the_built_html(
    plain_server, newsletter, email
):
    """The received message: multipart/alternative, List-Unsubscribe, Message-ID, Date, HTML."""
    sink, port = plain_server
    with get_provider(smtp_settings(newsletter, port)) as provider:
        provider.send_test(email, ["editor@example.com"])
    (received,) = sink.messages
    assert received["to"] == ["editor@example.com"]
    message = email_from(received["data"])
    assert message.get_content_type() == "multipart/alternative"
    # a long header may be folded right after its colon (RFC 5322 folding whitespace)
    assert message["List-Unsubscribe"].strip() == email.headers["List-Unsubscribe"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Message-ID"] and message["Date"]
    html = message.get_body(("html",))
    text = message.get_body(("plain",))
    assert html is not None and text is not None
    # SMTP carries lines ending in CRLF; the content is the built one
    assert html.get_content().replace("\r\n", "\n") == email.html
    assert text.get_content().replace("\r\n", "\n") == email.text


def email_from(data: bytes) -> Any:
    return email_lib.message_from_bytes(data, policy=email_lib.policy.default)


def readers(*addresses: str) -> list[Reader]:
    return [Reader(a, {"email": a}, n + 2) for n, a in enumerate(addresses)]


def own_list_template(root: Path, port: int) -> PersonalizedTemplate:
    settings = smtp_settings(root, port, SPARK_MAIL_SIGNING_SECRET="smtp-test-secret-0123456789")
    return prepare(root / "issues" / SAMPLE_ISSUE.name, settings)


@pytest.mark.slow
def test_readers_share_one_connection_and_get_their_own_copy(plain_server, newsletter):
    """Three readers: one SMTP connection, one message each, each with its own Message-ID."""
    sink, port = plain_server
    addresses = ["a@example.com", "b@example.com", "c@example.com"]
    template = own_list_template(newsletter, port)
    with get_provider(smtp_settings(newsletter, port)) as provider:
        result = provider.send_batch(template, readers(*addresses), "batch-1")
    assert [state for state, _ in result.outcomes] == ["sent"] * 3
    assert [m["to"] for m in sink.messages] == [[r] for r in addresses]
    assert len({m["peer"] for m in sink.messages}) == 1
    ids = {email_from(m["data"])["Message-ID"] for m in sink.messages}
    assert len(ids) == 3
    assert [email_from(m["data"])["To"] for m in sink.messages] == addresses


@pytest.fixture
def starttls_server(certificate) -> Iterator[tuple[Sink, int, ssl.SSLContext]]:
    """An SMTP server that requires STARTTLS and AUTH: (sink, port, client TLS context)."""
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    sink = Sink()
    controller = serve(
        sink, tls_context=server_tls, require_starttls=True, authenticator=check_password
    )
    yield sink, controller.port, ssl.create_default_context(cafile=str(cert))
    controller.stop()


def starttls_provider(root: Path, port: int, password: str, tls: ssl.SSLContext) -> SmtpProvider:
    settings = smtp_settings(
        root, port, "starttls", SPARK_MAIL_SMTP_USER="ed", SPARK_MAIL_SMTP_PASSWORD=password
    )
    return SmtpProvider(settings, ssl_context=tls)


def test_starttls_with_login(starttls_server, newsletter, email):
    """STARTTLS then AUTH LOGIN with the configured user and password."""
    sink, port, client_tls = starttls_server
    with starttls_provider(newsletter, port, PASSWORD, client_tls) as provider:
        provider.send_test(email, ["editor@example.com"])
    assert len(sink.messages) == 1
    assert sink.messages[0]["auth"]


def test_wrong_password_is_one_line_without_the_password(starttls_server, newsletter, email):
    """535: `smtp: 535 authentication failed ... - check SPARK_MAIL_SMTP_USER ...`."""
    sink, port, client_tls = starttls_server
    provider = starttls_provider(newsletter, port, "wrong-" + PASSWORD, client_tls)
    with provider, pytest.raises(EspError) as caught:
        provider.send_test(email, ["editor@example.com"])
    assert "authentication failed" in str(caught.value)
    assert PASSWORD not in str(caught.value)
    assert sink.messages == []


@pytest.mark.slow
def test_implicit_tls(certificate, newsletter, email):
    """SPARK_MAIL_SMTP_TLS=ssl talks TLS from the first byte (port 465 style)."""
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    sink = Sink()
    controller = serve(sink, ssl_context=server_tls)
    try:
        settings = smtp_settings(newsletter, controller.port, "ssl")
        client_tls = ssl.create_default_context(cafile=str(cert))
        with SmtpProvider(settings, ssl_context=client_tls) as provider:
            provider.send_test(email, ["editor@example.com"])
    finally:
        controller.stop()
    assert len(sink.messages) == 1


def test_starttls_refused_by_a_server_without_it(plain_server, newsletter, email):
    """A server that offers no STARTTLS: a clear error, nothing sent in the clear."""
    sink, port = plain_server
    provider = get_provider(smtp_settings(newsletter, port, "starttls"))
    with provider, pytest.raises(ConfigError, match="STARTTLS"):
        provider.send_test(email, ["editor@example.com"])
    assert sink.messages == []


def test_unreachable_server_is_one_line(newsletter, email):
    """Nothing listening: `smtp: connect to 127.0.0.1:N failed` with a hint."""
    provider = get_provider(smtp_settings(newsletter, free_port()))
    with provider, pytest.raises(EspError, match=r"smtp: connect to 127\.0\.0\.1:\d+ failed"):
        provider.send_test(email, ["editor@example.com"])


def test_dry_run_connects_to_nothing(plain_server, newsletter):
    """With a DryRunRecorder the message is recorded, not sent; the password is masked
    wherever it would show (here: the issue text happens to contain it)."""
    sink, port = plain_server
    recorder = DryRunRecorder()
    settings = smtp_settings(
        newsletter,
        port,
        SPARK_MAIL_SMTP_PASSWORD=PASSWORD,
        SPARK_MAIL_SIGNING_SECRET="smtp-test-secret-0123456789",
    )
    leaky = write_issue(newsletter, "leaky", "title: Leaky\ndate: 2025-01-01", f"Key {PASSWORD}.\n")
    template = prepare(leaky, settings)
    with get_provider(settings, recorder=recorder) as provider:
        provider.send_batch(template, readers("a@example.com"), "batch-1")
    assert sink.messages == []
    assert len(recorder.messages) == 1
    recorded = recorder.messages[0][1].decode()
    assert "a@example.com" in recorded
    assert PASSWORD not in recorded and "Key ********." in recorded


def test_bad_tls_setting_is_refused(newsletter):
    """SPARK_MAIL_SMTP_TLS=tls13 -> one clear line listing the choices."""
    with pytest.raises(ConfigError, match="starttls, ssl, none"):
        get_provider(smtp_settings(newsletter, 25, "tls13"))
