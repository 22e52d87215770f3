"""Request and response bodies of `/v1/webhooks` (pydantic, at the edge only).

Requests are strict and bounded like `proxy.api.models`; the URL guard
(`proxy.api.webhook_urls`) and the description's text rules apply after.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AttemptOut",
    "DeliveryOut",
    "DeliveryPage",
    "EventType",
    "HealthOut",
    "WebhookCreated",
    "WebhookIn",
    "WebhookOut",
    "WebhookPage",
]

EventType = Literal[
    "customer.enrolled",
    "session.completed",
    "statement.issued",
    "payout.sent",
    "mandate.expiring",
]


class WebhookIn(BaseModel):
    """An endpoint to send events to: an https URL and the event types it wants."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(
        max_length=2048,
        description="https:// URL on a public address, without credentials or fragment",
        examples=["https://hooks.example.com/ere"],
    )
    events: list[EventType] = Field(min_length=1, max_length=20)
    description: str | None = Field(default=None, max_length=1000, description="≤ 200 characters")


class HealthOut(BaseModel):
    """How deliveries to the endpoint go, from its attempts."""

    state: Literal["healthy", "failing", "disabled"] = Field(
        description="disabled: no more deliveries; failing: the latest attempt failed"
    )
    last_success_at: datetime | None
    last_failure_at: datetime | None
    consecutive_failures: int = Field(description="failed attempts since the last success")
    last_error: str | None = Field(description="why the latest failed attempt failed")
    pending_deliveries: int = Field(description="deliveries still being attempted")


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[EventType]
    description: str | None
    created_at: datetime
    disabled_at: datetime | None
    health: HealthOut


class WebhookCreated(WebhookOut):
    """The endpoint just made, with its signing secret: shown in this answer only."""

    secret: str | None = Field(
        description="the signing secret (`whsec_...`) for `Ere-Signature`; only in the first "
        "answer (a replay of the same request answers null)"
    )


class WebhookPage(BaseModel):
    data: list[WebhookOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: last")


class AttemptOut(BaseModel):
    attempt: int
    attempted_at: datetime
    ok: bool
    status: int | None = Field(description="the HTTP status answered; null: no answer")
    error: str | None
    response: str | None = Field(description="the first bytes of the answer")
    duration_ms: int


class DeliveryOut(BaseModel):
    """One event sent to the endpoint, with every attempt made."""

    id: str
    event_id: str
    event_type: str
    state: Literal["pending", "delivered", "failed", "cancelled"] = Field(
        description="failed: retries exhausted (replay it); cancelled: the endpoint was disabled"
    )
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    replay_of: str | None = Field(description="the delivery this one replays")
    created_at: datetime
    body: str = Field(description="the exact request body sent")
    attempt_log: list[AttemptOut]


class DeliveryPage(BaseModel):
    data: list[DeliveryOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: last")
