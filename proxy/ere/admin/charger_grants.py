"""Chargers the operator gives a partner, so the partner API can read and link them.

A charger a partner registers through the API is theirs. A charger that already connects
through the proxy (routed by the configuration file or the default route, e.g. a CPO's fleet)
is not: a partner could otherwise claim a charger that charges for someone else. The operator
grants such chargers to the partner they belong to (`grant_chargers`); the partner then sees
them under `/v1/chargers` and may link them to its customers. One partner per charger at a
time; `revoke_charger_grants` ends a grant (its link periods stay as they are: they end through
`links end`/`move` like any other).

Errors: `AdminInputError` naming the partner or the identity and why (unknown partner,
malformed identity, a charger granted to, registered by, or linked now to another partner, a
grant to revoke that does not exist); nothing is written then.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from proxy.ere.admin.validation import AdminInputError, validate_charger_identity
from proxy.store.connection import Connection

__all__ = ["MAX_IDENTITIES", "grant_chargers", "list_charger_grants", "revoke_charger_grants"]

MAX_IDENTITIES = 100_000

_HELD_ELSEWHERE = """
SELECT identity, 'granted to' AS how, partner_id FROM partner_charger_grants
WHERE identity = ANY($1::text[]) AND revoked_at IS NULL AND partner_id <> $2
UNION ALL
SELECT identity, 'registered by', partner_id FROM api_chargers
WHERE identity = ANY($1::text[]) AND partner_id <> $2
UNION ALL
SELECT l.identity, 'linked now to a customer of', c.partner_id
FROM charger_links l JOIN customers c USING (customer_id)
WHERE l.identity = ANY($1::text[]) AND c.partner_id <> $2
  AND (l.valid_until IS NULL OR l.valid_until > now())
ORDER BY 1
LIMIT 1
"""


def _identities(identities: Sequence[str]) -> list[str]:
    if not identities:
        raise AdminInputError("identity: give at least one charger identity")
    if len(identities) > MAX_IDENTITIES:
        raise AdminInputError(f"identity: at most {MAX_IDENTITIES} chargers at once")
    checked = [validate_charger_identity(identity, "identity") for identity in identities]
    return list(dict.fromkeys(checked))


async def _require_partner(tx: Connection, partner_id: str) -> None:
    if not await tx.fetchval("SELECT 1 FROM partners WHERE partner_id = $1", partner_id):
        raise AdminInputError(f"partner id: no partner {partner_id!r}")


async def grant_chargers(conn: Connection, partner_id: str, identities: Sequence[str]) -> list[str]:
    """Grant `identities` to `partner_id`; the identities newly granted (those it holds
    already are left as they are)."""
    wanted = _identities(identities)
    async with conn.transaction() as tx:
        await _require_partner(tx, partner_id)
        await tx.execute("LOCK TABLE partner_charger_grants IN SHARE ROW EXCLUSIVE MODE")
        held = await tx.fetchrow(_HELD_ELSEWHERE, wanted, partner_id)
        if held is not None:
            raise AdminInputError(
                f"identity: {held['identity']} is {held['how']} partner {held['partner_id']}; "
                "that ends first"
            )
        rows = await tx.fetch(
            "INSERT INTO partner_charger_grants (identity, partner_id) "
            "SELECT w, $2 FROM unnest($1::text[]) w WHERE NOT EXISTS ("
            "SELECT 1 FROM partner_charger_grants g WHERE g.identity = w AND g.revoked_at IS NULL) "
            "RETURNING identity",
            wanted,
            partner_id,
        )
    return sorted(row["identity"] for row in rows)


async def revoke_charger_grants(
    conn: Connection, partner_id: str, identities: Sequence[str]
) -> list[str]:
    """End the grants of `identities` to `partner_id` (each must be granted to it)."""
    wanted = _identities(identities)
    async with conn.transaction() as tx:
        await _require_partner(tx, partner_id)
        rows = await tx.fetch(
            "UPDATE partner_charger_grants SET revoked_at = now(), revoked_by = current_user "
            "WHERE identity = ANY($1::text[]) AND partner_id = $2 AND revoked_at IS NULL "
            "RETURNING identity",
            wanted,
            partner_id,
        )
        revoked = {row["identity"] for row in rows}
        missing = [identity for identity in wanted if identity not in revoked]
        if missing:
            raise AdminInputError(
                f"identity: {missing[0]} is not granted to partner {partner_id}; nothing revoked"
            )
    return sorted(revoked)


async def list_charger_grants(conn: Connection, partner_id: str) -> list[dict[str, Any]]:
    """The chargers granted to `partner_id` now, by identity."""
    async with conn.transaction(isolation="repeatable_read", readonly=True) as tx:
        await _require_partner(tx, partner_id)
        rows = await tx.fetch(
            "SELECT identity, granted_at, granted_by FROM partner_charger_grants "
            "WHERE partner_id = $1 AND revoked_at IS NULL ORDER BY identity",
            partner_id,
        )
    return [dict(row) for row in rows]
