"""Settings, resolved in one place.

Precedence, lowest to highest:

1. built-in defaults (the dataclass fields below);
2. the newsletter file: ``spark-mail.toml``, or ``[tool.spark-mail]`` in ``pyproject.toml``,
   found from the current directory upward; its folder is the newsletter's root;
3. ``.env`` in that root (secrets and per-machine values, never committed);
4. the process environment (``SPARK_MAIL_*``);
5. command-line flags, passed in by the CLI as ``overrides``.

Secrets (API key, SMTP password, signing secret, webhook keys) may only come from 3-5: a
secret in the newsletter file is refused, since that file is committed. Core code receives
a Settings object and never reads ``os.environ`` itself.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import difflib
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from spark_mail.errors import ConfigError, NotANewsletter
from spark_mail.safe_text import describe, forbidden_character
from spark_mail.secrets import Secret

SETTINGS_FILE = "spark-mail.toml"
PACKAGE_LAYOUTS = Path(__file__).resolve().parent / "layouts"


@dataclass(frozen=True)
class Brand:
    logo_url: str = ""
    accent_color: str = "#e8590c"
    background_color: str = "#f4f4f5"


@dataclass(frozen=True)
class Settings:
    """Everything spark-mail needs to know about a newsletter and how to send it."""

    root: Path = field(default_factory=Path.cwd)
    # The newsletter
    name: str = "My Newsletter"
    from_address: str = ""
    reply_to: str = ""
    postal_address: str = ""
    # The newsletter's public site (web archive and reader desk), e.g. https://news.example.com:
    # base_url, unsubscribe_url and poll_url default to pages under it (see SITE_PAGES).
    site_url: str = ""
    base_url: str = ""  # web copy of an issue; "{slug}" is replaced
    unsubscribe_url: str = ""
    unsubscribe_mailto: str = ""
    poll_url: str = ""  # "{slug}" and "{option}" (and "{index}") are replaced
    disclaimer: str = ""
    share_text: str = (
        "Share the newsletter with your friends and colleagues if you find it valuable."
    )
    share_url: str = ""
    timezone: str = "UTC"
    language: str = "en"
    # UTM tags on the issue's links (utm_source=<this>, utm_medium=email, ...); "" = off
    utm_source: str = ""
    brand: Brand = field(default_factory=Brand)
    # Folders, relative to root
    issues_dir: str = "issues"
    layouts_dir: str = "layouts"
    out_dir: str = "dist"
    site_dir: str = ""  # set: a send rebuilds the web archive here (`spark-mail site build`)
    state_dir: str = ".spark-mail"
    # Checks
    link_cache_hours: float = 24.0
    link_timeout: float = 10.0
    # Scheduling
    late_window_hours: float = 24.0
    ledger_path: str = ""  # default: <state_dir>/ledger.sqlite3
    ledger_timeout: float = 10.0  # seconds to wait for another writer before "locked"
    # Own-list sending
    audience: str = ""
    suppression_file: str = ""
    # Sending (environment / .env)
    provider: str = ""
    api_key: Secret = field(default_factory=lambda: Secret(""))
    api_url: str = ""
    audience_id: str = ""
    test_recipients: tuple[str, ...] = ()
    smtp_host: str = ""
    smtp_port: int = 0
    smtp_user: str = ""
    smtp_password: Secret = field(default_factory=lambda: Secret(""))
    smtp_tls: str = "starttls"
    # Mailgun: the sending domain (/v3/{domain}/messages, and `audience sync`), and how far
    # ahead its plan lets a message be scheduled (o:deliverytime: 3 days, 7 on some plans)
    mailgun_domain: str = ""
    mailgun_schedule_days: float = 3.0
    # Amazon SES: the configuration set every message names (event publishing), if any
    ses_configuration_set: str = ""
    signing_secret: Secret = field(default_factory=lambda: Secret(""))
    # ESP requests: timeout per request, and retries (429 / 5xx / timeouts) bounded in number
    # and total time; backoff doubles from `send_backoff` seconds, with jitter.
    send_timeout: float = 30.0
    send_attempts: int = 5
    send_retry_seconds: float = 300.0
    send_backoff: float = 1.0
    # Requests per second to the ESP's API (0: the ESP's documented limit, e.g. Resend's 2)
    send_rate: float = 0.0
    # Own-list sending: batch calls in flight at once (0: the provider's default)
    send_concurrency: int = 0
    progress_seconds: float = 5.0  # one progress line this often under cron
    # Let the ESP merge each reader's values into one stored template (Postmark) instead of
    # sending every reader's full copy: ~1 KB per reader instead of ~45 KB.
    esp_merge: bool = True
    # The reader desk (`spark-mail serve`)
    poll_days: float = 30.0  # votes are taken this long after the issue's date (0: always)
    poll_reader_tag: str = ""  # ESP-list polls: the ESP's subscriber-id merge tag
    desk_hosts: tuple[str, ...] = ()  # host names served besides those of the page URLs
    desk_rate_limit: int = 600  # requests per minute from one client address (0: no limit)
    # ESP event webhooks on the desk (bounces, complaints): POST /webhooks/<provider>. A
    # provider's route answers only once its setting is there.
    postmark_webhook_auth: Secret = field(default_factory=lambda: Secret(""))  # "user:password"
    resend_webhook_secret: Secret = field(default_factory=lambda: Secret(""))  # "whsec_..."
    mailgun_webhook_signing_key: Secret = field(default_factory=lambda: Secret(""))
    sendgrid_webhook_public_key: str = ""  # the Event Webhook's verification key (public)
    ses_sns_topic_arns: tuple[str, ...] = ()  # SNS topics whose SES notifications count

    # -- derived paths -------------------------------------------------------
    def path(self, relative: str) -> Path:
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def issues_path(self) -> Path:
        return self.path(self.issues_dir)

    @property
    def out_path(self) -> Path:
        return self.path(self.out_dir)

    @property
    def state_path(self) -> Path:
        return self.path(self.state_dir)

    @property
    def ledger_file(self) -> Path:
        return (
            self.path(self.ledger_path) if self.ledger_path else self.state_path / "ledger.sqlite3"
        )

    def layout_dirs(self) -> list[Path]:
        """Where layouts are looked up: the newsletter's own folder first, then the package's."""
        return [self.path(self.layouts_dir), PACKAGE_LAYOUTS]

    def tzinfo(self) -> dt.tzinfo:
        """The newsletter's time zone (an IANA name), with a clear error for a wrong one."""
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"setting 'timezone' = {self.timezone!r} is not a time zone name",
                hint="use an IANA name such as Europe/Berlin or America/New_York",
            ) from None

    def web_url(self, slug: str) -> str:
        return self.base_url.replace("{slug}", slug) if self.base_url else ""

    def with_overrides(self, **overrides: Any) -> Settings:
        clean = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **_coerce(clean, "command line"))


# Where the pages of `site_url` live when base_url / unsubscribe_url / poll_url are not set.
SITE_PAGES = {
    "base_url": "/issues/{slug}/",
    "unsubscribe_url": "/unsubscribe",
    "poll_url": "/poll/{slug}?answer={index}",
}


def with_site_pages(settings: Settings) -> Settings:
    """Fill the page URLs left empty from `site_url` (an explicit setting always wins)."""
    site = settings.site_url.rstrip("/")
    if not site:
        return settings
    derived: dict[str, Any] = {
        k: site + page for k, page in SITE_PAGES.items() if not getattr(settings, k)
    }
    return dataclasses.replace(settings, **derived) if derived else settings


# Keys of the newsletter file: every field except the secrets and the root.
SECRET_FIELDS = {
    "api_key",
    "smtp_password",
    "signing_secret",
    "postmark_webhook_auth",
    "resend_webhook_secret",
    "mailgun_webhook_signing_key",
}
FILE_ALIASES = {"from": "from_address"}
# Environment variable -> field. SPARK_MAIL_<FIELD> for every non-path field.
ENV_PREFIX = "SPARK_MAIL_"


@cache
def _fields() -> Mapping[str, dataclasses.Field[Any]]:
    """Field name -> field, the root left out (made once: read only)."""
    return MappingProxyType({f.name: f for f in dataclasses.fields(Settings) if f.name != "root"})


@cache
def _env_names() -> tuple[tuple[str, str], ...]:
    """(SPARK_MAIL_<FIELD>, field) for every field the environment may set."""
    return tuple((ENV_PREFIX + key.upper(), key) for key in _fields() if key != "brand")


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    factory: Any = f.default_factory
    return factory()


def _coerce(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Turn raw values (toml, env strings, flags) into the field types and check each one
    (see `_check`), with clear errors: the one place every setting passes through."""
    fields = _fields()
    out: dict[str, Any] = {}
    for key, raw in values.items():
        try:
            default = _default(fields[key])
            if isinstance(default, Brand) and isinstance(raw, Mapping):
                unknown = sorted(set(raw) - {b.name for b in dataclasses.fields(Brand)})
                if unknown:
                    raise ConfigError(
                        f"{source}: unknown [brand] key {unknown[0]!r}", hint=_brand_hint(unknown)
                    )
            out[key] = _check(key, _converted(raw, default))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(
                f"{source}: setting {key!r} has a wrong value ({exc})",
                hint=f"fix {key!r} there",
            ) from None
    return out


def _brand_hint(unknown: list[str]) -> str:
    """A newsletter setting written below [brand] lands inside that table (TOML: every key
    after a [table] line belongs to it); say where it should go."""
    top_level = [k for k in unknown if FILE_ALIASES.get(k, k.replace("-", "_")) in _fields()]
    if top_level:
        return f"{top_level[0]!r} is a newsletter setting: move it above the [brand] line"
    return f"[brand] takes {', '.join(b.name for b in dataclasses.fields(Brand))}"


def _converted(raw: Any, default: Any) -> Any:
    if isinstance(default, Secret):
        return raw if isinstance(raw, Secret) else Secret(str(raw))
    if isinstance(default, tuple):
        items = raw.split(",") if isinstance(raw, str) else list(raw)
        return tuple(str(i).strip() for i in items if str(i).strip())
    if isinstance(default, bool):
        return raw if isinstance(raw, bool) else str(raw).lower() in {"1", "true", "yes"}
    if isinstance(default, int | float):
        return type(default)(raw) if raw != "" else default
    if isinstance(default, Brand):
        if not isinstance(raw, Mapping):
            raise ValueError("must be a table: [brand]")
        unknown = set(raw) - {b.name for b in dataclasses.fields(Brand)}
        if unknown:
            raise ValueError(f"unknown brand key {sorted(unknown)[0]!r}")
        brand = Brand(**{k: str(v) for k, v in raw.items()})
        _check_brand_colors(brand)
        return brand
    if isinstance(raw, Mapping | list):
        raise ValueError("must be a string")
    return str(raw)


def _check_brand_colors(brand: Brand) -> None:
    """The brand colours are mixed into text-safe shades and measured for contrast: each
    must be one opaque CSS colour."""
    from spark_mail.colors import parse_color

    for name in ("accent_color", "background_color"):
        value = getattr(brand, name)
        if parse_color(value) is None:
            raise ValueError(
                f"[brand] {name} = {value[:40]!r} is not an opaque CSS colour; write it as "
                "#rrggbb, rgb(...), hsl(...) or a colour name"
            )


# Settings whose text may span lines (it goes into the email's body, never a header).
MULTILINE_SETTINGS = {"postal_address", "disclaimer", "share_text"}
# Numbers: at least 0, finite, at most NUMBER_LIMITS[key] (else MAX_NUMBER); POSITIVE > 0.
MAX_NUMBER = 1_000_000
NUMBER_LIMITS = {"smtp_port": 65_535, "send_attempts": 100, "send_concurrency": 100}
POSITIVE = {"send_timeout", "link_timeout"}


# URLs every reader sees (in each email, page and feed)
PUBLIC_URLS = frozenset({"site_url", "base_url", "unsubscribe_url", "poll_url"})


def _refuse_credentials(url: str) -> None:
    """A user name or password in an address readers see would be published to every one
    of them: refused, without repeating it."""
    parts = urlsplit(url)
    if "@" in parts.netloc:
        host = parts.netloc.rpartition("@")[2]
        raise ValueError(
            f"it has a user name or password in it ({parts.scheme}://***@{host}), which every "
            "email and web page would show; remove the 'user:password@' part and protect a "
            "staging site with the web server's own access rules"
        )


def _check(key: str, value: Any) -> Any:
    """Refuse what no setting can mean and what would reach a header or a request line
    broken: text with CR/LF or another control character (`from`, `unsubscribe_url`, the
    API key, ...), numbers that are infinite, not a number, negative or absurd."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        limit = NUMBER_LIMITS.get(key, MAX_NUMBER)
        if not math.isfinite(value) or not 0 <= value <= limit:
            raise ValueError(f"{value!r} is not a number from 0 to {limit:,}")
        if key in POSITIVE and value <= 0:
            raise ValueError(f"{value!r}: it must be more than 0")
        return value
    texts: list[tuple[str, str]] = []  # (what, text)
    if isinstance(value, Secret):
        texts = [("it", value.reveal())]
    elif isinstance(value, tuple):
        texts = [(repr(item), item) for item in value]
    elif isinstance(value, Brand):
        texts = [(f"{f.name} {getattr(value, f.name)!r}", getattr(value, f.name)) for f in
                 dataclasses.fields(Brand)]  # fmt: skip
    elif isinstance(value, str):
        texts = [(repr(value[:60]), value)]
    if key in PUBLIC_URLS and isinstance(value, str):
        _refuse_credentials(value)
    for what, text in texts:
        bad = forbidden_character(text, multiline=key in MULTILINE_SETTINGS)
        if bad:
            shown = "" if isinstance(value, Secret) else f": {what}"
            raise ValueError(f"it contains {describe(bad)}{shown}")
    return value


def find_settings_file(start: Path) -> tuple[Path, dict[str, Any]] | None:
    """The nearest spark-mail.toml, or pyproject.toml with [tool.spark-mail], from start upward."""
    for folder in [start, *start.parents]:
        found = settings_file_in(folder)
        if found is not None:
            return found
    return None


def settings_file_in(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """`folder`'s own spark-mail.toml, or its pyproject.toml with [tool.spark-mail]."""
    candidate = folder / SETTINGS_FILE
    if candidate.is_file():
        return candidate, _read_toml(candidate)
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file():
        table = _read_toml(pyproject).get("tool", {}).get("spark-mail")
        if isinstance(table, dict):
            return pyproject, table
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return copy.deepcopy(_parse_toml(fh.read()))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}", hint="fix the TOML syntax") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None


@lru_cache(maxsize=16)
def _parse_toml(data: bytes) -> dict[str, Any]:
    """tomllib.load of a file's bytes, kept by content: a process that loads the settings
    again (the preview server, the desk, a dispatch of many issues) parses an unchanged
    file once. Callers get a copy."""
    return tomllib.loads(data.decode())


def _from_file(path: Path, table: Mapping[str, Any]) -> dict[str, Any]:
    known = _fields()
    values: dict[str, Any] = {}
    for raw_key, value in table.items():
        key = FILE_ALIASES.get(raw_key, raw_key.replace("-", "_"))
        if key in SECRET_FIELDS:
            raise ConfigError(
                f"{path}: {raw_key!r} is a secret and must not live in a committed file",
                hint=f"move it to .env as {ENV_PREFIX}{key.upper()}",
            )
        if key not in known:
            close = difflib.get_close_matches(key, [*known, *FILE_ALIASES], n=1)
            hint = f"did you mean {close[0]!r}?" if close else "remove it"
            raise ConfigError(f"{path}: unknown setting {raw_key!r}", hint=hint)
        values[key] = value
    return _coerce(values, str(path))


def _from_env(env: Mapping[str, str], source: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, key in _env_names():
        if name in env:
            values[key] = env[name]
    # SPARK_MAIL_FROM is the documented name for from_address.
    if ENV_PREFIX + "FROM" in env:
        values["from_address"] = env[ENV_PREFIX + "FROM"]
    return _coerce(values, source)


def read_dotenv(path: Path) -> dict[str, str]:
    """The newsletter's .env (see spark_mail/dotenv_file.py); a SPARK_MAIL_ key no setting
    has is an error there."""
    from spark_mail.dotenv_file import read_dotenv as read

    known = {ENV_PREFIX + key.upper() for key in _fields()} | {ENV_PREFIX + "FROM"}
    return read(path, known, ENV_PREFIX)


def load_settings(
    start: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    require_file: bool = False,
) -> Settings:
    """Resolve settings for the newsletter around `start` (default: the current directory).

    `require_file`: no settings file in `start` or above is an error (NotANewsletter), not
    the defaults; every CLI command that works on a newsletter asks for this."""
    start = (start or Path.cwd()).resolve()
    env = os.environ if env is None else env
    found = find_settings_file(start)
    if found is None and require_file:
        raise NotANewsletter(
            f"no {SETTINGS_FILE} in {start} or any folder above",
            hint="run `spark-mail init`, or pass -C DIR",
        )
    if found is None:
        root = start
        values: dict[str, Any] = {}
    else:
        settings_file, table = found
        root = settings_file.parent
        values = _from_file(settings_file, table)
    values.update(_from_env(read_dotenv(root / ".env"), str(root / ".env")))
    values.update(_from_env(env, "environment"))
    settings = Settings(root=root, **values)
    return with_site_pages(settings.with_overrides(**(overrides or {})))


def search_start(issue: str | Path | None, cwd: Path | None = None) -> Path:
    """Where the settings search starts: the folder of an issue named by its file path (so
    `spark-mail check ~/news/issues/x.md` works from anywhere), else the current folder."""
    cwd = cwd or Path.cwd()
    if issue is None:  # most commands: no need to import the issue parser (PyYAML) here
        return cwd
    from spark_mail.issue import names_a_file

    if not names_a_file(issue):
        return cwd
    folder = (cwd / Path(issue).expanduser()).parent
    while not folder.is_dir() and folder != folder.parent:  # a mistyped folder: its parent
        folder = folder.parent
    return folder


def newsletter_settings(
    issue: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    required: bool = True,
) -> Settings:
    """The settings of the newsletter a command works on: found upward from the issue's
    folder when `issue` is a file path, else from the current folder; none is an error
    (NotANewsletter) unless not `required` (then: the defaults)."""
    return load_settings(search_start(issue), overrides=overrides, require_file=required)
