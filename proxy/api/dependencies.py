"""Who is calling, and what they may reach: the FastAPI dependencies of every route.

`partner_data(scope)` authenticates the `Authorization: Bearer <key>` header against the stored
keys and gives the handler a `PartnerData` scoped to the key's partner, if the key holds
`scope`. Handlers get nothing else from the database, so tenant isolation is structural.

Errors: `Problem` 401 (with `WWW-Authenticate: Bearer`) for a missing, malformed, unknown or
revoked key; 403 for a key without the scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from proxy.api.key_store import Caller, authenticate
from proxy.api.partner_data import PartnerData
from proxy.api.problems import Problem
from proxy.store.connection import Connection

__all__ = ["partner_data"]

_bearer = HTTPBearer(auto_error=False, description="a partner API key: `ere_<key id>_<secret>`")


def _database(request: Request) -> Connection:
    database: Connection = request.app.state.database
    return database


async def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    caller = None
    if credentials is not None and len(credentials.credentials) <= 256:
        caller = await authenticate(_database(request), credentials.credentials)
    if caller is None:
        raise Problem(
            401,
            "a valid partner API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": 'Bearer realm="ere-proxy"'},
        )
    return caller


def partner_data(scope: str) -> Callable[..., Awaitable[PartnerData]]:
    """A dependency: the caller's `PartnerData`, if its key holds `scope`."""

    async def dependency(
        request: Request, caller: Annotated[Caller, Depends(_caller)]
    ) -> PartnerData:
        if scope not in caller.scopes:
            raise Problem(403, f"this key lacks the scope {scope}")
        return PartnerData(_database(request), caller, request.app.state.context)

    return dependency
