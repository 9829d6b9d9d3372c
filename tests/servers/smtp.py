"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it accepts, with the
raw bytes of DATA exactly as they arrived on the wire."""

from __future__ import annotations

import socket
from typing import Any

from aiosmtpd.controller import Controller


class Sink:
    """Keeps every message the server accepts, and the client port it came from."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            {
                "from": envelope.mail_from,
                "to": list(envelope.rcpt_tos),
                "data": envelope.original_content,
                "smtputf8": "SMTPUTF8" in (envelope.mail_options or []),
                "peer": session.peer,
                "auth": getattr(session, "authenticated", False),
            }
        )
        return "250 OK"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(sink: Sink, **kwargs: Any) -> Controller:
    """Start aiosmtpd on a free port (kwargs: enable_SMTPUTF8, tls_context, ...)."""
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return controller


def smtp_settings(root: Any, port: int, tls: str = "none", **env: str) -> Any:
    """spark-mail's settings for the newsletter in `root`, sending through the SMTP server on
    127.0.0.1:`port`; `env`: more SPARK_MAIL_* values (an audience, a signing secret)."""
    from spark_mail.config import load_settings

    return load_settings(
        root,
        env={
            "SPARK_MAIL_PROVIDER": "smtp",
            "SPARK_MAIL_SMTP_HOST": "127.0.0.1",
            "SPARK_MAIL_SMTP_PORT": str(port),
            "SPARK_MAIL_SMTP_TLS": tls,
            **env,
        },
    )
