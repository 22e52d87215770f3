"""The data one partner's API calls reach: every query carries the caller's partner id.

`PartnerData` is the only way handlers reach the database (`proxy.api.dependencies` builds it
for an authenticated caller), so a partner can name another partner's object but never reach
it: such an object does not exist for them (404, never 403). Chargers, sessions, energy
figures, statements and payouts live in sibling modules (`charger_data`, `session_data`,
`energy_data`, `statement_data`, and `session_push_data` for the sessions a partner supplies)
that `PartnerData` hands out built for the same caller;
so are changes to its customers (`customer_changes`: details, end, next year's mandate). Enrolment writes the customer, the
mandate (channel `api`, actor the key id), the audit entry, the `customer.enrolled` webhook
event (`webhook_events`) and the idempotent answer in one transaction.

Errors: `Problem` (404 unknown to this partner, 409 an EAN already enrolled or a key reused,
422 a domain rule); database errors pass through (503 by the problem handlers).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from proxy.api.audit import record_write
from proxy.api.charger_data import ChargerData
from proxy.api.context import ApiContext
from proxy.api.cursors import encode_cursor
from proxy.api.customer_changes import CustomerChanges
from proxy.api.energy_data import EnergyData
from proxy.api.enrolment import FIELDS, build_enrolment, new_customer_id
from proxy.api.idempotency import StoredAnswer, claim, remember
from proxy.api.key_data import KeyData
from proxy.api.key_store import Caller
from proxy.api.models import CustomerIn, CustomerOut
from proxy.api.problems import Problem, field_error
from proxy.api.scan_data import ScanData
from proxy.api.session_data import SessionData
from proxy.api.session_push_data import SessionPush
from proxy.api.statement_data import StatementData
from proxy.api.webhook_data import WebhookData
from proxy.api.webhook_events import customer_enrolled, emit
from proxy.ere.admin.records import REFUSED_BY_DATABASE, add_customer, add_mandate
from proxy.ere.admin.validation import AdminInputError, validate_id
from proxy.ere.core.branding import PartnerBranding
from proxy.ere.core.quarters import DUTCH_TIME
from proxy.store.connection import Connection

__all__ = ["PartnerData"]

_CUSTOMERS = """
SELECT c.customer_id AS id, c.name, c.email, c.address, c.postcode, c.city, c.ean, c.grid_operator,
       c.iban, (SELECT r.code FROM referral_codes r WHERE r.customer_id = c.customer_id) AS referral_code,
       c.referred_by, c.language, c.created_at
FROM customers c
"""
_MANDATES = """
SELECT m.customer_id, m.year, m.valid_from, m.valid_until, m.channel, m.consent_text_version,
       m.recorded_at, m.revoked_at, m.revoked_effective
FROM mandates m JOIN customers c USING (customer_id)
WHERE c.partner_id = $1 AND m.customer_id = ANY($2::text[])
ORDER BY m.customer_id, m.year
"""


def _ean_taken() -> Problem:
    return Problem(
        409,
        "ean: this EAN is already enrolled for ERE; one provider per connection per year",
        title="EAN already enrolled",
        type_="urn:ere-proxy:problem:ean-enrolled",
        errors=[{"field": "ean", "detail": "is already enrolled"}],
    )


class PartnerData:
    """Queries and writes of one partner (see the module docstring)."""

    def __init__(self, db: Connection, caller: Caller, context: ApiContext) -> None:
        self._db, self.caller, self._context = db, caller, context

    @property
    def partner_id(self) -> str:
        return self.caller.partner_id

    @property
    def chargers(self) -> ChargerData:
        return ChargerData(self._db, self.caller, self._context)

    @property
    def sessions(self) -> SessionData:
        return SessionData(self._db, self.caller)

    @property
    def session_push(self) -> SessionPush:
        return SessionPush(self._db, self.caller)

    @property
    def scans(self) -> ScanData:
        return ScanData(self._db, self.caller, self._context)

    @property
    def statements(self) -> StatementData:
        return StatementData(self._db, self.caller, self._context.ere)

    @property
    def energy(self) -> EnergyData:
        return EnergyData(self._db, self.caller, self._context.factors)

    @property
    def keys(self) -> KeyData:
        return KeyData(self._db, self.caller)

    @property
    def webhooks(self) -> WebhookData:
        return WebhookData(self._db, self.caller, self._context.keys)

    @property
    def customer_changes(self) -> CustomerChanges:
        return CustomerChanges(self._db, self.caller, self._customers)

    async def branding(self) -> PartnerBranding:
        """The partner's white label (`partners.branding`; the display name defaults to the
        partner's name)."""
        row = await self._db.fetchrow(
            "SELECT name, branding FROM partners WHERE partner_id = $1", self.partner_id
        )
        if row is None:
            raise Problem(404, "no such partner")
        return PartnerBranding.from_stored(row["name"], row["branding"])

    async def _customers(
        self, conn: Connection, where: str, *args: object, limit: int | None = None
    ) -> list[dict[str, Any]]:
        query = f"{_CUSTOMERS} WHERE c.partner_id = $1 AND ({where}) ORDER BY c.created_at, c.customer_id"
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        rows = [dict(row) for row in await conn.fetch(query, self.partner_id, *args)]
        mandates: dict[str, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
        for mandate in await conn.fetch(_MANDATES, self.partner_id, list(mandates)):
            mandates[mandate["customer_id"]].append(dict(mandate))
        return [row | {"mandates": mandates[row["id"]]} for row in rows]

    async def list_customers(
        self, after: tuple[datetime, str] | None, limit: int
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of this partner's customers in enrolment order, and the next page's cursor."""
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            if after is None:
                rows = await self._customers(tx, "true", limit=limit + 1)
            else:
                rows = await self._customers(
                    tx, "(c.created_at, c.customer_id) > ($2, $3)", *after, limit=limit + 1
                )
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
        return rows, cursor

    async def get_customer(self, customer_id: str) -> dict[str, Any]:
        """One of this partner's customers; 404 for any other id."""
        try:
            validate_id(customer_id, "id")
        except AdminInputError:
            raise Problem(404, "no such customer") from None
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            rows = await self._customers(tx, "c.customer_id = $2", customer_id)
        if not rows:
            raise Problem(404, "no such customer")
        return rows[0]

    async def enrol(self, body: CustomerIn, idem_key: str, digest: str) -> StoredAnswer:
        """Enrol a customer with this year's mandate; the answer (stored for `idem_key`)."""
        async with self._db.transaction() as tx:
            stored = await claim(tx, self.partner_id, idem_key, digest)
            if stored is not None:
                return stored
            now: datetime = (await tx.fetchval("SELECT now()")).astimezone(DUTCH_TIME)
            customer_id = new_customer_id()
            try:
                customer, mandate = build_enrolment(
                    body, partner_id=self.partner_id, customer_id=customer_id, now=now
                )
            except AdminInputError as error:
                raise field_error(error, FIELDS) from None
            if await tx.fetchval("SELECT 1 FROM customers WHERE ean = $1", customer.ean):
                raise _ean_taken()
            actor = self.caller.key_id
            try:
                await add_customer(tx, customer, actor=actor)
                await add_mandate(tx, mandate, channel="api", actor=actor)
            except AdminInputError as error:
                if str(error).startswith("--ean:"):  # never say who holds it
                    raise _ean_taken() from None
                raise field_error(error, FIELDS) from None
            except REFUSED_BY_DATABASE as error:  # a concurrent writer got there first
                if getattr(error, "constraint_name", None) in (
                    "customers_ean_key",
                    "mandates_pkey",
                ):
                    raise _ean_taken() from None
                raise
            (row,) = await self._customers(tx, "c.customer_id = $2", customer_id)
            after = CustomerOut.model_validate(row).model_dump(mode="json")
            await record_write(
                tx, self.caller, "customer.enrol", "customer", customer_id, after=after
            )
            await emit(tx, [customer_enrolled(self.partner_id, after)])
            answer = StoredAnswer(201, {"location": f"/v1/customers/{customer_id}"}, after)
            await remember(tx, self.partner_id, idem_key, digest, answer)
        return answer
