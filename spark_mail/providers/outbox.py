"""The outbox: the default when no provider is configured. Each message becomes an `.eml` file
in <root>/outbox/, so the whole flow (test, send, the ledger) works on a fresh machine with
no ESP account; open the files in any mail client.

    outbox/<slug>/send.eml                    the audience send (or one file per reader)
    outbox/<slug>/test-<n>.eml                each test send (a repeat gets the next number)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from spark_mail.audience.addresses import canonical_address
from spark_mail.files import write_atomic
from spark_mail.providers.base import (
    BatchResult,
    Capability,
    DeliveryState,
    Known,
    OnIds,
    Provider,
    SendResult,
)
from spark_mail.providers.mime import mime_for
from spark_mail.render import RenderedEmail

if TYPE_CHECKING:
    from spark_mail.audience import Reader
    from spark_mail.personalize import PersonalizedTemplate

UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]")


class OutboxProvider(Provider):
    name = "outbox"
    capabilities = frozenset(
        {Capability.TEST, Capability.SEND, Capability.LOOKUP, Capability.BATCH}
    )
    idempotent = True  # writing the same file again changes nothing
    owns_audience = True  # the folder stands in for the audience
    batch_size = 100
    batch_concurrency = 2
    unicode_local_parts = True  # a file takes any address

    @property
    def folder(self) -> Path:
        return self.settings.root / "outbox"

    @property
    def audience(self) -> str:
        return f"the outbox folder {self.folder}"

    def _write(
        self, path: Path, recipients: list[str], email: RenderedEmail, to: str | list[str]
    ) -> None:
        message = mime_for(email, to)
        if self.dry_run is not None:
            self.dry_run.record_message(recipients, message)
        else:
            write_atomic(path, message.as_bytes())

    def send_test(self, email: RenderedEmail, recipients: Sequence[str]) -> SendResult:
        folder = self.folder / email.slug
        number = 1 + sum(1 for _ in folder.glob("test-*.eml")) if folder.is_dir() else 1
        path = folder / f"test-{number}.eml"
        self._write(path, list(recipients), email, list(recipients))
        return SendResult(esp_ids={"file": str(path)}, requests=1, recipients=len(recipients))

    def send(self, email: RenderedEmail, on_ids: OnIds, known: Known | None = None) -> SendResult:
        """No subscribers file: the issue as one `send.eml` (the folder is the audience)."""
        path = self.folder / email.slug / "send.eml"
        on_ids({"file": str(path)})
        self._write(path, [], email, "undisclosed-recipients:;")
        return SendResult(esp_ids={"file": str(path)}, requests=1)

    def reader_file(self, slug: str, address: str) -> Path:
        """One file per reader: a readable name plus a hash of the canonical address, so
        `josé@`, `jos_@` and `josè@` never share a file."""
        canonical = canonical_address(address)
        digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
        return self.folder / slug / f"send-{UNSAFE.sub('_', canonical)[:80]}-{digest}.eml"

    def send_batch(
        self, template: PersonalizedTemplate, readers: Sequence[Reader], key: str
    ) -> BatchResult:
        """One .eml file per reader, with that reader's own copy."""
        base = template.email
        for reader in readers:
            path = self.reader_file(base.slug, reader.email)
            self._write(path, [reader.email], template.copy(reader).email(base), reader.email)
        return BatchResult([("sent", str(self.reader_file(base.slug, r.email))) for r in readers])

    def lookup(self, esp_ids: dict[str, str]) -> DeliveryState:
        target = esp_ids.get("file") or esp_ids.get("folder")
        if not target:
            return DeliveryState.UNKNOWN
        return DeliveryState.SENT if Path(target).exists() else DeliveryState.NOT_SENT
