"""Live sessions in the database: the Session objects a platform PUTs and PATCHes, per partner.

Kept as last received (JSON text, `proxy.api.ocpi.live_sessions` applies a PATCH), keyed by the
partner and the session's country code, party id and id (case-insensitive, as CiStrings are).
They have no effect on ERE: the CDR that ends a session is what counts. `put` inserts or
replaces and says which; `patch` applies a PATCH under a row lock, so two at once are applied
one after the other; `get` reads one.
"""

from __future__ import annotations

from proxy.api.ocpi.live_sessions import KeptSession, apply_patch
from proxy.api.ocpi.platforms import Platform
from proxy.store.connection import Connection

__all__ = ["get", "patch", "put"]

_WHERE = (
    "partner_id = $1 AND upper(country_code) = upper($2) AND upper(party_id) = upper($3) "
    "AND upper(session_id) = upper($4)"
)


async def put(db: Connection, platform: Platform, kept: KeptSession) -> bool:
    """Keep `kept` as the session it names; True if it is new."""
    session = kept.session
    inserted: bool = await db.fetchval(
        "INSERT INTO ocpi_live_sessions (partner_id, platform_id, country_code, party_id, "
        "session_id, body, status, last_updated) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
        "ON CONFLICT (partner_id, upper(country_code), upper(party_id), upper(session_id)) "
        "DO UPDATE SET platform_id = EXCLUDED.platform_id, body = EXCLUDED.body, "
        "status = EXCLUDED.status, last_updated = EXCLUDED.last_updated, received_at = now() "
        "RETURNING xmax = 0",
        platform.partner_id,
        platform.platform_id,
        session.country_code,
        session.party_id,
        session.id,
        kept.text,
        session.status,
        kept.last_updated,
    )
    return inserted


async def patch(
    db: Connection, platform: Platform, key: tuple[str, str, str], body: bytes
) -> KeptSession | None:
    """Apply the PATCH `body` to the kept session `key` (country, party, id); None if there
    is none."""
    async with db.transaction() as tx:
        text = await tx.fetchval(
            f"SELECT body FROM ocpi_live_sessions WHERE {_WHERE} FOR UPDATE",
            platform.partner_id,
            *key,
        )
        if text is None:
            return None
        kept = apply_patch(text, body, *key)
        await tx.execute(
            "UPDATE ocpi_live_sessions SET platform_id = $5, body = $6, status = $7, "
            f"last_updated = $8, received_at = now() WHERE {_WHERE}",
            platform.partner_id,
            *key,
            platform.platform_id,
            kept.text,
            kept.session.status,
            kept.last_updated,
        )
    return kept


async def get(db: Connection, platform: Platform, key: tuple[str, str, str]) -> str | None:
    """The kept session `key` as JSON text, or None."""
    text: str | None = await db.fetchval(
        f"SELECT body FROM ocpi_live_sessions WHERE {_WHERE}", platform.partner_id, *key
    )
    return text
