"""JSON answers encoded once (orjson), for routes whose bodies are built as plain values.

FastAPI validates a route's answer against its `response_model` and serialises it through
pydantic: for a page of 50 sessions with nested eligibility and statement lines, a good part of
a request's CPU. A route that answers `json_answer(body)` keeps its `response_model` for the
OpenAPI document, and its body must already be what that model describes (the schema tests
check every answer against the document). Values are written as pydantic's JSON mode writes
them: datetimes in RFC 3339 with UTC as `Z`, decimals as strings; an `orjson.Fragment` (JSON the
database made) goes in as it is.

Errors: `TypeError` for a value neither orjson nor this module knows how to write.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson
from fastapi.responses import Response

__all__ = ["json_answer"]

_OPTIONS = orjson.OPT_UTC_Z


def json_answer(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """`body` as an application/json answer."""
    return Response(
        orjson.dumps(body, default=_other, option=_OPTIONS),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _other(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
