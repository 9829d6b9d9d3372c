"""The archive follows the sends: with `site_dir` set, a real `spark-mail send` / `dispatch`
process rebuilds it, and a failing rebuild never turns a sent issue into a failure."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import SAMPLE_SLUG, run_cli
from site_support import settings_for
from spark_mail.config import PACKAGE_LAYOUTS
from spark_mail.ledger import SendState, open_ledger


def use_site_dir(root: Path, folder: str) -> None:
    toml = root / "spark-mail.toml"
    toml.write_text(f'site_dir = "{folder}"\n' + toml.read_text(), encoding="utf-8")


def sent(root: Path, slug: str) -> bool:
    with open_ledger(settings_for(root)) as ledger:
        record = ledger.get(slug)
    return record is not None and record.state == SendState.SENT


@pytest.mark.slow
def test_send_rebuilds_the_site_so_the_emails_link_works(newsletter: Path) -> None:
    """`send --yes` (outbox): the issue's web copy is in site_dir when the command ends."""
    use_site_dir(newsletter, "public")
    result = run_cli("send", SAMPLE_SLUG, "--yes", cwd=newsletter)
    assert result.returncode == 0, result.stderr
    page = newsletter / "public" / "p" / SAMPLE_SLUG / "index.html"
    assert page.is_file() and "Engineering Leadership" in page.read_text()
    assert "web archive rebuilt" in result.stderr


@pytest.mark.slow
def test_a_failed_rebuild_warns_once_and_the_send_still_succeeds(newsletter: Path) -> None:
    """site_dir under a file: exit 0, one warning line, the ledger says sent."""
    (newsletter / "taken").write_text("a file\n")
    use_site_dir(newsletter, "taken/site")
    result = run_cli("send", SAMPLE_SLUG, "--yes", "--json", cwd=newsletter)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "web archive" in line]
    assert len(warnings) == 1 and "warning: the web archive was not rebuilt" in warnings[0]
    assert "Traceback" not in result.stderr and sent(newsletter, SAMPLE_SLUG)


@pytest.mark.slow
def test_dispatch_rebuilds_the_site_after_sending(newsletter: Path) -> None:
    """A due issue sent by `dispatch` is on the site right after the run."""
    use_site_dir(newsletter, "public")
    issue = newsletter / "issues" / f"{SAMPLE_SLUG}.md"
    issue.write_text(
        issue.read_text().replace(
            "number: 42\n", "number: 42\nsend_at: 2025-01-20T07:00:00-05:00\n"
        )
    )
    result = run_cli("dispatch", "--now", "2025-01-20T07:01:00-05:00", cwd=newsletter)
    assert result.returncode == 0, result.stderr
    assert (newsletter / "public" / "p" / SAMPLE_SLUG / "index.html").is_file()


@pytest.mark.slow
def test_without_site_dir_a_send_builds_no_site(newsletter: Path) -> None:
    """No site_dir: the send does nothing more than before."""
    result = run_cli("send", SAMPLE_SLUG, "--yes", cwd=newsletter)
    assert result.returncode == 0, result.stderr
    assert not (newsletter / "site").exists() and "web archive" not in result.stderr


@pytest.mark.slow
def test_a_rebuild_that_breaks_after_a_send_keeps_the_old_site(newsletter: Path) -> None:
    """A broken web template met by the rebuild: the send stands, the old site is intact."""
    use_site_dir(newsletter, "site")
    assert run_cli("site", "build", cwd=newsletter).returncode == 0
    before = {p: p.read_bytes() for p in (newsletter / "site").rglob("*") if p.is_file()}
    assert (newsletter / "site" / "index.html").is_file()  # there is a site to keep
    layout = newsletter / "layouts" / "default"
    shutil.copytree(PACKAGE_LAYOUTS / "default", layout)
    (layout / "web.html").write_text("{% if %}\n")
    result = run_cli("send", SAMPLE_SLUG, "--yes", cwd=newsletter)
    assert result.returncode == 0, result.stderr
    assert "web archive was not rebuilt" in result.stderr and "web.html" in result.stderr
    assert sent(newsletter, SAMPLE_SLUG)
    after = {p: p.read_bytes() for p in (newsletter / "site").rglob("*") if p.is_file()}
    assert after == before
