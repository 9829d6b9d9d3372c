"""The real send, through the send lifecycle: to the audience the ESP keeps (one request,
Buttondown or Resend), or to your own list (spark_mail/sending/own_list.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spark_mail.clock import Clock
from spark_mail.errors import SparkMailError
from spark_mail.ledger import open_ledger
from spark_mail.providers.base import Capability
from spark_mail.sending.lifecycle import SendLifecycle
from spark_mail.sending.outcomes import Outcome, SendReport

if TYPE_CHECKING:
    from spark_mail.sending import PreparedSend


def send_for_real(prepared: PreparedSend, clock: Clock) -> SendReport:
    from spark_mail.sending import base_report
    from spark_mail.sending.own_list import OwnListOptions, send_own_list

    provider, email, request = prepared.provider, prepared.email, prepared.request
    own = prepared.own
    with (
        open_ledger(prepared.settings) as ledger,
        SendLifecycle(
            ledger,
            provider,
            own.template.email if own is not None else email,  # the issue's, not a reader's
            clock,
            own_list=own is not None,
            source=email.source,
        ) as life,
    ):
        if own is not None:
            options = OwnListOptions(
                request.limit,
                request.skip_invalid,
                request.resend_uncertain,
                request.progress,
                request.still_wanted,
            )
            report = base_report(prepared, Outcome.SENT)
            outcome, summary = send_own_list(own, life, options, report.warnings)
            report.outcome = Outcome(outcome)
            report.requests = summary.requests
            report.recipients = summary.sent
            report.refused = dict(summary.refused_readers)
            report.summary = summary.to_json()
            record = ledger.get(email.slug)
            report.esp_ids = dict(record.esp_ids) if record else {}
            return report
        provider.require(Capability.SEND)
        begun = life.begin("send", allow_uncertain=request.resend_uncertain)
        if begun.outcome is not None:
            record = begun.record
            return base_report(
                prepared, begun.outcome, esp_ids=dict(record.esp_ids) if record else {}
            )
        try:
            sent = provider.send(email, life.record_ids, begun.known_ids)
        except SparkMailError as err:
            life.fail(err)
        life.sent(sent.esp_ids)
        return base_report(
            prepared,
            Outcome.SENT,
            requests=sent.requests,
            recipients=sent.recipients,
            esp_ids=dict(sent.esp_ids),
            refused=dict(sent.refused),
        )
