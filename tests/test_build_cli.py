"""`spark-mail build` end to end, as a real process, and its answers to bad input."""

from __future__ import annotations

import email
import importlib.metadata
import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email import policy
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import REPO, SAMPLE_SLUG, run_cli, write_issue


def test_build_sample_issue_writes_html_text_and_eml(newsletter: Path):
    """The sample issue builds into dist/<slug>/, and email.eml parses as a complete message."""
    result = run_cli("build", f"issues/{SAMPLE_SLUG}.md", cwd=newsletter)
    assert result.returncode == 0, result.stderr
    assert "of Gmail's" in result.stdout and "Sections" in result.stdout
    folder = newsletter / "dist" / SAMPLE_SLUG
    html = (folder / "email.html").read_text(encoding="utf-8")
    text = (folder / "email.txt").read_text(encoding="utf-8")
    msg = email.message_from_bytes((folder / "email.eml").read_bytes(), policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Subject"] == "Engineering Leadership: Tech, People, Product Mastery!"
    assert msg["From"] == "Tiny Big Spark <hello@tinybigspark.com>"
    assert msg["Reply-To"] == "editors@tinybigspark.com"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Message-ID"] and msg["Date"]
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    assert msg.get_body(("html",)).get_content() == html  # type: ignore[union-attr]
    assert msg.get_body(("plain",)).get_content() == text  # type: ignore[union-attr]


@pytest.mark.slow
def test_build_by_slug_with_out_dir_and_json(newsletter: Path):
    """An issue can be named by slug; --out picks the folder; --json reports for scripts."""
    result = run_cli("build", SAMPLE_SLUG, "--out", "site", "--json", cwd=newsletter)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["slug"] == SAMPLE_SLUG and report["html_bytes"] < 100 * 1024
    assert report["sections"] == ["header", "body", "sponsor", "promo", "poll", "share", "footer"]
    assert (
        Path(report["files"]["eml"]) == (newsletter / "site" / SAMPLE_SLUG / "email.eml").resolve()
    )
    assert (newsletter / "site" / SAMPLE_SLUG / "email.eml").is_file()


@pytest.mark.slow
def test_build_from_a_subfolder_finds_settings_upward(newsletter: Path):
    """Settings are found from the current directory upward."""
    result = run_cli("build", SAMPLE_SLUG, cwd=newsletter / "issues")
    assert result.returncode == 0, result.stderr
    assert (newsletter / "dist" / SAMPLE_SLUG / "email.html").is_file()


@pytest.mark.parametrize(
    ("front", "expected"),
    [
        ("title: x\ndate: someday", "'date' is not a date"),
        ("title: x\ndate: 2025-01-01\npoll:\n  question: Q\n  options: [one]", "2 to 5 options"),
        ("title: [unclosed\ndate: 2025-01-01", "not valid YAML"),
        ("date: 2025-01-01", "no 'title'"),
        ("title: x\ndate: 2025-01-01\nlayout: nope", "unknown layout 'nope'"),
    ],
)
def test_bad_issue_gives_one_line_and_writes_nothing(newsletter: Path, front: str, expected: str):
    """Bad input: one line naming the file, exit 2, no traceback, nothing written."""
    path = write_issue(newsletter, "bad", front)
    result = run_cli("build", str(path), cwd=newsletter)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (newsletter / "dist").exists()


def test_missing_file_and_bad_settings(newsletter: Path):
    """A missing issue, or a typo in the settings file, is one clear line."""
    result = run_cli("build", "issues/nope.md", cwd=newsletter)
    assert result.returncode == 2 and "no such file" in result.stderr
    (newsletter / "spark-mail.toml").write_text('name = "X"\nunsubscribe_ur = "https://x"\n')
    result = run_cli("build", SAMPLE_SLUG, cwd=newsletter)
    assert result.returncode == 2
    assert (
        "unknown setting 'unsubscribe_ur'" in result.stderr and "unsubscribe_url" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_secret_in_settings_file_is_refused(newsletter: Path):
    """An API key in the committed settings file is refused with where to put it."""
    (newsletter / "spark-mail.toml").write_text('name = "X"\napi_key = "sk_live_123"\n')
    result = run_cli("build", SAMPLE_SLUG, cwd=newsletter)
    assert result.returncode == 2 and "SPARK_MAIL_API_KEY" in result.stderr
    assert "sk_live_123" not in result.stderr + result.stdout


def test_layout_error_from_cli_names_the_layout(newsletter: Path):
    """A broken layout is reported with its file, exit 2."""
    layout = newsletter / "layouts" / "broken"
    layout.mkdir(parents=True)
    (layout / "email.mjml").write_text("<mjml><mj-body>{% if %}</mj-body></mjml>")
    path = write_issue(newsletter, "b", "title: x\ndate: 2025-01-01\nlayout: broken")
    result = run_cli("build", str(path), cwd=newsletter)
    assert result.returncode == 2 and str(layout / "email.mjml") in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_an_edited_layout_is_compiled_again_on_the_next_run(newsletter: Path):
    """Compiled layouts are kept between runs (Jinja's bytecode cache); an edit to a layout
    between two builds still shows in the second, even with the same size and mtime."""
    import os

    layout = newsletter / "layouts" / "mine"
    shutil.copytree(REPO / "spark_mail" / "layouts" / "default", layout)
    entry = layout / "email.mjml"
    marker = "<mj-section><mj-column><mj-text>first-mark</mj-text></mj-column></mj-section>"
    entry.write_text(entry.read_text().replace("</mj-body>", marker + "</mj-body>", 1))
    stamp = entry.stat()
    path = write_issue(newsletter, "m", "title: x\ndate: 2025-01-01\nlayout: mine")
    first = run_cli("build", str(path), "--out", "out", cwd=newsletter)
    assert first.returncode == 0, first.stderr
    assert "first-mark" in (newsletter / "out" / "m" / "email.html").read_text()
    entry.write_text(entry.read_text().replace("first-mark", "again-mark"))  # same size
    os.utime(entry, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    second = run_cli("build", str(path), "--out", "out", cwd=newsletter)
    assert second.returncode == 0, second.stderr
    html = (newsletter / "out" / "m" / "email.html").read_text()
    assert "again-mark" in html and "first-mark" not in html


def test_version_and_module_entry_point(newsletter: Path):
    """`python -m spark_mail --version` works."""
    result = run_cli("--version", cwd=newsletter)
    assert result.returncode == 0 and result.stdout.startswith("spark-mail ")


def unmet_build_requirements() -> list[str]:
    """pyproject's [build-system] requires that this interpreter does not satisfy: building
    offline (no build isolation) uses what is installed here, and `python3 -m venv` brings a
    setuptools older than the `license = "MIT"` form needs."""
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    unmet = []
    for text in requires:
        requirement = Requirement(text)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or not requirement.specifier.contains(installed, prereleases=True):
            unmet.append(f"{text} (installed: {installed or 'none'})")
    return unmet


@pytest.mark.slow
@pytest.mark.skipif(
    bool(unmet_build_requirements()),
    reason=f"building a wheel offline needs {', '.join(unmet_build_requirements())}: "
    "`pip install -U setuptools wheel` (.ci/run does)",
)
def test_wheel_ships_the_default_layout(tmp_path: Path):
    """A pip-installed spark-mail finds the default layout: it is package data in the wheel."""
    # Build from a copy, so the build leaves nothing in the checkout (build/, *.egg-info).
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("spark_mail", "layouts"):
        shutil.copytree(REPO / name, source / name, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    # The wheel `pip wheel --no-deps --no-build-isolation` builds: pip asks the project's
    # build backend (setuptools' build_meta, in a process of its own) for it; asked here
    # directly, without pip's own start and resolution (~2 s of CPU, ~2/3 of the build).
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    build = "import sys; from setuptools import build_meta; build_meta.build_wheel(sys.argv[1])"
    subprocess.run(
        [sys.executable, "-c", build, str(wheels)],
        cwd=source, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheels.glob("spark_mail-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for part in ("email.mjml", "partials/header.mjml", "partials/sponsor.mjml", "partials/promo.mjml",
                 "partials/poll.mjml", "partials/share.mjml", "partials/footer.mjml"):  # fmt: skip
        assert f"spark_mail/layouts/default/{part}" in names


def test_build_without_local_layouts_uses_the_packaged_default(newsletter: Path):
    """A newsletter folder with no layouts/ still builds with the default layout."""
    assert not (newsletter / "layouts").exists()
    result = run_cli("build", SAMPLE_SLUG, cwd=newsletter)
    assert result.returncode == 0, result.stderr
