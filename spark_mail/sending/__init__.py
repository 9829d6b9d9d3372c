"""Sending an issue: dry run, test copies and the real send, through ONE path.

    prepared = prepare_send(issue, settings, SendRequest(mode="send"))  # render + check once
    report = execute(prepared)                                          # -> SendReport
    send_issue(...) does both (scripts, dispatch)

`prepare_send` does everything that can refuse before the ledger or the ESP is touched:
it builds the issue (own list: renders it ONCE with reader markers, and checks a reader's
copy, which is what readers get), runs the checks (errors refuse unless `force`), picks
the provider (a dry run's provider records instead of sending) and, for an own list,
checks the subscribers file. The CLI asks for confirmation between the two steps.

    editor_copies.py  --test: `[TEST]` copies to editors, never recorded
    dry_run.py        --dry-run: the exact requests written to dist/<slug>/dry-run/
    esp_list.py       the ESP keeps the audience (Buttondown, Resend)
    own_list.py       your subscribers file, reader by reader (batches.py sends them)
    lifecycle.py      claim, recovery, the fault rule: every real send goes through it
    outcomes.py       Outcome and SendReport
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from spark_mail.checks import Report
from spark_mail.clock import SYSTEM_CLOCK, Clock
from spark_mail.config import Settings
from spark_mail.errors import ChecksFailed, ConfigError
from spark_mail.providers.base import Provider
from spark_mail.sending.batches import Progress, StillWanted
from spark_mail.sending.outcomes import DELIVERED, Outcome, SendReport, refresh_archive

if TYPE_CHECKING:
    from spark_mail.providers.recorder import DryRunRecorder
    from spark_mail.render import RenderedEmail
    from spark_mail.sending.own_list import OwnList

Mode = Literal["dry-run", "test", "send"]
MODES = ("dry-run", "test", "send")

__all__ = [
    "MODES",
    "Outcome",
    "PreparedSend",
    "SendReport",
    "SendRequest",
    "execute",
    "prepare_send",
    "send_issue",
]


@dataclass
class SendRequest:
    """What was asked for. Own list only: `limit` sends to the first N readers not yet sent
    (a canary), `skip_invalid` sends despite invalid rows, `progress` hears of each batch."""

    mode: Mode = "send"
    to: Sequence[str] | None = None
    force: bool = False
    check_links: bool = False
    resend_uncertain: bool = False
    limit: int | None = None
    skip_invalid: bool = False
    progress: Progress | None = None
    still_wanted: StillWanted | None = None


@dataclass
class PreparedSend:
    """A send that passed every check and is ready to go (or to be confirmed first)."""

    request: SendRequest
    settings: Settings
    email: RenderedEmail  # as readers get it (own list: the first reader's copy)
    provider: Provider
    checks: Report
    own: OwnList | None = None
    recorder: DryRunRecorder | None = None
    recipients: list[str] = field(default_factory=list)  # test copies

    @property
    def slug(self) -> str:
        return self.email.slug

    @property
    def audience(self) -> str:
        """Who the send reaches, for the confirmation question and the report."""
        if self.request.mode == "test":
            return "test recipients"
        if self.own is not None:
            readers = self.own.report.valid
            return (
                f"the {readers:,} reader{'' if readers == 1 else 's'} in {self.settings.audience}"
            )
        return self.provider.audience

    def close(self) -> None:
        self.provider.close()


def prepare_send(
    issue: str | Path,
    settings: Settings,
    request: SendRequest,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> PreparedSend:
    """Render and check once, pick the provider (see the module docstring)."""
    from spark_mail.issue import resolve_issue_path
    from spark_mail.providers import get_provider
    from spark_mail.providers.recorder import DryRunRecorder

    if request.limit is not None and request.limit < 1:
        raise ConfigError(f"--limit {request.limit}: give a number of readers of 1 or more")
    if request.mode not in MODES:
        raise ConfigError(f"unknown send mode {request.mode!r}", hint=f"use one of {MODES}")
    path = resolve_issue_path(str(issue), settings.issues_path)
    recorder = None
    if request.mode == "dry-run":
        secrets = (settings.api_key, settings.smtp_password, settings.signing_secret)
        recorder = DryRunRecorder([s.reveal() for s in secrets])
    provider = get_provider(settings, clock=clock, recorder=recorder)
    try:
        return _prepare(path, settings, request, provider, recorder)
    except BaseException:
        provider.close()
        raise


def _prepare(
    path: Path,
    settings: Settings,
    request: SendRequest,
    provider: Provider,
    recorder: DryRunRecorder | None,
) -> PreparedSend:
    from spark_mail.render import build
    from spark_mail.sending.own_list import own_list_wanted, prepare_own_list

    if request.mode == "test":
        from spark_mail.sending.editor_copies import test_recipients

        recipients = test_recipients(settings, request.to)
        email = build(path, settings)
        checks = run_checks(email, settings, request, block=False)
        return PreparedSend(request, settings, email, provider, checks, recipients=recipients)
    own = None
    if own_list_wanted(settings, provider):
        own = prepare_own_list(path, settings, provider, request.skip_invalid, force=request.force)
        email = own.sample_copy()
    else:
        email = build(path, settings)
    checks = run_checks(email, settings, request, block=True)
    return PreparedSend(request, settings, email, provider, checks, own, recorder)


def run_checks(
    email: RenderedEmail, settings: Settings, request: SendRequest, *, block: bool
) -> Report:
    """The checks `spark-mail check` runs, once per send; errors stop a send unless
    `force` (test copies are never blocked: the report is shown)."""
    from spark_mail.checks import run_checks as checks_for

    report = checks_for(email, settings, links=request.check_links)
    if block and report.errors and not request.force:
        first = report.errors[0]
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        raise ChecksFailed(
            f"{email.slug}: checks failed: {first.message}{more}",
            hint=f"run `spark-mail check {email.slug}` and fix them, or send with --force",
        )
    return report


def execute(
    prepared: PreparedSend, *, clock: Clock = SYSTEM_CLOCK, rebuild_site: bool = True
) -> SendReport:
    """Do what was prepared. Raises SparkMailError subclasses for what did not go out.
    After a real send the web archive is rebuilt (`site_dir`), unless not `rebuild_site`
    (dispatch rebuilds once, after all its sends)."""
    try:
        mode = prepared.request.mode
        if mode == "test":
            from spark_mail.sending.editor_copies import send_test_copies

            return send_test_copies(prepared)
        if mode == "dry-run":
            from spark_mail.sending.dry_run import dry_run

            return dry_run(prepared, clock)
        from spark_mail.sending.esp_list import send_for_real

        report = send_for_real(prepared, clock)
        if rebuild_site and report.outcome in DELIVERED:
            report.site, report.site_problem = refresh_archive(prepared.settings, clock)
        return report
    finally:
        prepared.close()


def send_issue(
    issue: str | Path,
    settings: Settings,
    request: SendRequest | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    rebuild_site: bool = True,
    **options: Any,
) -> SendReport:
    """Prepare and execute in one go (no confirmation): scripts, `dispatch`. `options` are
    SendRequest's fields, for a request written inline: send_issue(p, s, mode="test")."""
    prepared = prepare_send(issue, settings, request or SendRequest(**options), clock=clock)
    return execute(prepared, clock=clock, rebuild_site=rebuild_site)


def base_report(prepared: PreparedSend, outcome: Outcome, **details: object) -> SendReport:
    """The report's common part: which issue, how big, through whom, to whom."""
    email = prepared.email
    report = SendReport(
        slug=email.slug,
        outcome=outcome,
        mode=prepared.request.mode,
        provider=prepared.provider.name,
        audience=prepared.audience,
        subject=email.subject,
        html_bytes=email.html_bytes,
        text_bytes=len(email.text.encode()),
        warnings=[f"{f.rule_id}: {f.message}" for f in prepared.checks.problems],
    )
    for name, value in details.items():
        setattr(report, name, value)
    return report
