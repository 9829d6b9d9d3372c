"""The desk's pages: Jinja2 templates (autoescaped) in the newsletter's brand colours.

The stylesheet sits inline in every page and the Content-Security-Policy allows exactly
that stylesheet (by its hash) and nothing else: no scripts, no frames, no other styles;
images only from the logo's site; forms only back to the desk. Bars are widths from
classes (`w0` .. `w100`), since a strict CSP forbids inline style attributes.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from typing import Any
from urllib.parse import urlsplit

import jinja2
from markupsafe import Markup

from spark_mail.config import Brand, Settings
from spark_mail.errors import RequestRefused

COLOUR_RE = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
HTML_TYPE = b"text/html; charset=utf-8"
Headers = list[tuple[bytes, bytes]]

CSS = """
*{box-sizing:border-box}
body{margin:0;padding:24px 12px;background:%(background)s;color:#1f2328;
font:17px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif}
main{max-width:560px;margin:0 auto;background:#fff;border-radius:12px;padding:24px 20px;
border-top:6px solid %(accent)s;overflow-wrap:anywhere}
.masthead{display:flex;align-items:center;gap:10px;margin-bottom:8px}
.logo{width:40px;height:40px;border-radius:8px}
.brand{font-weight:700}
h1{font-size:1.5rem;line-height:1.25;margin:12px 0}
.small{font-size:.95rem;color:#4b5563}
button{font:inherit;font-size:1.2rem;font-weight:700;padding:12px 22px;border:0;border-radius:8px;
background:%(accent)s;color:%(on_accent)s;cursor:pointer;min-height:48px}
button.secondary{background:#fff;color:#1f2328;border:2px solid #1f2328;font-size:1rem}
.notice{background:#f3f4f6;border-left:4px solid %(accent)s;padding:10px 12px;border-radius:6px}
.results{list-style:none;padding:0;margin:16px 0}
.results li{margin:0 0 14px}
.row{display:flex;justify-content:space-between;gap:12px;flex-wrap:wrap}
.label{font-weight:600}
.chosen .label::after{content:" (your vote)";font-weight:400}
.count{color:#4b5563}
.bar{height:12px;background:#e5e7eb;border-radius:6px;overflow:hidden;margin-top:4px}
.fill{display:block;height:100%%;background:%(accent)s}
.comment label{display:block;font-weight:600;margin:16px 0 6px}
.comment input{width:100%%;font:inherit;padding:10px;border:2px solid #6b7280;border-radius:8px;
margin-bottom:10px}
"""


def _luminance(colour: str) -> float:
    digits = colour[1:]
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: float, b: float) -> float:
    light, dark = max(a, b), min(a, b)
    return (light + 0.05) / (dark + 0.05)


def stylesheet(brand: Brand) -> str:
    """The CSS in the brand's colours; text on the accent is white or near-black,
    whichever reads better (a brand colour is not always dark enough for white)."""
    default = Brand()
    accent = brand.accent_color if COLOUR_RE.fullmatch(brand.accent_color) else default.accent_color
    background = (
        brand.background_color
        if COLOUR_RE.fullmatch(brand.background_color)
        else default.background_color
    )
    lum = _luminance(accent)
    on_accent = "#ffffff" if _contrast(1.0, lum) >= _contrast(lum, 0.0) else "#111111"
    widths = "".join(f".w{n}{{width:{n}%}}" for n in range(101))
    css = CSS % {"accent": accent, "background": background, "on_accent": on_accent}
    return " ".join(css.split()) + widths


def content_security_policy(css: str, logo_url: str) -> str:
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    logo = urlsplit(logo_url)
    https = logo.scheme == "https" and logo.netloc
    images = f"{logo.scheme}://{logo.netloc}" if https else "'none'"
    return (
        f"default-src 'none'; style-src 'sha256-{digest}'; img-src {images}; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )


@functools.cache
def environment() -> jinja2.Environment:
    """The desk's templates, one Environment per process: they are package files, so each
    is compiled once and kept, whatever number of apps the process makes (Jinja renders
    from any thread; the settings go in as values at each render)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("spark_mail.desk", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,  # package files: compiled once per process
    )


class Pages:
    """Renders the desk's pages to (status, headers, body)."""

    def __init__(self, settings: Settings) -> None:
        self.env = environment()
        css = stylesheet(settings.brand)
        logo = settings.brand.logo_url if settings.brand.logo_url.startswith("https://") else ""
        self.common = {
            "name": settings.name,
            "lang": settings.language or "en",
            "css": Markup(css),
            "logo": logo,
        }
        self.headers: Headers = [
            (b"content-type", HTML_TYPE),
            (b"content-security-policy", content_security_policy(css, logo).encode()),
            (b"cache-control", b"no-store"),
        ]

    def render(self, template: str, status: int = 200, **values: Any) -> tuple[int, Headers, bytes]:
        body = self.env.get_template(template).render(**self.common, **values).encode()
        return status, list(self.headers), body

    def message(
        self, status: int, title: str, message: str, results_url: str = ""
    ) -> tuple[int, Headers, bytes]:
        return self.render(
            "message.html", status, title=title, message=message, results_url=results_url
        )

    async def refusal(self, refused: RequestRefused) -> tuple[int, Headers, bytes]:
        return self.message(refused.status, refused.title, refused.message)
