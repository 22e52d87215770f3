"""The versions module: our versions (2.2.1 only) and 2.2.1's endpoints, for any platform's token.

`GET /ocpi/versions` lists the versions with the URL of each one's details; `GET /ocpi/2.2.1`
gives those details: credentials (SENDER, as the spec advises for one's own), cdrs and sessions
(RECEIVER). Both take token A as well as token C (the registration starts here).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from proxy.api.ocpi.auth import Caller, any_platform
from proxy.api.ocpi.credentials import VERSION, Identity
from proxy.api.ocpi.responses import answer

__all__ = ["router"]

router = APIRouter()


@router.get("/versions")
async def versions(request: Request, _: Annotated[Caller, Depends(any_platform)]) -> JSONResponse:
    identity: Identity = request.app.state.identity
    return answer(identity.versions())


@router.get(f"/{VERSION}")
async def details(request: Request, _: Annotated[Caller, Depends(any_platform)]) -> JSONResponse:
    identity: Identity = request.app.state.identity
    return answer(identity.details())
