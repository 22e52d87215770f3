"""The dashboard's routes answer in HTML, errors included: a route class for its routers.

The partner API answers errors as problem details (JSON); a person in a browser needs a page.
`PageRoute` runs a dashboard route and turns what it raises into one: `NotSignedIn` sends the
browser to the log-in page (303; a live fragment, which a script fetches, gets a bare 401
instead), a `Problem` becomes an error page with its status and detail (a 404 for another
partner's object reads like one for an object that never existed), and a malformed query or path
parameter a 400 page. Anything else propagates to the application's handlers (a 500).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from proxy.api.dashboard.auth import NotSignedIn
from proxy.api.dashboard.rendering import PAGE_HEADERS, render
from proxy.api.problems import Problem

__all__ = ["LIVE_PREFIX", "LOGIN_PATH", "PageRoute"]

LOGIN_PATH = "/dashboard/login"
LIVE_PREFIX = "/dashboard/live/"


def _error_page(status: int, detail: str) -> Response:
    return render("error.html", status=status, status_code=status, detail=detail)


class PageRoute(APIRoute):
    """An APIRoute whose failures are pages (see the module docstring)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except NotSignedIn:
                if request.url.path.startswith(LIVE_PREFIX):
                    return Response(status_code=401, headers=PAGE_HEADERS)
                return RedirectResponse(LOGIN_PATH, status_code=303, headers=PAGE_HEADERS)
            except Problem as problem:
                return _error_page(problem.status, problem.detail)
            except RequestValidationError:
                return _error_page(400, "this address is not one the dashboard understands")

        return page
