"""The ESP's own scheduler: `schedule` hands an issue over for a time, `unschedule` takes it
back, and dispatch confirms scheduled sends whose time has passed."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING

from spark_mail.clock import SYSTEM_CLOCK, Clock
from spark_mail.config import Settings
from spark_mail.errors import AlreadySent, ConfigError, EspError, IssueError, SparkMailError
from spark_mail.ledger import Ledger, SendRecord, SendState, open_ledger
from spark_mail.providers.base import Capability, DeliveryState
from spark_mail.scheduling.times import in_zone
from spark_mail.sending.lifecycle import SendLifecycle
from spark_mail.sending.outcomes import Outcome, SendReport
from spark_mail.sending.own_list import SCHEDULED_READERS, own_list_wanted

if TYPE_CHECKING:
    from spark_mail.render import RenderedEmail


def schedule_issue(
    issue: str | Path,
    settings: Settings,
    *,
    at: dt.datetime | None = None,
    force: bool = False,
    clock: Clock = SYSTEM_CLOCK,
) -> SendReport:
    """Hand the issue to the ESP's own scheduler for `at` (default: its send_at)."""
    from spark_mail.issue import resolve_issue_path
    from spark_mail.providers import get_provider
    from spark_mail.render import build
    from spark_mail.sending import SendRequest, run_checks

    # Refused before the provider is set up: "cannot schedule" comes before "no API key".
    with get_provider(settings, clock=clock, need=Capability.SCHEDULE) as provider:
        path = resolve_issue_path(str(issue), settings.issues_path)
        if own_list_wanted(settings, provider):
            from spark_mail.scheduling.own_list import schedule_own_list

            return schedule_own_list(path, settings, provider, at, force=force, clock=clock)
        email = build(path, settings)
        when = schedule_time(email, at, settings, clock.now())
        run_checks(email, settings, SendRequest(force=force), block=True)
        report = SendReport(slug=email.slug, outcome=Outcome.SCHEDULED, mode="schedule")
        report.provider, report.subject = provider.name, email.subject
        with (
            open_ledger(settings) as ledger,
            SendLifecycle(ledger, provider, email, clock, source=email.source) as life,
        ):
            begun = life.begin("schedule", scheduled_for=when)
            if begun.outcome is not None:
                report.outcome = begun.outcome
                if begun.record is not None:
                    report.at, report.esp_ids = begun.record.scheduled_for, begun.record.esp_ids
                return report
            try:
                result = provider.schedule(email, when, life.record_ids, begun.known_ids)
            except SparkMailError as err:
                life.fail(err)
            record = life.scheduled(when, result.esp_ids)
            report.at, report.esp_ids = record.scheduled_for, dict(record.esp_ids)
            return report


def schedule_time(
    email: RenderedEmail, at: dt.datetime | None, settings: Settings, now: dt.datetime
) -> dt.datetime:
    """When to schedule the issue for: `at`, else its send_at; never in the past."""
    when = at or email.send_at
    if when is None:
        raise ConfigError(
            f"{email.slug}: no time to schedule it for",
            hint="pass --at 2025-01-20T07:00:00+01:00 or give the issue a send_at",
        )
    when = in_zone(when, settings)
    if when <= now:
        raise ConfigError(
            f"{email.slug}: {when.isoformat()} is in the past",
            hint=f"pick a later --at, or send it now with `spark-mail send {email.slug}`",
        )
    return when


def unschedule_issue(
    issue: str | Path, settings: Settings, *, clock: Clock = SYSTEM_CLOCK
) -> SendReport:
    """Take an issue back from the ESP's scheduler and forget the ledger row."""
    from spark_mail.issue import load_issue, resolve_issue_path, slug_of
    from spark_mail.providers import get_provider

    path = resolve_issue_path(str(issue), settings.issues_path)
    slug = slug_of(path)
    with open_ledger(settings) as ledger:
        record = ledger.get(slug)
        if record is None or record.state != SendState.SCHEDULED:
            state = record.state if record else "not in the ledger"
            raise ConfigError(
                f"{slug}: not scheduled with an ESP (state: {state})",
                hint="`spark-mail status` lists what is scheduled",
            )
        with get_provider(settings, clock=clock, need=Capability.SCHEDULE) as provider:
            if provider.name != record.provider:
                raise ConfigError(
                    f"{slug}: scheduled with {record.provider}, but the provider is now "
                    f"{provider.name}",
                    hint=f"set SPARK_MAIL_PROVIDER={record.provider} to unschedule it",
                )
            if not ledger.locks.try_acquire(slug):  # not while a dispatch or send has it
                raise ConfigError(f"{slug}: is being sent right now", hint="try again later")
            can_ask = Capability.LOOKUP in provider.capabilities
            if can_ask and provider.lookup(record.esp_ids) == DeliveryState.SENT:
                note = f"{provider.name} sent it as scheduled"
                ledger.mark_sent(slug, clock.now(), note=note)
                raise AlreadySent(
                    f"{slug}: {provider.name} already sent it (it was due {record.scheduled_for})",
                    hint="the ledger now says `sent`",
                    slug=slug,
                )
            try:
                provider.unschedule(record.esp_ids)
            except EspError as exc:
                if exc.status != 404:
                    raise
                # Gone already (an earlier unschedule whose answer was lost, or removed in
                # the ESP's dashboard): nothing is scheduled there any more.
            # own list: its reader rows go with it (nobody has it now)
            ledger.forget(slug, f"unscheduled from {provider.name}", clock.now())
    report = SendReport(slug=slug, outcome=Outcome.UNSCHEDULED, mode="unschedule")
    report.provider, report.at, report.esp_ids = provider.name, record.scheduled_for, record.esp_ids
    try:
        if path.is_file() and load_issue(path).send_at is not None:
            report.message = (
                "its send_at is still set, so `spark-mail dispatch` will send it then; "
                "remove send_at to hold it"
            )
    except IssueError:
        pass
    return report


def confirm_scheduled_sends(
    settings: Settings, now: dt.datetime, ledger: Ledger, clock: Clock = SYSTEM_CLOCK
) -> list[SendReport]:
    """Rows handed to the ESP's scheduler whose time has passed: ask the ESP and record
    `sent` when it says so, so the ledger keeps telling what went out when. One the ESP says
    did NOT go out (removed in its dashboard) is reported, run after run, as a failure that
    needs a decision. An ESP that cannot say yet is asked again on the next run."""
    from spark_mail.providers import get_provider

    passed = [r for r in ledger.all() if r.state == SendState.SCHEDULED and _passed(r, now)]
    if not passed:
        return []
    try:
        provider = get_provider(settings, clock=clock)
    except SparkMailError:
        return []  # a misconfigured provider already failed the due issues
    problems: list[SendReport] = []
    with provider:
        can_ask = Capability.LOOKUP in provider.capabilities
        for record in passed:
            own_list = SCHEDULED_READERS in record.esp_ids
            if not (can_ask or own_list) or record.provider != provider.name:
                continue
            if not ledger.locks.try_acquire(record.slug):
                continue
            try:
                # Own list: the ESP accepted every reader's copy for that time.
                answer = DeliveryState.SENT if own_list else provider.lookup(record.esp_ids)
                if answer == DeliveryState.SENT:
                    note = f"{provider.name} sent it as scheduled"
                    ledger.mark_sent(record.slug, clock.now(), note=note)
                elif answer == DeliveryState.NOT_SENT:
                    problems.append(_vanished(record, provider.name))
            except SparkMailError:
                pass  # asked again next run; a scheduled send needs nothing from us
            finally:
                ledger.locks.release(record.slug)
    return problems


def _vanished(record: SendRecord, provider: str) -> SendReport:
    return SendReport(
        slug=record.slug,
        outcome=Outcome.FAILED,
        provider=provider,
        at=record.scheduled_for,
        message=(
            f"{record.slug}: scheduled with {provider} for {record.scheduled_for}, but "
            f"{provider} says it did not go out (removed there?) - `spark-mail unschedule "
            f"{record.slug}`, then send it, or leave it"
        ),
    )


def _passed(record: SendRecord, now: dt.datetime) -> bool:
    when = record.scheduled_for
    try:
        return bool(when) and dt.datetime.fromisoformat(str(when)) <= now
    except ValueError:
        return False
