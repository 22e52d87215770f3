"""Partner API keys, sans-IO: making one, reading one from a request, checking it, and scopes.

A key reads `ere_<key id>_<secret>`: the key id (12 characters a-z 0-9) is visible and names the
key in lists and the audit log; the secret is 32 random bytes (base64url). Only a salted
SHA-256 of the secret is stored (`proxy.routing.auth.hash_generated_password`: a random 256-bit
secret needs no slow hash), compared in constant time.

Errors: `parse_key` returns None for anything that is not a well-formed key; `parse_scopes`
raises ValueError naming an unknown scope.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass

from proxy.routing.auth import hash_generated_password, is_fast_hash, verify_password

__all__ = [
    "SCOPES",
    "NewKey",
    "bearer_token",
    "check_secret",
    "new_key",
    "parse_key",
    "parse_scopes",
]

# What a key may do; a route names the scope it needs.
SCOPES = (
    "customers:write",
    "customers:read",
    "chargers:write",
    "chargers:read",
    "sessions:read",
    "sessions:write",  # supply sessions of the partner's chargers (a batch, a CSV import)
    "statements:read",
    "payouts:read",
    "webhooks:write",
    "scan:write",
    "scan:read",
    "keys:write",  # rotate the key the call is made with
)

_PREFIX = "ere_"
_KEY_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_KEY_ID_CHARS = 12
_SECRET_BYTES = 32
_KEY = re.compile(r"ere_([a-z0-9]{12})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: `key` is shown once; `secret_hash` is what is stored."""

    key_id: str
    key: str
    secret_hash: str


def new_key(key_id: str | None = None) -> NewKey:
    """A fresh random key (a fresh secret for `key_id`, if given)."""
    if key_id is None:
        key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(_KEY_ID_CHARS))
    secret = base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)).rstrip(b"=").decode()
    return NewKey(key_id, f"{_PREFIX}{key_id}_{secret}", hash_generated_password(secret))


def parse_key(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _KEY.fullmatch(key)
    return None if match is None else (match[1], match[2])


def check_secret(secret: str, secret_hash: str) -> bool:
    """Whether `secret` matches the stored hash (constant-time; a malformed hash never matches)."""
    return is_fast_hash(secret_hash) and verify_password(secret, secret_hash)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def parse_scopes(text: str) -> tuple[str, ...]:
    """Comma-separated scopes, each known, without repeats, in `SCOPES` order."""
    wanted = {part.strip() for part in text.split(",") if part.strip()}
    if not wanted:
        raise ValueError(f"give at least one scope: {', '.join(SCOPES)}")
    unknown = sorted(wanted.difference(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope {unknown[0]!r}; use {', '.join(SCOPES)}")
    return tuple(scope for scope in SCOPES if scope in wanted)
