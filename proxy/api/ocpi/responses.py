"""OCPI answers over HTTP: the response format on every answer, and the request ids echoed.

`answer` wraps data in the response format (`proxy.api.ocpi.envelope`); `raw_answer` does the
same for an object kept as JSON text (a CDR exactly as received), without parsing it again.
`install_handlers` makes every error of the OCPI application an OCPI answer: `OcpiError` as it
says, HTTP errors (404, 405 with `Allow`, 401, 429 from the rate limits) with status 2000, a
database out of reach 503 and anything unexpected 500, both with status 3000 and never a
traceback. `RequestIds` (ASGI middleware) gives every answer the request's `X-Request-ID` and
`X-Correlation-ID` (transport and format: unique message ids), or fresh ones when the request
has none fit to echo.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.api.methods import allowed_methods
from proxy.api.ocpi.envelope import OcpiError, Status, envelope, timestamp
from proxy.api.problems import Problem
from proxy.store.errors import StoreError

__all__ = ["RequestIds", "answer", "install_handlers", "raw_answer"]

log = logging.getLogger("proxy.api.ocpi")

_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    StoreError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.QueryCanceledError,
)
_ID_HEADERS = (b"x-request-id", b"x-correlation-id")
_MAX_ID = 255


def _now() -> datetime:
    return datetime.now(UTC)


def answer(
    data: Any = None,
    *,
    status: Status = Status.SUCCESS,
    message: str | None = None,
    http_status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An OCPI answer carrying `data`."""
    body = envelope(status, _now(), data, message)
    return JSONResponse(body, status_code=http_status, headers=dict(headers or {}))


def raw_answer(
    json_text: str, *, http_status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A success answer whose `data` is `json_text`, valid JSON kept as received."""
    tail = json.dumps({"status_code": int(Status.SUCCESS), "timestamp": timestamp(_now())})
    body = '{"data":' + json_text + "," + tail[1:]
    return Response(
        body.encode("utf-8"),
        status_code=http_status,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def _error(error: OcpiError) -> JSONResponse:
    return answer(
        status=error.status,
        message=error.message,
        http_status=error.http_status,
        headers=error.headers,
    )


def install_handlers(app: FastAPI) -> None:
    """Answer every error of `app` in the response format (see the module docstring)."""

    async def on_ocpi(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OcpiError)
        return _error(exc)

    async def on_problem(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)  # the rate limits' 429
        return _error(
            OcpiError(Status.CLIENT_ERROR, exc.detail, http_status=exc.status, headers=exc.headers)
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        message = "no such resource" if exc.status_code == 404 else str(exc.detail)
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request.app.router.routes, request.scope)
        return _error(
            OcpiError(Status.CLIENT_ERROR, message, http_status=exc.status_code, headers=headers)
        )

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        return _error(OcpiError(Status.INVALID_PARAMETERS, "invalid request parameters"))

    async def on_database(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable", exc_info=exc)
        message = "the service cannot reach its database; try again later"
        return _error(OcpiError(Status.SERVER_ERROR, message, http_status=503))

    async def on_unstorable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("request value refused by the database", exc_info=exc)
        message = "a value in the request cannot be stored (out of range or unusable characters)"
        return _error(OcpiError(Status.INVALID_PARAMETERS, message))

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("OCPI request failed", exc_info=exc)
        message = "the request could not be handled"
        return _error(OcpiError(Status.SERVER_ERROR, message, http_status=500))

    app.add_exception_handler(OcpiError, on_ocpi)
    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    for error_type in _UNAVAILABLE:
        app.add_exception_handler(error_type, on_database)
    app.add_exception_handler(asyncpg.DataError, on_unstorable)
    app.add_exception_handler(Exception, on_unexpected)


def _fit(value: bytes) -> bool:
    return 0 < len(value) <= _MAX_ID and all(0x21 <= byte <= 0x7E for byte in value)


class RequestIds:
    """ASGI middleware: echo X-Request-ID and X-Correlation-ID (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = {name.lower(): value for name, value in scope.get("headers", [])}
        ids = [
            (name, given[name] if _fit(given.get(name, b"")) else str(uuid.uuid4()).encode())
            for name in _ID_HEADERS
        ]

        async def with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() not in _ID_HEADERS]
                message = {**message, "headers": [*headers, *ids]}
            await send(message)

        await self.app(scope, receive, with_ids)
