"""The preview's web pane: the issue's web copy next to the email, rebuilt on every save."""

from __future__ import annotations

from pathlib import Path

from conftest import SAMPLE_SLUG
from site_support import get
from spark_mail.config import load_settings
from spark_mail.drafting.preview import PreviewServer


def test_preview_shows_the_web_copy_and_follows_edits(newsletter: Path) -> None:
    """/ has a web pane; /web.html is the archive's page (no preheader), rebuilt on save."""
    issue = newsletter / "issues" / f"{SAMPLE_SLUG}.md"
    settings = load_settings(newsletter, env={})
    with PreviewServer(issue, settings, poll_interval=0.05) as server:
        _, index = get(server.url)
        assert 'title="web"' in index and "/web.html" in index
        status, web = get(server.url + "web.html")
        assert status == 200 and '<link rel="alternate" type="application/rss+xml"' in web
        assert "Engineering Leadership" in web and "has not been sent yet" in web
        assert "How top engineering leaders balance" not in web.split("<body>", 1)[1]
        version = server.preview.current.version
        issue.write_text(issue.read_text().replace("Until next time", "See you soon"))
        server.preview.wait_for_build(version, timeout=60)  # woken by the rebuild
        web = get(server.url + "web.html")[1]
        assert "See you soon" in web
