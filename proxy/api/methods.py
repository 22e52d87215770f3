"""The methods a resource answers, as HTTP wants them: HEAD as its GET without the body, and a
405 whose `Allow` names every method the path takes.

FastAPI routes answer only the methods they declare, so a HEAD of a readable resource would be
a 405 (RFC 9110 §9.1: a server supports GET and HEAD), and its 405 names only the methods of
the first route whose path matched. `HeadAsGet` (ASGI middleware) runs a HEAD as the GET it
asks about and sends that answer's status and headers (its Content-Length too) without the
body. `allowed_methods` gives what every route takes at a request's path, for `Allow`.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HeadAsGet", "allowed_methods"]


class HeadAsGet:
    """ASGI middleware: a HEAD request is answered as its GET, without the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


# The methods a route of this API may take (asked of each route in turn: included routers
# do not list their routes' methods).
_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> str:
    """`Allow` for the path of `scope`: every method some route takes there, HEAD with GET."""
    methods = {
        method
        for method in _METHODS
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
    }
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))
