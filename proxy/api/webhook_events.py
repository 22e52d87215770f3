"""Webhook events: what happened to a partner's objects, recorded once and queued for delivery.

An event is one JSON body, the same for every endpoint it goes to and for every attempt:
`{"id": "evt_...", "type": ..., "created_at": ..., "data": {...}}`. The types and their data:

- `customer.enrolled`: `customer_id`, `ean`, `year` (of the mandate recorded with it);
- `session.completed`: `session_id`, `charger`, `transaction_id`, `customer_id`, `started_at`,
  `ended_at`, `energy_kwh`;
- `statement.issued`: `statement_id` (of `/v1/statements/{id}`), `run_id`, `quarter`,
  `customer_id`, `issued_at`;
- `payout.sent`: `run_id`, `quarter`, `execution_date`, `amount_eur`, `transfers` (the run's
  transfers to the partner or its customers);
- `mandate.expiring`: `customer_id`, `ean`, `year`, `valid_until` (within 30 days, no mandate
  for the next year yet);
- `webhook.ping`: `webhook_id`, sent to one endpoint on request.

`emit` records events in the caller's transaction, so an event exists if and only if what it
tells of was committed: each at most once per (partner, type, object id) (the unique key makes
a repeat a no-op), and only for a partner with an active endpoint subscribed to its type. Each
new event gets one delivery per such endpoint of the same partner, due at once; the database
refuses a delivery whose event and endpoint belong to different partners.

Errors: database errors pass through (the caller's transaction rolls back).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from proxy.store.connection import Connection

__all__ = [
    "EVENT_SCOPES",
    "EVENT_TYPES",
    "PING",
    "NewEvent",
    "customer_enrolled",
    "emit",
    "envelope",
    "new_id",
    "queue_ping",
    "readable_types",
]

EVENT_TYPES = (
    "customer.enrolled",
    "session.completed",
    "statement.issued",
    "payout.sent",
    "mandate.expiring",
)
PING = "webhook.ping"
# The read scope an event type's data needs: an endpoint gets, and its delivery log shows, only
# events a key holding these scopes could read through the API anyway (a ping needs none).
EVENT_SCOPES = {
    "customer.enrolled": "customers:read",
    "session.completed": "sessions:read",
    "statement.issued": "statements:read",
    "payout.sent": "payouts:read",
    "mandate.expiring": "customers:read",
}


@dataclass(frozen=True, slots=True)
class NewEvent:
    partner_id: str
    type: str
    object_id: str
    data: dict[str, Any]


def readable_types(scopes: frozenset[str]) -> list[str]:
    """The event types (a ping included) whose data a key with `scopes` may read."""
    return [PING, *(kind for kind in EVENT_TYPES if EVENT_SCOPES[kind] in scopes)]


def new_id(prefix: str) -> str:
    """A random id: `prefix`, an underscore and 32 hex digits."""
    return f"{prefix}_{secrets.token_hex(16)}"


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


def envelope(event_id: str, type_: str, created_at: datetime, data: dict[str, Any]) -> str:
    """The body every delivery of the event sends, as text (JSON, ASCII)."""
    document = {"id": event_id, "type": type_, "created_at": created_at, "data": data}
    return json.dumps(document, default=_plain, separators=(",", ":"))


def customer_enrolled(partner_id: str, customer: dict[str, Any]) -> NewEvent:
    """The event of an enrolment, from the customer as the API answered it."""
    years = [mandate["year"] for mandate in customer.get("mandates", [])]
    data = {"customer_id": customer["id"], "ean": customer["ean"], "year": max(years, default=None)}
    return NewEvent(partner_id, "customer.enrolled", customer["id"], data)


_EMIT = """
WITH given AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
        AS g(event_id, partner_id, type, object_id, body)
), new AS (
    INSERT INTO webhook_events (event_id, partner_id, type, object_id, created_at, body)
    SELECT g.event_id, g.partner_id, g.type, g.object_id, $6, g.body FROM given g
    WHERE EXISTS (
        SELECT 1 FROM webhook_endpoints w
        WHERE w.partner_id = g.partner_id AND w.disabled_at IS NULL AND g.type = ANY (w.events)
    )
    ON CONFLICT (partner_id, type, object_id) DO NOTHING
    RETURNING event_id, partner_id, type
)
INSERT INTO webhook_deliveries (delivery_id, partner_id, webhook_id, event_id, next_attempt_at)
SELECT 'dlv_' || replace(gen_random_uuid()::text, '-', ''), n.partner_id, w.webhook_id,
       n.event_id, $6
FROM new n JOIN webhook_endpoints w
     ON w.partner_id = n.partner_id AND w.disabled_at IS NULL AND n.type = ANY (w.events)
RETURNING delivery_id
"""


async def emit(tx: Connection, events: Sequence[NewEvent]) -> int:
    """Record `events` (see the module docstring) in `tx`; how many deliveries were queued."""
    if not events:
        return 0
    now: datetime = await tx.fetchval("SELECT now()")
    ids = [new_id("evt") for _ in events]
    rows = await tx.fetch(
        _EMIT,
        ids,
        [event.partner_id for event in events],
        [event.type for event in events],
        [event.object_id for event in events],
        [envelope(i, e.type, now, e.data) for i, e in zip(ids, events)],
        now,
    )
    return len(rows)


async def queue_ping(tx: Connection, partner_id: str, webhook_id: str) -> str:
    """A `webhook.ping` event for one endpoint of `partner_id` and its delivery; the delivery's id."""
    now: datetime = await tx.fetchval("SELECT now()")
    event_id = new_id("evt")
    body = envelope(event_id, PING, now, {"webhook_id": webhook_id})
    await tx.execute(
        "INSERT INTO webhook_events (event_id, partner_id, type, object_id, created_at, body) "
        "VALUES ($1, $2, $3, $1, $4, $5)",
        event_id,
        partner_id,
        PING,
        now,
        body,
    )
    delivery_id = new_id("dlv")
    await tx.execute(
        "INSERT INTO webhook_deliveries (delivery_id, partner_id, webhook_id, event_id, "
        "next_attempt_at) VALUES ($1, $2, $3, $4, $5)",
        delivery_id,
        partner_id,
        webhook_id,
        event_id,
        now,
    )
    return delivery_id
