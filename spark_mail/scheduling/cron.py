"""`dispatch`, the cron entry point: every issue whose `send_at` has come goes out, once.

Every issue in issues/ whose `send_at` is at or before now and that the ledger does not
list as sent or scheduled goes out, oldest `send_at` first, through the same path as
`spark-mail send --yes` (checks must pass; the send lifecycle keeps it to one send even
with overlapping runs and settles an interrupted earlier run first).

- `send_at` without an offset is read in the newsletter's `timezone` setting;
- an issue due more than `late_window_hours` ago is reported `late`, not sent, unless
  `catch_up` (a newsletter about Monday should not land on Thursday after an outage);
  a send interrupted in time is still settled, however late;
- one failing or unreadable issue never stops the others: it is one `failed` line;
- `as_of` (`--now`) pretends it is another time to see what is due; later than the real
  clock only with `dry_run` (a real send happens now); the ledger records the real time;
- rows handed to the ESP's own scheduler whose time has passed are confirmed with the ESP
  and recorded `sent`;
- no issues folder, or no issue file in it, is an error (exit 2), not a silent run;
- outcomes: see spark_mail/sending/outcomes.py; failed, uncertain and unconfirmed make the
  run exit 1.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spark_mail.clock import SYSTEM_CLOCK, Clock
from spark_mail.config import Settings
from spark_mail.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    AlreadySent,
    ConfigError,
    IssueError,
    SendUncertain,
    SendUnconfirmed,
    SparkMailError,
    located,
    printable,
)
from spark_mail.files import issue_files
from spark_mail.ledger import Ledger, SendRecord, SendState, open_ledger
from spark_mail.scheduling.times import ago, in_zone, zone
from spark_mail.sending.batches import Progress
from spark_mail.sending.lifecycle import outbox_rehearsal
from spark_mail.sending.outcomes import DELIVERED, Outcome, SendReport, refresh_archive

log = logging.getLogger("spark_mail.dispatch")
# How far ahead of the real clock `--now` may be without --dry-run (clock skew, typing).
FUTURE_SLACK = dt.timedelta(minutes=1)


@dataclass
class DispatchReport:
    now: str
    items: list[SendReport]
    site: str | None = None  # the web archive was rebuilt here after the sends
    site_problem: str | None = None  # ... or why not (the sends stand)

    @property
    def failures(self) -> list[SendReport]:
        return [i for i in self.items if i.failed]

    @property
    def exit_code(self) -> int:
        return EXIT_FAILURE if self.failures else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "now": self.now,
            "exit_code": self.exit_code,
            "issues": [i.to_json() for i in self.items],
            "site": self.site,
            "site_problem": self.site_problem,
        }


@dataclass(frozen=True)
class Due:
    """An issue that `dispatch` has to do something about."""

    path: Path
    slug: str
    send_at: dt.datetime | None
    outcome: Outcome  # due | late | uncertain | failed
    message: str = ""


def due_issues(
    settings: Settings, now: dt.datetime, ledger: Ledger, *, catch_up: bool = False
) -> list[Due]:
    """What dispatch acts on at `now`, in `send_at` order; broken issue files first."""
    from spark_mail.issue import load_issue

    window = dt.timedelta(hours=settings.late_window_hours)
    broken: list[Due] = []
    found: list[Due] = []
    for path in issue_files(settings.issues_path):
        try:
            issue = load_issue(path)
            when = in_zone(issue.send_at, settings) if issue.send_at else None
        except IssueError as exc:
            broken.append(Due(path, printable(path.stem), None, Outcome.FAILED, str(exc)))
            continue
        except Exception as exc:  # a bug must not keep the other due issues from going out
            log.exception("dispatch: %s could not be read", path)
            message = f"{located(path)}: could not be read ({type(exc).__name__})"
            broken.append(Due(path, printable(path.stem), None, Outcome.FAILED, message))
            continue
        if when is None or when > now:
            continue  # a draft, or not yet
        record = ledger.get(issue.slug)
        state = record.state if record else None
        if state in (SendState.SENT, SendState.SCHEDULED):
            if not outbox_rehearsal(ledger, record, settings.provider):
                continue
            record = state = None  # only the outbox has it: due like an unsent issue
        if record is not None and state == SendState.UNCERTAIN:
            found.append(Due(path, issue.slug, when, Outcome.UNCERTAIN, uncertain_message(record)))
        elif now - when > window and not catch_up and state != SendState.SENDING:
            message = (
                f"due {when.isoformat()}, {ago(now - when)} ago (late window "
                f"{settings.late_window_hours:g} h): not sent - `spark-mail dispatch --catch-up` "
                f"sends it late; or remove its send_at"
            )
            found.append(Due(path, issue.slug, when, Outcome.LATE, message))
        else:
            found.append(Due(path, issue.slug, when, Outcome.DUE))
    found.sort(key=lambda d: (d.send_at or now, d.slug))
    return broken + found


def uncertain_message(record: SendRecord) -> str:
    return (
        f"uncertain - {record.last_error or 'an earlier send may have gone out'} - check in "
        f"the ESP whether it went out; if it did not, run `spark-mail send {record.slug} "
        "--resend-uncertain`"
    )


def dispatch(
    settings: Settings,
    as_of: dt.datetime | None = None,
    *,
    dry_run: bool = False,
    catch_up: bool = False,
    skip_invalid: bool = False,
    clock: Clock = SYSTEM_CLOCK,
    on_item: Callable[[SendReport], None] | None = None,
    progress: Callable[[str], Progress | None] | None = None,
) -> DispatchReport:
    """Send every due issue once (see the module docstring). Raises only for what stops the
    whole run before anything is sent: a wrong timezone or `--now`, an unusable ledger."""
    real_now = clock.now()
    if as_of is not None and as_of > real_now + FUTURE_SLACK and not dry_run:
        raise ConfigError(
            f"--now {as_of.isoformat()} is later than the real time "
            f"({real_now.isoformat(timespec='seconds')}): a real send happens now, not then",
            hint="add --dry-run to see what would be due then",
        )
    now = in_zone(as_of, settings) if as_of else real_now
    zone(settings)  # a wrong timezone fails the run up front, not issue by issue
    refuse_no_issues(settings)
    items: list[SendReport] = []
    with open_ledger(settings) as ledger:
        if ledger.exists():
            ledger.open()  # corrupt or locked: one error, before anything is sent
        for due in due_issues(settings, now, ledger, catch_up=catch_up):
            item = SendReport(
                slug=due.slug,
                outcome=due.outcome,
                mode="dry-run" if dry_run else "send",
                path=str(due.path),
                send_at=due.send_at.isoformat() if due.send_at else None,
                message=due.message,
            )
            if due.outcome == Outcome.DUE:
                bar = progress(due.slug) if progress else None
                send_due(item, due.path, settings, ledger, clock, dry_run, skip_invalid, bar)
            items.append(item)
            if on_item is not None:
                on_item(item)
        if not dry_run:
            from spark_mail.scheduling.esp import confirm_scheduled_sends

            for problem in confirm_scheduled_sends(settings, now, ledger, clock):
                items.append(problem)
                if on_item is not None:
                    on_item(problem)
    report = DispatchReport(now=now.isoformat(), items=items)
    if not dry_run and any(item.outcome in DELIVERED for item in items):
        report.site, report.site_problem = refresh_archive(settings, clock)
    return report


def refuse_no_issues(settings: Settings) -> None:
    """No issues folder, or not one issue file in it: nothing can ever be due, so this run
    is pointed at the wrong place (a cron line's -C DIR, the issues_dir setting) or came
    before the first issue. Said loudly (exit 2): a silent exit 0 under cron would hide it
    until readers wonder where the newsletter went."""
    folder = settings.issues_path
    where = printable(str(folder))
    if not folder.is_dir():
        raise ConfigError(
            f"{where}: no issues folder there (setting issues_dir = {settings.issues_dir!r}), "
            "so nothing can be sent",
            hint="check -C DIR and issues_dir in spark-mail.toml",
        )
    if not issue_files(folder):
        raise ConfigError(
            f"no issue files in {where}: nothing can ever be due",
            hint='write one with `spark-mail new "TITLE"`, or check -C DIR and issues_dir',
        )


def send_due(
    item: SendReport,
    path: Path,
    settings: Settings,
    ledger: Ledger,
    clock: Clock,
    dry_run: bool,
    skip_invalid: bool,
    progress: Progress | None,
) -> None:
    """Send one due issue and put its outcome in `item`; nothing it raises stops the run."""
    from spark_mail.sending import SendRequest, send_issue

    request = SendRequest(
        mode="dry-run" if dry_run else "send", skip_invalid=skip_invalid, progress=progress
    )
    try:
        result = send_issue(path, settings, request, clock=clock, rebuild_site=False)
    except SendUnconfirmed as exc:
        item.outcome, item.message = Outcome.UNCONFIRMED, str(exc)
    except SendUncertain as exc:
        item.outcome, item.message = Outcome.UNCERTAIN, str(exc)
    except AlreadySent as exc:
        # Another run finished it between our look and our claim, or it is uncertain.
        record = ledger.get(item.slug)
        if record is not None and record.state == SendState.UNCERTAIN:
            item.outcome, item.message = Outcome.UNCERTAIN, uncertain_message(record)
        else:
            item.outcome, item.message = Outcome.ALREADY_SENT, exc.message
    except SparkMailError as exc:
        item.outcome, item.message = Outcome.FAILED, str(exc)
    except Exception as exc:  # a bug must not keep the other due issues from going out
        log.exception("dispatch: %s failed unexpectedly", item.slug)
        item.outcome = Outcome.FAILED
        item.message = f"{path}: could not be sent ({type(exc).__name__}: {exc})"[:300]
    else:
        item.outcome = result.outcome
        item.provider, item.esp_ids = result.provider, result.esp_ids
        item.message = result.subject if result.outcome == Outcome.SENT else result.message
        item.summary = result.summary
