"""`/v1/customers`: enrol a customer (with this year's mandate), list and read them.

`POST` needs `customers:write` and an `Idempotency-Key`; `GET` needs `customers:read`. Lists
are pages in enrolment order with an opaque `cursor` and `limit` (1-100, default 50).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse

from proxy.api.cursors import decode_cursor
from proxy.api.dependencies import partner_data
from proxy.api.idempotency import check_key, request_digest
from proxy.api.models import CustomerIn, CustomerOut, CustomerPage
from proxy.api.partner_data import PartnerData
from proxy.api.problems import PROBLEM_JSON, Problem

__all__ = ["router"]

_PROBLEM = {"content": {PROBLEM_JSON: {}}, "description": "problem details (RFC 9457)"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: _PROBLEM for status in (400, 401, 403, 404, 409, 413, 422)
}

router = APIRouter(prefix="/v1/customers", tags=["customers"], responses=_ERRORS)


@router.post("", status_code=201, response_model=CustomerOut)
async def enrol_customer(
    body: CustomerIn,
    request: Request,
    data: Annotated[PartnerData, Depends(partner_data("customers:write"))],
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="unique per operation; repeats replay"),
    ] = None,
) -> JSONResponse:
    """Enrol one grid connection: the customer and their mandate for this year, recorded with
    the consent the partner's sign-up form collected."""
    key = check_key(idempotency_key)
    digest = request_digest("POST", request.url.path, body.model_dump(mode="json"))
    answer = await data.enrol(body, key, digest)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


@router.get("", response_model=CustomerPage)
async def list_customers(
    data: Annotated[PartnerData, Depends(partner_data("customers:read"))],
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    """The partner's customers, oldest enrolment first."""
    after = None
    if cursor is not None:
        try:
            after = decode_cursor(cursor)
        except ValueError:
            raise Problem(
                400,
                "cursor: not a cursor from this API; pass next_cursor as given",
                errors=[{"field": "cursor", "detail": "not a cursor from this API"}],
            ) from None
    rows, next_cursor = await data.list_customers(after, limit)
    return {"data": rows, "next_cursor": next_cursor}


@router.get("/{customer_id}", response_model=CustomerOut)
async def get_customer(
    customer_id: Annotated[str, Path(max_length=64)],
    data: Annotated[PartnerData, Depends(partner_data("customers:read"))],
) -> dict[str, Any]:
    """One of the partner's customers (404 for any id that is not theirs)."""
    return await data.get_customer(customer_id)
