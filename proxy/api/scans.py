"""`/v1/scans`: the MID scan of a portfolio, and its reports read back.

`POST` needs `scan:write` and an `Idempotency-Key`; `GET` needs `scan:read` (a read scope of
its own, as for every other resource, so a reporting key reads reports without running scans,
which store rows). A scan costs the key's rate limit one request per `CHARGERS_PER_REQUEST`
chargers (at most half a burst; `proxy.api.throttle`): its work and its report grow with the
portfolio. Lists are pages of report summaries, newest first, with an opaque `cursor`
and `limit` (1-100, default 50).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse

from proxy.api.chargers import bad_cursor
from proxy.api.cursors import decode_cursor
from proxy.api.dependencies import partner_data
from proxy.api.idempotency import check_key, request_digest
from proxy.api.partner_data import PartnerData
from proxy.api.problems import PROBLEM_JSON
from proxy.api.scan_models import ScanIn, ScanOut, ScanPage
from proxy.api.throttle import Throttle

__all__ = ["CHARGERS_PER_REQUEST", "router"]

CHARGERS_PER_REQUEST = 100

_PROBLEM = {"content": {PROBLEM_JSON: {}}, "description": "problem details (RFC 9457)"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: _PROBLEM for status in (400, 401, 403, 404, 409, 413, 422)
}

router = APIRouter(prefix="/v1/scans", tags=["scans"], responses=_ERRORS)


@router.post("", status_code=201, response_model=ScanOut)
async def run_scan(
    body: ScanIn,
    request: Request,
    data: Annotated[PartnerData, Depends(partner_data("scan:write"))],
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="unique per operation; repeats replay"),
    ] = None,
) -> JSONResponse:
    """Scan a portfolio for ERE: per charger, whether it qualifies (signed OCMF readings seen
    and verified), needs a check (a MID meter model declared, by the charger or by you, not
    yet verified; or signed readings that fail) or does not qualify (and what would change
    that), with a yearly estimate at the operator's price per kWh from the kWh the proxy
    observed or you declared. Give each charger by `identity` (one you registered or linked)
    and/or by what you know of it. The report is kept: read it again at its `Location`.
    Every 100 chargers count as one request more against your key's rate limit."""
    key = check_key(idempotency_key)
    throttle: Throttle = request.app.state.throttle
    throttle.charge(request, data.caller.key_id, len(body.chargers) // CHARGERS_PER_REQUEST)
    digest = request_digest("POST", request.url.path, body.model_dump(mode="json"))
    answer = await data.scans.run(body, key, digest)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


@router.get("", response_model=ScanPage)
async def list_scans(
    data: Annotated[PartnerData, Depends(partner_data("scan:read"))],
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    """Your scan reports, newest first: totals only (read one for its chargers)."""
    before = None
    if cursor is not None:
        try:
            before = decode_cursor(cursor)
        except ValueError:
            raise bad_cursor() from None
    rows, next_cursor = await data.scans.list_scans(before, limit)
    return {"data": rows, "next_cursor": next_cursor}


@router.get("/{scan_id}", response_model=ScanOut)
async def get_scan(
    scan_id: Annotated[str, Path(max_length=64)],
    data: Annotated[PartnerData, Depends(partner_data("scan:read"))],
) -> dict[str, Any]:
    """One of your scan reports, as its POST answered it (404 for any id that is not yours)."""
    return await data.scans.get_scan(scan_id)
