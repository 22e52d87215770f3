"""OAuth2 access tokens, sans-IO: making one and the digest it is stored and found by.

A token reads `ert_<secret>` (32 random bytes, base64url), so a bearer credential tells by its
prefix whether it is a token or a key (`ere_...`, `proxy.api.keys`). Only the token's SHA-256
is stored: a random 256-bit value needs neither salt nor a slow hash, and an unsalted digest is
what lets a request's token be looked up.

Errors: `token_digest` returns None for anything that is not a well-formed token.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

__all__ = ["PREFIX", "NewToken", "new_access_token", "token_digest"]

PREFIX = "ert_"
_SECRET_BYTES = 32
_TOKEN = re.compile(r"ert_[A-Za-z0-9_-]{43}")


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token just made: `token` is given to the client once; `sha256` is what is stored."""

    token: str
    sha256: str


def new_access_token() -> NewToken:
    """A fresh random token."""
    secret = base64.urlsafe_b64encode(secrets.token_bytes(_SECRET_BYTES)).rstrip(b"=").decode()
    token = PREFIX + secret
    return NewToken(token, hashlib.sha256(token.encode()).hexdigest())


def token_digest(token: str) -> str | None:
    """The stored form (hex SHA-256) of a well-formed token, else None."""
    if _TOKEN.fullmatch(token) is None:
        return None
    return hashlib.sha256(token.encode()).hexdigest()
