"""Layouts: Jinja2 renders a layout's MJML, mjml-python (MRML) compiles it to HTML.

A layout is a folder with `email.mjml` (the entry) and any partials it includes. It is looked
up in the newsletter's `layouts/` first, then in the default layouts shipped with spark-mail;
includes fall back the same way, so a custom layout can reuse the default partials.
"""

from __future__ import annotations

import contextlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from spark_mail.errors import LayoutError

ENTRY = "email.mjml"
INLINE_STYLE_RE = re.compile(
    r"<mj-style\b[^>]*\binline\s*=\s*[\"']inline[\"'][^>]*>(.*?)</mj-style>", re.S | re.I
)
UNKNOWN_TAG_RE = re.compile(r"<(mj-[a-z-]+)")
POSITION_RE = re.compile(r"at position (\d+):(\d+)")
# An <img> tag read attribute by attribute, so that a quoted value holding `width=` or `>`
# (an alt text) is not taken for the attribute.
IMG_TAG_RE = re.compile(
    r"<img\b((?:\s+[^\s=>/]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))?)*)\s*/?>", re.I
)
ATTRIBUTE_NAME_RE = re.compile(r"\s+([^\s=>/]+)(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s>]+))?", re.I)


def find_layout(name: str, search: list[Path], source: str = "") -> Path:
    """The folder of layout `name`; `source` ("file:line" of the issue that asks for it)
    starts the error message when there is no such layout."""
    for folder in search:
        candidate = folder / name
        if (candidate / ENTRY).is_file():
            return candidate
    available = sorted(
        {p.parent.name for folder in search if folder.is_dir() for p in folder.glob(f"*/{ENTRY}")}
    )
    where = f"{source}: " if source else ""
    raise LayoutError(
        f"{where}unknown layout {name!r} (looked in {', '.join(str(s) for s in search[:1])})",
        hint=f"use one of: {', '.join(available) or 'default'}, or create layouts/{name}/{ENTRY}",
    )


class CompiledLayouts(jinja2.FileSystemBytecodeCache):
    """Compiled layout templates kept between runs, as Python keeps __pycache__: compiling
    the default layout's templates is a tenth of a cold `spark-mail build`. Jinja's own
    per-user folder in the temp directory (mode 0700, checked); an entry is used only while
    its template's source is unchanged. A cache that cannot be written is skipped."""

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


def compiled_layouts() -> CompiledLayouts | None:
    try:
        return CompiledLayouts()
    except (OSError, RuntimeError):  # no usable temp folder: compile every time
        return None


@lru_cache(maxsize=1)
def cache_folder() -> Path | None:
    """The checked per-user folder of the compiled layouts (and the inliner's selectors)."""
    cache = compiled_layouts()
    return Path(cache.directory) if cache is not None else None


@lru_cache(maxsize=16)
def environment(search: tuple[Path, ...]) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(p) for p in search]),
        bytecode_cache=compiled_layouts(),
        undefined=jinja2.StrictUndefined,
        autoescape=True,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["default"] = env.filters["d"] = default_filter
    env.filters["email_images"] = email_images
    return env


def email_images(html: str, width: int) -> Markup:
    """`{{ block.html | email_images(552) }}`: every <img> without a width gets the column's
    width as an attribute. Outlook for Windows ignores CSS max-width and would show the
    image at its natural size; other clients still shrink it with `max-width:100%`."""
    safe = str(escape(html))  # Markup stays as it is; a plain value is escaped first

    def sized(match: re.Match[str]) -> str:
        names = {n.lower() for n in ATTRIBUTE_NAME_RE.findall(match.group(1))}
        if "width" in names:
            return match.group(0)
        return f'<img width="{int(width)}" height="auto"' + match.group(0)[4:]

    return Markup(IMG_TAG_RE.sub(sized, safe))


def default_filter(value: Any, default_value: Any = "", boolean: bool = False) -> Any:
    """Jinja's `default`, except that a per-reader field (a marker filled in after the
    render, see spark_mail.personalize) is handed the default to use for that reader."""
    hook = getattr(value, "__jinja_default__", None)
    if hook is not None:
        return hook(default_value, boolean)
    return jinja2.filters.do_default(value, default_value, boolean)


def render_mjml(
    layout_dir: Path, fallback: list[Path], context: dict[str, Any], template_name: str = ENTRY
) -> str:
    """Render the layout's `template_name` (the email's MJML, or a web page: site/)."""
    search = (layout_dir, *(f / "default" for f in fallback if (f / "default") != layout_dir))
    env = environment(tuple(p for p in search if p.is_dir()))
    entry = layout_dir / template_name
    try:
        template = env.get_template(template_name)
        return template.render(context)
    except jinja2.TemplateSyntaxError as exc:
        where = f"{exc.filename or entry}:{exc.lineno}"
        raise LayoutError(
            f"{where}: template error: {exc.message}", hint="fix the Jinja syntax"
        ) from None
    except jinja2.UndefinedError as exc:
        raise LayoutError(
            f"{_template_location(exc, entry)}: {exc.message}",
            hint="the layout uses a value the issue or settings do not provide; "
            "guard it with {% if %} or add it",
        ) from None
    except jinja2.TemplateNotFound as exc:
        raise LayoutError(f"{entry}: includes missing template {exc.name!r}") from None
    except jinja2.TemplateError as exc:
        raise LayoutError(f"{_template_location(exc, entry)}: template error: {exc}") from None


def _template_location(exc: BaseException, entry: Path) -> str:
    """The innermost layout file and line of a Jinja runtime error, from its traceback."""
    tb, found = exc.__traceback__, str(entry)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith((".mjml", ".j2", ".html")):
            found = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return found


def split_inline_css(mjml_text: str) -> tuple[str, str]:
    """Take the `<mj-style inline="inline">` blocks out: MRML would not inline them, we do."""
    css = "\n".join(m.group(1) for m in INLINE_STYLE_RE.finditer(mjml_text))
    return INLINE_STYLE_RE.sub("", mjml_text), css


def compile_mjml(mjml_text: str, layout_dir: Path) -> str:
    from mjml import mjml2html

    entry = layout_dir / ENTRY
    try:
        # Comments inside mj-wrapper leak a stray <tr><td> into MRML's Outlook markup.
        html = mjml2html(mjml_text, disable_comments=True, fonts={})
    except (ValueError, RuntimeError) as exc:
        message = str(exc)
        line = ""
        match = POSITION_RE.search(message)
        if match:
            offset = int(match.group(1))
            lineno = mjml_text.encode()[:offset].count(b"\n") + 1
            line = f", line {lineno} of the rendered MJML"
        raise LayoutError(
            f"{entry}: MJML error: {message}{line}",
            hint="check that every mj- tag is closed and allowed where it stands",
        ) from None
    unknown = UNKNOWN_TAG_RE.search(html)
    if unknown:
        raise LayoutError(
            f"{entry}: unknown MJML tag <{unknown.group(1)}> (MJML copied it into the email)",
            hint="fix the tag name; see https://documentation.mjml.io for the tags",
        )
    return html
