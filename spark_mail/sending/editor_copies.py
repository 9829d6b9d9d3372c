"""`send --test`: a `[TEST]` copy to editors (`--to` or SPARK_MAIL_TEST_RECIPIENTS).

Never the audience endpoint, never recorded in the ledger, and it can be repeated: each
test send carries its own idempotency key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from spark_mail.config import Settings
from spark_mail.errors import ConfigError
from spark_mail.providers.base import Capability, check_addresses
from spark_mail.sending.outcomes import Outcome, SendReport

if TYPE_CHECKING:
    from spark_mail.render import RenderedEmail
    from spark_mail.sending import PreparedSend

TEST_PREFIX = "[TEST] "


def test_recipients(settings: Settings, to: Sequence[str] | None) -> list[str]:
    if to:
        return check_addresses(to, "--to")
    if not settings.test_recipients:
        raise ConfigError(
            "no test recipients",
            hint="pass --to ADDR, or set SPARK_MAIL_TEST_RECIPIENTS=you@example.com in .env",
        )
    return check_addresses(settings.test_recipients, "SPARK_MAIL_TEST_RECIPIENTS")


def with_test_subject(email: RenderedEmail) -> RenderedEmail:
    subject = (
        email.subject if email.subject.startswith(TEST_PREFIX) else TEST_PREFIX + email.subject
    )
    return dataclasses.replace(email, subject=subject)


def send_test_copies(prepared: PreparedSend) -> SendReport:
    from spark_mail.sending import base_report

    provider = prepared.provider
    provider.require(Capability.TEST)
    copy = with_test_subject(prepared.email)
    sent = provider.send_test(copy, prepared.recipients)
    report = base_report(
        prepared,
        Outcome.TESTED,
        requests=sent.requests,
        recipients=list(prepared.recipients),
        esp_ids=dict(sent.esp_ids),
    )
    report.subject = copy.subject
    if prepared.checks.errors:
        report.warnings.append("a real send is refused until the check errors are fixed")
    if provider.name == "outbox":
        report.folder = str(provider.settings.root / "outbox" / copy.slug)
    return report
