"""The Sessions module's Receiver interface: live sessions a registered platform pushes.

`PUT /ocpi/2.2.1/sessions/{country_code}/{party_id}/{session_id}` keeps a new or replaced
Session (HTTP 201 when new, 200 when replaced), `PATCH` applies a change to a kept one (HTTP 404
when there is none: PUT it first), `GET` reads it back. The country code and party id must be
one of the platform's CPO roles (HTTP 404 otherwise, as the spec allows for another party's
objects), and the object's ids those of the URL (status 2001). Kept sessions have no effect on
ERE; the answers carry no `data`, as the spec advises for these pushes.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from proxy.api.ocpi import live_session_store
from proxy.api.ocpi.auth import Registered, routing, sender
from proxy.api.ocpi.credentials import VERSION
from proxy.api.ocpi.envelope import OcpiError, Status
from proxy.api.ocpi.live_sessions import parse_session
from proxy.api.ocpi.platforms import Platform
from proxy.api.ocpi.responses import answer, raw_answer

__all__ = ["router"]

router = APIRouter()
_PATH = f"/{VERSION}/sessions/{{country_code}}/{{party_id}}/{{session_id}}"
_MAX_ID = 36


def _unknown(what: str) -> OcpiError:
    return OcpiError(Status.CLIENT_ERROR, what, http_status=404)


def _key(
    request: Request, platform: Platform, country_code: str, party_id: str, session_id: str
) -> tuple[tuple[str, str, str], dict[str, str]]:
    """The session's key, and the answer's routing headers; 404 for another party's URL."""
    headers = routing(request, platform)
    if not platform.cpo(country_code, party_id):
        raise _unknown(f"{country_code[:2]}/{party_id[:3]} is not a CPO you registered")
    named = sender(request)
    if named is not None and named != (country_code.upper(), party_id.upper()):
        raise OcpiError(Status.INVALID_PARAMETERS, "OCPI-from-* and the URL name other parties")
    if not 0 < len(session_id) <= _MAX_ID or not all(" " <= ch <= "~" for ch in session_id):
        raise OcpiError(Status.INVALID_PARAMETERS, "session_id must be 1-36 printable ASCII")
    return (country_code, party_id, session_id), headers


@router.get(_PATH)
async def get_session(
    request: Request, platform: Registered, country_code: str, party_id: str, session_id: str
) -> Response:
    key, headers = _key(request, platform, country_code, party_id, session_id)
    text = await live_session_store.get(request.app.state.database, platform, key)
    if text is None:
        raise _unknown("no such session")
    return raw_answer(text, headers=headers)


@router.put(_PATH)
async def put_session(
    request: Request, platform: Registered, country_code: str, party_id: str, session_id: str
) -> JSONResponse:
    key, headers = _key(request, platform, country_code, party_id, session_id)
    kept = parse_session(await request.body(), *key)
    created = await live_session_store.put(request.app.state.database, platform, kept)
    return answer(http_status=201 if created else 200, headers=headers)


@router.patch(_PATH)
async def patch_session(
    request: Request, platform: Registered, country_code: str, party_id: str, session_id: str
) -> JSONResponse:
    key, headers = _key(request, platform, country_code, party_id, session_id)
    body = await request.body()
    kept = await live_session_store.patch(request.app.state.database, platform, key, body)
    if kept is None:
        raise _unknown("no such session: PUT it first")
    return answer(headers=headers)
