"""`status`: the ledger's rows, never creating the ledger."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from spark_mail.config import Settings
from spark_mail.ledger import LedgerEvent, SendRecord, SendState, open_ledger


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
    """The ledger's rows (one issue with its history, or all)."""
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
            if record.state == SendState.SENDING and not ledger.locks.held_elsewhere(record.slug):
                state = "interrupted"  # its process died; the next send or dispatch settles it
            history = ledger.history(record.slug) if slug is not None else []
            rows.append(StatusRow(record, state, history))
    return rows
