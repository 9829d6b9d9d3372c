"""Every error spark-mail raises on purpose derives from SparkMailError.

The CLI turns any of them into one line on stderr and the exit code it carries;
anything else is a bug and keeps its traceback.

    SparkMailError                 exit 1 unless noted
    ├── ConfigError                settings files / environment (exit 2)
    ├── IssueError                 an issue file: front matter, Markdown, fields (exit 2)
    ├── LayoutError                a layout: missing, Jinja or MJML error (exit 2)
    ├── ChecksFailed               pre-send checks found errors
    ├── ProviderError              an ESP answered with an error, or could not be reached
    │   └── UnsupportedOperation   the provider cannot do what was asked
    ├── AlreadySent                the ledger says the issue went out already
    ├── LedgerError                the SQLite ledger is unreadable, corrupt or locked
    └── SnapshotError              `preview --snapshot`: no headless Chromium, or it failed
"""

from __future__ import annotations

from pathlib import Path

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
    return f"{path}:{line}" if line else f"{path}"


class ConfigError(SparkMailError):
    exit_code = EXIT_USAGE


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


class ChecksFailed(SparkMailError):
    pass


class ProviderError(SparkMailError):
    # True when the request may have reached the ESP (timeout or dropped connection after it
    # left): the send is then `uncertain`, not `failed`. Set by spark_mail/providers/base.py.
    maybe_sent = False


class UnsupportedOperation(ProviderError):
    pass


class AlreadySent(SparkMailError):
    pass


class LedgerError(SparkMailError):
    pass


class SnapshotError(SparkMailError):
    pass
