"""The dashboard's pages rendered from Jinja2 templates, with the headers every page carries.

Templates live in `templates/` of this package and are autoescaped, so a customer name or any
other text from the database is shown as text, never as markup; a template cannot name an
undefined value (`StrictUndefined`). Every page is sent with a Content-Security-Policy that
allows scripts, styles and fonts from this origin only (no inline script or style: the brand
colour comes from `/dashboard/brand.css`), images from here and https (the partner's logo),
forms posting here only and no framing; with `nosniff`, no referrer beyond this origin and
`no-store`, since pages hold customers' data.

Filters for templates: `kwh`, `ere`, `eur` (decimals as shown) and `when` (an instant as Dutch
local time); `static_url(name)` links a static file.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from proxy.api.dashboard.static_files import static_url
from proxy.ere.core.quarters import DUTCH_TIME

__all__ = ["PAGE_HEADERS", "render", "render_text"]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


def _decimal(value: Any, places: int) -> str:
    if value is None:
        return "–"
    number = Decimal(str(value)).quantize(Decimal(1).scaleb(-places))
    return f"{number:,}"


def _kwh(value: Any) -> str:
    return _decimal(value, 3)


def _ere(value: Any) -> str:
    return _decimal(value, 2)


def _eur(value: Any) -> str:
    return "–" if value is None else f"€ {_decimal(value, 2)}"


def _when(value: datetime | None) -> str:
    if value is None:
        return "–"
    return value.astimezone(DUTCH_TIME).strftime("%Y-%m-%d %H:%M")


_ENV = Environment(
    loader=PackageLoader("proxy.api.dashboard", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters.update(kwh=_kwh, ere=_ere, eur=_eur, when=_when)
_ENV.globals.update(static_url=static_url)


def render_text(template: str, **context: Any) -> str:
    """A template rendered to text."""
    return _ENV.get_template(template).render(**context)


def render(
    template: str, *, status: int = 200, headers: dict[str, str] | None = None, **context: Any
) -> HTMLResponse:
    """A page: the template rendered with `context`, with `PAGE_HEADERS` (and `headers`)."""
    return HTMLResponse(
        render_text(template, **context),
        status_code=status,
        headers=PAGE_HEADERS | (headers or {}),
    )
