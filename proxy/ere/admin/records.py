"""The ERE domain records in the database: partners, customers, mandates and charger links.

`add_partner`, `add_customer`, `add_mandate` and `add_link` insert one row that
`proxy.ere.admin.validation` has checked (a `New*` value), each in one transaction, after the
checks that need the database: the partner of a customer and the customer of a mandate or link
exist, ids and EANs are free, a `direct` partner's customer has an IBAN, an EAN has one mandate
per year and a charger one link. `list_*` and `get_*` read the records back as plain dicts (a
customer with its mandates and links; a link with the meter class capture gave the charger and
the meter its last boot reported), `remove_link` deletes a link. Values reach SQL only as query
parameters.

Errors: a refused write raises `AdminInputError` naming the field (a duplicate says who holds
the id, EAN or mandate), and the tables are left as they were. A constraint the database
enforced after these checks passed (a concurrent writer) surfaces as the `asyncpg` error (one
of `REFUSED_BY_DATABASE`); `violation_message` turns it into the same kind of one-line message.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from typing import Any

import asyncpg

from proxy.ere.admin.validation import (
    AdminInputError,
    NewCustomer,
    NewLink,
    NewMandate,
    NewPartner,
    one_line,
)
from proxy.ere.core.statement_mail import PartnerBranding
from proxy.store.connection import Connection

__all__ = [
    "REFUSED_BY_DATABASE",
    "add_customer",
    "add_link",
    "add_mandate",
    "add_partner",
    "get_customer",
    "get_partner",
    "list_customers",
    "list_links",
    "list_mandates",
    "list_partners",
    "remove_link",
    "violation_message",
]

# What the database raises for a value it refuses: a constraint or a malformed value.
REFUSED_BY_DATABASE = (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError)

# Messages for constraint violations that slip past the checks here (e.g. a concurrent writer).
_CONSTRAINT_MESSAGES = {
    "partners_pkey": "partner id: that partner already exists",
    "customers_pkey": "customer id: that customer already exists",
    "customers_ean_key": "--ean: that EAN already belongs to another customer",
    "customers_partner_id_fkey": "--partner: no such partner",
    "mandates_pkey": "--ean: that EAN already has a mandate for this year; only one provider per EAN per year",
    "mandates_customer_id_fkey": "--ean: the customer holding this EAN no longer exists",
    "charger_links_pkey": "identity: that charger is already linked to a customer; remove the link first",
    "charger_links_customer_id_fkey": "--customer: no such customer",
    "partners_check": "--iban: is required for the partner-account payout model",
    "mandates_check": "--valid-from: is after --valid-until",
    "mandates_check1": "--valid-from/--valid-until: must lie inside the mandate's year",
}


def violation_message(error: asyncpg.PostgresError) -> str:
    """A one-line message for a constraint violation or refused value the database reported."""
    constraint = getattr(error, "constraint_name", None)
    if constraint in _CONSTRAINT_MESSAGES:
        return _CONSTRAINT_MESSAGES[constraint]
    table = getattr(error, "table_name", None)
    where = (
        f" ({table}.{constraint})"
        if table and constraint
        else f" ({constraint})"
        if constraint
        else ""
    )
    return f"the database refused the value{where}: {one_line(str(error))}"


async def _fetch_json(conn: Connection, query: str, *args: object) -> list[dict[str, Any]]:
    return [dict(row) for row in await conn.fetch(query, *args)]


async def add_partner(conn: Connection, partner: NewPartner) -> None:
    """Insert `partner` (AdminInputError if the id is taken)."""
    async with conn.transaction() as tx:
        if await tx.fetchval("SELECT 1 FROM partners WHERE partner_id = $1", partner.partner_id):
            raise AdminInputError(f"partner id: partner {partner.partner_id!r} already exists")
        await tx.execute(
            "INSERT INTO partners (partner_id, name, kind, payout_model, iban, account_name, branding) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
            partner.partner_id,
            partner.name,
            partner.kind,
            partner.payout_model,
            partner.iban,
            partner.account_name,
            json.dumps(asdict(partner.branding)),
        )


_PARTNER_COLUMNS = """
p.partner_id, p.name, p.kind, p.payout_model, p.iban, p.account_name, p.branding::text AS branding, p.created_at,
(SELECT count(*) FROM customers c WHERE c.partner_id = p.partner_id) AS customers
"""


def _partner(row: dict[str, Any]) -> dict[str, Any]:
    branding = json.loads(row["branding"])
    ordered = {
        field.name: branding.pop(field.name)
        for field in fields(PartnerBranding)
        if field.name in branding
    }
    return row | {"branding": ordered | branding}


async def list_partners(conn: Connection) -> list[dict[str, Any]]:
    rows = await _fetch_json(
        conn, f"SELECT {_PARTNER_COLUMNS} FROM partners p ORDER BY p.partner_id"
    )
    return [_partner(row) for row in rows]


async def get_partner(conn: Connection, partner_id: str) -> dict[str, Any]:
    """One partner with its customer count (AdminInputError if unknown)."""
    rows = await _fetch_json(
        conn, f"SELECT {_PARTNER_COLUMNS} FROM partners p WHERE p.partner_id = $1", partner_id
    )
    if not rows:
        raise AdminInputError(f"partner id: no partner {partner_id!r}")
    return _partner(rows[0])


async def add_customer(conn: Connection, customer: NewCustomer) -> None:
    """Insert `customer`; its partner must exist, its id and EAN be free, and a `direct` partner's
    customer needs an IBAN (AdminInputError otherwise)."""
    async with conn.transaction() as tx:
        model = await tx.fetchval(
            "SELECT payout_model FROM partners WHERE partner_id = $1", customer.partner_id
        )
        if model is None:
            raise AdminInputError(
                f"--partner: no partner {customer.partner_id!r}; add it with `partners add` first"
            )
        if model == "direct" and customer.iban is None:
            raise AdminInputError(
                f"--iban: is required: partner {customer.partner_id!r} pays its customers directly "
                "(payout model direct)"
            )
        if await tx.fetchval(
            "SELECT 1 FROM customers WHERE customer_id = $1", customer.customer_id
        ):
            raise AdminInputError(f"customer id: customer {customer.customer_id!r} already exists")
        holder = await tx.fetchval("SELECT customer_id FROM customers WHERE ean = $1", customer.ean)
        if holder is not None:
            raise AdminInputError(
                f"--ean: EAN {customer.ean} already belongs to customer {holder!r}"
            )
        await tx.execute(
            "INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean, grid_operator, "
            "iban, email) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            customer.customer_id,
            customer.partner_id,
            customer.name,
            customer.address,
            customer.postcode,
            customer.city,
            customer.ean,
            customer.grid_operator,
            customer.iban,
            customer.email,
        )


_CUSTOMER_COLUMNS = """
c.customer_id, c.partner_id, c.name, c.address, c.postcode, c.city, c.ean, c.grid_operator, c.iban, c.email,
c.referral_discount, c.created_at,
ARRAY(SELECT m.year FROM mandates m WHERE m.ean = c.ean AND m.customer_id = c.customer_id ORDER BY m.year)
    AS mandate_years
"""


async def list_customers(conn: Connection, partner_id: str | None = None) -> list[dict[str, Any]]:
    return await _fetch_json(
        conn,
        f"SELECT {_CUSTOMER_COLUMNS} FROM customers c WHERE ($1::text IS NULL OR c.partner_id = $1) "
        "ORDER BY c.customer_id",
        partner_id,
    )


async def get_customer(conn: Connection, customer_id: str) -> dict[str, Any]:
    """One customer with its mandates and charger links (AdminInputError if unknown)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True) as tx:
        query = f"SELECT {_CUSTOMER_COLUMNS} FROM customers c WHERE c.customer_id = $1"
        rows = await _fetch_json(tx, query, customer_id)
        if not rows:
            raise AdminInputError(f"customer id: no customer {customer_id!r}")
        customer = rows[0]
        customer.pop("mandate_years")
        mandates = await _fetch_json(
            tx, _MANDATES + " WHERE m.customer_id = $1 ORDER BY m.year", customer_id
        )
        links = await _fetch_json(
            tx, _LINKS + " WHERE l.customer_id = $1 ORDER BY l.identity", customer_id
        )
    customer["mandates"] = [_mandate(row) for row in mandates]
    customer["links"] = [_link(row) for row in links]
    return customer


def _duplicate_mandate(ean: str, year: int, holder: str | None) -> AdminInputError:
    held = f" (held by customer {holder!r})" if holder is not None else ""
    return AdminInputError(
        f"--ean: EAN {ean} already has a mandate for {year}{held}; only one provider per EAN per year is allowed"
    )


async def _mandate_holder(conn: Connection, ean: str, year: int) -> str | None:
    holder: str | None = await conn.fetchval(
        "SELECT customer_id FROM mandates WHERE ean = $1 AND year = $2", ean, year
    )
    return holder


async def add_mandate(conn: Connection, mandate: NewMandate) -> str:
    """Insert `mandate` for the customer holding its EAN; returns that customer's id.

    AdminInputError if no customer holds the EAN or the EAN already has a mandate that year
    (naming who holds it, also when a concurrent writer got there first).
    """
    try:
        async with conn.transaction() as tx:
            customer_id: str | None = await tx.fetchval(
                "SELECT customer_id FROM customers WHERE ean = $1", mandate.ean
            )
            if customer_id is None:
                raise AdminInputError(
                    f"--ean: EAN {mandate.ean} is not a known customer's; add the customer first"
                )
            holder = await _mandate_holder(tx, mandate.ean, mandate.year)
            if holder is not None:
                raise _duplicate_mandate(mandate.ean, mandate.year, holder)
            await tx.execute(
                "INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until, consent) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
                mandate.ean,
                mandate.year,
                customer_id,
                mandate.issued_on,
                mandate.valid_from,
                mandate.valid_until,
                json.dumps(mandate.consent.as_json()),
            )
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name != "mandates_pkey":
            raise
        holder = await conn.fetchval(
            "SELECT customer_id FROM mandates WHERE ean = $1 AND year = $2",
            mandate.ean,
            mandate.year,
        )
        raise _duplicate_mandate(mandate.ean, mandate.year, holder) from None
    return customer_id


_MANDATES = """
SELECT m.ean, m.year, m.customer_id, c.partner_id, m.issued_on, m.valid_from, m.valid_until, m.consent::text AS consent,
       m.created_at
FROM mandates m JOIN customers c USING (customer_id)
"""


def _mandate(row: dict[str, Any]) -> dict[str, Any]:
    return row | {"consent": json.loads(row["consent"])}


async def list_mandates(
    conn: Connection,
    *,
    year: int | None = None,
    customer_id: str | None = None,
    ean: str | None = None,
) -> list[dict[str, Any]]:
    rows = await _fetch_json(
        conn,
        _MANDATES
        + " WHERE ($1::integer IS NULL OR m.year = $1) AND ($2::text IS NULL OR m.customer_id = $2) "
        "AND ($3::text IS NULL OR m.ean = $3) ORDER BY m.year, m.ean",
        year,
        customer_id,
        ean,
    )
    return [_mandate(row) for row in rows]


async def add_link(conn: Connection, link: NewLink) -> str:
    """Link a charger to a customer; returns the customer's EAN.

    AdminInputError for an unknown customer or a charger that is already linked.
    """
    async with conn.transaction() as tx:
        ean: str | None = await tx.fetchval(
            "SELECT ean FROM customers WHERE customer_id = $1", link.customer_id
        )
        if ean is None:
            raise AdminInputError(
                f"--customer: no customer {link.customer_id!r}; add it with `customers add` first"
            )
        linked = await tx.fetchval(
            "SELECT customer_id FROM charger_links WHERE identity = $1", link.identity
        )
        if linked is not None:
            raise AdminInputError(
                f"identity: charger {link.identity!r} is already linked to customer {linked!r}; remove that link first"
            )
        await tx.execute(
            "INSERT INTO charger_links (identity, customer_id, max_power_w) VALUES ($1, $2, $3)",
            link.identity,
            link.customer_id,
            link.max_power_w,
        )
    return ean


_LINKS = """
SELECT l.identity, l.customer_id, c.ean, l.max_power_w, l.linked_at, b.meter_class, b.meter_type, b.meter_serial,
       b.vendor, b.model, b.booted_at
FROM charger_links l JOIN customers c USING (customer_id) LEFT JOIN charger_boots b USING (identity)
"""


def _link(row: dict[str, Any]) -> dict[str, Any]:
    boot = None
    if row["booted_at"] is not None:
        boot = {
            key: row[key] for key in ("booted_at", "vendor", "model", "meter_type", "meter_serial")
        }
    shown = {
        key: row[key]
        for key in ("identity", "customer_id", "ean", "max_power_w", "linked_at", "meter_class")
    }
    return shown | {"last_boot": boot}


async def list_links(conn: Connection, customer_id: str | None = None) -> list[dict[str, Any]]:
    rows = await _fetch_json(
        conn,
        _LINKS + " WHERE ($1::text IS NULL OR l.customer_id = $1) ORDER BY l.identity",
        customer_id,
    )
    return [_link(row) for row in rows]


async def remove_link(conn: Connection, identity: str) -> str:
    """Remove a charger's link; returns the customer it was linked to (AdminInputError if none)."""
    customer_id: str | None = await conn.fetchval(
        "DELETE FROM charger_links WHERE identity = $1 RETURNING customer_id", identity
    )
    if customer_id is None:
        raise AdminInputError(f"identity: charger {identity!r} is not linked to any customer")
    return customer_id
