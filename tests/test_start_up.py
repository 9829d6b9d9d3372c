"""What a start of `spark-mail` loads: each command pays only for what it uses.

A cold `spark-mail build` and `spark-mail --help` are mostly Python importing libraries
(bench/build.py times them). These tests run real processes, each with its own temp folder
(so its own cache of compiled layouts and selector translations), and look at sys.modules.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SAMPLE_ISSUE, run_cli

NEWSLETTER = SAMPLE_ISSUE.parent.parent
MAIN = (
    "import sys\n"
    "sys.argv = ['spark-mail', *{args!r}]\n"
    "from spark_mail.cli import main\n"
    "try:\n"
    "    main()\n"
    "finally:\n"
    "    loaded = sorted(m for m in {watch!r} if m in sys.modules)\n"
    "    print('LOADED', loaded, file=sys.stderr)\n"
)


def start(
    args: list[str],
    watch: list[str],
    temp: Path,
    cwd: Path = NEWSLETTER,
    pythonpath: str | None = None,
    memory: int | None = None,
) -> tuple[str, list[str]]:
    """Run spark-mail's main() in a fresh interpreter: (its stdout, which of `watch` it
    loaded). `temp` is its temp folder (TMPDIR); `memory` caps its address space (bytes)."""
    env = {**os.environ, "TMPDIR": str(temp)}
    env.pop("SPARK_MAIL_SIGNING_SECRET", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath

    def cap() -> None:
        if memory:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    result = subprocess.run(
        [sys.executable, "-c", MAIN.format(args=args, watch=watch)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, preexec_fn=cap,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-1500:]
    line = next(li for li in result.stderr.splitlines() if li.startswith("LOADED "))
    return result.stdout, eval(line.removeprefix("LOADED "))


def selectors_file(temp: Path) -> Path:
    (cache,) = temp.glob("_jinja2-cache-*")
    return cache / "spark-mail-selectors.json"


def test_help_loads_no_rich(tmp_path: Path) -> None:
    """`--help` prints through click: rich (about a fifth of a start) stays unloaded."""
    out, loaded = start(["--help"], ["rich", "rich.console", "jinja2", "lxml"], tmp_path)
    assert "build" in out and "send" in out
    assert loaded == []


@pytest.mark.slow  # a real spark-mail process
def test_a_second_build_loads_no_cssselect_and_writes_the_same_email(tmp_path: Path) -> None:
    """The first build translates the layout's CSS selectors and keeps the translations;
    the next one reads them and never imports cssselect. The email is byte-for-byte the
    same, and so is it after a damaged or foreign translations file (which is rewritten)."""
    watch = ["cssselect", "spark_mail.desk.links", "spark_mail.personalize", "rich.table"]
    emails = []
    for run in range(4):
        if run == 2:
            selectors_file(tmp_path).write_text("{not json", encoding="utf-8")
        if run == 3:
            data = {"cssselect": "another version", "selectors": {"p": ["//nothing", [0, 0, 1]]}}
            selectors_file(tmp_path).write_text(json.dumps(data), encoding="utf-8")
        out_dir = tmp_path / f"out{run}"
        _, loaded = start(["build", str(SAMPLE_ISSUE), "--out", str(out_dir)], watch, tmp_path)
        # Links are not signed in the sample: the desk's token code is not needed either.
        assert "spark_mail.desk.links" not in loaded and "spark_mail.personalize" not in loaded
        assert "rich.table" not in loaded  # its summary is a two-column Grid
        assert ("cssselect" in loaded) == (run != 1), run
        emails.append(next(out_dir.rglob("email.html")).read_bytes())
    assert emails[0] == emails[1] == emails[2] == emails[3]
    kept = json.loads(selectors_file(tmp_path).read_text(encoding="utf-8"))
    assert kept["cssselect"] != "another version"
    assert kept["selectors"].get("p") != ["//nothing", [0, 0, 1]]


@pytest.mark.parametrize(
    "entry",
    ['"//p"', "[1, [0, 0, 1]]", '["//p", [0, 0]]', '["//p", [0, "0", 1]]', '["//p", [0, true, 1]]'],
)
def test_a_translation_of_the_wrong_shape_is_translated_again(tmp_path: Path, entry: str) -> None:
    from spark_mail.render.selectors import Translations, cssselect_stamp, read_file, translate

    path = tmp_path / "selectors.json"
    path.write_text(
        f'{{"cssselect": {json.dumps(cssselect_stamp())}, "selectors": {{"p": {entry}, '
        '"a": ["//a-kept", [0, 0, 1]]}}',
        encoding="utf-8",
    )
    assert read_file(path) == {"a": ("//a-kept", (0, 0, 1))}
    assert Translations(path).get("p") == translate("p")


def test_an_unwritable_cache_folder_is_skipped(tmp_path: Path) -> None:
    from spark_mail.render.selectors import Translations, translate

    folder = tmp_path / "gone"
    translations = Translations(folder / "selectors.json")
    assert translations.get("h1 a") == translate("h1 a")
    translations.save()  # the folder does not exist: nothing written, nothing raised
    assert not folder.exists()


@pytest.mark.slow  # a real spark-mail process
def test_emoji_codes_are_printed_as_written(newsletter: Path, tmp_path: Path) -> None:
    """rich turns ":rocket:" into a picture by default; an issue's subject is shown as the
    editor wrote it. (What the build prints, not what it loads: the warm CLI's process.)"""
    issue = newsletter / "issues" / "rocket.md"
    text = SAMPLE_ISSUE.read_text(encoding="utf-8")
    subject = next(li for li in text.splitlines() if li.startswith("subject:"))
    issue.write_text(text.replace(subject, 'subject: "Launch :rocket: day"'), encoding="utf-8")
    result = run_cli("build", str(issue), "--out", str(tmp_path / "out"), cwd=newsletter)
    assert result.returncode == 0, result.stderr[-1500:]
    out = result.stdout
    assert "Launch :rocket: day" in out
