"""`/v1/customers`: enrol a customer (with this year's mandate), list and read them, change
their details, end them, and record another year's mandate.

`POST` and `PATCH` need `customers:write`, every `POST` an `Idempotency-Key`; `GET` needs
`customers:read`. Lists are pages in enrolment order with an opaque `cursor` and `limit` (1-100,
default 50). One customer is answered with its strong `ETag` (`proxy.api.etags`): a `GET` with
`If-None-Match` is 304 when nothing changed, and `PATCH` needs `If-Match` (428 without, 412 when
stale) instead of an `Idempotency-Key`, so two integrations never overwrite each other's change.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from proxy.api.cursors import decode_cursor
from proxy.api.customer_change_models import CustomerEndIn, CustomerPatch, MandateIn
from proxy.api.dependencies import partner_data
from proxy.api.etags import NOT_MODIFIED, PRECONDITIONS, conditional_get, tagged
from proxy.api.idempotency import check_key, request_digest
from proxy.api.models import CustomerIn, CustomerOut, CustomerPage
from proxy.api.partner_data import PartnerData
from proxy.api.problems import PROBLEM_JSON, Problem

__all__ = ["router"]

_PROBLEM = {"content": {PROBLEM_JSON: {}}, "description": "problem details (RFC 9457)"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: _PROBLEM for status in (400, 401, 403, 404, 409, 413, 422)
}

_IDEMPOTENCY_KEY = Header(
    alias="Idempotency-Key", description="unique per operation; repeats replay"
)

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
    return tagged(answer.body, answer.status, answer.headers)


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


@router.get("/{customer_id}", response_model=CustomerOut, responses=NOT_MODIFIED)
async def get_customer(
    customer_id: Annotated[str, Path(max_length=64)],
    data: Annotated[PartnerData, Depends(partner_data("customers:read"))],
    if_none_match: Annotated[
        str | None, Header(alias="If-None-Match", description="an ETag you have: 304 if current")
    ] = None,
) -> Response:
    """One of the partner's customers (404 for any id that is not theirs), with its `ETag`."""
    row = await data.get_customer(customer_id)
    return conditional_get(CustomerOut.model_validate(row).model_dump(mode="json"), if_none_match)


@router.patch("/{customer_id}", response_model=CustomerOut, responses=PRECONDITIONS)
async def update_customer(
    customer_id: Annotated[str, Path(max_length=64)],
    body: CustomerPatch,
    data: Annotated[PartnerData, Depends(partner_data("customers:write"))],
    if_match: Annotated[
        str | None,
        Header(alias="If-Match", description="the customer's ETag as you last read it"),
    ] = None,
) -> JSONResponse:
    """Change the customer's name, e-mail, address or IBAN (a field left out stays as it is).
    Needs `If-Match` with the ETag you read: 412 if the customer changed since, 428 without.
    The EAN never changes: a new grid connection is a new enrolment. A new IBAN is paid from
    the next payout run on. Answers the customer with its new `ETag`."""
    return tagged(await data.customer_changes.update(customer_id, body.details(), if_match))


@router.post("/{customer_id}/end", response_model=CustomerOut)
async def end_customer(
    customer_id: Annotated[str, Path(max_length=64)],
    body: CustomerEndIn,
    request: Request,
    data: Annotated[PartnerData, Depends(partner_data("customers:write"))],
    idempotency_key: Annotated[str | None, _IDEMPOTENCY_KEY] = None,
) -> JSONResponse:
    """End the customer: their mandates cover no day after `effective` (revoked from then;
    next year's too, if given), so their sessions ending later no longer count. Never inside
    a closed quarter (409), and a mandate is revoked once: ending again is a 409. Answers the
    customer, its mandates showing the revocation."""
    key = check_key(idempotency_key)
    digest = request_digest("POST", request.url.path, body.model_dump(mode="json"))
    answer = await data.customer_changes.end(customer_id, body, key, digest)
    return tagged(answer.body, answer.status, answer.headers)


@router.post("/{customer_id}/mandates", status_code=201, response_model=CustomerOut)
async def renew_mandate(
    customer_id: Annotated[str, Path(max_length=64)],
    body: MandateIn,
    request: Request,
    data: Annotated[PartnerData, Depends(partner_data("customers:write"))],
    idempotency_key: Annotated[str | None, _IDEMPOTENCY_KEY] = None,
) -> JSONResponse:
    """Record the customer's mandate for another year (this year or next; one per year),
    with the consent your form collected for it. Answers the customer with its mandates."""
    key = check_key(idempotency_key)
    digest = request_digest("POST", request.url.path, body.model_dump(mode="json"))
    answer = await data.customer_changes.renew(customer_id, body, key, digest)
    return tagged(answer.body, answer.status, answer.headers)
