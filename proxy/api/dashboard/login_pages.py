"""`/dashboard/login` and `/dashboard/logout`: signing in and out, and the per-partner style.

The log-in form is protected against cross-site posting by a double-submit token: the page sets
a random value in a cookie of its own and in the form, and a log-in whose two differ is refused
(403), so no other site can sign a browser in to an account of its choosing. An address past
its failed log-ins (`proxy.api.dashboard.address_lockout`) is refused with 429 and
`Retry-After` before any password is checked; a wrong password, an unknown address, a locked or
removed user all get the same 401 page. A successful log-in ends the browser's earlier session,
if any, starts a new one (`proxy.api.dashboard.login_sessions`), sets its cookie and sends the
browser to the overview; log-out (a CSRF-checked POST) ends it. `/dashboard/brand.css` is the
signed-in partner's colour (`proxy.api.dashboard.brand_style`).
"""

from __future__ import annotations

import math
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from proxy.api.dashboard.address_lockout import AddressLockout
from proxy.api.dashboard.auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Member,
    Posted,
    clear_cookie,
    cookie_name,
    member,
    posted_form,
    same_token,
    set_cookie,
)
from proxy.api.dashboard.brand_style import brand_css
from proxy.api.dashboard.login_sessions import end_session, start_session
from proxy.api.dashboard.page_route import LOGIN_PATH, PageRoute
from proxy.api.dashboard.rendering import PAGE_HEADERS, render
from proxy.api.dashboard.users import log_in
from proxy.api.throttle import Throttle
from proxy.runtime.config import ApiSettings

__all__ = ["router"]

router = APIRouter(route_class=PageRoute, include_in_schema=False)
_LOGIN_FORM_SECONDS = 3600


def _login_page(
    request: Request, *, status: int = 200, message: str | None = None, retry_after: int = 0
) -> Response:
    settings: ApiSettings = request.app.state.settings
    token = secrets.token_urlsafe(32)
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    response = render(
        "login.html", status=status, headers=headers, csrf=token, message=message, title="Log in"
    )
    set_cookie(response, LOGIN_COOKIE, token, settings, max_age=_LOGIN_FORM_SECONDS)
    return response


@router.get(LOGIN_PATH)
async def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post(LOGIN_PATH)
async def login(request: Request) -> Response:
    settings: ApiSettings = request.app.state.settings
    form = await request.form(max_files=0, max_fields=8)
    expected = request.cookies.get(cookie_name(LOGIN_COOKIE, settings))
    if expected is None or not same_token(form.get("csrf"), expected):
        return _login_page(
            request, status=403, message="The log-in form had expired; please try again."
        )
    throttle: Throttle = request.app.state.throttle
    lockout: AddressLockout = request.app.state.dashboard_lockout
    address = throttle.address(request)
    wait = lockout.retry_after(address)
    if wait:
        return _login_page(
            request,
            status=429,
            message="Too many failed log-ins from your network; try again in "
            f"{math.ceil(wait / 60)} minute(s).",
            retry_after=wait,
        )
    email, password = form.get("email"), form.get("password")
    user = None
    if isinstance(email, str) and isinstance(password, str):
        user = await log_in(request.app.state.database, email, password)
    if user is None:
        lockout.failed(address)
        return _login_page(
            request,
            status=401,
            message="The e-mail address or password is wrong, or the account is locked for a "
            "while after repeated failures.",
        )
    earlier = request.cookies.get(cookie_name(SESSION_COOKIE, settings))
    if earlier is not None:  # a new log-in never keeps an earlier session's token
        await end_session(request.app.state.database, earlier)
    token, _ = await start_session(
        request.app.state.database, user, settings.dashboard_session_minutes
    )
    response = RedirectResponse("/dashboard", status_code=303, headers=PAGE_HEADERS)
    set_cookie(
        response, SESSION_COOKIE, token, settings, max_age=settings.dashboard_session_minutes * 60
    )
    clear_cookie(response, LOGIN_COOKIE, settings)
    return response


@router.post("/dashboard/logout")
async def logout(request: Request, posted: Annotated[Posted, Depends(posted_form)]) -> Response:
    settings: ApiSettings = request.app.state.settings
    token = request.cookies.get(cookie_name(SESSION_COOKIE, settings))
    if token is not None:
        await end_session(request.app.state.database, token)
    response = RedirectResponse(LOGIN_PATH, status_code=303, headers=PAGE_HEADERS)
    clear_cookie(response, SESSION_COOKIE, settings)
    return response


@router.get("/dashboard/brand.css")
async def brand_style(who: Annotated[Member, Depends(member)]) -> Response:
    brand = await who.data.branding()
    return Response(
        brand_css(brand.colour),
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"},
    )
