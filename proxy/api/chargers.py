"""`/v1/chargers`: register a charger for forwarding, link it to a customer, list and read them.

`POST` needs `chargers:write` and an `Idempotency-Key`; `GET` needs `chargers:read`. Lists are
pages by identity with an opaque `cursor` and `limit` (1-100, default 50).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response

from proxy.api.charger_models import (
    ChargerIn,
    ChargerOut,
    ChargerPage,
    CredentialsOut,
    LinkIn,
    LinkOut,
)
from proxy.api.cursors import decode_key_cursor, encode_key_cursor
from proxy.api.dependencies import partner_data
from proxy.api.etags import NOT_MODIFIED, conditional_get
from proxy.api.idempotency import check_key, request_digest
from proxy.api.partner_data import PartnerData
from proxy.api.problems import PROBLEM_JSON, Problem
from proxy.api.upstream_urls import UpstreamPolicy

__all__ = ["bad_cursor", "router"]

_PROBLEM = {"content": {PROBLEM_JSON: {}}, "description": "problem details (RFC 9457)"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: _PROBLEM for status in (400, 401, 403, 404, 409, 413, 422)
}
_IDEMPOTENCY_KEY = Header(
    alias="Idempotency-Key", description="unique per operation; repeats replay"
)

router = APIRouter(prefix="/v1/chargers", tags=["chargers"], responses=_ERRORS)


def bad_cursor() -> Problem:
    return Problem(
        400,
        "cursor: not a cursor from this API; pass next_cursor as given",
        errors=[{"field": "cursor", "detail": "not a cursor from this API"}],
    )


@router.post("", status_code=201, response_model=CredentialsOut, responses={503: _PROBLEM})
async def register_charger(
    body: ChargerIn,
    request: Request,
    data: Annotated[PartnerData, Depends(partner_data("chargers:write"))],
    idempotency_key: Annotated[str | None, _IDEMPOTENCY_KEY] = None,
) -> JSONResponse:
    """Register a charger for forwarding to its back-office. The `upstream` must be on a
    public address (not a private, loopback or link-local one, nor a name resolving there) and
    on a host the operator allows (422 otherwise). The answer gives the OCPP URL, username and
    a generated password to configure on the charger: the password is shown in this answer
    only."""
    key = check_key(idempotency_key)
    digest = request_digest("POST", request.url.path, body.model_dump(mode="json"))
    policy = UpstreamPolicy.from_settings(request.app.state.settings)
    answer = await data.chargers.register(body, key, digest, upstreams=policy)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


@router.post("/{identity}/links", status_code=201, response_model=LinkOut)
async def link_charger(
    identity: Annotated[str, Path(max_length=200)],
    body: LinkIn,
    request: Request,
    data: Annotated[PartnerData, Depends(partner_data("chargers:write"))],
    idempotency_key: Annotated[str | None, _IDEMPOTENCY_KEY] = None,
) -> JSONResponse:
    """Link the charger to one of your customers from `valid_from` (default now): its
    sessions ending from then on are that customer's. A charger linked to another of your
    customers moves at that instant; one linked to someone else's customer is a 409. No
    change takes effect inside a closed quarter, and none while a quarter is closing (409)."""
    key = check_key(idempotency_key)
    digest = request_digest("POST", request.url.path, body.model_dump(mode="json"))
    answer = await data.chargers.link(identity, body, key, digest)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


@router.get("", response_model=ChargerPage)
async def list_chargers(
    data: Annotated[PartnerData, Depends(partner_data("chargers:read"))],
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    """Your chargers (registered by you or linked to your customers), by identity, with their
    status: `last_seen` (the latest event the proxy recorded; the proxy keeps no live
    connection state in the database), last boot, meter class, current session and link."""
    after = None
    if cursor is not None:
        try:
            after = decode_key_cursor(cursor)
        except ValueError:
            raise bad_cursor() from None
    rows, last = await data.chargers.list_chargers(after, limit)
    return {"data": rows, "next_cursor": None if last is None else encode_key_cursor(last)}


@router.get("/{identity}", response_model=ChargerOut, responses=NOT_MODIFIED)
async def get_charger(
    identity: Annotated[str, Path(max_length=200)],
    data: Annotated[PartnerData, Depends(partner_data("chargers:read"))],
    if_none_match: Annotated[
        str | None, Header(alias="If-None-Match", description="an ETag you have: 304 if current")
    ] = None,
) -> Response:
    """One of your chargers (404 for any identity that is not yours), with its `ETag`: a
    request with `If-None-Match` naming it is 304 while nothing shown has changed."""
    row = await data.chargers.get_charger(identity)
    return conditional_get(ChargerOut.model_validate(row).model_dump(mode="json"), if_none_match)
