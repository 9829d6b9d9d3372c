"""Every error spark-mail raises on purpose, in one tree.

The CLI turns any of them into one line on stderr and the exit code it carries (2 for
input a user must fix, 1 for everything else); anything else is a bug and keeps its
traceback.

    SparkMailError                 exit 1 unless noted
    ├── ConfigError                settings files, flags, environment (exit 2)
    │   └── NotANewsletter         no spark-mail.toml here or above (exit 2)
    ├── IssueError                 an issue file: front matter, Markdown, fields (exit 2)
    ├── LayoutError                a layout: missing, Jinja or MJML error (exit 2)
    ├── AudienceError              the subscribers or suppression file is unusable (exit 2)
    ├── ChecksFailed               pre-send checks found errors
    ├── PreviewError               the preview server cannot start
    ├── SnapshotError              `preview --snapshot`: no headless Chromium, or it failed
    ├── LedgerError                the SQLite ledger is unreadable, corrupt, locked or full
    ├── ProviderError              an ESP could not be reached or answered with an error;
    │   │                          `maybe_sent`: the request may have been acted on
    │   ├── UnsupportedOperation   the provider cannot do what was asked
    │   └── BatchSendFailed        own list: a batch failed as a whole, the run stopped
    ├── ReputationAtRisk           own list: the last send's complaint or hard-bounce rate
    │                              is over the limit; nothing was sent (`send --force`)
    ├── SendNotDone                the issue did not (certainly) go out this run
    │   ├── AlreadySent            the ledger says sent, scheduled, or uncertain: refused
    │   ├── SendUnconfirmed        the ESP may have acted; the next run asks it first
    │   └── SendUncertain          may have gone out and nobody can tell: a human decides
    ├── StoreError                 the reader desk's store (suppressions, votes) is
    │                              unreadable, corrupt or locked
    ├── RequestRefused             the reader desk refuses a request (a 4xx page; never
    │   │                          leaves the desk)
    │   └── WebhookRefused         an ESP webhook that does not check out (401, nothing
    │                              recorded) or cannot be read (400)
    └── SiteError                  the web archive cannot be built (colliding page paths,
                                   an output folder that cannot be written or replaced)

BatchSendFailed, SendUnconfirmed and SendUncertain carry the own-list run's `summary`
(how far it got) when there was one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spark_mail.sending.batches import BatchSummary

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class SparkMailError(Exception):
    """A failure with a message fit to show a user: what is wrong and how to fix it."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} - {self.hint}" if self.hint else self.message


def located(path: Path | str, line: int | None = None) -> str:
    """`file:line` prefix for messages about a file."""
    return f"{printable(str(path))}:{line}" if line else printable(str(path))


def printable(text: str) -> str:
    """`text` fit for a terminal line: control characters, line separators and the lone
    surrogates of an undecodable file name are shown as escapes (`\\x1b`, `\\udcff`)."""
    return text if text.isprintable() else repr(text)[1:-1]


class ConfigError(SparkMailError):
    exit_code = EXIT_USAGE


class NotANewsletter(ConfigError):
    """A command that needs the newsletter's settings ran outside any newsletter folder."""


class IssueError(SparkMailError):
    exit_code = EXIT_USAGE

    def __init__(
        self, path: Path | str, message: str, *, line: int | None = None, hint: str | None = None
    ) -> None:
        super().__init__(f"{located(path, line)}: {message}", hint=hint)
        self.path = Path(path)
        self.line = line


class LayoutError(SparkMailError):
    exit_code = EXIT_USAGE


class AudienceError(SparkMailError):
    """The subscribers or suppression file cannot be used at all."""

    exit_code = EXIT_USAGE


class ChecksFailed(SparkMailError):
    pass


class PreviewError(SparkMailError):
    pass


class LedgerError(SparkMailError):
    pass


class ProviderError(SparkMailError):
    """An ESP answered with an error (`status`, the vendor's `code`), or could not be
    reached. `maybe_sent`: the request left and the ESP may have acted on it (a timeout,
    a reset, a 5xx, an answer that cannot be read), so it is not `failed`. `fields`: the
    parts of the request the ESP's answer names, with what it says of each (SendGrid's
    `personalizations.3.to.0.email`: "Does not contain a valid address.")."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status: int | None = None,
        code: str | None = None,
        maybe_sent: bool = False,
        fields: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code
        self.maybe_sent = maybe_sent
        self.fields = fields or {}


# The name the providers use for an ESP's error answer.
EspError = ProviderError


class UnsupportedOperation(ProviderError):
    pass


class BatchSendFailed(ProviderError):
    """Own list: a batch failed as a whole and the run stopped."""

    def __init__(
        self, message: str, *, hint: str | None = None, summary: BatchSummary | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.summary = summary


class SendNotDone(SparkMailError):
    """The issue did not (certainly) go out in this run."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        slug: str = "",
        summary: BatchSummary | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.slug = slug
        self.summary = summary


class AlreadySent(SendNotDone):
    pass


class SendUnconfirmed(SendNotDone):
    """The ESP may have acted on the send; the next run finds out (asks the ESP by id, or
    repeats under the same idempotency key) before anything is sent again."""


class SendUncertain(SendNotDone):
    """An interrupted send may or may not have reached the readers; a human must decide."""

    def __init__(self, slug: str, reason: str, *, summary: BatchSummary | None = None) -> None:
        super().__init__(
            f"{slug}: uncertain - {reason}",
            hint="check in the ESP whether it went out; if it did not, run "
            f"`spark-mail send {slug} --resend-uncertain`",
            slug=slug,
            summary=summary,
        )
        self.reason = reason


class StoreError(SparkMailError):
    """The reader desk's SQLite store (`readers.sqlite3`) cannot be used."""


class RequestRefused(SparkMailError):
    """A reader desk request that gets a 4xx page: `status`, a short `title`, and the
    message (what is wrong, what the reader can do). Nothing was recorded."""

    def __init__(
        self, status: int, title: str, message: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.retry_after = retry_after


class WebhookRefused(RequestRefused):
    """An ESP's event webhook the desk does not accept: a signature, password or timestamp
    that does not check out (401), a body that cannot be read (400), a provider whose
    webhook is not set up (404). Answered as JSON; nothing was recorded."""


class ReputationAtRisk(SparkMailError):
    """Own list: the last send's complaint or hard-bounce rate is over the limit, so the
    next send is refused until someone has looked (`send --force` overrides)."""


class SiteError(SparkMailError):
    """The web archive cannot be built."""


class SnapshotError(SparkMailError):
    """`preview --snapshot` cannot take its pictures."""
