"""Partners' OCPI platforms in the database: made, listed, revoked, found by token, registered.

A partner has at most one platform that is not revoked. `create_platform` makes one with a new
token A (returned once; its SHA-256 is kept). `platform_for` finds the platform a request's
token belongs to. The registration (`register`) and its update (`update`) replace the token the
platform calls with by a new token C, keep its token B (sealed with the registry's key when one
is set), versions URL, endpoints and roles, and move it to `registered`; `unregister` ends the
registration (the platform may register again with its last token); `revoke_platform` (the
operator) ends the platform: no token of it works any more. Each write checks, in its UPDATE,
that the platform still is as the request found it, so two registrations at once cannot both
win.

Errors: `AdminInputError` naming the field for the operator's commands (an unknown partner, a
platform that exists already, none to revoke).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from proxy.api.ocpi import tokens
from proxy.ere.admin.validation import AdminInputError
from proxy.routing.registry.sealing import KeyRing
from proxy.store.connection import Connection

__all__ = [
    "Platform",
    "Registration",
    "create_platform",
    "list_platforms",
    "platform_for",
    "register",
    "revoke_platform",
    "unregister",
]

_COLUMNS = (
    "platform_id, partner_id, status, versions_url, version, roles::text AS roles, created_at, "
    "created_by, registered_at, updated_at, revoked_at, revoked_by"
)


@dataclass(frozen=True)
class Platform:
    """A platform as a request finds it: whose it is, its state and its registered roles."""

    platform_id: int
    partner_id: str
    status: str
    token_sha256: str
    roles: tuple[dict[str, str], ...]

    @property
    def registered(self) -> bool:
        return self.status == "registered"

    def cpo(self, country_code: str, party_id: str) -> bool:
        """Whether the platform registered the CPO `country_code`/`party_id` (any case)."""
        wanted = (country_code.upper(), party_id.upper())
        return any(
            (role.get("country_code"), role.get("party_id")) == wanted and role.get("role") == "CPO"
            for role in self.roles
        )

    def party(self, country_code: str, party_id: str) -> bool:
        """Whether `country_code`/`party_id` is one of the platform's roles (any role)."""
        wanted = (country_code.upper(), party_id.upper())
        return any(
            (role.get("country_code"), role.get("party_id")) == wanted for role in self.roles
        )


def _row(row: Any) -> dict[str, Any]:
    found = dict(row)
    found["roles"] = json.loads(found["roles"]) if found["roles"] else []
    return found


async def create_platform(conn: Connection, partner_id: str) -> tuple[dict[str, Any], str]:
    """A new platform of `partner_id` and its token A (shown once)."""
    token = tokens.new_token()
    async with conn.transaction() as tx:
        if not await tx.fetchval("SELECT 1 FROM partners WHERE partner_id = $1", partner_id):
            raise AdminInputError(f"partner id: no partner {partner_id!r}")
        if await tx.fetchval(
            "SELECT 1 FROM ocpi_platforms WHERE partner_id = $1 AND status <> 'revoked'",
            partner_id,
        ):
            raise AdminInputError(
                f"partner id: {partner_id} has an OCPI platform already; revoke it first"
            )
        row = await tx.fetchrow(
            f"INSERT INTO ocpi_platforms (partner_id, token_sha256) VALUES ($1, $2) RETURNING {_COLUMNS}",
            partner_id,
            tokens.digest(token),
        )
    return _row(row), token


async def list_platforms(conn: Connection, partner_id: str) -> list[dict[str, Any]]:
    """A partner's platforms, oldest first (AdminInputError for an unknown partner)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True) as tx:
        if not await tx.fetchval("SELECT 1 FROM partners WHERE partner_id = $1", partner_id):
            raise AdminInputError(f"partner id: no partner {partner_id!r}")
        rows = await tx.fetch(
            f"SELECT {_COLUMNS}, (SELECT count(*) FROM ocpi_cdrs c "
            "WHERE c.platform_id = p.platform_id) AS cdrs "
            "FROM ocpi_platforms p WHERE partner_id = $1 ORDER BY created_at, platform_id",
            partner_id,
        )
    return [_row(row) for row in rows]


async def revoke_platform(conn: Connection, partner_id: str) -> dict[str, Any]:
    """Revoke the partner's platform from now on; returns it (AdminInputError if none)."""
    row = await conn.fetchrow(
        "UPDATE ocpi_platforms SET status = 'revoked', revoked_at = now(), revoked_by = current_user, "
        f"updated_at = now() WHERE partner_id = $1 AND status <> 'revoked' RETURNING {_COLUMNS}",
        partner_id,
    )
    if row is None:
        raise AdminInputError(f"partner id: {partner_id!r} has no OCPI platform to revoke")
    return _row(row)


async def platform_for(conn: Connection, presented: Sequence[str]) -> Platform | None:
    """The platform one of the `presented` tokens belongs to, unless it is revoked."""
    if not presented:
        return None
    row = await conn.fetchrow(
        "SELECT platform_id, partner_id, status, token_sha256, roles::text AS roles "
        "FROM ocpi_platforms WHERE token_sha256 = ANY($1::text[]) AND status <> 'revoked'",
        [tokens.digest(token) for token in presented],
    )
    if row is None:
        return None
    roles = json.loads(row["roles"]) if row["roles"] else []
    return Platform(
        row["platform_id"], row["partner_id"], row["status"], row["token_sha256"], tuple(roles)
    )


@dataclass(frozen=True)
class Registration:
    """What a registration (or its update) keeps of the platform."""

    token_b: str
    versions_url: str
    version: str
    endpoints: list[dict[str, str | None]]
    roles: list[dict[str, str]]


async def register(
    conn: Connection,
    platform: Platform,
    registration: Registration,
    keys: KeyRing | None,
    *,
    update: bool,
) -> str | None:
    """Register `platform` (`update`: again, while registered) with a new token C, returned;
    None if the platform changed since the request found it (another registration, a
    revocation)."""
    token_c = tokens.new_token()
    sealed, sealed_with = None, None
    if keys is not None:
        sealed, sealed_with = keys.seal(f"ocpi:{platform.platform_id}", registration.token_b)
    states = ["registered"] if update else ["pending", "unregistered"]
    done = await conn.fetchval(
        "UPDATE ocpi_platforms SET status = 'registered', token_sha256 = $3, token_b = $4, "
        "token_b_sealed = $5, sealed_with = $6, versions_url = $7, version = $8, "
        "endpoints = $9::jsonb, roles = $10::jsonb, updated_at = now(), "
        "registered_at = coalesce(registered_at, now()) "
        "WHERE platform_id = $1 AND token_sha256 = $2 AND status = ANY($11::text[]) "
        "RETURNING platform_id",
        platform.platform_id,
        platform.token_sha256,
        tokens.digest(token_c),
        None if sealed is not None else registration.token_b,
        sealed,
        sealed_with,
        registration.versions_url,
        registration.version,
        json.dumps(registration.endpoints),
        json.dumps(registration.roles),
        states,
    )
    return None if done is None else token_c


async def unregister(conn: Connection, platform: Platform) -> bool:
    """End `platform`'s registration; False if it changed since the request found it."""
    done = await conn.fetchval(
        "UPDATE ocpi_platforms SET status = 'unregistered', token_b = NULL, token_b_sealed = NULL, "
        "sealed_with = NULL, updated_at = now() "
        "WHERE platform_id = $1 AND token_sha256 = $2 AND status = 'registered' "
        "RETURNING platform_id",
        platform.platform_id,
        platform.token_sha256,
    )
    return done is not None
