"""`/dashboard/webhooks`: the partner's webhook endpoints with their health, and each one's
delivery log (every attempt: time, status, error), newest first.

Read through `WebhookData`, as `/v1/webhooks` reads them, and for admins only: reading webhooks
needs `webhooks:write`, as in the API (an endpoint's URL and log are for whoever manages them).
Endpoints are made, pinged and replayed through the API.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse

from proxy.api.cursors import decode_cursor
from proxy.api.dashboard.auth import Member, member
from proxy.api.dashboard.layout import page
from proxy.api.dashboard.page_route import PageRoute
from proxy.api.problems import Problem

__all__ = ["router"]

PAGE_SIZE = 50
_ENDPOINTS = 100  # at most 20 are active; disabled ones are listed too
_STATES = ("pending", "delivered", "failed", "cancelled")
TONES = {"healthy": "good", "failing": "bad", "disabled": "muted", "delivered": "good"}

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/dashboard/webhooks")
async def webhooks(who: Annotated[Member, Depends(member)]) -> HTMLResponse:
    who.require("webhooks:write")
    endpoints, _ = await who.data.webhooks.list_webhooks(None, _ENDPOINTS)
    return await page(
        who, "webhooks.html", "webhooks", title="Webhooks", endpoints=endpoints, tones=TONES
    )


@router.get("/dashboard/webhooks/{webhook_id}")
async def deliveries(
    who: Annotated[Member, Depends(member)],
    webhook_id: Annotated[str, Path(max_length=64)],
    state: Annotated[str | None, Query(max_length=16)] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> HTMLResponse:
    who.require("webhooks:write")
    state = state or None
    if state is not None and state not in _STATES:
        raise Problem(400, f"a delivery's state is one of {', '.join(_STATES)}")
    before = None
    if cursor is not None:
        try:
            before = decode_cursor(cursor)
        except ValueError:
            raise Problem(400, "this page of deliveries does not exist") from None
    endpoint = await who.data.webhooks.get_webhook(webhook_id)
    rows, next_cursor = await who.data.webhooks.deliveries(webhook_id, state, before, PAGE_SIZE)
    return await page(
        who,
        "webhook.html",
        "webhooks",
        title="Webhook deliveries",
        endpoint=endpoint,
        deliveries=rows,
        state=state or "",
        states=_STATES,
        cursor=cursor,
        next_cursor=next_cursor,
        tones=TONES,
    )
