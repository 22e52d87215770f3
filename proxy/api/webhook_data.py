"""One partner's webhooks: endpoints made, listed with their health, disabled; the delivery log,
replays and pings. Every query is scoped by the caller's partner: another partner's endpoint or
delivery does not exist for them (404).

`create` checks the URL (`proxy.api.webhook_urls`: its form, then where its name resolves now;
a name that does not resolve yet is accepted, since every delivery checks again) and makes a
signing secret, shown in the first answer only: the answer kept for a repeated request has it
blanked, and the secret is stored sealed when the registry has a key (see migration 018). At
most `MAX_ACTIVE` endpoints per partner are active. `disable` stops deliveries: those still
pending are cancelled, the endpoint and its log are kept. `replay` sends a delivery's event to
its endpoint again as a new delivery (any state; the event keeps its id, so receivers that
deduplicate by `Ere-Event-Id` see a repeat); `ping` sends a `webhook.ping` event. Both need an
active endpoint (409 otherwise). Every write is audited and every POST idempotent.

`webhooks:write` is no way around the read scopes: an endpoint is made only for event types
whose data the calling key may read (`webhook_events.EVENT_SCOPES`; 403 otherwise), and the
delivery log shows, and replays, only such events (and pings); another event is not there for
that key (404), as if it had never been sent.

Errors: `Problem` (403, 404, 409, 422); database errors pass through.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import trio

from proxy.api.audit import record_write
from proxy.api.cursors import encode_cursor
from proxy.api.idempotency import StoredAnswer, claim, remember
from proxy.api.key_store import Caller
from proxy.api.problems import Problem, field_error
from proxy.api.webhook_events import (
    EVENT_SCOPES,
    EVENT_TYPES,
    new_id,
    queue_ping,
    readable_types,
)
from proxy.api.webhook_models import WebhookIn
from proxy.api.webhook_signing import new_secret
from proxy.api.webhook_urls import RefusedUrl, Unresolved, check_url, resolve
from proxy.ere.admin.validation import AdminInputError, clean_text
from proxy.routing.registry.sealing import KeyRing
from proxy.store.connection import Connection

__all__ = ["MAX_ACTIVE", "WebhookData"]

MAX_ACTIVE = 20
_RESOLVE_SECONDS = 5.0
_WEBHOOK_ID = re.compile(r"whk_[0-9a-f]{32}")
_DELIVERY_ID = re.compile(r"dlv_[0-9a-f]{32}")
# Endpoints with their health ($1: partner id).
_WEBHOOKS = """
SELECT w.webhook_id AS id, w.url, w.events, nullif(w.description, '') AS description,
       w.created_at, w.disabled_at, good.last_success_at, bad.last_failure_at, bad.last_error,
       (SELECT count(*) FROM (
            SELECT 1 FROM webhook_attempts a
            WHERE a.webhook_id = w.webhook_id AND NOT a.ok
              AND a.attempted_at > coalesce(good.last_success_at, '-infinity')
            LIMIT 100000) f) AS consecutive_failures,
       (SELECT count(*) FROM webhook_deliveries d
        WHERE d.webhook_id = w.webhook_id AND d.state = 'pending') AS pending_deliveries
FROM webhook_endpoints w
LEFT JOIN LATERAL (
    SELECT a.attempted_at AS last_success_at FROM webhook_attempts a
    WHERE a.webhook_id = w.webhook_id AND a.ok ORDER BY a.attempted_at DESC LIMIT 1
) good ON true
LEFT JOIN LATERAL (
    SELECT a.attempted_at AS last_failure_at, a.error AS last_error FROM webhook_attempts a
    WHERE a.webhook_id = w.webhook_id AND NOT a.ok ORDER BY a.attempted_at DESC LIMIT 1
) bad ON true
WHERE w.partner_id = $1
"""
# Deliveries of one endpoint, newest first ($1 partner, $2 endpoint, $3 state, $4/$5 before,
# $6 the event types the caller may read).
_DELIVERIES = """
SELECT d.delivery_id AS id, d.event_id, e.type AS event_type, d.state, d.attempts,
       d.next_attempt_at, d.delivered_at, d.replay_of, d.created_at, e.body
FROM webhook_deliveries d
JOIN webhook_events e ON e.event_id = d.event_id AND e.partner_id = d.partner_id
WHERE d.partner_id = $1 AND d.webhook_id = $2 AND ($3::text IS NULL OR d.state = $3)
  AND ($4::timestamptz IS NULL OR (d.created_at, d.delivery_id) < ($4, $5))
  AND e.type = ANY($6::text[])
"""
_ATTEMPTS = """
SELECT delivery_id, attempt, attempted_at, ok, status, error, response, duration_ms
FROM webhook_attempts WHERE delivery_id = ANY($1::text[]) ORDER BY delivery_id, attempt
"""


def _no_webhook() -> Problem:
    return Problem(404, "no such webhook")


def _disabled() -> Problem:
    return Problem(
        409,
        "this webhook is disabled; create a new one to receive events again",
        title="Webhook disabled",
        type_="urn:ere-proxy:problem:webhook-disabled",
    )


def _url_problem(detail: str) -> Problem:
    return Problem(
        422,
        f"url: {detail}",
        title="Invalid request",
        type_="urn:ere-proxy:problem:invalid-field",
        errors=[{"field": "url", "detail": detail}],
    )


def _webhook(row: Any) -> dict[str, Any]:
    failures = int(row["consecutive_failures"])
    state = "failing" if failures else "healthy"
    if row["disabled_at"] is not None:
        state = "disabled"
    health = {
        "state": state,
        "last_success_at": row["last_success_at"],
        "last_failure_at": row["last_failure_at"],
        "consecutive_failures": failures,
        "last_error": row["last_error"],
        "pending_deliveries": int(row["pending_deliveries"]),
    }
    names = ("id", "url", "events", "description", "created_at", "disabled_at")
    return {name: row[name] for name in names} | {"health": health}


def _json(value: Any) -> Any:
    """`value` with its times as ISO 8601 text (what the idempotency store and audit keep)."""
    if isinstance(value, dict):
        return {key: _json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json(item) for item in value]
    return value.isoformat() if isinstance(value, datetime) else value


class WebhookData:
    """The webhooks of one partner (see the module docstring)."""

    def __init__(self, db: Connection, caller: Caller, keys: KeyRing | None) -> None:
        self._db, self.caller, self._keys = db, caller, keys

    @property
    def partner_id(self) -> str:
        return self.caller.partner_id

    @property
    def _readable(self) -> list[str]:
        return readable_types(self.caller.scopes)

    async def _one(self, conn: Connection, webhook_id: str) -> dict[str, Any]:
        if not _WEBHOOK_ID.fullmatch(webhook_id):
            raise _no_webhook()
        row = await conn.fetchrow(f"{_WEBHOOKS} AND w.webhook_id = $2", self.partner_id, webhook_id)
        if row is None:
            raise _no_webhook()
        return _webhook(row)

    async def _lock(self, tx: Connection, webhook_id: str, mode: str) -> Any:
        """The endpoint's row, locked (`mode`: SHARE or UPDATE) for this transaction; 404."""
        if not _WEBHOOK_ID.fullmatch(webhook_id):
            raise _no_webhook()
        row = await tx.fetchrow(
            "SELECT webhook_id, disabled_at FROM webhook_endpoints "
            f"WHERE webhook_id = $1 AND partner_id = $2 FOR {mode}",
            webhook_id,
            self.partner_id,
        )
        if row is None:
            raise _no_webhook()
        return row

    async def create(
        self, body: WebhookIn, idem_key: str, digest: str, *, allow_private: bool
    ) -> StoredAnswer:
        """Make an endpoint; the answer (with the secret; blanked in the stored copy)."""
        for kind in EVENT_TYPES:
            if kind in body.events and kind not in self._readable:
                raise Problem(
                    403,
                    f"events: {kind} needs the scope {EVENT_SCOPES[kind]}, which this key lacks",
                )
        try:
            description = clean_text(body.description, "description", max_chars=200, required=False)
        except AdminInputError as error:
            raise field_error(error, {}) from None
        try:
            url = check_url(body.url, allow_private=allow_private)
        except RefusedUrl as refused:
            raise _url_problem(str(refused)) from None
        try:
            with trio.fail_after(_RESOLVE_SECONDS):
                await resolve(url, allow_private=allow_private)
        except RefusedUrl as refused:
            raise _url_problem(str(refused)) from None
        except (Unresolved, trio.TooSlowError):
            pass  # not resolvable now: every delivery resolves and checks again
        events = [kind for kind in EVENT_TYPES if kind in body.events]
        webhook_id, secret = new_id("whk"), new_secret()
        sealed, sealed_with = None, None
        if self._keys is not None:
            sealed, sealed_with = self._keys.seal(webhook_id, secret)
        async with self._db.transaction() as tx:
            stored = await claim(tx, self.partner_id, idem_key, digest)
            if stored is not None:
                return stored
            await tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('webhooks:' || $1, 0))",
                self.partner_id,
            )
            active = await tx.fetchval(
                "SELECT count(*) FROM webhook_endpoints WHERE partner_id = $1 AND disabled_at IS NULL",
                self.partner_id,
            )
            if active >= MAX_ACTIVE:
                raise Problem(
                    409,
                    f"at most {MAX_ACTIVE} webhooks can be active; disable one first",
                    title="Too many webhooks",
                    type_="urn:ere-proxy:problem:too-many-webhooks",
                )
            await tx.execute(
                "INSERT INTO webhook_endpoints (webhook_id, partner_id, url, events, description, "
                "secret, secret_sealed, sealed_with, created_by) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                webhook_id,
                self.partner_id,
                str(url),
                events,
                description or "",
                None if sealed is not None else secret,
                sealed,
                sealed_with,
                self.caller.key_id,
            )
            shown = _json(await self._one(tx, webhook_id))
            await record_write(
                tx, self.caller, "webhook.create", "webhook", webhook_id, after=shown
            )
            headers = {"location": f"/v1/webhooks/{webhook_id}"}
            kept = StoredAnswer(201, headers, shown | {"secret": None})
            await remember(tx, self.partner_id, idem_key, digest, kept)
        return StoredAnswer(201, headers, shown | {"secret": secret})

    async def list_webhooks(
        self, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of this partner's endpoints (disabled ones too), oldest first, and the next
        page's cursor."""
        query = (
            f"{_WEBHOOKS} AND ($2::timestamptz IS NULL OR (w.created_at, w.webhook_id) > ($2, $3)) "
            "ORDER BY w.created_at, w.webhook_id LIMIT $4"
        )
        start, last = after if after is not None else (None, None)
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            rows = await tx.fetch(query, self.partner_id, start, last, limit + 1)
        webhooks = [_webhook(row) for row in rows[:limit]]
        more = len(rows) > limit
        cursor = encode_cursor(webhooks[-1]["created_at"], webhooks[-1]["id"]) if more else None
        return webhooks, cursor

    async def get_webhook(self, webhook_id: str) -> dict[str, Any]:
        """One of this partner's endpoints with its health; 404 for any other id."""
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            return await self._one(tx, webhook_id)

    async def disable(self, webhook_id: str) -> dict[str, Any]:
        """Disable the endpoint (once; disabling it again changes nothing) and cancel its
        pending deliveries; the endpoint as it is now."""
        async with self._db.transaction() as tx:
            row = await self._lock(tx, webhook_id, "UPDATE")
            if row["disabled_at"] is not None:
                return await self._one(tx, webhook_id)
            before = _json(await self._one(tx, webhook_id))
            await tx.execute(
                "UPDATE webhook_endpoints SET disabled_at = now(), disabled_by = $2 "
                "WHERE webhook_id = $1",
                webhook_id,
                self.caller.key_id,
            )
            await tx.execute(
                "UPDATE webhook_deliveries SET state = 'cancelled', next_attempt_at = NULL "
                "WHERE webhook_id = $1 AND state = 'pending'",
                webhook_id,
            )
            after = await self._one(tx, webhook_id)
            await record_write(
                tx,
                self.caller,
                "webhook.disable",
                "webhook",
                webhook_id,
                before=before,
                after=_json(after),
            )
        return after

    async def _deliveries(
        self, conn: Connection, query: str, *args: object
    ) -> list[dict[str, Any]]:
        rows = [dict(row) for row in await conn.fetch(query, *args)]
        log: dict[str, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
        for attempt in await conn.fetch(_ATTEMPTS, list(log)):
            entry = dict(attempt)
            log[entry.pop("delivery_id")].append(entry)
        return [row | {"attempt_log": log[row["id"]]} for row in rows]

    async def deliveries(
        self, webhook_id: str, state: str | None, before: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of the endpoint's deliveries, newest first, each with its attempts; and the
        next page's cursor."""
        start, last = before if before is not None else (None, None)
        query = f"{_DELIVERIES} ORDER BY d.created_at DESC, d.delivery_id DESC LIMIT $7"
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            await self._one(tx, webhook_id)
            rows = await self._deliveries(
                tx,
                query,
                self.partner_id,
                webhook_id,
                state,
                start,
                last,
                self._readable,
                limit + 1,
            )
        page = rows[:limit]
        more = len(rows) > limit
        cursor = encode_cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
        return page, cursor

    async def _queued(
        self,
        tx: Connection,
        action: str,
        webhook_id: str,
        delivery_id: str,
        idem_key: str,
        digest: str,
    ) -> StoredAnswer:
        """Audit a delivery just queued and keep the answer for `idem_key`."""
        query = f"{_DELIVERIES} AND d.delivery_id = $7"
        args = (self.partner_id, webhook_id, None, None, None, self._readable, delivery_id)
        (row,) = await self._deliveries(tx, query, *args)
        shown = _json(row)
        await record_write(tx, self.caller, action, "webhook_delivery", delivery_id, after=shown)
        answer = StoredAnswer(201, {}, shown)
        await remember(tx, self.partner_id, idem_key, digest, answer)
        return answer

    async def replay(
        self, webhook_id: str, delivery_id: str, idem_key: str, digest: str
    ) -> StoredAnswer:
        """Queue the delivery's event to its endpoint again; the new delivery."""
        async with self._db.transaction() as tx:
            stored = await claim(tx, self.partner_id, idem_key, digest)
            if stored is not None:
                return stored
            endpoint = await self._lock(tx, webhook_id, "SHARE")
            event_id = None
            if _DELIVERY_ID.fullmatch(delivery_id):
                event_id = await tx.fetchval(
                    "SELECT d.event_id FROM webhook_deliveries d JOIN webhook_events e "
                    "ON e.event_id = d.event_id AND e.partner_id = d.partner_id "
                    "WHERE d.delivery_id = $1 AND d.webhook_id = $2 AND d.partner_id = $3 "
                    "AND e.type = ANY($4::text[])",
                    delivery_id,
                    webhook_id,
                    self.partner_id,
                    self._readable,
                )
            if event_id is None:
                raise Problem(404, "no such delivery")
            if endpoint["disabled_at"] is not None:
                raise _disabled()
            replayed = new_id("dlv")
            await tx.execute(
                "INSERT INTO webhook_deliveries (delivery_id, partner_id, webhook_id, event_id, "
                "replay_of, next_attempt_at) VALUES ($1, $2, $3, $4, $5, now())",
                replayed,
                self.partner_id,
                webhook_id,
                event_id,
                delivery_id,
            )
            return await self._queued(tx, "webhook.replay", webhook_id, replayed, idem_key, digest)

    async def ping(self, webhook_id: str, idem_key: str, digest: str) -> StoredAnswer:
        """Queue a `webhook.ping` event to the endpoint; its delivery."""
        async with self._db.transaction() as tx:
            stored = await claim(tx, self.partner_id, idem_key, digest)
            if stored is not None:
                return stored
            endpoint = await self._lock(tx, webhook_id, "SHARE")
            if endpoint["disabled_at"] is not None:
                raise _disabled()
            delivery_id = await queue_ping(tx, self.partner_id, webhook_id)
            return await self._queued(tx, "webhook.ping", webhook_id, delivery_id, idem_key, digest)
