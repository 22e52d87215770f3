"""Partner API keys in the database: made, listed, rotated, revoked, and looked up for a request.

`create_key` stores a new key's hash and scopes and returns the key (shown once); `list_keys`
shows a partner's keys without secrets (with expiry, and which key replaced which);
`rotate_key` makes a key's successor (same partner and scopes, shown once) and lets the old key
work for a grace period more; `reissue_secret` gives a successor nobody has used a new secret
(the answer that showed it was lost); `revoke_key` revokes one, once; `authenticate` finds the
caller a key belongs to, or None, and `check_key` what a key id and secret name, live or not.
A key works while it is neither revoked nor past its `expires_at` (by the database's clock). A
key's `last_used_at` is stamped (`stamp_last_used`) at most once a minute, so a busy key does
not write on every request; the API stamps it after `authenticate`, and remembers a verified
key for a moment (`proxy.api.auth_cache`): a revocation, a rotation's end or an expiry is seen
by each API process within `[api] auth_cache_seconds`.

Errors: `AdminInputError` naming the field (unknown partner or key, a key revoked, expired or
replaced already, a grace period out of range).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from proxy.api.keys import NewKey, check_secret, new_key, parse_key
from proxy.ere.admin.validation import AdminInputError
from proxy.store.connection import Connection

__all__ = [
    "MAX_GRACE",
    "WORKS",
    "Caller",
    "KeyCheck",
    "authenticate",
    "check_key",
    "create_key",
    "list_keys",
    "reissue_secret",
    "revoke_key",
    "rotate_key",
    "stamp_last_used",
]

# The longest a rotated key keeps working beside its successor.
MAX_GRACE = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: the partner a working key belongs to, and what it may do; `by_token`
    when the call came with an access token of the key (its scopes may be fewer). A partner
    user of the dashboard (`proxy.api.dashboard`) calls with `user_id` set and no key:
    `key_id` then names the user (`user:<id>`) where an actor is written as text."""

    partner_id: str
    key_id: str
    scopes: frozenset[str]
    by_token: bool = False
    user_id: int | None = None

    @property
    def api_key_id(self) -> str | None:
        """The key of the call (what a `key_id` column references); None for a user."""
        return None if self.user_id is not None else self.key_id


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """A key whose secret was given: its caller, and whether it works (not revoked, expired)."""

    caller: Caller
    works: bool


_COLUMNS = (
    "key_id, partner_id, scopes, created_at, created_by, revoked_at, last_used_at, "
    "expires_at, replaces"
)
# A key works while this holds (`k` is partner_api_keys).
WORKS = "k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())"


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
            f"SELECT {_COLUMNS}, (SELECT s.key_id FROM partner_api_keys s "
            "WHERE s.replaces = k.key_id) AS replaced_by "
            "FROM partner_api_keys k WHERE partner_id = $1 ORDER BY created_at, key_id",
            partner_id,
        )
    return [dict(row) for row in rows]


async def rotate_key(
    conn: Connection, key_id: str, grace: timedelta
) -> tuple[NewKey, dict[str, Any]]:
    """(the successor, the old key as it is now): a new key of the same partner with the same
    scopes, while the old one works for `grace` more (0: stops at once). AdminInputError for an
    unknown key, one revoked, expired or replaced already, or a grace out of 0..MAX_GRACE."""
    if not timedelta(0) <= grace <= MAX_GRACE:
        hours = MAX_GRACE // timedelta(hours=1)
        raise AdminInputError(f"--grace: between 0 and {hours} hours")
    async with conn.transaction() as tx:
        row = await tx.fetchrow(
            "SELECT partner_id, scopes, revoked_at, expires_at, expires_at <= now() AS expired, "
            "(SELECT s.key_id FROM partner_api_keys s WHERE s.replaces = k.key_id) AS replaced_by "
            "FROM partner_api_keys k WHERE key_id = $1 FOR UPDATE",
            key_id,
        )
        if row is None:
            raise AdminInputError(f"key id: no key {key_id!r}")
        if row["revoked_at"] is not None:
            raise AdminInputError(f"key id: {key_id} was revoked ({row['revoked_at']})")
        if row["replaced_by"] is not None:
            raise AdminInputError(
                f"key id: {key_id} was replaced by {row['replaced_by']} already; rotate that one"
            )
        if row["expired"]:
            raise AdminInputError(f"key id: {key_id} expired ({row['expires_at']})")
        key = new_key()
        await tx.execute(
            "INSERT INTO partner_api_keys (key_id, partner_id, secret_hash, scopes, replaces) "
            "VALUES ($1, $2, $3, $4, $5)",
            key.key_id,
            row["partner_id"],
            key.secret_hash,
            row["scopes"],
            key_id,
        )
        old = await tx.fetchrow(
            "UPDATE partner_api_keys SET expires_at = least(expires_at, now() + $2::interval) "
            f"WHERE key_id = $1 RETURNING {_COLUMNS}",
            key_id,
            grace,
        )
    return key, dict(old) | {"replaced_by": key.key_id}


async def reissue_secret(conn: Connection, key_id: str) -> NewKey | None:
    """A new secret for `key_id` if the key works and was never used (its first showing was
    lost, so no one holds the old secret), else None."""
    key = new_key(key_id)
    updated = await conn.fetchval(
        "UPDATE partner_api_keys k SET secret_hash = $2 "
        f"WHERE key_id = $1 AND last_used_at IS NULL AND {WORKS} RETURNING key_id",
        key_id,
        key.secret_hash,
    )
    return None if updated is None else key


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


async def check_key(conn: Connection, key_id: str, secret: str) -> KeyCheck | None:
    """The key `key_id`, if `secret` is its secret (working or not), else None."""
    row = await conn.fetchrow(
        f"SELECT partner_id, secret_hash, scopes, {WORKS} AS works "
        "FROM partner_api_keys k WHERE key_id = $1",
        key_id,
    )
    if row is None or not check_secret(secret, row["secret_hash"]):
        return None
    return KeyCheck(Caller(row["partner_id"], key_id, frozenset(row["scopes"])), row["works"])


async def stamp_last_used(conn: Connection, key_id: str) -> None:
    """Note that `key_id` was used now (at most one write a minute per key)."""
    await conn.execute(
        "UPDATE partner_api_keys SET last_used_at = now() WHERE key_id = $1 "
        "AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        key_id,
    )


async def authenticate(conn: Connection, token: str) -> Caller | None:
    """The caller the key `token` identifies, or None (malformed, unknown, wrong secret,
    revoked, expired); its use is not stamped here."""
    parsed = parse_key(token)
    if parsed is None:
        return None
    checked = await check_key(conn, *parsed)
    if checked is None or not checked.works:
        return None
    return checked.caller
