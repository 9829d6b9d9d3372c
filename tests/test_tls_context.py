"""Every client shares one TLS context per process (spark_mail.tls): building one loads the
whole CA bundle (25-50 ms of CPU), and a run (a cron dispatch, a send, a `check`, the desk
fetching SNS certificates) makes many clients."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from spark_mail import tls
from spark_mail.config import load_settings
from spark_mail.providers import get_provider

HTTP_PROVIDERS = ["buttondown", "resend", "postmark", "mailgun", "sendgrid"]


def ca_loads(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """As in a fresh process (no context built yet); each CA bundle load is counted into
    the list returned."""
    monkeypatch.setattr(tls, "_contexts", {})
    loads: list[object] = []
    load = ssl.SSLContext.load_verify_locations

    def counted(self: ssl.SSLContext, *args: Any, **kwargs: Any) -> None:
        loads.append(self)
        load(self, *args, **kwargs)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counted)
    return loads


def test_every_http_client_shares_one_tls_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clients of each HTTP provider load the CA bundle once between them, and every
    connection pool holds that one context (a client building its own context fails this)."""
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    loads = ca_loads(monkeypatch)
    contexts = []
    for provider in HTTP_PROVIDERS * 2:
        env = {
            "SPARK_MAIL_PROVIDER": provider,
            "SPARK_MAIL_API_KEY": "key",
            "SPARK_MAIL_API_URL": "https://api.example.invalid",
            "SPARK_MAIL_MAILGUN_DOMAIN": "mg.example.com",
        }
        client: Any = get_provider(load_settings(tmp_path, env=env)).client  # type: ignore[attr-defined]
        contexts.append(client._transport._pool._ssl_context)  # httpcore's pool keeps it here
    assert len(loads) == 1
    assert all(context is tls.https_context() for context in contexts)


def test_every_smtp_provider_shares_one_tls_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four SMTP providers (as four sends of one process would make) load the system's CA
    store once between them and hold the same context."""
    loads = ca_loads(monkeypatch)
    monkeypatch.setattr(ssl.SSLContext, "set_default_verify_paths", counted_paths(loads))
    env = {"SPARK_MAIL_PROVIDER": "smtp", "SPARK_MAIL_SMTP_HOST": "smtp.example.invalid"}
    providers: list[Any] = [get_provider(load_settings(tmp_path, env=env)) for _ in range(4)]
    assert len(loads) == 1
    assert all(p.ssl_context is tls.system_context() for p in providers)


def counted_paths(loads: list[object]) -> Any:
    """set_default_verify_paths (how ssl.create_default_context loads the system's store
    when no CA file is named), counted into `loads`."""
    paths = ssl.SSLContext.set_default_verify_paths

    def counted(self: ssl.SSLContext) -> None:
        loads.append(self)
        paths(self)

    return counted


def test_link_checks_and_sns_fetches_share_the_https_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`check`'s link checker and the desk's SNS certificate fetch made a client (and a
    context) per call: two of each now load the CA bundle once between them."""
    import asyncio

    from spark_mail.checks.links import check_links_async
    from spark_mail.desk.webhooks.ses import fetch
    from spark_mail.errors import WebhookRefused

    loads = ca_loads(monkeypatch)
    closed = "http://127.0.0.1:9/"  # the discard port: nothing listens, refused at once
    for _ in range(2):
        (result,) = asyncio.run(check_links_async({closed: "body"}, timeout=5))
        assert not result.ok
        with pytest.raises(WebhookRefused):
            asyncio.run(fetch(closed, "the certificate cannot be fetched"))
    assert len(loads) == 1
