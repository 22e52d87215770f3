"""Partner API keys in the database: made, listed, revoked, and looked up for a request.

`create_key` stores a new key's hash and scopes and returns the key (shown once); `list_keys`
shows a partner's keys without secrets; `revoke_key` revokes one, once; `authenticate` finds
the caller a bearer token belongs to, or None. A key's `last_used_at` is stamped at most once a
minute, so a busy key does not write on every request.

Errors: `AdminInputError` naming the field (unknown partner or key, a key revoked already).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.api.keys import NewKey, check_secret, new_key, parse_key
from proxy.ere.admin.validation import AdminInputError
from proxy.store.connection import Connection

__all__ = ["Caller", "authenticate", "create_key", "list_keys", "revoke_key"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the partner a valid, unrevoked key belongs to, and what it may do."""

    partner_id: str
    key_id: str
    scopes: frozenset[str]


_COLUMNS = "key_id, partner_id, scopes, created_at, created_by, revoked_at, last_used_at"


async def create_key(conn: Connection, partner_id: str, scopes: tuple[str, ...]) -> NewKey:
    """A new key for `partner_id` with `scopes` (AdminInputError for an unknown partner)."""
    async with conn.transaction() as tx:
        if not await tx.fetchval("SELECT 1 FROM partners WHERE partner_id = $1", partner_id):
            raise AdminInputError(f"partner id: no partner {partner_id!r}")
        key = new_key()
        await tx.execute(
            "INSERT INTO partner_api_keys (key_id, partner_id, secret_hash, scopes) "
            "VALUES ($1, $2, $3, $4)",
            key.key_id,
            partner_id,
            key.secret_hash,
            list(scopes),
        )
    return key


async def list_keys(conn: Connection, partner_id: str) -> list[dict[str, Any]]:
    """A partner's keys, oldest first, without secrets (AdminInputError for an unknown partner)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True) as tx:
        if not await tx.fetchval("SELECT 1 FROM partners WHERE partner_id = $1", partner_id):
            raise AdminInputError(f"partner id: no partner {partner_id!r}")
        rows = await tx.fetch(
            f"SELECT {_COLUMNS} FROM partner_api_keys WHERE partner_id = $1 "
            "ORDER BY created_at, key_id",
            partner_id,
        )
    return [dict(row) for row in rows]


async def revoke_key(conn: Connection, key_id: str) -> dict[str, Any]:
    """Revoke a key from now on; returns it (AdminInputError if unknown or revoked already)."""
    async with conn.transaction() as tx:
        row = await tx.fetchrow(
            "SELECT revoked_at FROM partner_api_keys WHERE key_id = $1 FOR UPDATE", key_id
        )
        if row is None:
            raise AdminInputError(f"key id: no key {key_id!r}")
        if row["revoked_at"] is not None:
            raise AdminInputError(f"key id: {key_id} was revoked already ({row['revoked_at']})")
        revoked = await tx.fetchrow(
            f"UPDATE partner_api_keys SET revoked_at = now() WHERE key_id = $1 RETURNING {_COLUMNS}",
            key_id,
        )
    return dict(revoked)


async def authenticate(conn: Connection, token: str) -> Caller | None:
    """The caller `token` identifies, or None (malformed, unknown, wrong secret, revoked)."""
    parsed = parse_key(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    row = await conn.fetchrow(
        "SELECT partner_id, secret_hash, scopes FROM partner_api_keys "
        "WHERE key_id = $1 AND revoked_at IS NULL",
        key_id,
    )
    if row is None or not check_secret(secret, row["secret_hash"]):
        return None
    await conn.execute(
        "UPDATE partner_api_keys SET last_used_at = now() WHERE key_id = $1 "
        "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        key_id,
    )
    return Caller(row["partner_id"], key_id, frozenset(row["scopes"]))
