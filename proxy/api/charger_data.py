"""One partner's chargers: registering one for forwarding, linking one, reading them.

A partner's chargers are those it registered, those the operator granted it (chargers that
connect already, through the configuration file or the default route:
`proxy.ere.admin.charger_grants`), and those linked to one of its customers, unless the
charger's latest link period belongs to another partner's customer (then it is theirs now; the
sessions it charged for this partner stay visible under `/v1/sessions`). Any other charger does
not exist for the partner (404).

`register` adds a managed charger to the registry (`proxy.routing.registry.records`), its
upstream checked against server-side request forgery (`proxy.api.upstream_urls`: no private
address, the operator's allow-list; 422 naming `upstream`), with a generated password, shown
in the first answer only: the answer kept for a repeated request has the password blanked,
so no credential is stored in the clear. It refuses (409, naming no one) an identity the
registry or the configuration file routes already, one linked to or granted to another
partner, and one whose events were recorded while it was linked to none of this partner's
customers (registering it would take over another's charger).

`link` opens a link period through `proxy.ere.admin.link_periods` (`add_link`, or `move_link`
when the charger's open period is this partner's), so the domain's rules hold: no change inside
a closed quarter, none while a quarter is closing (409). It refuses (409, naming no one) a
charger another partner registered, was granted or has linked now, and a charger the proxy has
seen charging that was never linked to this partner's customers, unless this partner registered
it or was granted it: a charger that connects already becomes a partner's only by the
operator's grant. A charger the proxy has never seen may be linked ahead of its first
connection.

Errors: `Problem` (404, 409, 422, 503 when an upstream secret cannot be sealed); database
errors pass through.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import asyncpg
import msgspec

from proxy.api.audit import record_write
from proxy.api.charger_models import ChargerIn, LinkIn
from proxy.api.context import ApiContext
from proxy.api.idempotency import StoredAnswer, claim, remember
from proxy.api.key_store import Caller
from proxy.api.numbers import kwh, plain
from proxy.api.problems import Problem, field_error
from proxy.api.upstream_urls import UpstreamPolicy, check_upstream
from proxy.ere.admin.changes import LinkMove
from proxy.ere.admin.link_periods import add_link, move_link
from proxy.ere.admin.new_records import NewLink
from proxy.ere.admin.validation import (
    AdminInputError,
    parse_instant,
    parse_watts,
    validate_charger_identity,
    validate_id,
)
from proxy.routing.auth import hash_generated_password
from proxy.routing.registry.errors import ChargerExists, InvalidIdentity
from proxy.routing.registry.records import add_charger, generate_password, validate_identity
from proxy.runtime.config import Route
from proxy.store.connection import Connection

__all__ = ["PARTNER_CHARGERS", "ChargerData"]

LINK_FIELDS = {
    "--at": "valid_from",
    "--from": "valid_from",
    "--customer": "customer_id",
    "--to-customer": "customer_id",
    "--max-power-w": "max_power_w",
}

# The partner's chargers ($1: partner id), see the module docstring.
PARTNER_CHARGERS = """
WITH named AS (
    SELECT identity FROM api_chargers WHERE partner_id = $1
    UNION
    SELECT identity FROM partner_charger_grants WHERE partner_id = $1 AND revoked_at IS NULL
    UNION
    SELECT l.identity FROM charger_links l JOIN customers c USING (customer_id) WHERE c.partner_id = $1
), latest AS (
    SELECT DISTINCT ON (l.identity) l.identity, c.partner_id
    FROM charger_links l JOIN customers c USING (customer_id)
    WHERE l.identity IN (SELECT identity FROM named)
    ORDER BY l.identity, l.valid_from DESC
)
SELECT n.identity FROM named n LEFT JOIN latest t USING (identity)
WHERE t.partner_id IS NULL OR t.partner_id = $1
"""
_CHARGERS = f"""
SELECT m.identity,
       (SELECT max(e.received_at) FROM charger_events e WHERE e.identity = m.identity) AS last_seen,
       b.booted_at, b.vendor, b.model, b.serial, b.firmware, b.meter_type, b.meter_serial, b.meter_class,
       s.session_id, s.transaction_id, s.connector_id, s.started_at, s.energy_wh,
       l.customer_id, l.max_power_w, l.valid_from, l.valid_until,
       r.upstream, r.upstream_username, r.enabled, a.registered_at
FROM ({PARTNER_CHARGERS}) m
LEFT JOIN charger_boots b ON b.identity = m.identity
LEFT JOIN LATERAL (
    SELECT session_id, transaction_id, connector_id, started_at, energy_wh FROM sessions
    WHERE identity = m.identity AND status = 'active' ORDER BY started_at DESC NULLS LAST, session_id DESC
    LIMIT 1
) s ON true
LEFT JOIN LATERAL (
    SELECT l.customer_id, l.max_power_w, l.valid_from, l.valid_until
    FROM charger_links l JOIN customers c USING (customer_id)
    WHERE l.identity = m.identity AND c.partner_id = $1 AND l.valid_from <= now()
      AND (l.valid_until IS NULL OR l.valid_until > now())
) l ON true
LEFT JOIN api_chargers a ON a.identity = m.identity AND a.partner_id = $1
LEFT JOIN chargers r ON r.identity = a.identity
"""
_KNOWN_ELSEWHERE = """
SELECT EXISTS (
    SELECT 1 FROM charger_links l JOIN customers c USING (customer_id)
    WHERE l.identity = $1 AND c.partner_id <> $2
) OR EXISTS (
    SELECT 1 FROM partner_charger_grants
    WHERE identity = $1 AND partner_id <> $2 AND revoked_at IS NULL
) OR (
    EXISTS (SELECT 1 FROM charger_events WHERE identity = $1)
    AND NOT EXISTS (
        SELECT 1 FROM charger_links l JOIN customers c USING (customer_id)
        WHERE l.identity = $1 AND c.partner_id = $2
    )
)
"""
# Who holds a charger: the partner that registered it, or the one the operator granted it to.
_HOLDER = """
SELECT coalesce(
    (SELECT partner_id FROM api_chargers WHERE identity = $1),
    (SELECT partner_id FROM partner_charger_grants WHERE identity = $1 AND revoked_at IS NULL)
) AS holder
"""
# A charger the proxy has seen that was never linked to one of this partner's customers.
_SEEN_WITHOUT_ME = """
SELECT EXISTS (SELECT 1 FROM charger_events WHERE identity = $1)
   AND NOT EXISTS (
       SELECT 1 FROM charger_links l JOIN customers c USING (customer_id)
       WHERE l.identity = $1 AND c.partner_id = $2)
"""
_BOOT = ("booted_at", "vendor", "model", "serial", "firmware", "meter_type", "meter_serial")


def _bad_upstream(detail: str) -> Problem:
    return Problem(
        422,
        f"upstream: {detail}",
        title="Invalid request",
        type_="urn:ere-proxy:problem:invalid-field",
        errors=[{"field": "upstream", "detail": detail}],
    )


def _taken() -> Problem:
    return Problem(
        409,
        "identity: this charger is registered or linked already; ask your account manager",
        title="Charger taken",
        type_="urn:ere-proxy:problem:charger-taken",
        errors=[{"field": "identity", "detail": "is registered or linked already"}],
    )


class ChargerData:
    """The chargers of one partner (see the module docstring)."""

    def __init__(self, db: Connection, caller: Caller, context: ApiContext) -> None:
        self._db, self.caller, self._context = db, caller, context

    @property
    def partner_id(self) -> str:
        return self.caller.partner_id

    def _ocpp_url(self, identity: str) -> str | None:
        base = self._context.ocpp_base_url
        return None if base is None else f"{base}/{quote(identity, safe='')}"

    def _charger(self, row: Any) -> dict[str, Any]:
        boot = None if row["booted_at"] is None else {key: row[key] for key in _BOOT}
        session = None
        if row["session_id"] is not None:
            session = {
                "id": row["session_id"],
                "transaction_id": row["transaction_id"],
                "connector_id": row["connector_id"],
                "started_at": row["started_at"],
                "energy_kwh": kwh(row["energy_wh"]),
            }
        link = None
        if row["customer_id"] is not None:
            link = {k: row[k] for k in ("customer_id", "valid_from", "valid_until")}
            link["max_power_w"] = plain(row["max_power_w"])
        registration = None
        if row["registered_at"] is not None:
            registration = {
                "ocpp_url": self._ocpp_url(row["identity"]),
                "upstream": row["upstream"],
                "upstream_username": row["upstream_username"],
                "enabled": row["enabled"],
                "registered_at": row["registered_at"],
            }
        return {
            "identity": row["identity"],
            "last_seen": row["last_seen"],
            "meter_class": row["meter_class"],
            "last_boot": boot,
            "current_session": session,
            "current_link": link,
            "registration": registration,
        }

    async def list_chargers(
        self, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of this partner's chargers by identity, and the last identity if more follow."""
        query = (
            f"{_CHARGERS} WHERE ($2::text IS NULL OR m.identity > $2) ORDER BY m.identity LIMIT $3"
        )
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            rows = await tx.fetch(query, self.partner_id, after, limit + 1)
        chargers = [self._charger(row) for row in rows[:limit]]
        return chargers, chargers[-1]["identity"] if len(rows) > limit else None

    async def get_charger(self, identity: str) -> dict[str, Any]:
        """One of this partner's chargers; 404 for any other identity."""
        if len(identity) > 48 or identity_is_invalid(identity):
            raise Problem(404, "no such charger")
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            row = await tx.fetchrow(f"{_CHARGERS} WHERE m.identity = $2", self.partner_id, identity)
        if row is None:
            raise Problem(404, "no such charger")
        return self._charger(row)

    async def register(
        self, body: ChargerIn, idem_key: str, digest: str, *, upstreams: UpstreamPolicy
    ) -> StoredAnswer:
        """Register a managed charger whose upstream `upstreams` lets partners reach; the
        answer (the password blanked in the stored copy)."""
        try:
            identity = validate_charger_identity(body.identity, "identity")
        except AdminInputError as error:
            raise field_error(error, {}) from None
        password = generate_password()
        try:
            route = Route(
                upstream=body.upstream,
                auth="managed",
                password_hash=hash_generated_password(password),
                upstream_username=body.upstream_username,
                upstream_password=body.upstream_password,
            )
            await check_upstream(route.upstream, upstreams)
        except (ValueError, msgspec.ValidationError) as error:
            raise _bad_upstream(str(error)) from None
        if body.upstream_password is not None and self._context.keys is None:
            raise Problem(503, "upstream passwords cannot be stored now; try again later")
        async with self._db.transaction() as tx:
            stored = await claim(tx, self.partner_id, idem_key, digest)
            if stored is not None:
                return stored
            if identity in self._context.file_routes or await tx.fetchval(
                _KNOWN_ELSEWHERE, identity, self.partner_id
            ):
                raise _taken()
            try:
                charger = await add_charger(tx, identity, route, keys=self._context.keys)
            except ChargerExists:
                raise _taken() from None
            await tx.execute(
                "INSERT INTO api_chargers (identity, partner_id, key_id) VALUES ($1, $2, $3)",
                identity,
                self.partner_id,
                self.caller.key_id,
            )
            shown = {
                "identity": identity,
                "ocpp_url": self._ocpp_url(identity),
                "username": identity,
                "password": None,
                "upstream": charger.upstream,
                "upstream_username": charger.upstream_username,
                "upstream_secret": charger.has_upstream_secret,
                "created_at": charger.created_at.isoformat(),
            }
            await record_write(
                tx, self.caller, "charger.register", "charger", identity, after=shown
            )
            headers = {"location": _location(identity)}
            await remember(tx, self.partner_id, idem_key, digest, StoredAnswer(201, headers, shown))
        return StoredAnswer(201, headers, shown | {"password": password})

    async def link(self, identity: str, body: LinkIn, idem_key: str, digest: str) -> StoredAnswer:
        """Link a charger to one of this partner's customers from `valid_from` (default now)."""
        if len(identity) > 48 or identity_is_invalid(identity):
            raise Problem(404, "no such charger")
        try:
            customer_id = validate_id(body.customer_id, "customer_id")
            watts = parse_watts(str(body.max_power_w), "max_power_w")
            start = (
                None if body.valid_from is None else parse_instant(body.valid_from, "valid_from")
            )
        except AdminInputError as error:
            raise field_error(error, LINK_FIELDS) from None
        async with self._db.transaction() as tx:
            stored = await claim(tx, self.partner_id, idem_key, digest)
            if stored is not None:
                return stored
            if not await tx.fetchval(
                "SELECT 1 FROM customers WHERE customer_id = $1 AND partner_id = $2",
                customer_id,
                self.partner_id,
            ):
                raise Problem(
                    422,
                    "customer_id: no such customer",
                    title="Invalid request",
                    type_="urn:ere-proxy:problem:invalid-field",
                    errors=[{"field": "customer_id", "detail": "no such customer"}],
                )
            await tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('charger-link:' || $1, 0))", identity
            )
            holder = await tx.fetchrow(_HOLDER, identity)
            if holder["holder"] is not None and holder["holder"] != self.partner_id:
                raise _taken()
            if holder["holder"] is None and await tx.fetchval(
                _SEEN_WITHOUT_ME, identity, self.partner_id
            ):
                raise _taken()  # charging for someone else: the operator grants it, or no one
            at: datetime = start or await tx.fetchval("SELECT now()")
            periods = await tx.fetch(
                "SELECT l.customer_id, c.partner_id, l.valid_from, l.valid_until "
                "FROM charger_links l JOIN customers c USING (customer_id) "
                "WHERE l.identity = $1 AND (l.valid_until IS NULL OR l.valid_until > $2) "
                "ORDER BY l.valid_from",
                identity,
                at,
            )
            if any(p["partner_id"] != self.partner_id for p in periods):
                raise _taken()
            await self._open_period(tx, identity, customer_id, watts, at, periods)
            after = await tx.fetchrow(
                "SELECT customer_id, max_power_w, valid_from, valid_until FROM charger_links "
                "WHERE identity = $1 AND valid_from = $2",
                identity,
                at,
            )
            shown = {
                "customer_id": after["customer_id"],
                "max_power_w": str(plain(after["max_power_w"])),
                "valid_from": after["valid_from"].isoformat(),
                "valid_until": None,
            }
            await record_write(tx, self.caller, "charger.link", "charger", identity, after=shown)
            answer = StoredAnswer(201, {"location": _location(identity)}, shown)
            await remember(tx, self.partner_id, idem_key, digest, answer)
        return answer

    async def _open_period(
        self,
        tx: Connection,
        identity: str,
        customer_id: str,
        watts: Decimal,
        at: datetime,
        periods: list[Any],
    ) -> None:
        """Open the period through the domain's link functions, their refusals as problems."""
        actor = self.caller.key_id
        open_one = periods[0] if len(periods) == 1 and periods[0]["valid_until"] is None else None
        if periods and (open_one is None or open_one["valid_from"] >= at):
            raise Problem(
                409,
                "valid_from: the charger has a link period from then on already; "
                "a new one starts after the last one",
                title="Link period overlaps",
                type_="urn:ere-proxy:problem:link-overlaps",
                errors=[{"field": "valid_from", "detail": "overlaps a link period"}],
            )
        try:
            if open_one is not None:
                reason = f"moved through the partner API by key {actor}"
                await move_link(tx, LinkMove(identity, customer_id, reason, at, watts), actor=actor)
            else:
                await add_link(tx, NewLink(identity, customer_id, watts, at), actor=actor)
        except AdminInputError as error:
            raise _link_refusal(error) from None
        except asyncpg.ExclusionViolationError:
            raise _taken() from None


def _link_refusal(error: AdminInputError) -> Problem:
    message = str(error)
    if " is closing" in message:
        return Problem(
            409,
            "valid_from: a quarter is closing; link changes are accepted once its close is done",
            title="Quarter closing",
            type_="urn:ere-proxy:problem:quarter-closing",
        )
    if "closed quarter" in message:
        problem = field_error(error, LINK_FIELDS, status=409)
        problem.title, problem.type = "Quarter closed", "urn:ere-proxy:problem:quarter-closed"
        return problem
    if "nothing to move" in message:
        return Problem(
            409,
            "the charger is linked to this customer with this power already",
            title="Linked already",
            type_="urn:ere-proxy:problem:linked-already",
        )
    return field_error(error, LINK_FIELDS)


def _location(identity: str) -> str:
    """The charger's URL: its identity percent-encoded (it may hold spaces, `?`, `#` or any
    Unicode, which a header cannot carry as such)."""
    return f"/v1/chargers/{quote(identity, safe='')}"


def identity_is_invalid(identity: str) -> bool:
    try:
        validate_identity(identity)
    except InvalidIdentity:
        return True
    return False
