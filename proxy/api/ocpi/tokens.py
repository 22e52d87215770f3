"""OCPI credentials tokens, sans-IO: making one, storing it, reading it from a request.

A token we give out (A by the operator, C at registration) is 32 random bytes in base64url: 43
printable ASCII characters, within the spec's 64. Only its SHA-256 is stored: a random 256-bit
token needs no slow hash, and the digest finds its platform in one indexed lookup.

OCPI 2.2.1 sends `Authorization: Token <base64 of the token>`; many 2.1.1 and 2.2 platforms
send the token itself. `presented` gives both readings of the header, and the lookup tries each:
a header that is neither (another scheme, no token, over 256 characters) gives none.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets

__all__ = ["MAX_TOKEN", "authorization", "digest", "new_token", "presented", "valid_token"]

MAX_TOKEN = 64  # the Credentials object's token: string(64)
_MAX_HEADER = 256


def new_token() -> str:
    """A fresh credentials token."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


def digest(token: str) -> str:
    """What is stored of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def valid_token(token: str) -> bool:
    """A token as the Credentials object allows: 1-64 printable ASCII, no whitespace."""
    return 0 < len(token) <= MAX_TOKEN and all("!" <= ch <= "~" for ch in token)


def authorization(token: str) -> str:
    """The Authorization header's value for `token`, as OCPI 2.2.1 writes it."""
    return "Token " + base64.b64encode(token.encode()).decode()


def presented(header: str | None) -> list[str]:
    """The tokens an Authorization header may carry (see the module docstring)."""
    if header is None or len(header) > _MAX_HEADER:
        return []
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "token" or not valid_token(value):
        return []
    found = [value]
    try:
        decoded = base64.b64decode(value, validate=True).decode("ascii")
    except (binascii.Error, ValueError):
        return found
    if valid_token(decoded) and decoded != value:
        found.insert(0, decoded)
    return found
