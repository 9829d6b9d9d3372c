"""What became of a send, a schedule or a dispatched issue: one vocabulary, one result type.

`Outcome` is every answer spark-mail gives about an issue (the CLI keys its wording on it,
`--json` prints it); `SendReport` carries one issue's outcome and details, for `send`,
`schedule`, `unschedule` and each issue of a `dispatch` run alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spark_mail.clock import Clock
    from spark_mail.config import Settings


class Outcome(StrEnum):
    DRY_RUN = "dry-run"  # nothing left the machine; the requests were written to files
    TESTED = "tested"  # test copies went to editors
    SENT = "sent"
    PARTIAL = "partial"  # own list: some readers have it, a later run sends the rest
    SCHEDULED = "scheduled"  # handed to the ESP's own scheduler
    UNSCHEDULED = "unscheduled"
    SENT_EARLIER = "sent-earlier"  # an interrupted earlier send went out after all
    SCHEDULED_EARLIER = "scheduled-earlier"  # an interrupted schedule reached the ESP
    IN_PROGRESS = "in-progress"  # another live process is sending it right now
    ALREADY_SENT = "already-sent"  # another run got there first
    DUE = "due"  # dispatch: its time has come
    LATE = "late"  # dispatch: due longer ago than the late window: not sent
    UNCONFIRMED = "unconfirmed"  # the ESP may have acted: the next run finds out first
    UNCERTAIN = "uncertain"  # may have gone out and nobody can tell: a human decides
    FAILED = "failed"  # the ESP clearly refused, or the issue cannot be sent as it is


# Outcomes after which readers have the issue (the web archive shows it from then on).
DELIVERED = frozenset({Outcome.SENT, Outcome.SENT_EARLIER})
# Outcomes that make a run exit 1: somebody has to look.
FAILURES = frozenset({Outcome.FAILED, Outcome.UNCERTAIN, Outcome.UNCONFIRMED})


@dataclass
class SendReport:
    """One issue's outcome, with what a person or a script needs to know about it."""

    slug: str
    outcome: Outcome
    mode: str = "send"  # dry-run | test | send | schedule | unschedule
    provider: str = ""
    audience: str = ""
    subject: str = ""
    message: str = ""  # one line: the reason of a failure, a note
    path: str = ""
    send_at: str | None = None  # dispatch: when it was due
    at: str | None = None  # schedule: when the ESP sends it
    requests: int = 0
    recipients: list[str] | int | None = None
    esp_ids: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    html_bytes: int = 0
    text_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    folder: str | None = None
    summary: dict[str, Any] | None = None  # own list: sending.batches.BatchSummary
    site: str | None = None  # the web archive was rebuilt in this folder after the send
    site_problem: str | None = None  # ... or why it was not (the send stands)

    @property
    def failed(self) -> bool:
        return self.outcome in FAILURES

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["outcome"] = str(self.outcome)
        data["failed"] = self.failed
        return data


def refresh_archive(
    settings: Settings, clock: Clock | None = None
) -> tuple[str | None, str | None]:
    """After a send: rebuild the web archive when `site_dir` is set, so the email's "View
    in browser" link works the moment it arrives. Returns (folder, problem): a failure is
    reported, never raised; the send went out and stays a success (the old site stays).
    Ctrl-C during the rebuild stops the rebuild only: the send is still reported."""
    from spark_mail.clock import SYSTEM_CLOCK
    from spark_mail.site import rebuild_site_after_send

    try:
        result = rebuild_site_after_send(settings, clock=clock or SYSTEM_CLOCK)
    except KeyboardInterrupt:
        return None, "the web archive was not rebuilt: interrupted (run `spark-mail site build`)"
    except Exception as exc:  # whatever happens here, the send stands
        return None, f"the web archive was not rebuilt: {exc}"
    return (str(result.folder), None) if result is not None else (None, None)
