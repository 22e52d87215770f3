"""The ERE domain records in the database: partners, customers and mandates.

`add_partner`, `add_customer` and `add_mandate` insert one row that `proxy.ere.admin.validation`
has checked (a `New*` value), each in one transaction, after the checks that need the database:
the partner of a customer and the customer of a mandate exist, ids and EANs are free, a `direct`
partner's customer has an IBAN, an EAN has one mandate per year, a referral code given at
enrolment exists. A new partner or customer gets its referral code (`proxy.ere.admin.referrals`)
in the same transaction. A mandate is recorded with its evidence (`channel`, `actor`, consent
text version, document hash; the database stamps `recorded_at` and `backdated`) and changes only
by `revoke_mandate`, once, never inside a closed quarter. `list_*` and `get_*` read the records
back as plain dicts (a customer with its referral code, mandates and every link period, see
`proxy.ere.admin.link_periods`). Values reach SQL only as query parameters.

Errors: a refused write raises `AdminInputError` naming the field (a duplicate says who holds
the id, EAN or mandate), and the tables are left as they were. A constraint the database
enforced after these checks passed (a concurrent writer) surfaces as the `asyncpg` error (one
of `REFUSED_BY_DATABASE`); `violation_message` turns it into the same kind of one-line message.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from datetime import timedelta
from typing import Any

import asyncpg

from proxy.ere.admin.changes import MandateRevocation, validate_channel
from proxy.ere.admin.closed_quarters import refuse_inside_closed_quarter, start_of_day_after
from proxy.ere.admin.link_periods import list_links
from proxy.ere.admin.new_records import NewCustomer, NewMandate, NewPartner
from proxy.ere.admin.referrals import check_referral_code, create_code
from proxy.ere.admin.validation import AdminInputError, one_line
from proxy.ere.core.quarters import local_date
from proxy.ere.core.statement_mail import PartnerBranding
from proxy.store.connection import Connection

__all__ = [
    "REFUSED_BY_DATABASE",
    "add_customer",
    "add_mandate",
    "add_partner",
    "get_customer",
    "get_partner",
    "list_customers",
    "list_mandates",
    "list_partners",
    "revoke_mandate",
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
    "charger_links_no_overlap": "identity: that charger has a link period overlapping this one; "
    "use `links move` or `links end`",
    "charger_links_customer_id_fkey": "--customer: no such customer",
    "customers_referred_by_fkey": "--referral-code: no such referral code",
    "partners_check": "--iban: is required for the partner-account payout model",
    "partners_language": "--language: use nl or en",
    "customers_language": "--language: use nl or en",
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
            "INSERT INTO partners (partner_id, name, kind, payout_model, iban, account_name, branding, "
            "language) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)",
            partner.partner_id,
            partner.name,
            partner.kind,
            partner.payout_model,
            partner.iban,
            partner.account_name,
            json.dumps(asdict(partner.branding)),
            partner.language,
        )
        await create_code(tx, partner_id=partner.partner_id)


_PARTNER_COLUMNS = """
p.partner_id, p.name, p.kind, p.payout_model, p.iban, p.account_name, p.language,
p.branding::text AS branding, p.created_at,
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


async def add_customer(conn: Connection, customer: NewCustomer, *, actor: str | None = None) -> str:
    """Insert `customer` with a new referral code, which it returns; its partner must exist, its
    id and EAN be free, a `direct` partner's customer needs an IBAN, and a referral code it was
    enrolled with must exist (AdminInputError otherwise). `actor` records the referral (None:
    the database role); the database stamps when."""
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
        if customer.referral_code is not None:
            await check_referral_code(
                tx, customer.referral_code, customer.customer_id, "--referral-code"
            )
        await tx.execute(
            "INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean, grid_operator, "
            "iban, email, referred_by, referred_recorded_by, language) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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
            customer.referral_code,
            actor if customer.referral_code is not None else None,
            customer.language,
        )
        return await create_code(tx, customer_id=customer.customer_id)


_CUSTOMER_COLUMNS = """
c.customer_id, c.partner_id, c.name, c.address, c.postcode, c.city, c.ean, c.grid_operator, c.iban, c.email,
c.language, c.created_at,
(SELECT r.code FROM referral_codes r WHERE r.customer_id = c.customer_id) AS referral_code, c.referred_by,
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
    """One customer with its referral code, mandates and every link period (AdminInputError if
    unknown)."""
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
        customer["mandates"] = [_mandate(row) for row in mandates]
        customer["links"] = await list_links(tx, customer_id, include_ended=True)
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


async def add_mandate(conn: Connection, mandate: NewMandate, *, channel: str, actor: str) -> str:
    """Insert `mandate` for the customer holding its EAN, recorded by `actor` over `channel`
    (`cli`, `api`, `import`); returns that customer's id.

    AdminInputError if no customer holds the EAN or the EAN already has a mandate that year
    (naming who holds it, also when a concurrent writer got there first).
    """
    channel = validate_channel(channel)
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
                "INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until, consent, "
                "channel, actor, consent_text_version, document_sha256) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11)",
                mandate.ean,
                mandate.year,
                customer_id,
                mandate.issued_on,
                mandate.valid_from,
                mandate.valid_until,
                json.dumps(mandate.consent.as_json()),
                channel,
                actor,
                mandate.consent_text_version,
                mandate.document_sha256,
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


async def revoke_mandate(
    conn: Connection, revocation: MandateRevocation, *, channel: str, actor: str
) -> dict[str, Any]:
    """Revoke a mandate: it covers up to `revocation.effective` (None: today, Dutch date, kept
    within the mandate's validity); returns the revoked mandate.

    AdminInputError for an unknown or already revoked mandate, an effective date outside
    valid_from - 1 .. valid_until, or one inside a closed quarter.
    """
    channel = validate_channel(channel)
    async with conn.transaction() as tx:
        row = await tx.fetchrow(
            "SELECT valid_from, valid_until, revoked_at, revoked_effective FROM mandates "
            "WHERE ean = $1 AND year = $2 FOR UPDATE",
            revocation.ean,
            revocation.year,
        )
        if row is None:
            raise AdminInputError(
                f"--ean: EAN {revocation.ean} has no mandate for {revocation.year}"
            )
        if row["revoked_at"] is not None:
            raise AdminInputError(
                f"--ean: the mandate of EAN {revocation.ean} for {revocation.year} was revoked already "
                f"(effective {row['revoked_effective']}); a mandate is revoked once"
            )
        first, last = row["valid_from"] - timedelta(days=1), row["valid_until"]
        effective = revocation.effective
        if effective is None:
            effective = min(max(local_date(await tx.fetchval("SELECT now()")), first), last)
        elif not first <= effective <= last:
            raise AdminInputError(
                f"--effective: {effective} is outside {first} .. {last}; the last day still covered "
                "lies in the mandate's validity (or is the day before it starts)"
            )
        await refuse_inside_closed_quarter(
            tx, "--effective", start_of_day_after(effective), f"{effective} (last day covered)"
        )
        evidence = {
            "channel": channel,
            "actor": actor,
            "reason": revocation.reason,
            "reference": revocation.reference,
            "document_sha256": revocation.document_sha256,
        }
        await tx.execute(
            "UPDATE mandates SET revoked_at = now(), revoked_effective = $3, revocation = $4::jsonb "
            "WHERE ean = $1 AND year = $2",
            revocation.ean,
            revocation.year,
            effective,
            json.dumps(evidence),
        )
        (revoked,) = await _fetch_json(
            tx, _MANDATES + " WHERE m.ean = $1 AND m.year = $2", revocation.ean, revocation.year
        )
    return _mandate(revoked)


_MANDATES = """
SELECT m.ean, m.year, m.customer_id, c.partner_id, m.issued_on, m.valid_from, m.valid_until, m.consent::text AS consent,
       m.channel, m.actor, m.consent_text_version, m.document_sha256, m.recorded_at, m.backdated,
       m.revoked_at, m.revoked_effective, m.revocation::text AS revocation
FROM mandates m JOIN customers c USING (customer_id)
"""


def _mandate(row: dict[str, Any]) -> dict[str, Any]:
    revocation = None if row["revocation"] is None else json.loads(row["revocation"])
    return row | {"consent": json.loads(row["consent"]), "revocation": revocation}


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
