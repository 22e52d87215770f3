"""The partner users of the dashboard: added, listed and removed by the operator, checked at log-in.

A user belongs to one partner, logs in with an e-mail address (unique among the users not
removed; kept in lower case) and a password of `MIN_PASSWORD_CHARS` or more, stored only as a
salted scrypt hash (`proxy.routing.auth.hash_password`), and has a role: `admin` or `viewer`
(`proxy.api.dashboard.roles`). Removing a user ends their log-in sessions; the row stays, so the
audit log can name them.

`log_in` checks an e-mail address and a password. scrypt runs in a worker thread, a few at a
time (`_HASHING`), and runs for an unknown address too, so the answer's timing does not tell
which addresses exist. `MAX_FAILURES` failed log-ins in a row lock the user for `LOCK_MINUTES`
(by the database's clock); while locked, even the right password is refused. Callers show one
answer for every refusal.

Errors: `AdminInputError` naming the field (an unknown partner or user, a malformed address, a
role or password that breaks the rules, an address in use); database errors pass through.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import trio

from proxy.api.dashboard.roles import ROLES
from proxy.ere.admin.validation import AdminInputError
from proxy.ere.core.email_address import is_plain_address
from proxy.routing.auth import hash_password, verify_password
from proxy.store.connection import Connection

__all__ = [
    "LOCK_MINUTES",
    "MAX_FAILURES",
    "MAX_PASSWORD_CHARS",
    "MIN_PASSWORD_CHARS",
    "User",
    "add_user",
    "check_password",
    "hash_user_password",
    "list_users",
    "log_in",
    "remove_user",
    "validate_email",
    "validate_role",
]

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024
MAX_FAILURES = 5
LOCK_MINUTES = 15
# scrypt costs 16 MiB and tens of milliseconds: at most this many at once per process.
_HASHING = trio.CapacityLimiter(4)


@dataclass(frozen=True, slots=True)
class User:
    """A partner user who may log in."""

    user_id: int
    partner_id: str
    email: str
    role: str


def validate_email(text: str) -> str:
    """A plain `local@domain.tld` address, in lower case."""
    email = text.strip().lower()
    if not is_plain_address(email):
        raise AdminInputError("email: not a plain address like someone@example.nl")
    return email


def validate_role(text: str) -> str:
    if text not in ROLES:
        raise AdminInputError(f"--role: one of {', '.join(ROLES)}")
    return text


def check_password(password: str) -> str:
    """The password if it is long enough and not too long (no other rule: length is strength)."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise AdminInputError(
            f"password: {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters, "
            f"got {len(password)}"
        )
    return password


def hash_user_password(password: str) -> str:
    """The salted scrypt hash stored for a new user's password (checked first)."""
    return hash_password(check_password(password))


async def add_user(
    conn: Connection, partner_id: str, email: str, password_hash: str, role: str
) -> dict[str, Any]:
    """Add a user of `partner_id` (see the module docstring); returns it."""
    email, role = validate_email(email), validate_role(role)
    async with conn.transaction() as tx:
        if not await tx.fetchval("SELECT 1 FROM partners WHERE partner_id = $1", partner_id):
            raise AdminInputError(f"partner id: no partner {partner_id!r}")
        if await tx.fetchval(
            "SELECT 1 FROM partner_users WHERE email = $1 AND removed_at IS NULL", email
        ):
            raise AdminInputError(f"email: {email} is a user already")
        row = await tx.fetchrow(
            "INSERT INTO partner_users (partner_id, email, password_hash, role) "
            "VALUES ($1, $2, $3, $4) RETURNING user_id, partner_id, email, role, created_at",
            partner_id,
            email,
            password_hash,
            role,
        )
    return dict(row)


async def list_users(conn: Connection, partner_id: str) -> list[dict[str, Any]]:
    """The partner's users (not removed) by e-mail address, with their lock state."""
    async with conn.transaction(isolation="repeatable_read", readonly=True) as tx:
        if not await tx.fetchval("SELECT 1 FROM partners WHERE partner_id = $1", partner_id):
            raise AdminInputError(f"partner id: no partner {partner_id!r}")
        rows = await tx.fetch(
            "SELECT email, role, created_at, failed_attempts, "
            "CASE WHEN locked_until > now() THEN locked_until END AS locked_until "
            "FROM partner_users WHERE partner_id = $1 AND removed_at IS NULL ORDER BY email",
            partner_id,
        )
    return [dict(row) for row in rows]


async def remove_user(conn: Connection, partner_id: str, email: str) -> dict[str, Any]:
    """Remove the partner's user `email` and end their sessions; returns it."""
    async with conn.transaction() as tx:
        row = await tx.fetchrow(
            "UPDATE partner_users SET removed_at = now() "
            "WHERE partner_id = $1 AND email = $2 AND removed_at IS NULL "
            "RETURNING user_id, partner_id, email, role",
            partner_id,
            email,
        )
        if row is None:
            raise AdminInputError(f"email: partner {partner_id} has no user {email}")
        await tx.execute("DELETE FROM dashboard_sessions WHERE user_id = $1", row["user_id"])
    return dict(row)


@functools.cache
def _unknown_user_hash() -> str:
    """A hash to check passwords for unknown addresses against (never matched by design)."""
    return hash_password("an address nobody has")


async def _verify(password: str, stored: str) -> bool:
    return await trio.to_thread.run_sync(
        verify_password, password, stored, limiter=_HASHING, abandon_on_cancel=True
    )


async def log_in(conn: Connection, email: str, password: str) -> User | None:
    """The user `email` and `password` name, if the password is theirs and they are not
    locked; else None, counting a wrong password against the user."""
    if not 0 < len(password) <= MAX_PASSWORD_CHARS or len(email) > 254:
        return None
    email = email.strip().lower()
    row = await conn.fetchrow(
        "SELECT password_hash FROM partner_users WHERE email = $1 AND removed_at IS NULL", email
    )
    if row is None:
        await trio.to_thread.run_sync(_unknown_user_hash, limiter=_HASHING)
        await _verify(password, _unknown_user_hash())
        return None
    if not await _verify(password, row["password_hash"]):
        await conn.execute(
            "UPDATE partner_users SET "
            "failed_attempts = CASE WHEN failed_attempts + 1 >= $2 THEN 0 "
            "ELSE failed_attempts + 1 END, "
            "locked_until = CASE WHEN failed_attempts + 1 >= $2 THEN now() + $3::interval "
            "ELSE locked_until END "
            "WHERE email = $1 AND removed_at IS NULL AND (locked_until IS NULL OR locked_until <= now())",
            email,
            MAX_FAILURES,
            timedelta(minutes=LOCK_MINUTES),
        )
        return None
    found = await conn.fetchrow(
        "UPDATE partner_users SET failed_attempts = 0 "
        "WHERE email = $1 AND removed_at IS NULL AND (locked_until IS NULL OR locked_until <= now()) "
        "RETURNING user_id, partner_id, email, role",
        email,
    )
    return None if found is None else User(**dict(found))
