"""`/v1/webhooks`: endpoints that receive signed events, their health and their delivery log.

Every operation needs `webhooks:write` (reading an endpoint shows its URL and log, which only
who manages webhooks should see), and an event type needs the read scope of its data too
(`customers:read` for customer.enrolled and mandate.expiring, `sessions:read`,
`statements:read`, `payouts:read`): a key is sent, and its delivery log shows, only events it
could read through the API; every POST needs an `Idempotency-Key`. Lists are pages with an
opaque `cursor` and `limit` (1-100, default 50): endpoints oldest first, deliveries newest
first. The events, the signature and the retries are described in the README ("Webhooks").
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import JSONResponse

from proxy.api.chargers import bad_cursor
from proxy.api.cursors import decode_cursor
from proxy.api.dependencies import partner_data
from proxy.api.idempotency import check_key, request_digest
from proxy.api.partner_data import PartnerData
from proxy.api.problems import PROBLEM_JSON
from proxy.api.webhook_models import (
    DeliveryOut,
    DeliveryPage,
    WebhookCreated,
    WebhookIn,
    WebhookOut,
    WebhookPage,
)

__all__ = ["router"]

_PROBLEM = {"content": {PROBLEM_JSON: {}}, "description": "problem details (RFC 9457)"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: _PROBLEM for status in (400, 401, 403, 404, 409, 413, 422)
}
_IDEMPOTENCY_KEY = Header(
    alias="Idempotency-Key", description="unique per operation; repeats replay"
)
_SCOPE = "webhooks:write"

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], responses=_ERRORS)

WebhookId = Annotated[str, Path(max_length=64)]
DeliveryId = Annotated[str, Path(max_length=64)]
Data = Annotated[PartnerData, Depends(partner_data(_SCOPE))]


def _cursor(cursor: str | None) -> Any:
    if cursor is None:
        return None
    try:
        return decode_cursor(cursor)
    except ValueError:
        raise bad_cursor() from None


def _allow_private(request: Request) -> bool:
    settings = getattr(request.app.state, "settings", None)
    return bool(getattr(settings, "webhooks_allow_private", False))


@router.post("", status_code=201, response_model=WebhookCreated)
async def create_webhook(
    body: WebhookIn,
    request: Request,
    data: Data,
    idempotency_key: Annotated[str | None, _IDEMPOTENCY_KEY] = None,
) -> JSONResponse:
    """Send the given event types to an https URL on a public address (no credentials in it).
    Each event type needs the read scope of its data besides `webhooks:write` (403 without).
    The answer holds the endpoint's signing secret: it is shown in this answer only."""
    key = check_key(idempotency_key)
    digest = request_digest("POST", request.url.path, body.model_dump(mode="json"))
    answer = await data.webhooks.create(body, key, digest, allow_private=_allow_private(request))
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


@router.get("", response_model=WebhookPage)
async def list_webhooks(
    data: Data,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    """Your endpoints, disabled ones too, with their health: last success, failures since,
    the latest error and the deliveries still pending."""
    rows, next_cursor = await data.webhooks.list_webhooks(_cursor(cursor), limit)
    return {"data": rows, "next_cursor": next_cursor}


@router.get("/{webhook_id}", response_model=WebhookOut)
async def get_webhook(webhook_id: WebhookId, data: Data) -> dict[str, Any]:
    """One of your endpoints with its health (404 for any id that is not yours)."""
    return await data.webhooks.get_webhook(webhook_id)


@router.delete("/{webhook_id}", response_model=WebhookOut)
async def disable_webhook(webhook_id: WebhookId, data: Data) -> dict[str, Any]:
    """Disable the endpoint: nothing more is sent to it and its pending deliveries are
    cancelled. It stays listed, with its delivery log. Disabling it again changes nothing."""
    return await data.webhooks.disable(webhook_id)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryPage)
async def list_deliveries(
    webhook_id: WebhookId,
    data: Data,
    state: Literal["pending", "delivered", "failed", "cancelled"] | None = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> dict[str, Any]:
    """The endpoint's delivery log, newest first: each event sent, the exact body, and every
    attempt (time, HTTP status, error, the first bytes of the answer). Only the events your
    key may read (and pings) are listed."""
    rows, next_cursor = await data.webhooks.deliveries(webhook_id, state, _cursor(cursor), limit)
    return {"data": rows, "next_cursor": next_cursor}


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/replay", status_code=201, response_model=DeliveryOut
)
async def replay_delivery(
    webhook_id: WebhookId,
    delivery_id: DeliveryId,
    request: Request,
    data: Data,
    idempotency_key: Annotated[str | None, _IDEMPOTENCY_KEY] = None,
) -> JSONResponse:
    """Send the delivery's event to the endpoint again, as a new delivery (the event keeps its
    id). Any delivery can be replayed, a failed one typically; the endpoint must be active."""
    key = check_key(idempotency_key)
    digest = request_digest("POST", request.url.path, None)
    answer = await data.webhooks.replay(webhook_id, delivery_id, key, digest)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


@router.post("/{webhook_id}/ping", status_code=201, response_model=DeliveryOut)
async def ping_webhook(
    webhook_id: WebhookId,
    request: Request,
    data: Data,
    idempotency_key: Annotated[str | None, _IDEMPOTENCY_KEY] = None,
) -> JSONResponse:
    """Send a `webhook.ping` event to the endpoint, to check that it receives and verifies
    signed events; the answer is its delivery, queued."""
    key = check_key(idempotency_key)
    digest = request_digest("POST", request.url.path, None)
    answer = await data.webhooks.ping(webhook_id, key, digest)
    return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)
