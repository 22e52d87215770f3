"""Who is signed in to the dashboard, and what they may post: the dependencies of every page.

`member` reads the session cookie, finds the live session (`proxy.api.dashboard.login_sessions`)
and gives the page a `Member`: the user, their session's CSRF secret and a `PartnerData` scoped
to their partner with their role's scopes (`proxy.api.dashboard.roles`), the only way pages
reach the database. `Member.require(scope)` refuses (403) what the role does not allow.
`posted_form` reads a POST's form and checks its `csrf` field against the session's secret, in
constant time. The cookie is HttpOnly, SameSite=Lax, path `/dashboard`; with `[api]
dashboard_secure_cookie` (the default) it is also Secure and named with the `__Host-` prefix,
which browsers accept only over https; the log-in form's own CSRF cookie follows the same rules.

Errors: `NotSignedIn` without a live session (pages answer it by sending the browser to the
log-in page, live fragments with 401); `Problem` 403 for a missing or wrong CSRF token or a
role without the scope.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import FormData
from starlette.responses import Response

from proxy.api.dashboard.login_sessions import SignedIn, find_session
from proxy.api.dashboard.roles import caller_of
from proxy.api.dashboard.users import User
from proxy.api.partner_data import PartnerData
from proxy.api.problems import Problem
from proxy.runtime.config import ApiSettings

__all__ = [
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "Member",
    "NotSignedIn",
    "Posted",
    "clear_cookie",
    "cookie_name",
    "member",
    "posted_form",
    "same_token",
    "set_cookie",
]

SESSION_COOKIE = "ere_dashboard"
LOGIN_COOKIE = "ere_dashboard_login"
_PATH = "/dashboard"
_MAX_FIELDS = 64


class NotSignedIn(Exception):
    """The request has no live dashboard session."""


@dataclass(frozen=True, slots=True)
class Member:
    """The signed-in user, their session's CSRF secret, and their partner's data."""

    user: User
    csrf: str
    data: PartnerData

    def can(self, scope: str) -> bool:
        return scope in self.data.caller.scopes

    def require(self, scope: str) -> None:
        """403 unless the user's role holds `scope`."""
        if not self.can(scope):
            raise Problem(403, "your role does not allow this; ask an admin of your account")


@dataclass(frozen=True, slots=True)
class Posted:
    """A POST's form, its CSRF token checked, and who posted it."""

    member: Member
    form: FormData


def cookie_name(base: str, settings: ApiSettings) -> str:
    """The cookie's name: `__Host-` prefixed when it is Secure."""
    return f"__Host-{base}" if settings.dashboard_secure_cookie else base


def set_cookie(
    response: Response, base: str, value: str, settings: ApiSettings, *, max_age: int
) -> None:
    # `__Host-` cookies must have Path=/; the others are kept to the dashboard's paths.
    secure = settings.dashboard_secure_cookie
    response.set_cookie(
        cookie_name(base, settings),
        value,
        max_age=max_age,
        path="/" if secure else _PATH,
        secure=secure,
        httponly=True,
        samesite="lax",
    )


def clear_cookie(response: Response, base: str, settings: ApiSettings) -> None:
    secure = settings.dashboard_secure_cookie
    response.delete_cookie(
        cookie_name(base, settings),
        path="/" if secure else _PATH,
        secure=secure,
        httponly=True,
        samesite="lax",
    )


async def _session(request: Request) -> SignedIn:
    settings: ApiSettings = request.app.state.settings
    token = request.cookies.get(cookie_name(SESSION_COOKIE, settings))
    found = None
    if token is not None:
        found = await find_session(request.app.state.database, token)
    if found is None:
        raise NotSignedIn()
    return found


async def member(request: Request) -> Member:
    """A dependency: the signed-in `Member` (NotSignedIn without a live session)."""
    found = await _session(request)
    user = found.user
    data = PartnerData(
        request.app.state.database,
        caller_of(user.partner_id, user.user_id, user.role),
        request.app.state.context,
    )
    return Member(user, found.csrf, data)


def same_token(given: object, expected: str) -> bool:
    """Whether a form's token is `expected` (constant time)."""
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


async def posted_form(request: Request, who: Annotated[Member, Depends(member)]) -> Posted:
    """A dependency: the POST's form, if its `csrf` field is the session's (else 403)."""
    form = await request.form(max_files=0, max_fields=_MAX_FIELDS)
    if not same_token(form.get("csrf"), who.csrf):
        raise Problem(403, "this form has expired or did not come from the dashboard; reload it")
    return Posted(who, form)
