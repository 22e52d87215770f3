"""Request metrics (ASGI middleware): every answer counted by route template, method and status
class, and timed, before its last byte goes to the server.

The route is the template of the route that handled the request (`scope["route"]`, which the
router sets), else the first template of the application's routes (its OpenAPI paths and its
own pages) that the path matches: an answer made before routing (a body over the cap) still
names its route. A path no route matches is `unmatched`, a method the API does not know
`other`. An exception that escapes the application counts as the 500 the server answers; a
request whose client left before any answer, or that was cancelled, is not counted.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.api.metrics import METHODS, UNMATCHED, ApiMetrics, status_class

__all__ = ["RequestMetrics", "route_templates"]


class RequestMetrics:
    """Count and time every HTTP answer of `app` in `metrics` (see the module docstring).

    `templates` gives the application's route templates; it is called once, when the first
    request without a route is answered.
    """

    def __init__(
        self, app: ASGIApp, metrics: ApiMetrics, templates: Callable[[], list[str]]
    ) -> None:
        self.app, self._metrics, self._templates = app, metrics, templates
        self._patterns: list[tuple[re.Pattern[str], str]] | None = None

    def _route(self, scope: Scope) -> str:
        template = getattr(scope.get("route"), "path_format", None)
        if isinstance(template, str):
            return template
        if self._patterns is None:
            self._patterns = [(compile_path(t)[0], t) for t in self._templates()]
        path = scope.get("path", "")
        return next((t for pattern, t in self._patterns if pattern.match(path)), UNMATCHED)

    def _count(self, scope: Scope, status: int, started: float) -> None:
        route = self._route(scope)
        method = scope["method"] if scope["method"] in METHODS else "other"
        self._metrics.requests.labels(route, method, status_class(status)).inc()
        self._metrics.request_seconds.labels(route).observe(time.perf_counter() - started)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None
        counted = False

        async def counting_send(message: Message) -> None:
            nonlocal status, counted
            if message["type"] == "http.response.start":
                status = message["status"]
            elif (
                message["type"] == "http.response.body"
                and not message.get("more_body", False)
                and status is not None
                and not counted
            ):
                counted = True
                self._count(scope, status, started)
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if not counted:
                self._count(scope, 500 if status is None else status, started)
            raise
        if status is not None and not counted:  # the answer was cut short
            self._count(scope, status, started)


def route_templates(app: Any) -> Callable[[], list[str]]:
    """The templates of `app`'s routes: its OpenAPI paths, then its own pages (OpenAPI, docs)."""

    def templates() -> list[str]:
        paths = list(app.openapi().get("paths", {}))
        pages = [getattr(route, "path_format", None) for route in app.routes]
        return paths + [page for page in pages if isinstance(page, str) and page not in paths]

    return templates
