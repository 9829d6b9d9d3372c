"""Third-party providers: a package adds an ESP through the entry point group
`spark_mail.providers`. The package here is a real distribution on sys.path (a module and
a .dist-info folder with its entry_points.txt), found by importlib.metadata as pip's would be."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SAMPLE_SLUG, run_cli
from spark_mail.config import load_settings
from spark_mail.errors import ConfigError
from spark_mail.providers.registry import get_provider, installed, provider_class
from spark_mail.providers.smtp import SmtpProvider
from spark_mail.sending import send_issue

PLUGIN = '''
from pathlib import Path

from spark_mail.providers.base import Capability, Provider, SendResult


class AcmeProvider(Provider):
    """Writes each test send to acme-sent.txt in the current folder."""

    name = "acme"
    capabilities = frozenset({Capability.TEST})

    def send_test(self, email, recipients):
        with Path("acme-sent.txt").open("a", encoding="utf-8") as fh:
            fh.write(f"{email.subject} -> {', '.join(recipients)}\\n")
        return SendResult(esp_ids={"acme_id": "1"}, requests=1, recipients=len(recipients))


class NotAProvider:
    pass
'''


def install(folder: Path, entries: dict[str, str]) -> Path:
    """The package `acme_mail` 1.0 with these entry points, on a folder for sys.path."""
    (folder / "acme_mail").mkdir(parents=True)
    (folder / "acme_mail" / "__init__.py").write_text(PLUGIN, encoding="utf-8")
    info = folder / "acme_mail-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-mail\nVersion: 1.0\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entries.items())
    (info / "entry_points.txt").write_text(f"[spark_mail.providers]\n{lines}")
    return folder


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = install(
        tmp_path / "site",
        {
            "acme": "acme_mail:AcmeProvider",
            "smtp": "acme_mail:AcmeProvider",
            "broken": "acme_mail:Missing",
            "plain": "acme_mail:NotAProvider",
        },
    )
    monkeypatch.syspath_prepend(str(folder))
    installed.cache_clear()
    yield folder
    installed.cache_clear()


def test_an_installed_package_adds_a_provider_that_sends(plugins, newsletter):
    """SPARK_MAIL_PROVIDER=acme picks the package's provider, and a test send goes through
    spark-mail's normal path to it."""
    settings = load_settings(newsletter, env={"SPARK_MAIL_PROVIDER": "acme"})
    assert type(get_provider(settings)).__name__ == "AcmeProvider"
    report = send_issue(SAMPLE_SLUG, settings, mode="test", to=["editor@example.com"])
    assert report.outcome == "tested"
    assert "-> editor@example.com" in (newsletter / "acme-sent.txt").read_text()


def test_a_built_in_name_wins_over_a_package_with_a_warning(plugins, caplog):
    """A package cannot take over `smtp`: the built-in provider is used, a warning says so."""
    with caplog.at_level(logging.WARNING, logger="spark_mail.providers"):
        assert provider_class("smtp") is SmtpProvider
    assert any("'smtp' of the package acme-mail is ignored" in r.message for r in caplog.records)


def test_a_broken_package_provider_is_one_line(plugins):
    """An entry point that cannot be imported, or names no Provider: one ConfigError line."""
    with pytest.raises(ConfigError, match=r"'broken' .* cannot be loaded: AttributeError"):
        provider_class("broken")
    with pytest.raises(ConfigError, match="not a spark_mail Provider class"):
        provider_class("plain")
    with pytest.raises(ConfigError, match="did you mean 'acme'"):
        provider_class("acmee")


@pytest.mark.slow
def test_the_cli_sends_through_a_package_provider(plugins, newsletter):
    """`spark-mail send ISSUE --test --provider acme` in a real process finds the package."""
    result = run_cli(
        "send",
        SAMPLE_SLUG,
        "--test",
        "--provider",
        "acme",
        "--to",
        "editor@example.com",
        cwd=newsletter,
        env={"PYTHONPATH": str(plugins)},
    )
    assert result.returncode == 0, result.stderr
    assert "-> editor@example.com" in (newsletter / "acme-sent.txt").read_text()
