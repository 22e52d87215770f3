"""`POST /v1/oauth/token`: OAuth2 client credentials (RFC 6749 §4.4), the second way in.

The client is a partner key: `client_id` is its key id, `client_secret` the secret part after
it, sent by HTTP Basic (RFC 6749 §2.3.1) or as form fields (`proxy.api.oauth_requests`). The
answer (RFC 6749 §5.1) is an access token to send as `Authorization: Bearer <token>` instead of
the key, with the key's scopes or the fewer asked for in `scope`, valid `access_token_seconds`
(`[api]`) and never beyond its key: revoking or expiring the key ends it.

This operation is the one exception to problem details: its errors are RFC 6749 §5.2 JSON
(`{"error", "error_description"}`: 400, or 401 with `WWW-Authenticate: Basic` for
`invalid_client`), the form OAuth2 client libraries read; the OpenAPI document declares them so
(`proxy.api.problems.OWN_ERRORS`). A rate limit (429), a body over the API's cap (413) and a
database out of reach (503) are problem details as everywhere.

Rate limits (`proxy.api.throttle`): a request naming a key id counts against that key, issued
or not; a failed client authentication counts against the client's address too.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBasic
from starlette.requests import HTTPConnection

from proxy.api.auth_models import OAuthErrorOut, TokenOut
from proxy.api.oauth_requests import GRANT_TYPE, OAuthError, read_token_request
from proxy.api.problems import OWN_ERRORS
from proxy.api.throttle import Throttle
from proxy.api.token_store import issue_token

__all__ = ["router"]

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": [GRANT_TYPE]},
        "scope": {
            "type": "string",
            "description": "space-separated scopes, each held by the key (default: all of them)",
            "examples": ["customers:read sessions:read"],
        },
        "client_id": {"type": "string", "description": "the key id, unless sent by HTTP Basic"},
        "client_secret": {
            "type": "string",
            "description": "the key's secret (after `ere_<key id>_`), unless sent by HTTP Basic",
        },
    },
}
_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/x-www-form-urlencoded": {"schema": _FORM}},
    },
    OWN_ERRORS: [400, 401],
}
_OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": OAuthErrorOut, "description": "RFC 6749 §5.2 error (not problem details)"},
    401: {
        "model": OAuthErrorOut,
        "description": "invalid_client: RFC 6749 §5.2 error (not problem details)",
    },
}


class _ClientBasic(HTTPBasic):
    """Declares HTTP Basic client authentication in the OpenAPI document only: the handler
    reads the header itself, so that its errors are RFC 6749's."""

    async def __call__(self, request: HTTPConnection) -> None:
        return None


_CLIENT_BASIC = _ClientBasic(
    scheme_name="OAuth2ClientBasic",
    auto_error=False,
    description="the key id as user name and its secret as password (RFC 6749 §2.3.1)",
)
router = APIRouter(tags=["oauth"])


@router.post(
    "/v1/oauth/token",
    response_model=TokenOut,
    responses=_OAUTH_ERRORS,
    openapi_extra=_OPENAPI,
    dependencies=[Security(_CLIENT_BASIC)],
)
async def issue_access_token(request: Request) -> JSONResponse:
    """An access token for a partner key (OAuth2 client credentials, RFC 6749 §4.4): send
    `grant_type=client_credentials` as a form, the key id and secret by HTTP Basic or as
    `client_id` and `client_secret`, and optionally `scope` to narrow the token's scopes.
    Errors are RFC 6749 §5.2 JSON, not problem details."""
    throttle: Throttle = request.app.state.throttle
    address = throttle.address(request)
    throttle.check_address(address)
    headers = request.headers
    try:
        if len(headers.getlist("authorization")) > 1 or len(headers.getlist("content-type")) > 1:
            raise OAuthError("invalid_request", "Authorization or Content-Type is given twice")
        wanted = read_token_request(
            headers.get("content-type"), headers.get("authorization"), await request.body()
        )
        throttle.admit(request, wanted.key_id)
        issued = await issue_token(
            request.app.state.database, wanted, request.app.state.access_token_seconds
        )
    except OAuthError as error:
        extra = {}
        if error.status == 401:  # `key_id` only if not admitted (counted) above already
            throttle.failed(address, error.key_id)
            extra = {"WWW-Authenticate": 'Basic realm="ere-proxy"'}
        return JSONResponse(error.body(), status_code=error.status, headers=_NO_STORE | extra)
    body = {
        "access_token": issued.token,
        "token_type": "Bearer",
        "expires_in": issued.expires_in,
        "scope": " ".join(issued.scopes),
    }
    return JSONResponse(body, headers=_NO_STORE)
