"""`/v1/payouts`: what each of your customers was paid per quarter, and each payout run as it
concerns you. Needs `payouts:read`.

The list has one entry per customer and quarter (a run can hold thousands of customers, so it
is paged per customer rather than per run): the amount, the status (paid, carried over with
the reason, pending until the quarter's payout run, nothing due), the transfer's end-to-end id
and remittance information. Newest quarter first, then by customer, filtered by `quarter` and
`customer_id`, in pages with an opaque `cursor` and `limit` (1-100, default 50).

`/v1/payouts/{quarter}` is the run of that quarter: for a `partner-account` partner the
settlement transferred to its account, broken down per customer with each fee's invoice (the
shares add up to the transfer); for `direct` payouts the transfer to each customer; and the
amounts carried over. A quarter whose run is not made yet, or touched none of your customers,
is a 404. See `proxy.api.statement_data` for when what exists.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from proxy.api.cursors import encode_key_cursor
from proxy.api.dependencies import partner_data
from proxy.api.partner_data import PartnerData
from proxy.api.problems import PROBLEM_JSON
from proxy.api.statement_models import PayoutItemPage, PayoutRunOut
from proxy.api.statements import list_filter

__all__ = ["router"]

_PROBLEM = {"content": {PROBLEM_JSON: {}}, "description": "problem details (RFC 9457)"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: _PROBLEM for status in (400, 401, 403, 404, 422)
}

router = APIRouter(prefix="/v1/payouts", tags=["payouts"], responses=_ERRORS)


@router.get("", response_model=PayoutItemPage)
async def list_payouts(
    data: Annotated[PartnerData, Depends(partner_data("payouts:read"))],
    quarter: Annotated[str | None, Query(max_length=16, description="e.g. 2026Q3")] = None,
    customer_id: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    """Your customers' payouts, per quarter and customer."""
    wanted_quarter, customer, after = list_filter(quarter, customer_id, cursor)
    rows, last = await data.statements.list_payouts(wanted_quarter, customer, after, limit)
    return {"data": rows, "next_cursor": None if last is None else encode_key_cursor(last)}


@router.get("/{quarter}", response_model=PayoutRunOut)
async def get_payout_run(
    quarter: Annotated[str, Path(max_length=16, description="the run's quarter, e.g. 2026Q3")],
    data: Annotated[PartnerData, Depends(partner_data("payouts:read"))],
) -> dict[str, Any]:
    """The payout run of a quarter: your settlement (partner account) or your customers'
    transfers (direct), with what was carried over."""
    return await data.statements.get_payout_run(quarter)
