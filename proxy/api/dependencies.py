"""Who is calling, and what they may reach: the FastAPI dependencies of every route.

`partner_data(scope)` authenticates the `Authorization: Bearer <credential>` header (a partner
key, or an OAuth2 access token issued for one, told apart by their prefix) and gives the
handler a `PartnerData` scoped to the key's partner, if the credential holds `scope`. Handlers
get nothing else from the database, so tenant isolation is structural. The rate limits
(`proxy.api.throttle`) are applied here: a failure counts against the client's address, and
every authenticated request against its key. A credential verified less than `[api]
auth_cache_seconds` ago is not looked up again (`proxy.api.auth_cache`), so a revocation or an
expiry takes effect within that time; the key's `last_used_at` is stamped at most once a minute.

Errors: `Problem` 401 (with `WWW-Authenticate: Bearer`) for a missing, malformed, unknown,
revoked or expired credential; 403 for one without the scope; 429 over a rate limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from proxy.api.access_tokens import PREFIX as ACCESS_TOKEN_PREFIX
from proxy.api.auth_cache import AuthCache
from proxy.api.key_store import Caller, authenticate, stamp_last_used
from proxy.api.keys import parse_key
from proxy.api.partner_data import PartnerData
from proxy.api.problems import Problem
from proxy.api.throttle import Throttle
from proxy.api.token_store import authenticate_token
from proxy.store.connection import Connection

__all__ = ["partner_data"]

_bearer = HTTPBearer(
    auto_error=False,
    description="a partner API key (`ere_<key id>_<secret>`) or an access token from "
    "`POST /v1/oauth/token` (`ert_...`)",
)


def _database(request: Request) -> Connection:
    database: Connection = request.app.state.database
    return database


async def _authenticate(request: Request, credential: str) -> Caller | None:
    cache: AuthCache = request.app.state.auth_cache
    caller = cache.get(credential)
    if caller is not None:
        return caller
    database = _database(request)
    if credential.startswith(ACCESS_TOKEN_PREFIX):
        caller = await authenticate_token(database, credential)
    else:
        caller = await authenticate(database, credential)
    if caller is None:
        return None
    if cache.stamp_due(caller.key_id):
        await stamp_last_used(database, caller.key_id)
    cache.put(credential, caller)
    return caller


async def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Caller:
    throttle: Throttle = request.app.state.throttle
    address = throttle.address(request)
    throttle.check_address(address)
    caller = None
    if credentials is not None and len(credentials.credentials) <= 256:
        caller = await _authenticate(request, credentials.credentials)
    if caller is None:
        named = parse_key(credentials.credentials) if credentials is not None else None
        throttle.failed(address, named[0] if named is not None else None)
        raise Problem(
            401,
            "a valid partner API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": 'Bearer realm="ere-proxy"'},
        )
    throttle.admit(request, caller.key_id)
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
