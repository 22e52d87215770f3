"""`/v1/keys/current`: the key a partner's integration calls with; it may rotate it.

`POST /v1/keys/current/rotate` needs `keys:write` and an `Idempotency-Key`, and the key itself
(not an access token); it answers the new key once (see `proxy.api.key_data`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from proxy.api.auth_models import KeyRotationIn, RotatedKeyOut
from proxy.api.dependencies import partner_data
from proxy.api.idempotency import check_key, request_digest
from proxy.api.partner_data import PartnerData
from proxy.api.problems import PROBLEM_JSON

__all__ = ["router"]

_PROBLEM = {"content": {PROBLEM_JSON: {}}, "description": "problem details (RFC 9457)"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: _PROBLEM for status in (400, 401, 403, 409, 413, 422, 429)
}

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=_ERRORS)


@router.post("/current/rotate", status_code=201, response_model=RotatedKeyOut)
async def rotate_current_key(
    body: KeyRotationIn,
    request: Request,
    data: Annotated[PartnerData, Depends(partner_data("keys:write"))],
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="unique per operation; repeats replay"),
    ] = None,
) -> JSONResponse:
    """Replace the key this call is made with by a new one with the same scopes, shown once
    in the answer; the old key keeps working for `grace_hours` (default 24, at most 168),
    then stops, and can be rotated no more. A repeat with the same `Idempotency-Key` while the
    new key is unused shows it again with a fresh secret; once used, the repeat is a 409."""
    key = check_key(idempotency_key)
    # The calling key is part of the request: another key of the partner reusing the
    # Idempotency-Key is a conflict, never a replay of this key's rotation.
    sent = {"calling_key": data.caller.key_id, **body.model_dump(mode="json")}
    digest = request_digest("POST", request.url.path, sent)
    answer = await data.keys.rotate(body.grace_hours, key, digest)
    headers = answer.headers | {"Cache-Control": "no-store"}
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)
