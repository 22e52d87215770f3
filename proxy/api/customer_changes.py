"""Changes to one partner's customers: new details, an end, another year's mandate.

Each change runs in one transaction that first locks the customer's row, scoped by the caller's
partner: another partner's customer is 404 before anything else is looked at (headers, body),
and two changes to one customer run one after the other. The writes are the domain's
(`proxy.ere.admin.customer_details.update_customer`, `customer_end.end_customer`,
`records.add_mandate`), so the API and the operator's commands change customers the same way,
recorded with channel `api` and the key id as actor. Every change that changed something is
audited with the customer before and after; every answer is the customer as
`GET /v1/customers/{id}` shows it.

`update` needs the `If-Match` of the customer as it is (`proxy.api.etags.require_match`: 428
without it, 412 when stale) and takes no `Idempotency-Key`: the precondition makes a repeat
safe, since a repeat after success names a tag that is no longer current. `end` and
`renew` are POSTs with an `Idempotency-Key` (`proxy.api.idempotency`).

Errors: `Problem` 404 (not this partner's customer), 409 (ended already, a mandate revoked
already with a later last day, a quarter closed or closing, a mandate for that year recorded
already, a key reused), 412/428 (preconditions), 422 (a domain rule, naming the field);
database errors pass through.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import datetime
from typing import Any, Protocol

from proxy.api.audit import record_write
from proxy.api.customer_change_models import CustomerEndIn, MandateIn
from proxy.api.enrolment import FIELDS, build_mandate
from proxy.api.etags import entity_tag, require_match
from proxy.api.idempotency import StoredAnswer, claim, remember
from proxy.api.key_store import Caller
from proxy.api.models import CustomerOut
from proxy.api.problems import Problem, field_error
from proxy.ere.admin.customer_details import checked_details, update_customer
from proxy.ere.admin.customer_end import CustomerEnd, EndRefused, end_customer
from proxy.ere.admin.records import REFUSED_BY_DATABASE, add_mandate
from proxy.ere.admin.validation import AdminInputError, validate_id
from proxy.ere.core.quarters import DUTCH_TIME
from proxy.store.connection import Connection

__all__ = ["CustomerChanges", "CustomerReader"]

_MANDATE_FIELDS = FIELDS | {"--year": "year"}


class CustomerReader(Protocol):
    """How `PartnerData` reads its customers: rows with their mandates (`where` on `c.`)."""

    def __call__(
        self, conn: Connection, where: str, *args: object, limit: int | None = None
    ) -> Awaitable[list[dict[str, Any]]]: ...


def _no_such_customer() -> Problem:
    return Problem(404, "no such customer")


def _refusal(error: AdminInputError) -> Problem:
    """A domain refusal of an end as a problem: state conflicts 409, bad fields 422."""
    message = str(error)
    if " is closing" in message:
        return Problem(
            409,
            "effective: a quarter is closing; mandates change once its close is done",
            title="Quarter closing",
            type_="urn:ere-proxy:problem:quarter-closing",
        )
    if isinstance(error, EndRefused) or "closed quarter" in message:
        problem = field_error(error, {}, status=409)
        if isinstance(error, EndRefused):
            problem.title, problem.type = "Ended already", "urn:ere-proxy:problem:ended-already"
        else:
            problem.title, problem.type = "Quarter closed", "urn:ere-proxy:problem:quarter-closed"
        return problem
    return field_error(error, {})


def _mandate_exists(year: int) -> Problem:
    return Problem(
        409,
        f"year: the customer has a mandate for {year} already; one mandate per connection per year",
        title="Mandate recorded already",
        type_="urn:ere-proxy:problem:mandate-exists",
        errors=[{"field": "year", "detail": "has a mandate already"}],
    )


class CustomerChanges:
    """The changes one partner makes to its customers (see the module docstring)."""

    def __init__(self, db: Connection, caller: Caller, read: CustomerReader) -> None:
        self._db, self.caller, self._read = db, caller, read

    @property
    def partner_id(self) -> str:
        return self.caller.partner_id

    async def _shown(self, tx: Connection, customer_id: str) -> dict[str, Any]:
        (row,) = await self._read(tx, "c.customer_id = $2", customer_id)
        return CustomerOut.model_validate(row).model_dump(mode="json")

    async def _locked(self, tx: Connection, customer_id: str) -> dict[str, Any]:
        """The customer as shown, its row locked until the transaction ends; 404 if not ours."""
        if not await tx.fetchval(
            "SELECT 1 FROM customers WHERE customer_id = $1 AND partner_id = $2 FOR UPDATE",
            customer_id,
            self.partner_id,
        ):
            raise _no_such_customer()
        return await self._shown(tx, customer_id)

    async def _audit(
        self, tx: Connection, action: str, before: dict[str, Any], after: dict[str, Any]
    ) -> None:
        await record_write(
            tx, self.caller, action, "customer", after["id"], before=before, after=after
        )

    async def update(
        self, customer_id: str, fields: dict[str, str | None], if_match: str | None
    ) -> dict[str, Any]:
        """Change the customer's details `fields` if `if_match` is current; the customer."""
        _check_id(customer_id)
        async with self._db.transaction() as tx:
            before = await self._locked(tx, customer_id)
            require_match(if_match, entity_tag(before))
            try:
                changes = checked_details(fields)
                await update_customer(
                    tx, customer_id, changes, channel="api", actor=self.caller.key_id
                )
            except AdminInputError as error:
                raise field_error(error, {}) from None
            after = await self._shown(tx, customer_id)
            if after != before:
                await self._audit(tx, "customer.update", before, after)
        return after

    async def end(
        self, customer_id: str, body: CustomerEndIn, idem_key: str, digest: str
    ) -> StoredAnswer:
        """Revoke the customer's mandates after `body.effective`; the answer (kept for the key)."""
        _check_id(customer_id)
        async with self._db.transaction() as tx:
            stored = await claim(tx, self.partner_id, idem_key, digest)
            if stored is not None:
                return stored
            before = await self._locked(tx, customer_id)
            try:
                end = CustomerEnd.checked(customer_id, body.effective, body.reason, body.reference)
                await end_customer(tx, end, channel="api", actor=self.caller.key_id)
            except AdminInputError as error:
                raise _refusal(error) from None
            after = await self._shown(tx, customer_id)
            await self._audit(tx, "customer.end", before, after)
            answer = StoredAnswer(200, {}, after)
            await remember(tx, self.partner_id, idem_key, digest, answer)
        return answer

    async def renew(
        self, customer_id: str, body: MandateIn, idem_key: str, digest: str
    ) -> StoredAnswer:
        """Record the customer's mandate for `body.year`; the answer (kept for the key)."""
        _check_id(customer_id)
        async with self._db.transaction() as tx:
            stored = await claim(tx, self.partner_id, idem_key, digest)
            if stored is not None:
                return stored
            before = await self._locked(tx, customer_id)
            now: datetime = (await tx.fetchval("SELECT now()")).astimezone(DUTCH_TIME)
            try:
                mandate = build_mandate(
                    body.consent,
                    ean=before["ean"],
                    name=before["name"],
                    year=str(body.year),
                    now=now,
                    fields=_MANDATE_FIELDS,
                )
            except AdminInputError as error:
                raise field_error(error, {}) from None
            if any(m["year"] == mandate.year for m in before["mandates"]):
                raise _mandate_exists(mandate.year)
            try:
                await add_mandate(tx, mandate, channel="api", actor=self.caller.key_id)
            except AdminInputError as error:
                if str(error).startswith("--ean:"):
                    raise _mandate_exists(mandate.year) from None
                raise field_error(error, _MANDATE_FIELDS) from None
            except REFUSED_BY_DATABASE as error:
                if getattr(error, "constraint_name", None) == "mandates_pkey":
                    raise _mandate_exists(mandate.year) from None
                raise
            after = await self._shown(tx, customer_id)
            await self._audit(tx, "customer.mandate", before, after)
            answer = StoredAnswer(201, {"location": f"/v1/customers/{customer_id}"}, after)
            await remember(tx, self.partner_id, idem_key, digest, answer)
        return answer


def _check_id(customer_id: str) -> None:
    """404 for what cannot be a customer id (never reaches the database)."""
    try:
        validate_id(customer_id, "id")
    except AdminInputError:
        raise _no_such_customer() from None
