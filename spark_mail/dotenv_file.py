"""`.env`, this machine's settings and secrets, read as people write it, refused with one
clear line where it cannot be read as meant.

The syntax is python-dotenv's: `export KEY=value`, single or double quotes, `# comments`
after a space, CRLF line ends, a byte-order mark, `${VAR}` replaced by that variable (quoted
or not); a key set twice keeps its last value. What is refused, naming the file
and line and never the value (it may be a secret):

- a file that is not UTF-8 text;
- a line python-dotenv cannot read (an unclosed quote), which it would only warn about and
  drop, so a password would go missing without a word;
- a `SPARK_MAIL_...` key that no setting has (a typo such as SPARK_MAIL_SMTP_PASWORD), with
  a did-you-mean, as an unknown key in spark-mail.toml is;
- a `.env` that is there but no file: a folder, or a link to a file that is not there (a
  secrets mount missing under cron), which would leave every key unset.
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Collection
from pathlib import Path

from spark_mail.errors import ConfigError, located


def read_dotenv(path: Path, known: Collection[str], prefix: str) -> dict[str, str]:
    """The KEY=value pairs of `path` (none when there is no such file). `known`: the names
    starting with `prefix` that mean something; any other such name is an error."""
    text = _text(path)
    if text is None:
        return {}
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    for binding in parse_stream(io.StringIO(text)):
        where = located(path, binding.original.line)
        if binding.error:
            raise ConfigError(
                f"{where}: cannot read this line (an unclosed quote?); nothing was used from it",
                hint='write KEY=value, and close a quote you open: KEY="two words"',
            )
        key = binding.key or ""
        if key.startswith(prefix) and key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            raise ConfigError(
                f"{where}: unknown setting {key}",
                hint=f"did you mean {close[0]}?" if close else "remove it (see .env.example)",
            )
    values = dotenv_values(stream=io.StringIO(text))
    return {k: v for k, v in values.items() if v is not None}


def _text(path: Path) -> str | None:
    """The file's text; None when there is no .env at all."""
    if not path.exists() and not path.is_symlink():
        return None
    if not path.is_file():
        what = "a link to a file that is not there" if path.is_symlink() else "not a file"
        raise ConfigError(
            f"{path}: is {what}, so none of this machine's settings and secrets can be read",
            hint="make .env a file (spark-mail init writes one from .env.example)",
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read it ({exc.strerror})", hint="check its owner and mode (600)"
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{located(path, line)}: is not UTF-8 text", hint="save the file as UTF-8"
        ) from None
