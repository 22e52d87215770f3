"""Charger credentials: password hashes and the per-route authentication decision (sans-IO).

Two hash schemes. A password a person chose is hashed with scrypt,
`scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>`: verifying it is deliberately slow, so the server
runs it in a worker thread, and `PasswordCache` remembers recent successes (a keyed digest, never
the password) so that a reconnect storm costs one scrypt per charger. A password the proxy
generated (`registry.records.generate_password`: 32 characters of 62, about 190 bits) cannot be
guessed however fast each guess is, so stretching it buys nothing: it is hashed with salted
SHA-256, `sha256$<salt b64>$<hash b64>` (`hash_generated_password`), and checked in microseconds,
so that a flood of wrong passwords never delays a charger that knows its own.
Credentials are never logged or put in error messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

from proxy.runtime.config import Route

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


# Generated passwords are at least this long (from 62 characters: over 140 bits).
MIN_GENERATED_LENGTH = 24
_FAST_SCHEME = "sha256"


def hash_generated_password(password: str) -> str:
    """A salted SHA-256 hash of a password the proxy generated (never of one a person chose).

    Raises ValueError for a password shorter than `MIN_GENERATED_LENGTH`.
    """
    if len(password) < MIN_GENERATED_LENGTH:
        raise ValueError(f"a generated password has at least {MIN_GENERATED_LENGTH} characters")
    salt = os.urandom(16)
    digest = hashlib.sha256(salt + password.encode()).digest()
    b64 = base64.b64encode
    return f"{_FAST_SCHEME}${b64(salt).decode()}${b64(digest).decode()}"


def is_fast_hash(encoded: str) -> bool:
    """Whether `encoded` is checked in microseconds (a generated password's hash)."""
    return encoded.startswith(_FAST_SCHEME + "$")


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches `encoded` (either scheme); a malformed hash never matches."""
    if is_fast_hash(encoded):
        return _verify_fast(password, encoded)
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


def _verify_fast(password: str, encoded: str) -> bool:
    try:
        _, salt_b64, digest_b64 = encoded.split("$")
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(digest_b64, validate=True)
    except (ValueError, binascii.Error):
        return False
    actual = hashlib.sha256(salt + password.encode()).digest()
    return len(expected) == len(actual) and hmac.compare_digest(actual, expected)


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


def decide_auth(
    route: Route, identity: str, authorization: bytes | None, certified: bool = False
) -> AuthOutcome:
    """The sans-IO part of authentication; a `password_to_verify` still needs `verify_password`.

    `certified`: the charger presented a client certificate bound to `identity`
    (`client_cert.bind`). A security-profile-3 route needs it (403 without, never a fallback to
    Basic) and then checks no password: the back-office gets the charger's header (passthrough)
    or the route's upstream credentials (managed).
    """
    if route.security_profile == 3:
        if not certified:
            return AuthOutcome(status=403)
        if route.auth == "passthrough":
            return AuthOutcome(status=None, upstream_authorization=authorization)
        return AuthOutcome(status=None, upstream_authorization=_upstream_basic(route, identity))
    if route.auth == "passthrough":
        return AuthOutcome(status=None, upstream_authorization=authorization)
    credentials = parse_basic(authorization)
    if credentials is None or credentials[0] != identity:
        return AuthOutcome(status=401)
    return AuthOutcome(
        status=None,
        upstream_authorization=_upstream_basic(route, identity),
        password_to_verify=credentials[1],
    )


def _upstream_basic(route: Route, identity: str) -> bytes | None:
    if route.upstream_password is None:
        return None
    return basic_header(route.upstream_username or identity, route.upstream_password)


# -- under attack: failure budgets, recent successes (sans-IO; `now` is passed in) ----------------


class TokenBuckets:
    """One token bucket per key (a client address, an identity), for failed attempts.

    A failure takes a token (`take`); a key with less than one token left is refused until its
    bucket refills at `refill_per_second` (`retry_after` says when). Successes take nothing, so
    chargers that know their password are not limited. Memory is bounded: beyond `max_keys`
    the least recently used key is forgotten (it starts full again).
    """

    def __init__(self, capacity: float, refill_per_second: float, max_keys: int = 100_000) -> None:
        self.capacity = capacity
        self.refill = refill_per_second
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key → (tokens, at)

    def _tokens(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + max(0.0, now - at) * self.refill)

    def allows(self, key: str, now: float) -> bool:
        return self._tokens(key, now) >= 1.0

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until `key` has a whole token again (0 when it has one)."""
        return max(0.0, (1.0 - self._tokens(key, now)) / self.refill)

    def take(self, key: str, now: float) -> None:
        tokens = max(0.0, self._tokens(key, now) - 1.0)
        self._buckets.pop(key, None)
        if len(self._buckets) >= self.max_keys:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = (tokens, now)

    def __len__(self) -> int:
        return len(self._buckets)


class RecentSuccesses:
    """Keys (identities; identity and address pairs) that proved their password within `window`
    seconds; bounded, oldest forgotten. See `admission.py` for what they earn."""

    def __init__(self, window: float, max_entries: int = 100_000) -> None:
        self.window = window
        self.max_entries = max_entries
        self._seen: dict[str, float] = {}

    def add(self, identity: str, now: float) -> None:
        self._seen.pop(identity, None)
        if len(self._seen) >= self.max_entries:
            del self._seen[next(iter(self._seen))]
        self._seen[identity] = now

    def __call__(self, identity: str, now: float) -> bool:
        at = self._seen.get(identity)
        return at is not None and now - at <= self.window


# -- passthrough: a verifier of the credential the back-office last accepted -------------------

_VERIFIER_CONTEXT = b"ere-proxy credential verifier v1\0"


class CredentialVerifier:
    """Keyed digests (HMAC-SHA256) of the Authorization headers back-offices accepted.

    A `passthrough` charger's credential is checked by its back-office; while that back-office
    is unreachable the proxy can only admit a charger that presents the header the back-office
    last accepted for its identity. What is stored is this digest, never the header; it is keyed
    with a secret that is not in the database, so a copy of the database alone reveals nothing
    and cannot be brute-forced. Computing one costs microseconds, so a reconnect storm costs no
    slow hashing. `keys` maps key id → 32-byte key; the first one makes new digests, all verify
    (key rotation).
    """

    def __init__(self, keys: dict[str, bytes]) -> None:
        if not keys:
            raise ValueError("a credential verifier needs at least one key")
        self._keys = dict(keys)
        self.primary_id = next(iter(self._keys))

    @classmethod
    def random(cls) -> CredentialVerifier:
        """A verifier with a key of this process only (digests do not outlive it)."""
        key = os.urandom(32)
        return cls({hashlib.sha256(key).hexdigest()[:16]: key})

    def _digest(self, key: bytes, identity: str, authorization: bytes) -> bytes:
        material = _VERIFIER_CONTEXT + identity.encode() + b"\0" + authorization
        return hmac.new(key, material, hashlib.sha256).digest()

    def digest(self, identity: str, authorization: bytes) -> tuple[bytes, str]:
        """(digest, key id) of `authorization` for `identity`, with the primary key."""
        return self._digest(self._keys[self.primary_id], identity, authorization), self.primary_id

    def current(
        self, identity: str, authorization: bytes, stored: tuple[bytes, str] | None
    ) -> bool:
        """True when `stored` is already this header's digest under the primary key."""
        return (
            stored is not None
            and stored[1] == self.primary_id
            and hmac.compare_digest(stored[0], self.digest(identity, authorization)[0])
        )

    def matches(
        self, identity: str, authorization: bytes | None, stored: tuple[bytes, str] | None
    ) -> bool:
        """True when `authorization` is the header whose digest is `stored` (under any key we hold)."""
        if not authorization or stored is None:
            return False
        key = self._keys.get(stored[1])
        return key is not None and hmac.compare_digest(
            stored[0], self._digest(key, identity, authorization)
        )
