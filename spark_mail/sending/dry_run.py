"""`send --dry-run`: the configured provider runs its real code against a recorder that
answers like the ESP, and the exact requests (or MIME messages) land, credentials masked,
in dist/<slug>/dry-run/ with a summary.json. No network, no ledger change. An own-list dry
run shows the requests for the first few readers."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from spark_mail.clock import Clock
from spark_mail.files import write_atomic
from spark_mail.ledger import SendState, open_ledger
from spark_mail.providers.base import Capability
from spark_mail.providers.recorder import DryRunRecorder
from spark_mail.sending.batches import BatchRun, BatchSummary
from spark_mail.sending.outcomes import Outcome, SendReport

if TYPE_CHECKING:
    from spark_mail.config import Settings
    from spark_mail.sending import PreparedSend

DRY_RUN_DIR = "dry-run"
DRY_RUN_READERS = 5  # an own-list dry run shows the requests for the first few readers
SAFE_NAME = re.compile(r"[^A-Za-z0-9]+")


def dry_run(prepared: PreparedSend, clock: Clock) -> SendReport:
    from spark_mail.sending import base_report

    recorder = prepared.recorder
    assert recorder is not None
    provider = prepared.provider
    report = base_report(prepared, Outcome.DRY_RUN)
    state = ledger_state(prepared.settings, prepared.slug)
    if state is not None:
        report.warnings.append(f"the ledger says this issue is {state}: a send would be refused")
    own = prepared.own
    if own is not None:
        summary = BatchSummary()
        summary.add_audience(own.report)
        shown = min(DRY_RUN_READERS, prepared.request.limit or DRY_RUN_READERS)
        BatchRun(own.template, provider, None, summary, clock, limit=shown).run(own.readers())
        report.warnings.append(f"dry run shows the requests for the first {summary.sent} readers")
        report.recipients = [reader.email for reader in own.first_readers(summary.sent)]
        report.summary = summary.to_json()
    else:
        provider.require(Capability.SEND)
        provider.send(prepared.email, lambda ids: None)
    report.requests = recorder.count
    folder = prepared.settings.out_path / prepared.slug / DRY_RUN_DIR
    report.folder = str(folder)
    report.files = [str(p) for p in write_dry_run(folder, recorder, report)]
    return report


def ledger_state(settings: Settings, slug: str) -> str | None:
    """A dry run only reads the ledger, and only when there is one."""
    ledger = open_ledger(settings)
    if not ledger.exists():
        return None
    with ledger:
        record = ledger.get(slug)
    if record is None or record.state in (SendState.FAILED, SendState.PENDING):
        return None
    return str(record.state)


def write_dry_run(folder: Path, recorder: DryRunRecorder, report: SendReport) -> list[Path]:
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
    summary = {**report.to_json(), "files": [p.name for p in written]}
    written.append(write_atomic(folder / "summary.json", json.dumps(summary, indent=2) + "\n"))
    return written
