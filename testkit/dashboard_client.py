"""A browser without a browser for the partner dashboard: cookies, forms and their CSRF tokens.

`Dashboard(port)` keeps the cookies the server sets (httpx's jar, so `Secure` cookies are not
sent over plain http, as a browser would not), follows no redirect by itself, and reads a page's
CSRF token from its forms: `log_in` fills in the log-in form, `submit` posts a form of the last
page with its token (or the token given), `get`/`post` send one request. `chart_series` reads
the figures behind a chart; `user_with_password` adds a partner user straight to the database.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import httpx

from proxy.api.dashboard.users import add_user, hash_user_password
from proxy.store.connection import Connection

__all__ = [
    "PASSWORD",
    "Dashboard",
    "chart_series",
    "csrf_of",
    "form_value",
    "user_with_password",
]

PASSWORD = "correct horse battery staple"
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on the page."""
    match = _CSRF.search(html)
    assert match is not None, html[:2000]
    return match[1]


def form_value(html: str, name: str) -> str:
    """The value of the hidden input `name` on the page."""
    match = re.search(rf'name="{re.escape(name)}" value="([^"]*)"', html)
    assert match is not None, name
    return match[1]


def chart_series(page: str, key: str) -> list[list[Any]]:
    """The data behind the chart `key` of a page: [[label, "decimal" or None], ...]."""
    match = re.search(rf'id="chart-{re.escape(key)}" data-series="([^"]*)"', page)
    assert match is not None, key
    series: list[list[Any]] = json.loads(html.unescape(match[1]))
    return series


async def user_with_password(
    db: Connection, partner_id: str, email: str, role: str, password: str = PASSWORD
) -> None:
    await add_user(db, partner_id, email, hash_user_password(password), role)


class Dashboard:
    """One browser's view of the dashboard (see the module docstring)."""

    def __init__(self, port: int, *, address: str = "127.0.0.1") -> None:
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            follow_redirects=False,
            trust_env=False,
            headers={"x-forwarded-for": address},
        )
        self.page = ""

    async def __aenter__(self) -> Dashboard:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.http.aclose()

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        response = await self.http.get(path, **kwargs)
        if response.headers.get("content-type", "").startswith("text/html"):
            self.page = response.text
        return response

    async def post(self, path: str, data: dict[str, Any]) -> httpx.Response:
        response = await self.http.post(path, data=data)
        if response.headers.get("content-type", "").startswith("text/html"):
            self.page = response.text
        return response

    async def submit(
        self, path: str, data: dict[str, Any], *, csrf: str | None = None
    ) -> httpx.Response:
        """POST `data` to `path` with the CSRF token of the last page (or `csrf`)."""
        token = csrf_of(self.page) if csrf is None else csrf
        return await self.post(path, {"csrf": token} | data)

    async def log_in(self, email: str, password: str = PASSWORD) -> httpx.Response:
        await self.get("/dashboard/login")
        return await self.submit("/dashboard/login", {"email": email, "password": password})
