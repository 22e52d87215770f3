"""`/dashboard/keys`: the partner's API keys, for admins: listed (never a secret), made, rotated
and revoked.

Through `KeyData` (the partner's keys only: another partner's key id is a 404), each change
audited under the user. A new key, made or the successor of a rotation, is shown on the page
that answers the form, once (`no-store`): only its hash is kept. A rotated key works on for the
grace period chosen, as with `ere-proxy partners keys rotate`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from proxy.api.dashboard.auth import Member, Posted, member, posted_form
from proxy.api.dashboard.layout import page
from proxy.api.dashboard.page_route import PageRoute
from proxy.api.dashboard.rendering import PAGE_HEADERS
from proxy.api.keys import SCOPES, NewKey
from proxy.api.problems import Problem

__all__ = ["GRACE_HOURS", "router"]

# The grace periods the rotation form offers, in hours.
GRACE_HOURS = (0, 1, 24, 72, 168)

router = APIRouter(route_class=PageRoute, include_in_schema=False)
KeyId = Annotated[str, Path(max_length=12)]


async def _keys_page(
    who: Member, *, new_key: NewKey | None = None, note: str | None = None, status: int = 200
) -> HTMLResponse:
    who.require("keys:write")
    keys = await who.data.keys.list_keys()
    return await page(
        who,
        "keys.html",
        "keys",
        title="API keys",
        status=status,
        keys=keys,
        now=datetime.now(UTC),
        scopes=SCOPES,
        grace_hours=GRACE_HOURS,
        new_key=new_key,
        note=note,
    )


@router.get("/dashboard/keys")
async def keys(
    who: Annotated[Member, Depends(member)],
    revoked: Annotated[str | None, Query(max_length=12)] = None,
) -> HTMLResponse:
    note = None if revoked is None else f"Key {revoked} is revoked."
    return await _keys_page(who, note=note)


@router.post("/dashboard/keys")
async def create_key(posted: Annotated[Posted, Depends(posted_form)]) -> Response:
    who = posted.member
    who.require("keys:write")
    chosen = tuple(scope for scope in SCOPES if scope in posted.form.getlist("scope"))
    if not chosen:
        return await _keys_page(who, note="Choose at least one scope.", status=422)
    key = await who.data.keys.create(chosen)
    return await _keys_page(who, new_key=key, status=201)


@router.post("/dashboard/keys/{key_id}/rotate")
async def rotate_key(posted: Annotated[Posted, Depends(posted_form)], key_id: KeyId) -> Response:
    who = posted.member
    who.require("keys:write")
    grace = posted.form.get("grace_hours")
    if not isinstance(grace, str) or not grace.isascii() or not grace.isdigit():
        raise Problem(400, "choose the hours the old key keeps working")
    if int(grace) not in GRACE_HOURS:
        raise Problem(400, "choose one of the grace periods offered")
    key, _ = await who.data.keys.rotate_key(key_id, timedelta(hours=int(grace)))
    return await _keys_page(who, new_key=key, status=201)


@router.post("/dashboard/keys/{key_id}/revoke")
async def revoke_key(posted: Annotated[Posted, Depends(posted_form)], key_id: KeyId) -> Response:
    who = posted.member
    who.require("keys:write")
    await who.data.keys.revoke(key_id)
    return RedirectResponse(
        f"/dashboard/keys?revoked={key_id}", status_code=303, headers=PAGE_HEADERS
    )
