"""Referral codes: every customer and every partner has one; a customer may be referred once.

A code is 8 random characters of Crockford's base32 (`secrets`; 32^8 codes, a collision is drawn
again). `create_code` gives a new customer or partner theirs in the transaction that adds it.
`customers.referred_by` holds the code a customer was referred with, set at enrolment or once
later (`record_referral`); the database stamps when (`referred_at`, its own clock) and by whom
(`referred_recorded_by`: the actor named, else the database role) and refuses to change either.
A customer's code lowers that customer's fee for each referred customer active in a quarter
whose referral was recorded before the quarter ended (the quarterly close computes it); a
partner's code records which partner brought the customer in and lowers no fee. A referral
never closes a cycle (A refers B, B refers A; or longer): nobody is referred by a customer they
referred, directly or down a chain (checked here and by the database; referrals are recorded
one at a time under REFERRAL_LOCK, so two recorded together cannot each miss the other).
`referral_summary` shows an owner's code, who referred it and the customers referred with it,
each with when and by whom the referral was recorded.

Errors: `AdminInputError` for an unknown code, a customer's own code, a customer already
referred, a referral that would close a cycle, an unknown customer, partner or code to show.
"""

from __future__ import annotations

import secrets
from typing import Any

from proxy.ere.admin.validation import REFERRAL_ALPHABET, AdminInputError, normalise_referral_code
from proxy.store.connection import Connection

__all__ = [
    "REFERRAL_LOCK",
    "check_referral_code",
    "create_code",
    "new_code",
    "record_referral",
    "referral_summary",
]


def new_code() -> str:
    """A random referral code."""
    return "".join(secrets.choice(REFERRAL_ALPHABET) for _ in range(8))


async def create_code(
    conn: Connection, *, customer_id: str | None = None, partner_id: str | None = None
) -> str:
    """Give one customer or partner its code (drawn again on the rare collision)."""
    while True:
        code: str | None = await conn.fetchval(
            "INSERT INTO referral_codes (code, customer_id, partner_id) VALUES ($1, $2, $3) "
            "ON CONFLICT (code) DO NOTHING RETURNING code",
            new_code(),
            customer_id,
            partner_id,
        )
        if code is not None:
            return code


async def check_referral_code(
    conn: Connection, code: str, customer_id: str, field: str = "--code"
) -> None:
    """AdminInputError unless `code` exists and is not `customer_id`'s own."""
    owner = await conn.fetchrow(
        "SELECT customer_id, partner_id FROM referral_codes WHERE code = $1", code
    )
    if owner is None:
        raise AdminInputError(f"{field}: no referral code {code}")
    if owner["customer_id"] == customer_id:
        raise AdminInputError(
            f"{field}: {code} is the code of customer {customer_id!r} itself; nobody refers themselves"
        )


# Transaction-scoped advisory lock under which referrals are recorded (migration 015's trigger
# takes it too): the cycle check then sees every referral recorded before it.
REFERRAL_LOCK = 4857012231600164963

# The referrers up the chain from the owner of code $1 (customers only: a partner's code ends a
# chain), each with the path from $2 to it; the path that reaches $2 again is a cycle.
_CYCLE = """
WITH RECURSIVE chain (customer_id, path) AS (
    SELECT r.customer_id, ARRAY[$2::text, r.customer_id]
    FROM referral_codes r WHERE r.code = $1 AND r.customer_id IS NOT NULL
    UNION ALL
    SELECT r.customer_id, chain.path || r.customer_id
    FROM chain
    JOIN customers c ON c.customer_id = chain.customer_id
    JOIN referral_codes r ON r.code = c.referred_by AND r.customer_id IS NOT NULL
    WHERE chain.customer_id <> $2 AND NOT r.customer_id = ANY (chain.path[2:])
)
SELECT path FROM chain WHERE customer_id = $2 LIMIT 1
"""


async def record_referral(
    conn: Connection, customer_id: str, code: str, actor: str | None = None
) -> str | None:
    """Record that `customer_id` was referred with `code`, by `actor` (None: the database role);
    returns the referring customer (None: a partner's code). AdminInputError for an unknown
    customer or code, the customer's own code, a customer already referred, or a code whose
    owner was referred (directly or down a chain) by `customer_id`."""
    async with conn.transaction() as tx:
        await tx.execute("SELECT pg_advisory_xact_lock($1)", REFERRAL_LOCK)
        referred = await tx.fetchrow(
            "SELECT referred_by FROM customers WHERE customer_id = $1 FOR UPDATE", customer_id
        )
        if referred is None:
            raise AdminInputError(f"customer id: no customer {customer_id!r}")
        if referred["referred_by"] is not None:
            raise AdminInputError(
                f"customer id: {customer_id!r} was referred with {referred['referred_by']} already; "
                "a customer is referred once"
            )
        await check_referral_code(tx, code, customer_id)
        cycle: list[str] | None = await tx.fetchval(_CYCLE, code, customer_id)
        if cycle is not None:
            raise AdminInputError(
                f"--code: {code} would close a referral cycle: {' referred by '.join(cycle)}"
            )
        await tx.execute(
            "UPDATE customers SET referred_by = $2, referred_recorded_by = $3 WHERE customer_id = $1",
            customer_id,
            code,
            actor,
        )
        referrer: str | None = await tx.fetchval(
            "SELECT customer_id FROM referral_codes WHERE code = $1", code
        )
    return referrer


_OWNER = """
SELECT r.code, r.customer_id, r.partner_id,
       rc.code AS referred_by, coalesce(rc.customer_id, rc.partner_id) AS referred_by_owner,
       CASE WHEN rc.customer_id IS NOT NULL THEN 'customer' WHEN rc.partner_id IS NOT NULL THEN 'partner' END
           AS referred_by_kind,
       c.referred_at, c.referred_recorded_by
FROM referral_codes r
LEFT JOIN customers c ON c.customer_id = r.customer_id
LEFT JOIN referral_codes rc ON rc.code = c.referred_by
"""


async def referral_summary(conn: Connection, owner: str) -> dict[str, Any]:
    """The code of a customer, partner or code `owner`, who referred that customer, and the
    customers referred with the code. A customer id wins over a partner id of the same name."""
    async with conn.transaction(isolation="repeatable_read", readonly=True) as tx:
        row = await tx.fetchrow(_OWNER + " WHERE r.customer_id = $1", owner)
        if row is None:
            row = await tx.fetchrow(_OWNER + " WHERE r.partner_id = $1", owner)
        if row is None:
            try:
                code = normalise_referral_code(owner, "id")
            except AdminInputError:
                code = None
            row = code and await tx.fetchrow(_OWNER + " WHERE r.code = $1", code)
        if not row:
            raise AdminInputError(f"id: no customer, partner or referral code {owner!r}")
        referred = await tx.fetch(
            "SELECT customer_id, partner_id, created_at, referred_at, referred_recorded_by "
            "FROM customers WHERE referred_by = $1 ORDER BY customer_id",
            row["code"],
        )
    summary = {
        "code": row["code"],
        "owner_kind": "customer" if row["customer_id"] is not None else "partner",
        "owner": row["customer_id"] or row["partner_id"],
        "lowers_fee": row["customer_id"] is not None,
    }
    if row["customer_id"] is not None:
        summary["referred_by"] = row["referred_by"]
        summary["referred_by_owner"] = row["referred_by_owner"]
        summary["referred_by_kind"] = row["referred_by_kind"]
        summary["referred_at"] = row["referred_at"]
        summary["referred_recorded_by"] = row["referred_recorded_by"]
    return summary | {"referred": [dict(r) for r in referred]}
