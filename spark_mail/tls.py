"""TLS contexts, built once per process and shared.

Building a context loads a whole CA store (25-50 ms of CPU), and a run makes many clients: a
cron dispatch one per provider, `check` one for its link checks, the desk one per SNS
certificate it fetches. An SSLContext may be shared across threads and connections. Each is
keyed by SSL_CERT_FILE and SSL_CERT_DIR, so a process that changes them gets a context
built after the change.
"""

from __future__ import annotations

import os
import ssl
import threading
from collections.abc import Callable

_contexts: dict[tuple[str, str, str], ssl.SSLContext] = {}
_lock = threading.Lock()


def _shared(kind: str, build: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    key = (kind, os.environ.get("SSL_CERT_FILE", ""), os.environ.get("SSL_CERT_DIR", ""))
    with _lock:
        context = _contexts.get(key)
        if context is None:
            context = _contexts[key] = build()
        return context


def https_context() -> ssl.SSLContext:
    """httpx's context (the CA store SSL_CERT_FILE or SSL_CERT_DIR names, else certifi's):
    every HTTP client (providers, link checks, the desk's webhook fetches)."""

    def build() -> ssl.SSLContext:
        import httpx

        return httpx.create_ssl_context()

    return _shared("https", build)


def system_context() -> ssl.SSLContext:
    """ssl's default context (the system's trust store; OpenSSL reads SSL_CERT_FILE and
    SSL_CERT_DIR itself): every SMTP provider."""
    return _shared("system", ssl.create_default_context)
