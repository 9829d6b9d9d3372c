"""Attacks on what a start keeps and loads: the inliner's remembered selector translations
(spark_mail.render.selectors), the consoles made on first use, typer without postponed
annotations.

The translations file lives in Jinja's per-user folder (mode 0700, checked), beside the
compiled layouts that Python runs: whoever can write it can already run code as the user, so
a forged translation is no threat of its own. What these tests hold is that nothing in that
file (damage, an old spark-mail, a FIFO, a runaway size) can stop, hang or change a build:
the worst a bad file may cost is cssselect's import.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_start_up import NEWSLETTER, start

from conftest import SAMPLE_ISSUE

SAMPLE = SAMPLE_ISSUE.stem


def build(
    temp: Path,
    out: Path,
    issue: Path = SAMPLE_ISSUE,
    cwd: Path = NEWSLETTER,
    pythonpath: str | None = None,
    memory: int | None = None,
) -> tuple[bytes, bool]:
    """`spark-mail build` in a fresh interpreter with TMPDIR=temp: (email.html, whether it
    imported cssselect). `memory`: a cap on the address space, in bytes."""
    args = ["build", str(issue), "--out", str(out)]
    _, loaded = start(args, ["cssselect"], temp, cwd, pythonpath=pythonpath, memory=memory)
    return next(out.rglob("email.html")).read_bytes(), loaded == ["cssselect"]


def cache(temp: Path) -> Path:
    """The per-user folder Jinja checks (made here as Jinja makes it, 0700)."""
    folder = temp / f"_jinja2-cache-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def selectors_file(temp: Path) -> Path:
    return cache(temp) / "spark-mail-selectors.json"


@pytest.fixture(scope="module")
def clean_email(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The sample's email.html from a build with no translations file (one build, in its
    own temp folder, for every test that compares with it)."""
    temp = tmp_path_factory.mktemp("clean")
    html, loaded = build(temp, temp / "out")
    assert loaded
    return html


def stamped(selectors: object) -> str:
    from spark_mail.render.selectors import cssselect_stamp

    return json.dumps({"cssselect": cssselect_stamp(), "selectors": selectors})


# --- the file's content ---------------------------------------------------------------------


@pytest.mark.parametrize("table", ["[1]", '"p"', "5", "true", '[["p", ["//p", [0, 0, 1]]]]'])
def test_a_selectors_table_that_is_not_an_object_is_ignored(tmp_path: Path, table: str) -> None:
    """Found: `"selectors": [1]` (any non-object with a stamp that matches) raised
    AttributeError ('list' object has no attribute 'items') in every build until the file
    was deleted by hand: the build stopped before it could write a good one."""
    from spark_mail.render.selectors import Translations, read_file, translate

    path = tmp_path / "selectors.json"
    path.write_text(stamped(None).replace("null", table), encoding="utf-8")
    assert read_file(path) == {}
    translations = Translations(path)
    assert translations.get("h1 a") == translate("h1 a")
    translations.save()
    assert read_file(path) == {"h1 a": translate("h1 a")}


def test_a_deeply_nested_file_is_ignored(tmp_path: Path) -> None:
    """Found: JSON nested 100,000 deep raised RecursionError (not a ValueError) out of
    json.loads: every build failed with a traceback."""
    from spark_mail.render.selectors import read_file

    path = tmp_path / "selectors.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    assert read_file(path) == {}


# --- what stands in the file's place --------------------------------------------------------


@pytest.fixture(params=["fifo", "dev-zero", "sparse-gigabyte"])
def not_a_file(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    path = selectors_file(tmp_path)
    if request.param == "fifo":
        os.mkfifo(path)
    elif request.param == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        with path.open("wb") as sparse:
            sparse.truncate(1 << 30)
    yield tmp_path


@pytest.mark.slow  # a real spark-mail process
def test_what_stands_in_the_files_place_neither_hangs_nor_exhausts_a_build(
    not_a_file: Path, clean_email: bytes
) -> None:
    """Found: a FIFO in the file's place hung every build (reading it waits for a writer
    forever); a link to /dev/zero, or a runaway 1 GiB file, was read whole (a MemoryError
    under a 1 GiB cap, else gigabytes). Right: only a regular file of a sane size, not a
    link, is read; the build goes on as without one."""
    html, loaded = build(not_a_file, not_a_file / "out", memory=1 << 30)
    assert html == clean_email and loaded


@pytest.mark.slow  # a real spark-mail process
def test_a_link_in_the_files_place_is_replaced_not_written_through(
    tmp_path: Path, clean_email: bytes
) -> None:
    """Held: a symlink to a file the user cares about is replaced by the new file; the
    file it pointed to is untouched."""
    precious = tmp_path / "precious.txt"
    precious.write_text("my notes\n", encoding="utf-8")
    path = selectors_file(tmp_path)
    path.symlink_to(precious)
    html, _ = build(tmp_path, tmp_path / "out")
    assert html == clean_email
    assert precious.read_text(encoding="utf-8") == "my notes\n"
    assert stat.S_ISREG(path.lstat().st_mode)


@pytest.mark.slow  # a real spark-mail process
def test_a_foreign_cache_folder_still_builds(tmp_path: Path, clean_email: bytes) -> None:
    """Held: a cache folder open to everyone (0777) is made 0700 again by Jinja; one that is
    not a folder at all makes the build run without a cache."""
    folder = cache(tmp_path)
    folder.chmod(0o777)
    html, _ = build(tmp_path, tmp_path / "out1")
    assert html == clean_email and stat.S_IMODE(folder.stat().st_mode) == 0o700
    other = tmp_path / "other"
    other.mkdir()
    (other / f"_jinja2-cache-{os.getuid()}").write_text("not a folder", encoding="utf-8")
    html, loaded = build(other, other / "out")
    assert html == clean_email and loaded


# --- the translations in it ----------------------------------------------------------------


BAD_XPATHS = [
    "///",  # lxml refuses it: XPathSyntaxError
    "1+1",  # a number: 'float' object is not iterable
    "'text'",  # a string: its characters were taken for elements
    "foo()",  # XPathEvalError: unregistered function
    "$x",  # XPathEvalError: undefined variable
    "descendant-or-self::text()",  # strings, not elements
    "descendant-or-self::*/@class",
    "descendant-or-self::comment()",  # comments: "does not have children or attributes"
]


@pytest.mark.parametrize("index", range(len(BAD_XPATHS)))
def test_a_remembered_translation_lxml_cannot_use_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, index: int
) -> None:
    """Found: an entry of the right shape ([text, [a, b, c]]) whose XPath lxml refuses, or
    which selects something other than elements, crashed the inliner (XPathSyntaxError,
    XPathEvalError, TypeError, AttributeError) in every build, since the build stopped before
    the file was written again. Right: the selector is translated again, the email is the
    one a clean run makes, and the file is mended."""
    from spark_mail.render import inline, selectors

    selector = f".attack{index} p"  # one selector per case: nothing cached in this process
    html = (
        "<!doctype html><html><head></head><body><!-- c -->"
        f'<div class="attack{index}"><p>one</p><p style="margin:0">two</p></div></body></html>'
    )

    def inlined(path: Path, selector: str) -> str:
        translations = selectors.Translations(path)
        monkeypatch.setattr(selectors, "translations", lambda: translations)
        monkeypatch.setattr(inline, "translations", lambda: translations)
        return inline.inline_css(html, f"{selector} {{ color: red; text-align: center }}")

    # Another selector of the same elements: its own entry, the same email.
    clean = inlined(tmp_path / "clean.json", f"div{selector}")
    assert clean.count("color:red") == 2
    damaged = tmp_path / "damaged.json"
    damaged.write_text(stamped({selector: [BAD_XPATHS[index], [0, 1, 1]]}), encoding="utf-8")
    assert inlined(damaged, selector) == clean
    assert selectors.read_file(damaged) == {selector: selectors.translate(selector)}


@pytest.mark.slow  # a real spark-mail process
def test_a_build_after_a_damaged_translation_writes_the_same_email(
    tmp_path: Path, clean_email: bytes
) -> None:
    """The same through real builds: a translation lxml refuses, of a selector the default
    layout uses, neither stops the build nor changes the email; the next build has no
    cssselect to import again."""
    path = selectors_file(tmp_path)
    path.write_text(stamped({".prose h1": ["///", [0, 1, 1]]}), encoding="utf-8")
    html, loaded = build(tmp_path, tmp_path / "out1")
    assert html == clean_email and loaded
    html, loaded = build(tmp_path, tmp_path / "out2")
    assert html == clean_email and not loaded


def custom_layout(newsletter: Path, css: str) -> Path:
    """An issue of a layout `custom`: the default one, with `css` added to the inlined CSS."""
    folder = newsletter / "layouts" / "custom"
    shutil.copytree(NEWSLETTER / "layouts" / "default", folder)
    styles = folder / "partials" / "styles.mjml"
    text = styles.read_text(encoding="utf-8")
    head, tail = text.split("</mj-style>", 1)
    styles.write_text(f"{head}{css}\n</mj-style>{tail}", encoding="utf-8")
    text = SAMPLE_ISSUE.read_text(encoding="utf-8")
    issue = newsletter / "issues" / "custom.md"
    issue.write_text(text.replace("\n---", "\nlayout: custom\n---", 1), encoding="utf-8")
    return issue


@pytest.mark.slow  # a real spark-mail process
def test_a_namespaced_selector_in_a_layout_is_skipped(newsletter: Path, tmp_path: Path) -> None:
    """Found (a layout's author): `svg|rect` or `a[xlink|href]` in the inlined CSS became
    XPath with a namespace prefix lxml does not know, and the build died with
    XPathEvalError (before this change too). Right: the rule is skipped like any selector
    the inliner cannot use, in the first build and in those that read the translations;
    the rest of the CSS is inlined."""
    issue = custom_layout(
        newsletter,
        "svg|rect { color: #010203 }\na[xlink|href] { color: #010203 }\n"
        ".prose h1 { letter-spacing: 1px }",
    )
    first, loaded = build(tmp_path, tmp_path / "out1", issue, newsletter)
    assert loaded and b"#010203" not in first and b"letter-spacing:1px" in first
    second, loaded = build(tmp_path, tmp_path / "out2", issue, newsletter)
    assert second == first and not loaded


ODD_SELECTORS = (
    'p[title="a\'b\\"c"] { color: #0a0b0c }\n'
    ".\\31 23, #a\\:b, *|p > span, td ~ td { color: #0a0b0c }\n"
    "é, .prose  >  h2 ,, p > > a { color: #0a0b0c }\n"
    ".prose a:not(.button) { text-decoration: underline }\n"
    ".x\\0 y { color: #0a0b0c }\n"
)


@pytest.mark.slow  # a real spark-mail process
def test_a_layout_of_odd_selectors_builds_the_same_email_from_remembered_translations(
    newsletter: Path, tmp_path: Path
) -> None:
    """Held: quotes, escapes, a NUL escape, non-ASCII names, empty and refused selectors all
    come back from the file as they were translated: the two builds are byte-identical."""
    issue = custom_layout(newsletter, ODD_SELECTORS)
    first, loaded = build(tmp_path, tmp_path / "out1", issue, newsletter)
    assert loaded
    second, loaded = build(tmp_path, tmp_path / "out2", issue, newsletter)
    assert second == first and not loaded


# --- who made the file ----------------------------------------------------------------------


@pytest.mark.slow  # a real spark-mail process
def test_translations_of_another_spark_mail_are_not_used(tmp_path: Path) -> None:
    """Found: the file was tied to the installed cssselect only. A spark-mail whose own
    translation changes (another translator option, a prefix) kept reading what the old one
    wrote, until cssselect itself was upgraded: its emails depended on which version had
    built first. Right: the file is tied to the code that translates too."""
    copy = tmp_path / "other" / "spark_mail"
    shutil.copytree(NEWSLETTER / "spark_mail", copy)
    module = copy / "render" / "selectors.py"
    text = module.read_text(encoding="utf-8")
    marked = text.replace(
        "HTMLTranslator().selector_to_xpath(parsed)",
        'HTMLTranslator().selector_to_xpath(parsed) + "[true()]"',
    )
    assert marked != text
    module.write_text(marked, encoding="utf-8")
    build(tmp_path, tmp_path / "out1")
    old = json.loads(selectors_file(tmp_path).read_text(encoding="utf-8"))["selectors"]
    assert not old[".prose h1"][0].endswith("[true()]")
    newsletter = tmp_path / "newsletter"  # not the repository: `python -c` imports from cwd
    newsletter.mkdir()
    shutil.copy(NEWSLETTER / "spark-mail.toml", newsletter)
    _, loaded = build(tmp_path, tmp_path / "out2", cwd=newsletter, pythonpath=str(copy.parent))
    assert loaded
    new = json.loads(selectors_file(tmp_path).read_text(encoding="utf-8"))["selectors"]
    assert new[".prose h1"][0].endswith("[true()]")


def test_a_full_file_still_remembers_the_selectors_in_use(tmp_path: Path) -> None:
    """Found: once MAX_ENTRIES translations had piled up (every selector ever edited in a
    layout stays), a new selector was never remembered again and every build imported
    cssselect for good. Right: the selectors of this run are kept, the oldest others go."""
    from spark_mail.render.selectors import MAX_ENTRIES, Translations, read_file, translate

    path = tmp_path / "selectors.json"
    path.write_text(
        stamped({f".old{i}": ["descendant-or-self::p", [0, 1, 0]] for i in range(MAX_ENTRIES)}),
        encoding="utf-8",
    )
    translations = Translations(path)
    assert translations.get(".old7") == ("descendant-or-self::p", (0, 1, 0))
    assert translations.get(".new p") == translate(".new p")
    translations.save()
    kept = read_file(path)
    assert len(kept) == MAX_ENTRIES
    assert kept[".new p"] == translate(".new p") and ".old7" in kept
    assert ".old0" not in kept and f".old{MAX_ENTRIES - 1}" in kept
