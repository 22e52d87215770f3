"""A cap on request bodies (ASGI middleware): a body over the limit is answered 413 unread,
one that does not arrive in time 408.

The body is read into memory (at most `max_bytes`) before the application sees the request, so
no handler ever meets a body cut short; a declared `Content-Length` over the limit is refused
before a byte of the body is read. The whole body must arrive within `BODY_SECONDS` of the
request's head: the server's idle timeout ends a connection whose head is slow, and this ends
one whose body trickles or stops (a slow client would otherwise hold the connection and its
buffer for as long as it likes). Both refusals close the connection.
"""

from __future__ import annotations

from typing import Any

import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.api.problems import Problem, problem_response

__all__ = ["BODY_SECONDS", "BodyLimit"]

# How long a request's body may take to arrive, from its head on.
BODY_SECONDS = 30.0


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, seconds: float | None = None) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.seconds = BODY_SECONDS if seconds is None else seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send, self._too_large())
            return
        chunks: list[bytes] = []
        size = 0
        with trio.move_on_after(self.seconds) as deadline:
            while True:
                message = await receive()
                if message["type"] != "http.request":  # the client went away
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    await self._refuse(scope, receive, send, self._too_large())
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        if deadline.cancelled_caught:
            late = Problem(408, f"the request body did not arrive within {self.seconds:g} s")
            await self._refuse(scope, receive, send, late)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self) -> Problem:
        return Problem(413, f"the request body is larger than {self.max_bytes} bytes")

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, problem: Problem) -> None:
        response = problem_response(problem)
        response.headers["connection"] = "close"
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers", [])
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
