"""`/v1/sessions`: charging sessions of your customers' chargers, with eligibility and the
statement lines that counted them. Needs `sessions:read`.

Lists are newest first, filtered by customer, charger, end (`from` inclusive, `to` exclusive,
ISO 8601 with an offset) and status, in pages with an opaque `cursor` and `limit` (1-100).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from proxy.api.chargers import bad_cursor
from proxy.api.cursors import decode_key_cursor, encode_key_cursor
from proxy.api.dependencies import partner_data
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
) -> dict[str, Any]:
    """Sessions of chargers linked, at the session's end, to one of your customers."""
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
    before = None
    if cursor is not None:
        try:
            before = int(decode_key_cursor(cursor))
        except ValueError:
            raise bad_cursor() from None
        if not 0 < before <= _MAX_ID:
            raise bad_cursor()
    rows, last = await data.sessions.list_sessions(where, before, limit)
    return {"data": rows, "next_cursor": None if last is None else encode_key_cursor(str(last))}


@router.get("/{session_id}", response_model=SessionOut)
async def get_session(
    session_id: Annotated[int, Path(ge=1, le=_MAX_ID)],
    data: Annotated[PartnerData, Depends(partner_data("sessions:read"))],
) -> dict[str, Any]:
    """One session of your customers' chargers (404 for any other)."""
    return await data.sessions.get_session(session_id)
