"""The credentials module (credentials.asciidoc): the registration handshake, per platform.

* `GET` answers our Credentials with the token the platform called with.
* `POST` (token A, or the last token of a platform that unregistered) registers: it reads the
  platform's Credentials (its token B, versions URL and roles), fetches its 2.2.1 endpoints with
  token B (`proxy.api.ocpi.platform_client`; status 3001 or 3002 when that fails, and nothing
  changes), then answers our Credentials with a new token C. From then on only token C works;
  token A is gone. A registered platform's POST is HTTP 405.
* `PUT` (registered) does the same again: new roles, endpoints and token B are kept and a new
  token C replaces the old one, which stops working at once. Before the registration: 405.
* `DELETE` (registered) unregisters: the platform's token then works for versions and
  credentials only, until it registers again. Before the registration: 405.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from proxy.api.ocpi.auth import Caller, any_platform
from proxy.api.ocpi.credentials import VERSION, Identity, parse_credentials
from proxy.api.ocpi.envelope import OcpiError, Status
from proxy.api.ocpi.platform_client import fetch_endpoints
from proxy.api.ocpi.platforms import Registration, register, unregister
from proxy.api.ocpi.responses import answer
from proxy.runtime.config import ApiSettings

__all__ = ["router"]

log = logging.getLogger("proxy.api.ocpi")
router = APIRouter()
_PATH = f"/{VERSION}/credentials"
Calling = Annotated[Caller, Depends(any_platform)]


def _not_allowed(registered: bool) -> OcpiError:
    if registered:
        message, allow = (
            "registered already: PUT to update, DELETE to unregister",
            "DELETE, GET, HEAD, PUT",
        )
    else:
        message, allow = "not registered: POST your credentials first", "GET, HEAD, POST"
    return OcpiError(Status.CLIENT_ERROR, message, http_status=405, headers={"Allow": allow})


def _replaced() -> OcpiError:
    return OcpiError(Status.CLIENT_ERROR, "this token was replaced meanwhile", http_status=401)


@router.get(_PATH)
async def get_credentials(request: Request, caller: Calling) -> JSONResponse:
    identity: Identity = request.app.state.identity
    return answer(identity.credentials(caller.token))


async def _register(request: Request, caller: Caller, *, update: bool) -> JSONResponse:
    credentials = parse_credentials(await request.body())
    settings: ApiSettings = request.app.state.settings
    found = await fetch_endpoints(
        credentials.url, credentials.token, allow_private=settings.ocpi.allow_private
    )
    registration = Registration(
        token_b=credentials.token,
        versions_url=credentials.url,
        version=VERSION,
        endpoints=found.endpoints,
        roles=credentials.stored_roles(),
    )
    token_c = await register(
        request.app.state.database,
        caller.platform,
        registration,
        request.app.state.keys,
        update=update,
    )
    if token_c is None:
        raise _replaced()
    log.info(
        "OCPI platform registered" if not update else "OCPI registration updated",
        extra={
            "partner": caller.platform.partner_id,
            "platform": caller.platform.platform_id,
            "roles": [
                f"{r['role']} {r['country_code']}/{r['party_id']}" for r in registration.roles
            ],
        },
    )
    identity: Identity = request.app.state.identity
    return answer(identity.credentials(token_c))


@router.post(_PATH)
async def post_credentials(request: Request, caller: Calling) -> JSONResponse:
    if caller.platform.registered:
        raise _not_allowed(registered=True)
    return await _register(request, caller, update=False)


@router.put(_PATH)
async def put_credentials(request: Request, caller: Calling) -> JSONResponse:
    if not caller.platform.registered:
        raise _not_allowed(registered=False)
    return await _register(request, caller, update=True)


@router.delete(_PATH)
async def delete_credentials(request: Request, caller: Calling) -> JSONResponse:
    if not caller.platform.registered:
        raise _not_allowed(registered=False)
    if not await unregister(request.app.state.database, caller.platform):
        raise _replaced()
    log.info(
        "OCPI platform unregistered",
        extra={"partner": caller.platform.partner_id, "platform": caller.platform.platform_id},
    )
    return answer()
