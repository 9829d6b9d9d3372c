"""`schedule` for your own subscriber list, on ESPs that schedule each batch (Mailgun
`o:deliverytime`, SendGrid `send_at` + a batch id): every reader's copy is handed to the ESP
now, in the same batches as a send (the same ledger rows, the same fault rule), to be
delivered at the time. Readers are recorded as accepted and the issue as `scheduled`; once
the time has passed, `dispatch` records it `sent` (the ESP holds every copy; only
`unschedule` can take them back, where the ESP can: SendGrid cancels its batch id).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from spark_mail.clock import Clock
from spark_mail.config import Settings
from spark_mail.ledger import open_ledger
from spark_mail.providers.base import Provider
from spark_mail.sending.lifecycle import SendLifecycle
from spark_mail.sending.outcomes import Outcome, SendReport


def schedule_own_list(
    path: Path,
    settings: Settings,
    provider: Provider,
    at: dt.datetime | None,
    *,
    force: bool,
    clock: Clock,
) -> SendReport:
    """Check everything a send checks, refuse a time the ESP cannot schedule, then hand
    every reader's copy over for `at` (default: the issue's send_at)."""
    from spark_mail.scheduling.esp import schedule_time
    from spark_mail.sending import PreparedSend, SendRequest, base_report, run_checks
    from spark_mail.sending.own_list import OwnListOptions, prepare_own_list, send_own_list

    own = prepare_own_list(path, settings, provider, skip_invalid=False)
    email = own.sample_copy()
    when = schedule_time(email, at, settings, clock.now())
    provider.check_batch_schedule(when)  # before anything is claimed or sent
    request = SendRequest(force=force)
    checks = run_checks(email, settings, request, block=True)
    report = base_report(
        PreparedSend(request, settings, email, provider, checks, own), Outcome.SCHEDULED
    )
    report.mode = "schedule"
    with (
        open_ledger(settings) as ledger,
        SendLifecycle(ledger, provider, email, clock, own_list=True) as life,
    ):
        options = OwnListOptions(deliver_at=when)
        outcome, summary = send_own_list(own, life, options, report.warnings)
        report.outcome = Outcome(outcome)
        record = ledger.get(email.slug)
        report.esp_ids = dict(record.esp_ids) if record else {}
        report.at = record.scheduled_for if record else when.isoformat()
    report.requests, report.recipients = summary.requests, summary.sent
    report.summary = summary.to_json()
    return report
