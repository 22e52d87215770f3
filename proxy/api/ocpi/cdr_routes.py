"""The CDRs module's Receiver interface: CDRs a registered platform pushes, and reads back.

* `POST /ocpi/2.2.1/cdrs` keeps a new CDR and the session it becomes (`proxy.api.ocpi.cdr_store`)
  and answers HTTP 201 with its `Location`; a replay of a CDR kept already answers HTTP 200 with
  the same `Location` and changes nothing; the same id with other content is status 2001. The
  CDR's owner (`country_code`, `party_id`) must be a CPO the platform registered (status 2001).
* `GET /ocpi/2.2.1/cdrs/{country_code}/{party_id}/{id}` (the `Location`) gives a CDR back as
  received; another partner's, or an unknown one, is HTTP 404.
* `GET /ocpi/2.2.1/cdrs` lists the partner's CDRs, oldest first, paginated
  (`proxy.api.ocpi.pages`; `date_from` and `date_to` on their `last_updated`).
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from proxy.api.ocpi.auth import Registered, routing, sender
from proxy.api.ocpi.cdr_store import get_cdr, list_cdrs, store_cdr
from proxy.api.ocpi.cdrs import parse_cdr
from proxy.api.ocpi.credentials import VERSION, Identity
from proxy.api.ocpi.envelope import OcpiError, Status
from proxy.api.ocpi.pages import page_headers, parse_page
from proxy.api.ocpi.responses import answer, raw_answer

__all__ = ["router"]

router = APIRouter()
_CDRS = f"/{VERSION}/cdrs"
_MAX_ID = 39  # a credit CDR's id


def cdr_url(identity: Identity, country_code: str, party_id: str, cdr_id: str) -> str:
    """Where one CDR is read back (its ids percent-encoded: an id may hold any ASCII)."""
    parts = (quote(part, safe="") for part in (country_code, party_id, cdr_id))
    return "/".join([identity.url("cdrs"), *parts])


@router.post(_CDRS)
@router.post(f"{_CDRS}/", include_in_schema=False)  # the spec's examples POST to .../cdrs/
async def post_cdr(request: Request, platform: Registered) -> JSONResponse:
    headers = routing(request, platform)
    received = parse_cdr(await request.body())
    owner = received.cdr.owner
    if not platform.cpo(*owner):
        raise OcpiError(
            Status.INVALID_PARAMETERS,
            f"country_code/party_id {'/'.join(owner)} is not a CPO you registered",
        )
    named = sender(request)
    if named is not None and named != owner:
        raise OcpiError(Status.INVALID_PARAMETERS, "OCPI-from-* and the CDR name other parties")
    stored = await store_cdr(request.app.state.database, platform, received)
    identity: Identity = request.app.state.identity
    headers["Location"] = cdr_url(identity, stored.country_code, stored.party_id, stored.cdr_id)
    return answer(http_status=201 if stored.created else 200, headers=headers)


@router.get(_CDRS)
async def list_cdrs_route(request: Request, platform: Registered) -> Response:
    headers = routing(request, platform)
    page = parse_page(request.query_params)
    texts, total = await list_cdrs(request.app.state.database, platform.partner_id, page)
    identity: Identity = request.app.state.identity
    headers |= page_headers(page, total, identity.url("cdrs"))
    return raw_answer("[" + ",".join(texts) + "]", headers=headers)


@router.get(_CDRS + "/{country_code}/{party_id}/{cdr_id:path}")
async def get_cdr_route(
    request: Request, platform: Registered, country_code: str, party_id: str, cdr_id: str
) -> Response:
    headers = routing(request, platform)
    key = (country_code, party_id, cdr_id)
    text = None
    if all(0 < len(part) <= _MAX_ID and part.isascii() and part.isprintable() for part in key):
        text = await get_cdr(request.app.state.database, platform.partner_id, key)
    if text is None:
        raise OcpiError(Status.CLIENT_ERROR, "no such CDR", http_status=404)
    return raw_answer(text, headers=headers)
