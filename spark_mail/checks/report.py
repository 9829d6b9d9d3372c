"""What the checks found: Findings with a rule id, a severity and a fix hint, in one Report."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from spark_mail.errors import ChecksFailed
from spark_mail.render import GMAIL_CLIP_BYTES

if TYPE_CHECKING:
    from spark_mail.checks.links import LinkResult


class Severity(StrEnum):
    ERROR = "error"  # blocks a send
    WARNING = "warning"  # advice (blocks with --strict)
    INFO = "info"  # worth knowing, never blocks: a feature used on purpose with a fallback


SEVERITY_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}


@dataclass(frozen=True)
class Finding:
    rule_id: str
    severity: Severity
    message: str
    hint: str

    def to_json(self) -> dict[str, str]:
        return {
            "rule_id": self.rule_id,
            "severity": str(self.severity),
            "message": self.message,
            "hint": self.hint,
        }


class RuleBook:
    """A module's rules, each registered once with its severity and its usual fix: a finding
    names its rule and says what was found, and passes a fix only where it depends on that."""

    def __init__(self, *, errors: dict[str, str], warnings: dict[str, str]) -> None:
        self.rules = {rule_id: (Severity.ERROR, fix) for rule_id, fix in errors.items()}
        self.rules.update({rule_id: (Severity.WARNING, fix) for rule_id, fix in warnings.items()})

    def finding(self, rule_id: str, message: str, fix: str | None = None) -> Finding:
        severity, usual_fix = self.rules[rule_id]
        return Finding(rule_id, severity, message, usual_fix if fix is None else fix)


@dataclass
class Report:
    """What the checks found for one email."""

    slug: str
    findings: list[Finding] = field(default_factory=list)
    html_bytes: int = 0
    link_count: int = 0
    links_checked: bool = False
    links: list[LinkResult] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.WARNING]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.INFO]

    @property
    def problems(self) -> list[Finding]:
        """Errors and warnings: what `clean` means there are none of."""
        return [f for f in self.findings if f.severity is not Severity.INFO]

    @property
    def ok(self) -> bool:
        return not self.errors

    def failed(self, strict: bool = False) -> bool:
        return bool(self.errors) or (strict and bool(self.warnings))

    def summary(self) -> str:
        def plural(n: int, word: str) -> str:
            return f"{n} {word}{'' if n == 1 else 's'}"

        if not self.problems:
            return "clean"
        return f"{plural(len(self.errors), 'error')}, {plural(len(self.warnings), 'warning')}"

    def raise_for_failure(self, strict: bool = False) -> None:
        """ChecksFailed (exit 1) when the report blocks a send."""
        if self.failed(strict):
            what = "errors" if self.errors else "warnings (--strict)"
            raise ChecksFailed(
                f"{self.slug}: checks failed: {self.summary()}",
                hint=f"fix the {what} listed above, then run `spark-mail check` again",
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "ok": self.ok,
            "summary": self.summary(),
            "error_count": len(self.errors),
            "warning_count": len(self.warnings),
            "info_count": len(self.notes),
            "html_bytes": self.html_bytes,
            "gmail_clip_bytes": GMAIL_CLIP_BYTES,
            "link_count": self.link_count,
            "links_checked": self.links_checked,
            "findings": [f.to_json() for f in self.findings],
            "links": [link.to_json() for link in self.links],
        }
