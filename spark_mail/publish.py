"""The sending use cases: dry run, test send and the real send, through ONE path.

    send_issue(issue, settings, mode="dry-run" | "test" | "send", ...)

1. build the issue (or take a built RenderedEmail) and run the offline checks; a send or a
   dry run refuses on errors unless `force` (links are only checked with `check_links`);
2. dry-run: the configured provider runs its real code against a DryRunTransport that
   answers like the ESP: the exact requests (or MIME messages) land, credentials masked,
   in dist/<slug>/dry-run/, plus summary.json. No network, no ledger change;
3. test: a `[TEST] ` copy to `to` or SPARK_MAIL_TEST_RECIPIENTS through `send_test`, which
   never touches the audience endpoint; never recorded, can be repeated;
4. send: claim the issue in the ledger (refuses: already sent / being sent / uncertain),
   settle a send a dead process left behind (recovery.reconcile), send with the ESP's ids
   written to the ledger before the sending request leaves, then record sent / failed /
   uncertain. A possibly-delivered failure on an ESP without idempotency keys becomes
   `uncertain` (a human decides); with keys, `failed` (a retry with the same key is safe).
5. own-list sending (an `audience` file is set, or the ESP keeps no list): the subscribers
   file is checked first (invalid rows stop everything unless `skip_invalid`), the issue is
   rendered once for personalisation, and spark_mail.bulk sends each reader their copy
   through the ESP's batch API, reader by reader in the ledger; a dry run does the same for
   the first few readers against the DryRunTransport.

The confirmation prompt is the CLI's business; this module never asks or prints.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from spark_mail.config import Settings
from spark_mail.errors import ChecksFailed, ConfigError, ProviderError, SparkMailError
from spark_mail.files import write_atomic
from spark_mail.render import RenderedEmail

if TYPE_CHECKING:
    import httpx

    from spark_mail.audience import AudienceReport
    from spark_mail.bulk import BulkSummary, Progress
    from spark_mail.checks import Report
    from spark_mail.ledger import Ledger
    from spark_mail.personalize import PersonalizedTemplate
    from spark_mail.providers.base import Provider

Mode = Literal["dry-run", "test", "send"]
MODES = ("dry-run", "test", "send")
TEST_PREFIX = "[TEST] "
DRY_RUN_DIR = "dry-run"
DRY_RUN_READERS = 5  # an own-list dry run shows the requests for the first few readers
SAFE_NAME = re.compile(r"[^A-Za-z0-9]+")


@dataclass
class PublishResult:
    mode: str
    slug: str
    provider: str
    audience: str
    subject: str
    state: str  # dry-run | tested | sent | partial | sent-earlier | scheduled-earlier
    requests: int = 0
    recipients: list[str] | int | None = None
    esp_ids: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    html_bytes: int = 0
    text_bytes: int = 0
    warnings: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    folder: str | None = None
    summary: dict[str, Any] | None = None  # own-list sending: spark_mail.bulk.BulkSummary

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_email(path_or_email: RenderedEmail | Path | str, settings: Settings) -> RenderedEmail:
    if isinstance(path_or_email, RenderedEmail):
        return path_or_email
    from spark_mail.issue import resolve_issue_path
    from spark_mail.render import build

    return build(resolve_issue_path(str(path_or_email), settings.issues_path), settings)


def preflight(
    email: RenderedEmail, settings: Settings, *, force: bool = False, check_links: bool = False
) -> Report:
    """The checks `spark-mail check` runs; errors stop a send unless `force`."""
    from spark_mail.checks import run_checks

    report = run_checks(email, settings, links=check_links)
    if report.errors and not force:
        first = report.errors[0]
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        raise ChecksFailed(
            f"{email.slug}: checks failed: {first.message}{more}",
            hint=f"run `spark-mail check {email.slug}` and fix them, or send with --force",
        )
    return report


def send_issue(
    path_or_email: RenderedEmail | Path | str,
    settings: Settings,
    *,
    mode: Mode = "send",
    to: Sequence[str] | None = None,
    force: bool = False,
    check_links: bool = False,
    resend_uncertain: bool = False,
    now: dt.datetime | None = None,
    transport: httpx.BaseTransport | None = None,
    limit: int | None = None,
    skip_invalid: bool = False,
    progress: Progress | None = None,
) -> PublishResult:
    """Dry-run, test-send or send one issue. Raises SparkMailError subclasses.

    Own-list sending only: `limit` sends to the first N readers not yet sent (a canary),
    `skip_invalid` sends despite invalid rows in the subscribers file, `progress` is called
    with a BulkSummary as batches complete."""
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: give a number of readers of 1 or more")
    if mode not in MODES:
        raise ConfigError(f"unknown send mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
    email = load_email(path_or_email, settings)
    if mode == "test":
        recipients = resolve_test_recipients(settings, to)
        preflight(email, settings, force=True, check_links=check_links)  # report, never block
        return _test_send(email, settings, recipients, transport)
    report = preflight(email, settings, force=force, check_links=check_links)
    warnings = [f"{f.rule_id}: {f.message}" for f in report.problems]
    options = OwnListOptions(limit, skip_invalid, resend_uncertain, progress)
    if mode == "dry-run":
        return _dry_run(email, settings, warnings, options)
    return _send(email, settings, warnings, resend_uncertain, now, transport, options)


# -- test sends ------------------------------------------------------------------------------
def resolve_test_recipients(settings: Settings, to: Sequence[str] | None) -> list[str]:
    from spark_mail.providers.base import check_addresses

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


def _test_send(
    email: RenderedEmail,
    settings: Settings,
    recipients: list[str],
    transport: httpx.BaseTransport | None,
) -> PublishResult:
    from spark_mail.providers import get_provider
    from spark_mail.providers.base import Capability

    copy = with_test_subject(email)
    with get_provider(settings, transport) as provider:
        provider.require(Capability.TEST)
        sent = provider.send_test(copy, recipients)
        return _result(
            "test", copy, provider, "tested", sent.requests, recipients, sent.esp_ids, [], {}
        )


# -- dry runs --------------------------------------------------------------------------------
def _dry_run(
    email: RenderedEmail, settings: Settings, warnings: list[str], options: OwnListOptions
) -> PublishResult:
    from spark_mail.providers import get_provider
    from spark_mail.providers.base import Capability, DryRunTransport

    recorder = DryRunTransport(
        [s.reveal() for s in (settings.api_key, settings.smtp_password, settings.signing_secret)]
    )
    with get_provider(settings, recorder) as provider:
        record = _ledger_state(settings, email.slug)
        if record is not None:
            warnings.append(f"the ledger says this issue is {record}: a send would be refused")
        if own_list(settings, provider):
            from spark_mail.audience import iter_readers
            from spark_mail.bulk import BulkSummary, send_to_readers

            own = prepare_own_list(email, settings, provider, options.skip_invalid)
            summary = BulkSummary()
            summary.add_audience(own.report)
            shown = min(DRY_RUN_READERS, options.limit or DRY_RUN_READERS)
            send_to_readers(
                own.template, provider, iter_readers(*own.paths), None, summary, limit=shown
            )
            warnings.append(f"dry run shows the requests for the first {summary.sent} readers")
            result = _result(
                "dry-run", email, provider, "dry-run", recorder.count, None, {}, warnings, {}
            )
            result.recipients = [address for _, address in own.first_readers(summary.sent)]
            result.summary = summary.to_json()
        else:
            provider.require(Capability.SEND)
            provider.send(email, lambda ids: None)
            result = _result(
                "dry-run", email, provider, "dry-run", recorder.count, None, {}, warnings, {}
            )
    result.folder = str(settings.out_path / email.slug / DRY_RUN_DIR)
    result.files = [str(p) for p in _write_dry_run(Path(result.folder), recorder, result)]
    return result


def _ledger_state(settings: Settings, slug: str) -> str | None:
    """A dry run only reads the ledger, and only when there is one."""
    from spark_mail.ledger import SendState, open_ledger

    ledger = open_ledger(settings)
    if not ledger.exists():
        return None
    with ledger:
        record = ledger.get(slug)
    if record is None or record.state in (SendState.FAILED, SendState.PENDING):
        return None
    return str(record.state)


def _write_dry_run(folder: Path, recorder: Any, result: PublishResult) -> list[Path]:
    if folder.is_dir():
        shutil.rmtree(folder)  # a dry run replaces the previous one, never mixes with it
    written: list[Path] = []
    for number, exchange in enumerate(recorder.exchanges, start=1):
        path_part = SAFE_NAME.sub("-", exchange["url"].split("://", 1)[-1].split("/", 1)[-1])
        name = f"{number:02d}-{exchange['method']}-{path_part.strip('-')[:60]}.json"
        written.append(write_atomic(folder / name, json.dumps(exchange, indent=2) + "\n"))
    offset = len(recorder.exchanges)
    for number, (_recipients, message) in enumerate(recorder.messages, start=offset + 1):
        written.append(write_atomic(folder / f"{number:02d}-message.eml", message))
    summary = {**result.to_json(), "files": [p.name for p in written]}
    written.append(write_atomic(folder / "summary.json", json.dumps(summary, indent=2) + "\n"))
    return written


# -- the real send ---------------------------------------------------------------------------
@dataclass
class OwnListOptions:
    limit: int | None = None
    skip_invalid: bool = False
    resend_uncertain: bool = False
    progress: Progress | None = None


def own_list(settings: Settings, provider: Provider) -> bool:
    """Send to our own subscribers file: one is set, or the ESP keeps no list of its own."""
    return bool(settings.audience) or not provider.owns_audience


@dataclass
class OwnList:
    """A checked subscribers file and the issue rendered once for personalisation."""

    template: PersonalizedTemplate
    report: AudienceReport
    paths: tuple[Path, Path | None]

    def first_readers(self, count: int) -> list[tuple[int, str]]:
        from spark_mail.audience import iter_readers

        return [(r.line, r.email) for r in islice(iter_readers(*self.paths), count)]


def prepare_own_list(
    email: RenderedEmail, settings: Settings, provider: Provider, skip_invalid: bool
) -> OwnList:
    """Everything that can refuse an own-list send, before the ledger or the ESP is touched:
    the provider can batch, the subscribers file is usable (invalid rows stop the send
    unless `skip_invalid`), the layout personalises (signing secret, unsubscribe link)."""
    from spark_mail.audience import AudienceError, audience_paths, check_audience
    from spark_mail.personalize import prepare
    from spark_mail.providers.base import Capability

    provider.require(Capability.BATCH)
    if not settings.audience:
        provider.require_audience()
    paths = audience_paths(settings)
    report = check_audience(*paths)
    path = paths[0]
    if report.invalid and not skip_invalid:
        listed = "; ".join(f"line {p.line}: {p.reason}" for p in report.invalid_rows[:3])
        more = f" (and {report.invalid - 3:,} more)" if report.invalid > 3 else ""
        raise AudienceError(
            f"{path}: {report.invalid:,} invalid row{'s' * (report.invalid > 1)}, nothing was "
            f"sent - {listed}{more}",
            hint="fix them (`spark-mail audience check` lists every one), or add "
            "--skip-invalid to send to the valid readers only",
        )
    if report.valid == 0:
        raise AudienceError(
            f"{path}: no readers to send to ({report.total:,} rows: {report.invalid:,} invalid, "
            f"{report.suppressed:,} suppressed, {report.duplicates:,} duplicates)",
            hint="check the file with `spark-mail audience check`",
        )
    if email.source is None:
        raise ConfigError(f"{email.slug}: own-list sending needs the issue file, not a build")
    template = prepare(email.source, settings)
    return OwnList(template, report, paths)


def _send(
    email: RenderedEmail,
    settings: Settings,
    warnings: list[str],
    resend_uncertain: bool,
    now: dt.datetime | None,
    transport: httpx.BaseTransport | None,
    options: OwnListOptions,
) -> PublishResult:
    from spark_mail.ledger import StaleSend, open_ledger
    from spark_mail.providers import get_provider
    from spark_mail.providers.base import Capability

    slug = email.slug
    with get_provider(settings, transport) as provider, open_ledger(settings) as ledger:
        if own_list(settings, provider):
            own = prepare_own_list(email, settings, provider, options.skip_invalid)
            return _send_own_list(email, own, provider, ledger, warnings, now, options)
        provider.require(Capability.SEND)
        try:
            ledger.claim(
                slug,
                email.content_hash,
                provider.name,
                "send",
                now=now,
                allow_uncertain=resend_uncertain,
            )
        except StaleSend as stale:
            from spark_mail.recovery import reconcile

            action = reconcile(ledger, stale.record, provider, email, now=now)
            if action != "resend":
                record = ledger.get(slug)
                ids = record.esp_ids if record else {}
                state = f"{action}-earlier"
                return _result("send", email, provider, state, 0, None, ids, warnings, {})
        try:
            sent = provider.send(email, lambda ids: ledger.record_ids(slug, ids, now=now))
        except SparkMailError as err:
            if settle_failure(ledger, slug, err, provider, now):
                err.hint = (
                    "it may have gone out: check with the ESP, then "
                    f"`spark-mail send {slug} --resend-uncertain` if it did not"
                )
            raise
        ledger.mark_sent(slug, sent.esp_ids, now=now)
        return _result(
            "send",
            email,
            provider,
            "sent",
            sent.requests,
            sent.recipients,
            sent.esp_ids,
            warnings,
            sent.refused,
        )


def _send_own_list(
    email: RenderedEmail,
    own: OwnList,
    provider: Provider,
    ledger: Ledger,
    warnings: list[str],
    now: dt.datetime | None,
    options: OwnListOptions,
) -> PublishResult:
    """Claim the issue, settle what a crashed run left in flight, send to every reader not
    yet sent, and settle the issue's row from its readers' states."""
    from spark_mail.audience import iter_readers
    from spark_mail.bulk import BulkSummary, send_to_readers
    from spark_mail.ledger import StaleSend
    from spark_mail.recovery import settle_in_flight_readers

    slug = email.slug
    before = ledger.get(slug)
    try:
        ledger.claim(
            slug,
            email.content_hash,
            provider.name,
            "send",
            now=now,
            allow_uncertain=options.resend_uncertain,
        )
    except StaleSend:
        ledger.retry_stale(
            slug,
            email.content_hash,
            "interrupted mid-send: resuming with the readers not yet sent",
            now=now,
        )
    repeats = settle_in_flight_readers(ledger, before, provider, email.content_hash, now=now)
    summary = BulkSummary()
    summary.add_audience(own.report)
    try:
        send_to_readers(
            own.template,
            provider,
            iter_readers(*own.paths, suppressed_keys=own.report.suppressed_keys),
            ledger,
            summary,
            limit=options.limit,
            resend_uncertain=options.resend_uncertain,
            repeat_batches=repeats,
            progress=options.progress,
        )
    except KeyboardInterrupt:
        ledger.mark_partial(
            slug, f"interrupted after {summary.sent:,} readers this run: run again to continue"
        )
        raise
    except SparkMailError as err:
        ledger.mark_failed(slug, str(err), now=now)
        err.summary = summary  # type: ignore[attr-defined]
        raise
    return _settle_own_list(email, provider, ledger, summary, warnings, now)


def settle_failure(
    ledger: Ledger, slug: str, error: SparkMailError, provider: Provider, now: dt.datetime | None
) -> bool:
    """Record a failed ESP call: `uncertain` when it may have gone through and a repeat is
    not harmless (True), else `failed`, safe to try again (False)."""
    if isinstance(error, ProviderError) and error.maybe_sent and not provider.idempotent:
        ledger.mark_uncertain(slug, str(error), now=now)
        return True
    ledger.mark_failed(slug, str(error), now=now)
    return False


def _settle_own_list(
    email: RenderedEmail,
    provider: Provider,
    ledger: Ledger,
    summary: BulkSummary,
    warnings: list[str],
    now: dt.datetime | None,
) -> PublishResult:
    """The issue's row from its readers: `sent` only when nobody is left."""
    from spark_mail.bulk import BulkSendFailed
    from spark_mail.ledger import ReaderState
    from spark_mail.recovery import SendUncertain

    slug = email.slug
    counts = ledger.reader_counts(slug)
    uncertain = counts.get(ReaderState.UNCERTAIN, 0)
    unsent = (
        counts.get(ReaderState.FAILED, 0) + counts.get(ReaderState.SENDING, 0) + summary.remaining
    )
    sent = counts.get(ReaderState.SENT, 0)
    progress_note = f"{sent:,} of {summary.readers:,} readers sent"
    resend_hint = (
        "check with the ESP whether they got it; `spark-mail send "
        f"{slug} --resend-uncertain` sends those readers again"
    )
    if summary.error:
        error = BulkSendFailed(
            f"{summary.error} ({progress_note}; {unsent:,} left for the next run"
            + (f", {uncertain:,} uncertain" if uncertain else "")
            + ")",
            hint=resend_hint
            if uncertain
            else f"run `spark-mail send {slug}` again to send the rest",
        )
        if uncertain:
            ledger.mark_uncertain(slug, error.message, now=now)
        else:
            ledger.mark_failed(slug, error.message, now=now)
        error.summary = summary
        raise error
    if uncertain:
        examples = ", ".join(
            address for address, _ in ledger.readers_in(slug, ReaderState.UNCERTAIN, 3)
        )
        reason = (
            f"{uncertain:,} readers were in batches that may have gone out ({examples}"
            f"{', ...' if uncertain > 3 else ''}); {progress_note}"
        )
        ledger.mark_uncertain(slug, reason, now=now)
        uncertain_error = SendUncertain(slug, reason)
        uncertain_error.summary = summary  # type: ignore[attr-defined]
        raise uncertain_error
    ids = {"readers_sent": str(sent)}
    if unsent:
        ledger.mark_partial(slug, f"{progress_note}; {unsent:,} left for a later run", now=now)
        state = "partial"
        warnings.append(f"{unsent:,} readers not sent yet: run `spark-mail send {slug}` again")
    else:
        ledger.mark_sent(slug, ids, now=now, note=progress_note)
        state = "sent"
    result = _result(
        "send",
        email,
        provider,
        state,
        summary.requests,
        summary.sent,
        ids,
        warnings,
        summary.refused_readers,
    )
    result.audience = f"the readers in {provider.settings.audience}"
    result.summary = summary.to_json()
    return result


def _result(
    mode: str,
    email: RenderedEmail,
    provider: Provider,
    state: str,
    requests: int,
    recipients: list[str] | int | None,
    esp_ids: dict[str, str],
    warnings: list[str],
    refused: dict[str, str],
) -> PublishResult:
    return PublishResult(
        mode=mode,
        slug=email.slug,
        provider=provider.name,
        audience=provider.audience if mode != "test" else "test recipients",
        subject=email.subject,
        state=state,
        requests=requests,
        recipients=recipients,
        esp_ids=dict(esp_ids),
        refused=dict(refused),
        html_bytes=email.html_bytes,
        text_bytes=len(email.text.encode()),
        warnings=list(warnings),
    )


def describe_audience(settings: Settings) -> tuple[str, str]:
    """(provider name, who a send reaches) for the confirmation question; no network."""
    from spark_mail.providers import get_provider

    with get_provider(settings) as provider:
        audience = provider.audience
        if own_list(settings, provider) and settings.audience:
            audience = f"the readers in {settings.audience}"
        return provider.name, audience
