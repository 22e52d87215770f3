"""`/v1/sessions`: charging sessions of your customers' chargers, with eligibility and the
statement lines that counted them. Needs `sessions:read`.

Lists are newest first, filtered by customer, charger, end (`from` inclusive, `to` exclusive,
ISO 8601 with an offset) and status, in pages with an opaque `cursor` and `limit` (1-100):
ordered by id, or, for a period (`from` or `to` given), by end, then id; a cursor is good for
the list it came from. Answers are built as plain values and encoded once
(`proxy.api.json_answers`); the models describe them in the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response

from proxy.api.chargers import bad_cursor
from proxy.api.cursors import decode_cursor, decode_key_cursor, encode_cursor, encode_key_cursor
from proxy.api.dependencies import partner_data
from proxy.api.json_answers import json_answer
from proxy.api.partner_data import PartnerData
from proxy.api.problems import PROBLEM_JSON, field_error
from proxy.api.session_data import SessionFilter
from proxy.api.session_models import SessionOut, SessionPage
from proxy.ere.admin.validation import (
    AdminInputError,
    parse_instant,
    validate_charger_identity,
    validate_id,
)

__all__ = ["router"]

_PROBLEM = {"content": {PROBLEM_JSON: {}}, "description": "problem details (RFC 9457)"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: _PROBLEM for status in (400, 401, 403, 404, 422)
}
_MAX_ID = 2**63 - 1

router = APIRouter(prefix="/v1/sessions", tags=["sessions"], responses=_ERRORS)


@router.get("", response_model=SessionPage)
async def list_sessions(
    data: Annotated[PartnerData, Depends(partner_data("sessions:read"))],
    customer: Annotated[str | None, Query(max_length=200)] = None,
    charger: Annotated[str | None, Query(max_length=200)] = None,
    from_: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    to: Annotated[str | None, Query(max_length=64)] = None,
    status: Literal["active", "completed", "orphaned", "rejected"] | None = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> Response:
    """Sessions of chargers linked, at the session's end, to one of your customers, newest
    first: by id, or, with `from` or `to`, by end (then id). Pass a page's `next_cursor` with
    the same filters for the next page."""
    try:
        where = SessionFilter(
            customer=None if customer is None else validate_id(customer, "customer"),
            charger=None if charger is None else validate_charger_identity(charger, "charger"),
            ended_from=None if from_ is None else parse_instant(from_, "from"),
            ended_to=None if to is None else parse_instant(to, "to"),
            status=status,
        )
    except AdminInputError as error:
        raise field_error(error, {}) from None
    before, before_end = None, None
    if cursor is not None:
        try:
            if where.by_end:
                before_end, key = decode_cursor(cursor)
            else:
                key = decode_key_cursor(cursor)
            before = int(key)
        except ValueError:
            raise bad_cursor() from None
        if not 0 < before <= _MAX_ID:
            raise bad_cursor()
    rows, last = await data.sessions.list_sessions(where, before, limit, before_end)
    return json_answer({"data": rows, "next_cursor": _cursor(where, last)})


def _cursor(where: SessionFilter, last: dict[str, Any] | None) -> str | None:
    """Where the page after the one ending with `last` starts (None: no page follows)."""
    if last is None:
        return None
    if where.by_end:
        return encode_cursor(last["ended_at"], str(last["id"]))
    return encode_key_cursor(str(last["id"]))


@router.get("/{session_id}", response_model=SessionOut)
async def get_session(
    session_id: Annotated[int, Path(ge=1, le=_MAX_ID)],
    data: Annotated[PartnerData, Depends(partner_data("sessions:read"))],
) -> Response:
    """One session of your customers' chargers (404 for any other)."""
    return json_answer(await data.sessions.get_session(session_id))
