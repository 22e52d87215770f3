"""OAuth2 access tokens in the database: issued for a partner key, and looked up for a request.

`issue_token` checks a token request's key and secret, narrows the scopes and stores the new
token's digest with its expiry: `lifetime` from now, never beyond its key's own expiry (a
rotated key's tokens end with it). `authenticate_token` finds the caller of a bearer token: a
token that is known, unexpired, and whose key still works (revoking or expiring a key ends its
tokens); the caller stamps the key's `last_used_at` as for the key itself. Times are the
database's.

Errors: `issue_token` raises `OAuthError` (`invalid_client` for an unknown key or a wrong
secret, `invalid_grant` for a key that was revoked or has expired, `invalid_scope`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxy.api.access_tokens import new_access_token, token_digest
from proxy.api.key_store import WORKS, Caller, check_key, stamp_last_used
from proxy.api.oauth_requests import OAuthError, TokenRequest, narrow_scopes
from proxy.store.connection import Connection

__all__ = ["IssuedToken", "authenticate_token", "issue_token"]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token just issued (given to the client once), for how many seconds, with what scopes."""

    token: str = field(repr=False)
    key_id: str
    expires_in: int
    scopes: tuple[str, ...]


async def issue_token(conn: Connection, wanted: TokenRequest, lifetime: int) -> IssuedToken:
    """A token for the key of `wanted`, valid `lifetime` seconds at most (see above)."""
    checked = await check_key(conn, wanted.key_id, wanted.secret)
    if checked is None:
        raise OAuthError("invalid_client", "unknown client or wrong secret", status=401)
    if not checked.works:
        raise OAuthError("invalid_grant", "the key was revoked or has expired")
    scopes = narrow_scopes(wanted.scopes, checked.caller.scopes)
    token = new_access_token()
    async with conn.transaction() as tx:
        await tx.execute(
            "DELETE FROM api_access_tokens WHERE key_id = $1 AND expires_at <= now()",
            wanted.key_id,
        )
        expires_in = await tx.fetchval(
            "INSERT INTO api_access_tokens (token_sha256, key_id, scopes, expires_at) "
            "SELECT $1, k.key_id, $3, least(now() + make_interval(secs => $4), k.expires_at) "
            f"FROM partner_api_keys k WHERE key_id = $2 AND {WORKS} "
            "RETURNING floor(extract(epoch FROM expires_at - now()))::integer",
            token.sha256,
            wanted.key_id,
            list(scopes),
            float(lifetime),
        )
        if expires_in is None:  # revoked or expired since it was checked
            raise OAuthError("invalid_grant", "the key was revoked or has expired")
        await stamp_last_used(tx, wanted.key_id)
    return IssuedToken(token.token, wanted.key_id, expires_in, scopes)


async def authenticate_token(conn: Connection, token: str) -> Caller | None:
    """The caller a bearer access token identifies, or None (malformed, unknown, expired, or
    its key revoked or expired)."""
    digest = token_digest(token)
    if digest is None:
        return None
    row = await conn.fetchrow(
        "SELECT k.partner_id, k.key_id, t.scopes FROM api_access_tokens t "
        "JOIN partner_api_keys k USING (key_id) WHERE t.token_sha256 = $1 "
        f"AND t.expires_at > now() AND {WORKS}",
        digest,
    )
    if row is None:
        return None
    return Caller(row["partner_id"], row["key_id"], frozenset(row["scopes"]), by_token=True)
