"""Email service providers: one module per ESP behind the protocol in `base.py`.

base.py       the protocol (Provider), capabilities, results
http.py       HttpProvider: one client, the retry rule, rate limit, error wording
deadline.py   the transport that bounds a whole request
recorder.py   DryRunRecorder: dry runs record instead of sending
mime.py       the MIME message SMTP and the outbox hand over
registry.py   get_provider(settings): the configured one
buttondown.py resend.py postmark.py smtp.py outbox.py
"""

from __future__ import annotations

from spark_mail.providers.registry import PROVIDERS, get_provider, provider_name

__all__ = ["PROVIDERS", "get_provider", "provider_name"]
