"""Log-in sessions of the dashboard, kept on the server.

`start_session` makes a session for a user who logged in: a random token for the browser's
cookie (only its SHA-256 is stored, so a copy of the database opens no session) and a random
CSRF secret that every form of the session carries. `find_session` gives the signed-in user a
token belongs to while the session has not expired and the user is not removed; `end_session`
ends one (log-out). A session lasts `[api] dashboard_session_minutes` from its start, by the
database's clock; expired sessions are deleted as new ones start.

Errors: database errors pass through; a malformed token is simply no session.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from proxy.api.dashboard.users import User
from proxy.store.connection import Connection

__all__ = ["SignedIn", "end_session", "find_session", "start_session"]

_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
# Expired sessions deleted per log-in: enough to keep up, never a long statement.
_PURGE = 100


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A live session: its user, the CSRF secret its forms carry, and when it ends."""

    user: User
    csrf: str
    expires_at: datetime


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def start_session(conn: Connection, user: User, minutes: int) -> tuple[str, SignedIn]:
    """(the token for the cookie, the session) of a new session of `user`."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    async with conn.transaction() as tx:
        await tx.execute(
            "DELETE FROM dashboard_sessions WHERE ctid = ANY(ARRAY("
            "SELECT ctid FROM dashboard_sessions WHERE expires_at <= now() LIMIT $1))",
            _PURGE,
        )
        expires_at = await tx.fetchval(
            "INSERT INTO dashboard_sessions (token_sha256, user_id, csrf_secret, expires_at) "
            "VALUES ($1, $2, $3, now() + $4::interval) RETURNING expires_at",
            _digest(token),
            user.user_id,
            csrf,
            timedelta(minutes=minutes),
        )
    return token, SignedIn(user, csrf, expires_at)


async def find_session(conn: Connection, token: str) -> SignedIn | None:
    """The live session of `token`, or None."""
    if not _TOKEN.fullmatch(token):
        return None
    row = await conn.fetchrow(
        "SELECT u.user_id, u.partner_id, u.email, u.role, s.csrf_secret, s.expires_at "
        "FROM dashboard_sessions s JOIN partner_users u USING (user_id) "
        "WHERE s.token_sha256 = $1 AND s.expires_at > now() AND u.removed_at IS NULL",
        _digest(token),
    )
    if row is None:
        return None
    user = User(row["user_id"], row["partner_id"], row["email"], row["role"])
    return SignedIn(user, row["csrf_secret"], row["expires_at"])


async def end_session(conn: Connection, token: str) -> None:
    """End the session of `token`, if there is one."""
    if _TOKEN.fullmatch(token):
        await conn.execute("DELETE FROM dashboard_sessions WHERE token_sha256 = $1", _digest(token))
