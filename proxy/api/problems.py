"""RFC 9457 problem details: every error the partner API answers is `application/problem+json`.

`Problem` is raised by handlers and dependencies; `install_problem_handlers` makes FastAPI's
own errors (request validation, unknown routes, wrong methods: 405 with `Allow` naming every
method of the path, `proxy.api.methods`) and anything unexpected answer the same way, never
with a traceback, and declares those answers for every operation of the
OpenAPI document (`document_problems`). Validation problems carry `errors`: one entry per bad
field (`field`, `detail`). A database that cannot be reached is 503; a value the database
refuses as data (asyncpg's DataError: a NUL in text, a time out of range) is 400.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from proxy.api.methods import allowed_methods
from proxy.ere.admin.validation import AdminInputError
from proxy.store.errors import StoreError

__all__ = [
    "OWN_ERRORS",
    "PROBLEM_JSON",
    "PROBLEM_SCHEMA",
    "Problem",
    "document_problems",
    "field_error",
    "install_problem_handlers",
    "problem_response",
]

PROBLEM_JSON = "application/problem+json"
# What says the database is out of reach (503, try again), not that a request failed in it.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    StoreError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.QueryCanceledError,
)
log = logging.getLogger("proxy.api")


class Problem(Exception):
    """An error answer: HTTP `status`, a short `title`, a `detail` for this occurrence."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type_: str = "about:blank",
        errors: list[dict[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.detail, self.type = status, detail, type_
        self.title = title or HTTPStatus(status).phrase
        self.errors, self.headers = errors, dict(headers or {})


def problem_response(problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if problem.errors is not None:
        body["errors"] = problem.errors
    return JSONResponse(
        body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON
    )


def field_error(error: AdminInputError, fields: Mapping[str, str], status: int = 422) -> Problem:
    """A validation problem from a domain message `<field>: <what>`; `fields` renames the
    domain's field names (the commands' flags) to the API's."""
    field, _, what = str(error).partition(": ")
    name = fields.get(field, field.removeprefix("--").replace("-", "_"))
    return Problem(
        status,
        f"{name}: {what}",
        title="Invalid request" if status == 422 else None,
        type_="urn:ere-proxy:problem:invalid-field",
        errors=[{"field": name, "detail": what}],
    )


def _location(loc: Iterable[Any]) -> str:
    parts = [str(part) for part in loc]
    if parts and parts[0] in ("body", "header", "query", "path"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_problem(exc: RequestValidationError) -> Problem:
    errors = list(exc.errors())
    if any(error.get("type") == "json_invalid" for error in errors):
        return Problem(
            400,
            "the request body is not valid JSON",
            title="Malformed JSON",
            type_="urn:ere-proxy:problem:malformed-json",
        )
    fields = [
        {"field": _location(e.get("loc", ())), "detail": str(e.get("msg", ""))} for e in errors
    ]
    return Problem(
        422,
        "; ".join(f"{f['field']}: {f['detail']}" for f in fields[:5]),
        title="Invalid request",
        type_="urn:ere-proxy:problem:invalid-field",
        errors=fields,
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error of `app` with problem details (see the module docstring)."""

    async def on_problem(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(exc)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return problem_response(_validation_problem(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        headers = dict(exc.headers or {})
        if exc.status_code == 404:
            detail = "no such resource"
        if exc.status_code == 405:  # every method the path takes, not one route's
            headers["Allow"] = allowed_methods(request.app.router.routes, request.scope)
        return problem_response(Problem(exc.status_code, detail, headers=headers))

    async def on_database(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable", exc_info=exc)
        return problem_response(
            Problem(503, "the service cannot reach its database; try again later")
        )

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("request failed", exc_info=exc)
        return problem_response(Problem(500, "the request could not be handled"))

    async def on_unstorable(_: Request, exc: Exception) -> JSONResponse:
        # A value the request carried that the database cannot take (a NUL or a lone surrogate
        # in text, a time out of its range): the request's fault, never a server error.
        log.warning("request value refused by the database", exc_info=exc)
        return problem_response(
            Problem(
                400,
                "a value in the request cannot be processed (out of range or unusable characters)",
            )
        )

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    for error_type in _UNAVAILABLE:
        app.add_exception_handler(error_type, on_database)
    app.add_exception_handler(asyncpg.DataError, on_unstorable)
    app.add_exception_handler(Exception, on_unexpected)
    _declare_problems(app)


def _declare_problems(app: FastAPI) -> None:
    """Serve the OpenAPI document with every operation's problem answers declared
    (`document_problems`), whatever each route declares; built when first asked for, so it
    includes the routes added after this call."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# What every operation may answer with problem details, besides what its route declares: a bad
# request or header (400), no valid key (401), a key without the scope (403), an id that is not
# the caller's (404), a conflict (409), a body over the cap (413), invalid fields (422), a rate
# limit (429), and the database out of reach (503).
_DOCUMENTED_ERRORS = {
    400: "malformed request (JSON, cursor, Idempotency-Key)",
    401: "no valid partner API key",
    403: "the key lacks the operation's scope",
    404: "no such object for this partner",
    409: "conflict (an EAN enrolled already, an Idempotency-Key reused)",
    413: "request body over the size cap",
    422: "invalid fields, named in `errors`",
    429: "over a rate limit (the key's requests, or failed authentications); see Retry-After",
    503: "the database is out of reach; try again later",
}
# An operation that answers some errors in a form of its own (the OAuth2 token endpoint: RFC
# 6749 §5.2) lists their statuses under this extension; they stay as the route declares them.
OWN_ERRORS = "x-errors-not-problem-details"
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "title": "Problem",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "detail"],
                "properties": {"field": {"type": "string"}, "detail": {"type": "string"}},
            },
        },
    },
}


def document_problems(document: dict[str, Any]) -> dict[str, Any]:
    """Declare the error answers of every operation of an OpenAPI `document` (in place): each
    status of `_DOCUMENTED_ERRORS` is problem+json with the `Problem` schema, replacing what a
    route or FastAPI declared for it (FastAPI's default 422 is plain JSON of another shape),
    except the statuses an operation lists under `OWN_ERRORS`."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            own = {str(status) for status in operation.get(OWN_ERRORS, ())}
            for status, description in _DOCUMENTED_ERRORS.items():
                if str(status) in own:
                    continue
                declared = responses.get(str(status), {}).get("description")
                if declared and declared != "Validation Error":  # FastAPI's own 422
                    description = declared
                responses[str(status)] = {"description": description, "content": content}
    return document
