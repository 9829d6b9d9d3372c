"""Scheduled sending: `dispatch` (the cron entry point), `schedule` / `unschedule` (the ESP's
own scheduler) and `status` (the ledger).

dispatch(settings, now): every issue in issues/ whose `send_at` is at or before `now` and
that the ledger does not list as sent or scheduled goes out, oldest `send_at` first, through
the same path as `spark-mail send --yes` (publish.send_issue: checks must pass, the ledger's
claim keeps it to one send even with overlapping runs, a crashed earlier run is reconciled).

- `send_at` without an offset is read in the newsletter's `timezone` setting;
- an issue due more than `late_window_hours` ago is reported as `late`, not sent, unless
  `catch_up` (a newsletter about Monday should not land on Thursday after a long outage);
  a send interrupted in time is still settled, however late;
- one failing issue never stops the others; an issue file that does not load is a failure;
- rows handed to the ESP's own scheduler whose time has passed are confirmed with the ESP
  (lookup) and recorded `sent`, so the ledger keeps telling what went out when;
- outcomes: sent, sent-earlier (a crashed run's send went out after all), scheduled-earlier
  (a crashed `schedule` reached the ESP's scheduler after all), already-sent
  (another run got there first), in-progress (another run is sending it now), dry-run,
  late, uncertain and failed. Only the last two are failures (exit 1).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spark_mail.config import Settings
from spark_mail.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    AlreadySent,
    ConfigError,
    IssueError,
    SparkMailError,
)
from spark_mail.files import issue_files
from spark_mail.ledger import (
    Ledger,
    LedgerEvent,
    SendInProgress,
    SendRecord,
    SendState,
    open_ledger,
)

if TYPE_CHECKING:
    import httpx

    from spark_mail.bulk import Progress

FAILURES = {"failed", "uncertain"}
# publish.send_issue's answers that dispatch passes on as they are
SETTLED = {"sent", "sent-earlier", "scheduled-earlier", "dry-run"}


# -- time ----------------------------------------------------------------------------------
def zone(settings: Settings) -> dt.tzinfo:
    """The newsletter's time zone (an IANA name), with a clear error for a wrong one."""
    return settings.tzinfo()


def in_zone(when: dt.datetime, settings: Settings) -> dt.datetime:
    """`when` with an offset: a naive time is read in the newsletter's time zone."""
    return when if when.tzinfo is not None else when.replace(tzinfo=zone(settings))


def parse_time(text: str, settings: Settings, what: str = "--now") -> dt.datetime:
    """An ISO 8601 date and time from the command line (no offset: the newsletter's zone)."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{what}: {text!r} is not an ISO 8601 date and time",
            hint="write it like 2025-01-20T07:00:00+01:00 (or without the offset for the "
            "newsletter's timezone)",
        ) from None
    return in_zone(when, settings)


def _ago(delta: dt.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


# -- dispatch ------------------------------------------------------------------------------
@dataclass
class DispatchItem:
    slug: str
    path: str
    outcome: str  # see the module docstring
    send_at: str | None = None
    message: str = ""
    provider: str = ""
    esp_ids: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.outcome in FAILURES


@dataclass
class DispatchReport:
    now: str
    items: list[DispatchItem]

    @property
    def failures(self) -> list[DispatchItem]:
        return [i for i in self.items if i.failed]

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURE if self.failures else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "exit_code": self.exit_code,
            "issues": [{**asdict(i), "failed": i.failed} for i in self.items],
        }


@dataclass(frozen=True)
class Due:
    """An issue that `dispatch` has to do something about."""

    path: Path
    slug: str
    send_at: dt.datetime | None
    outcome: str  # due | late | uncertain | failed
    message: str = ""


def due_issues(
    settings: Settings, now: dt.datetime, ledger: Ledger, *, catch_up: bool = False
) -> list[Due]:
    """What dispatch acts on at `now`, in `send_at` order; broken issue files first."""
    from spark_mail.issue import load_issue

    folder = settings.issues_path
    paths = issue_files(folder)
    window = dt.timedelta(hours=settings.late_window_hours)
    broken: list[Due] = []
    found: list[Due] = []
    for path in paths:
        try:
            issue = load_issue(path)
        except IssueError as exc:
            broken.append(Due(path, path.stem, None, "failed", str(exc)))
            continue
        if issue.send_at is None:
            continue  # a draft: nothing scheduled
        when = in_zone(issue.send_at, settings)
        if when > now:
            continue
        record = ledger.get(issue.slug)
        state = record.state if record else None
        if state in (SendState.SENT, SendState.SCHEDULED):
            continue
        if record is not None and state == SendState.UNCERTAIN:
            found.append(Due(path, issue.slug, when, "uncertain", _uncertain_message(record)))
        elif now - when > window and not catch_up and state != SendState.SENDING:
            message = (
                f"due {when.isoformat()}, {_ago(now - when)} ago (late window "
                f"{settings.late_window_hours:g} h): not sent - `spark-mail dispatch --catch-up` "
                f"sends it late; or remove its send_at"
            )
            found.append(Due(path, issue.slug, when, "late", message))
        else:
            found.append(Due(path, issue.slug, when, "due"))
    found.sort(key=lambda d: (d.send_at or now, d.slug))
    return broken + found


def _uncertain_message(record: SendRecord) -> str:
    return (
        f"uncertain - {record.last_error or 'an earlier send may have gone out'} - check in "
        f"the ESP whether it went out; if it did not, run `spark-mail send {record.slug} "
        "--resend-uncertain`"
    )


def dispatch(
    settings: Settings,
    now: dt.datetime | None = None,
    *,
    dry_run: bool = False,
    catch_up: bool = False,
    transport: httpx.BaseTransport | None = None,
    on_item: Callable[[DispatchItem], None] | None = None,
    progress: Callable[[str], Progress | None] | None = None,
) -> DispatchReport:
    """Send every due issue once (see the module docstring). Raises only for what stops the
    whole run before anything is sent: a wrong timezone, an unreadable or locked ledger."""
    from spark_mail.publish import send_issue
    from spark_mail.recovery import SendUncertain

    now = in_zone(now, settings) if now else dt.datetime.now(dt.UTC)
    zone(settings)  # a wrong timezone fails the run up front, not issue by issue
    items: list[DispatchItem] = []
    with open_ledger(settings) as ledger:
        if ledger.exists():
            ledger.open()  # corrupt or locked: one error, before anything is sent
        plan = due_issues(settings, now, ledger, catch_up=catch_up)
        for due in plan:
            item = DispatchItem(
                slug=due.slug,
                path=str(due.path),
                outcome=due.outcome,
                send_at=due.send_at.isoformat() if due.send_at else None,
                message=due.message,
            )
            if due.outcome == "due":
                try:
                    result = send_issue(
                        due.path,
                        settings,
                        mode="dry-run" if dry_run else "send",
                        now=now,
                        transport=transport,
                        progress=progress(due.slug) if progress else None,
                    )
                except SendInProgress as exc:
                    item.outcome, item.message = "in-progress", exc.message
                except SendUncertain as exc:
                    item.outcome, item.message = "uncertain", str(exc)
                except AlreadySent as exc:
                    # Another run finished it between our look and our claim, or it is
                    # uncertain: the ledger says which.
                    record = ledger.get(due.slug)
                    if record is not None and record.state == SendState.UNCERTAIN:
                        item.outcome, item.message = "uncertain", _uncertain_message(record)
                    else:
                        item.outcome, item.message = "already-sent", exc.message
                except SparkMailError as exc:
                    item.outcome, item.message = "failed", str(exc)
                else:
                    item.outcome = result.state if result.state in SETTLED else "sent"
                    item.provider, item.esp_ids = result.provider, result.esp_ids
                    item.message = result.subject
            items.append(item)
            if on_item is not None:
                on_item(item)
        if not dry_run:
            confirm_scheduled_sends(settings, now, ledger, transport)
    return DispatchReport(now=now.isoformat(), items=items)


def confirm_scheduled_sends(
    settings: Settings,
    now: dt.datetime,
    ledger: Ledger,
    transport: httpx.BaseTransport | None = None,
) -> list[str]:
    """Rows handed to the ESP's scheduler whose time has passed: ask the ESP and record
    `sent` when it says so, so the ledger keeps telling what went out when. Best effort:
    an ESP that cannot say yet is asked again on the next run. Returns the slugs recorded."""
    from spark_mail.providers import get_provider
    from spark_mail.providers.base import Capability, DeliveryState

    passed = [
        r
        for r in ledger.all()
        if r.state == SendState.SCHEDULED
        and r.scheduled_for
        and dt.datetime.fromisoformat(r.scheduled_for) <= now
    ]
    if not passed:
        return []
    confirmed: list[str] = []
    try:
        provider = get_provider(settings, transport)
    except SparkMailError:
        return confirmed  # a misconfigured provider already failed the due issues
    with provider:
        if Capability.LOOKUP not in provider.capabilities:
            return []
        for record in passed:
            if record.provider != provider.name:
                continue
            try:
                ledger.acquire(record.slug)  # not while unschedule is busy with it
                if provider.lookup(record.esp_ids) == DeliveryState.SENT:
                    ledger.mark_sent(
                        record.slug, now=now, note=f"{provider.name} sent it as scheduled"
                    )
                    confirmed.append(record.slug)
            except SparkMailError:
                pass  # asked again next run; a scheduled send needs nothing from us
            finally:
                ledger.release(record.slug)
    return confirmed


# -- schedule / unschedule -------------------------------------------------------------------
@dataclass
class ScheduleResult:
    slug: str
    provider: str
    state: str  # scheduled | unscheduled | sent-earlier | scheduled-earlier
    at: str | None = None
    esp_ids: dict[str, str] = field(default_factory=dict)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def schedule_issue(
    issue: str | Path,
    settings: Settings,
    *,
    at: dt.datetime | None = None,
    now: dt.datetime | None = None,
    force: bool = False,
    transport: httpx.BaseTransport | None = None,
) -> ScheduleResult:
    """Hand the issue to the ESP's own scheduler for `at` (default: its send_at)."""
    from spark_mail.ledger import StaleSend
    from spark_mail.providers import get_provider
    from spark_mail.providers.base import Capability
    from spark_mail.publish import load_email, preflight, settle_failure
    from spark_mail.recovery import reconcile

    now = in_zone(now, settings) if now else dt.datetime.now(dt.UTC)
    with get_provider(settings, transport) as provider:
        provider.require(Capability.SCHEDULE)  # says so, and points to `dispatch`
        email = load_email(issue, settings)
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
        preflight(email, settings, force=force)
        slug = email.slug
        with open_ledger(settings) as ledger:
            try:
                ledger.claim(
                    slug, email.content_hash, provider.name, "schedule", now=now, scheduled_for=when
                )
            except StaleSend as stale:
                action = reconcile(ledger, stale.record, provider, email, now=now)
                if action != "resend":
                    record = ledger.get(slug)
                    return ScheduleResult(
                        slug,
                        provider.name,
                        f"{action}-earlier",
                        record.scheduled_for if record else None,
                        record.esp_ids if record else {},
                    )
            try:
                result = provider.schedule(
                    email, when, on_ids=lambda ids: ledger.record_ids(slug, ids, now=now)
                )
            except SparkMailError as err:
                settle_failure(ledger, slug, err, provider, now)
                raise
            record = ledger.mark_scheduled(slug, when, result.esp_ids, now=now)
            return ScheduleResult(
                slug, provider.name, "scheduled", record.scheduled_for, record.esp_ids
            )


def unschedule_issue(
    issue: str | Path,
    settings: Settings,
    *,
    now: dt.datetime | None = None,
    transport: httpx.BaseTransport | None = None,
) -> ScheduleResult:
    """Take an issue back from the ESP's scheduler and forget the ledger row."""
    from spark_mail.issue import load_issue, resolve_issue_path
    from spark_mail.providers import get_provider
    from spark_mail.providers.base import Capability, DeliveryState

    path = resolve_issue_path(str(issue), settings.issues_path)
    slug = path.stem
    with open_ledger(settings) as ledger:
        record = ledger.get(slug)
        if record is None or record.state != SendState.SCHEDULED:
            state = record.state if record else "not in the ledger"
            raise ConfigError(
                f"{slug}: not scheduled with an ESP (state: {state})",
                hint="`spark-mail status` lists what is scheduled",
            )
        with get_provider(settings, transport) as provider:
            if provider.name != record.provider:
                raise ConfigError(
                    f"{slug}: scheduled with {record.provider}, but the provider is now "
                    f"{provider.name}",
                    hint=f"set SPARK_MAIL_PROVIDER={record.provider} to unschedule it",
                )
            provider.require(Capability.SCHEDULE)
            ledger.acquire(slug)  # not while a dispatch or send is busy with it
            can_ask = Capability.LOOKUP in provider.capabilities
            if can_ask and provider.lookup(record.esp_ids) == DeliveryState.SENT:
                ledger.mark_sent(slug, now=now, note=f"{provider.name} sent it as scheduled")
                raise AlreadySent(
                    f"{slug}: {provider.name} already sent it (it was due {record.scheduled_for})",
                    hint="the ledger now says `sent`",
                )
            provider.unschedule(record.esp_ids)
            ledger.forget(slug, f"unscheduled from {provider.name}")
    note = ""
    try:
        if path.is_file() and load_issue(path).send_at is not None:
            note = (
                "its send_at is still set, so `spark-mail dispatch` will send it then; "
                "remove send_at to hold it"
            )
    except IssueError:
        pass
    return ScheduleResult(
        slug, provider.name, "unscheduled", record.scheduled_for, record.esp_ids, note
    )


# -- status --------------------------------------------------------------------------------
@dataclass
class StatusRow:
    record: SendRecord
    state: str  # the ledger's state; a `sending` nobody holds shows as `interrupted`
    history: list[LedgerEvent] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self.record)
        data["state"] = self.state
        data["history"] = [asdict(e) for e in self.history]
        return data


def status(settings: Settings, slug: str | None = None) -> list[StatusRow]:
    """The ledger's rows (one issue with its history, or all), never creating the ledger."""
    with open_ledger(settings) as ledger:
        if slug is not None:
            slug = Path(slug).stem if slug.endswith(".md") else slug
            record = ledger.get(slug)
            records = [record] if record else []
        else:
            records = ledger.all()
        rows = []
        for record in records:
            state = str(record.state)
            if record.state == SendState.SENDING and not ledger.held_elsewhere(record.slug):
                state = "interrupted"  # its process died; the next send or dispatch settles it
            history = ledger.history(record.slug) if slug is not None else []
            rows.append(StatusRow(record, state, history))
    return rows
