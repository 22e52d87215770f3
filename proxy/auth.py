"""Charger credentials: password hashes and the per-route authentication decision (sans-IO).

Hashes are `scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>`. Verifying a hash is deliberately
slow, so the server runs it in a worker thread, and `PasswordCache` remembers recent successes
(a keyed digest, never the password) so that a reconnect storm costs one scrypt per charger.
Credentials are never logged or put in error messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

from proxy.config import Route

_SCRYPT_LOG2_N = 14
_SCRYPT_R = 8
_SCRYPT_P = 1


def hash_password(password: str) -> str:
    """A new salted scrypt hash of `password`."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=1 << _SCRYPT_LOG2_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32
    )
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_LOG2_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches `encoded`; a malformed hash never matches."""
    try:
        scheme, log2_n, r, p, salt_b64, digest_b64 = encoded.split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(digest_b64, validate=True)
        actual = hashlib.scrypt(
            password.encode(),
            salt=salt,
            n=1 << int(log2_n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, binascii.Error, OverflowError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


def parse_basic(authorization: bytes | None) -> tuple[str, str] | None:
    """(username, password) of an HTTP Basic Authorization header value, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(b" ")
    if scheme.lower() != b"basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


def basic_header(username: str, password: str) -> bytes:
    """The Authorization header value for HTTP Basic."""
    return b"Basic " + base64.b64encode(f"{username}:{password}".encode())


class PasswordCache:
    """Remembers (identity, password, hash) triples that verified, as keyed digests, bounded."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._key = os.urandom(32)
        self._seen: dict[bytes, None] = {}
        self._max_entries = max_entries

    def _digest(self, identity: str, password: str, encoded: str) -> bytes:
        material = "\0".join((identity, password, encoded)).encode()
        return hmac.new(self._key, material, hashlib.sha256).digest()

    def __contains__(self, triple: tuple[str, str, str]) -> bool:
        return self._digest(*triple) in self._seen

    def add(self, triple: tuple[str, str, str]) -> None:
        if len(self._seen) >= self._max_entries:
            self._seen.pop(next(iter(self._seen)))
        self._seen[self._digest(*triple)] = None


@dataclass(frozen=True)
class AuthOutcome:
    """What to do with a charger's credentials: refuse with `status`, or send `upstream_authorization`."""

    status: int | None
    upstream_authorization: bytes | None = None
    # For `managed` routes: the password to verify against the route's hash (slow: off-thread).
    password_to_verify: str | None = None


def decide_auth(route: Route, identity: str, authorization: bytes | None) -> AuthOutcome:
    """The sans-IO part of authentication; a `password_to_verify` still needs `verify_password`."""
    if route.auth == "passthrough":
        return AuthOutcome(status=None, upstream_authorization=authorization)
    credentials = parse_basic(authorization)
    if credentials is None or credentials[0] != identity:
        return AuthOutcome(status=401)
    upstream = None
    if route.upstream_password is not None:
        upstream = basic_header(route.upstream_username or identity, route.upstream_password)
    return AuthOutcome(status=None, upstream_authorization=upstream, password_to_verify=credentials[1])
