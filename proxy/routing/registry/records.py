"""Charger records in the `chargers` table: adding, reading, removing, rotating, resealing.

A record says where a charger's link goes, how it authenticates and, for managed chargers, the
credential presented upstream (sealed, see `sealing`); `Charger.route` opens it into the `Route`
the server uses. `ocpp_url` is the URL a charger is given.
"""

from __future__ import annotations

import ipaddress
import secrets
import string
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

from proxy.routing.registry.errors import (
    ChargerExists,
    ChargerNotFound,
    InvalidIdentity,
    NotManaged,
    SecretKeyError,
)
from proxy.routing.registry.sealing import KeyRing
from proxy.runtime.config import Config, Route
from proxy.store.connection import Connection
from proxy.wire.ocpp import identity_problem

_PASSWORD_ALPHABET = string.ascii_letters + string.digits
_PASSWORD_LENGTH = 32  # about 190 bits; within OCPP's 16..40 characters, no symbols to mistype


def validate_identity(identity: str) -> str:
    """`identity` if OCPP allows it in a charger URL (the handshake's own rule), else InvalidIdentity."""
    if (problem := identity_problem(identity)) is not None:
        raise InvalidIdentity(problem)
    return identity


def generate_password() -> str:
    """A strong random charger password."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(_PASSWORD_LENGTH))


@dataclass(frozen=True)
class Charger:
    """One registry row; the upstream secret stays sealed until `route` opens it."""

    identity: str
    upstream: str
    auth: Literal["passthrough", "managed"]
    password_hash: str | None = field(repr=False)
    upstream_username: str | None
    sealed_secret: bytes | None = field(repr=False)
    secret_key_id: str | None
    ca_bundle: str | None
    enabled: bool
    created_at: datetime
    updated_at: datetime

    @property
    def has_upstream_secret(self) -> bool:
        return self.sealed_secret is not None

    def route(self, keys: KeyRing | None) -> Route:
        """The route for the server, with the upstream secret opened (SecretKeyError if it cannot be)."""
        password = None
        if self.sealed_secret is not None and self.secret_key_id is not None:
            if keys is None:
                raise SecretKeyError(
                    f"the upstream secret of {self.identity!r} needs the secret key, which is not set"
                )
            password = keys.open(self.identity, self.sealed_secret, self.secret_key_id)
        return Route(
            upstream=self.upstream,
            auth=self.auth,
            password_hash=self.password_hash,
            upstream_username=self.upstream_username,
            upstream_password=password,
            ca_bundle=self.ca_bundle,
        )

    def summary(self) -> dict[str, Any]:
        """What `chargers list` shows: everything but the hash and the secret."""
        return {
            "identity": self.identity,
            "upstream": self.upstream,
            "auth": self.auth,
            "upstream_username": self.upstream_username,
            "upstream_secret": self.has_upstream_secret,
            "ca_bundle": self.ca_bundle,
            "enabled": self.enabled,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


COLUMNS = (
    "identity, upstream, auth, password_hash, upstream_username, upstream_secret, secret_key_id, "
    "ca_bundle, enabled, created_at, updated_at"
)


def charger_of(row: Any) -> Charger:
    return Charger(
        identity=row["identity"],
        upstream=row["upstream"],
        auth=row["auth"],
        password_hash=row["password_hash"],
        upstream_username=row["upstream_username"],
        sealed_secret=row["upstream_secret"],
        secret_key_id=row["secret_key_id"],
        ca_bundle=row["ca_bundle"],
        enabled=row["enabled"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def add_charger(
    conn: Connection, identity: str, route: Route, *, keys: KeyRing | None, enabled: bool = True
) -> Charger:
    """Insert `identity` with `route`; its `upstream_password` is sealed (keys are then required)."""
    validate_identity(identity)
    sealed, sealed_with = None, None
    if route.upstream_password is not None:
        if keys is None:
            raise SecretKeyError(
                "storing an upstream secret needs the secret key, which is not set"
            )
        sealed, sealed_with = keys.seal(identity, route.upstream_password)
    row = await conn.fetchrow(
        f"INSERT INTO chargers (identity, upstream, auth, password_hash, upstream_username, upstream_secret, "
        f"secret_key_id, ca_bundle, enabled) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        f"ON CONFLICT (identity) DO NOTHING RETURNING {COLUMNS}",
        identity,
        route.upstream,
        route.auth,
        route.password_hash,
        route.upstream_username,
        sealed,
        sealed_with,
        route.ca_bundle,
        enabled,
    )
    if row is None:
        raise ChargerExists(f"charger {identity!r} already exists")
    return charger_of(row)


async def get_charger(conn: Connection, identity: str) -> Charger | None:
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM chargers WHERE identity = $1", identity)
    return None if row is None else charger_of(row)


async def list_chargers(conn: Connection) -> list[Charger]:
    return [
        charger_of(row)
        for row in await conn.fetch(f"SELECT {COLUMNS} FROM chargers ORDER BY identity")
    ]


async def remove_charger(conn: Connection, identity: str) -> None:
    if (
        await conn.fetchval("DELETE FROM chargers WHERE identity = $1 RETURNING identity", identity)
        is None
    ):
        raise ChargerNotFound(f"no charger {identity!r} in the registry")


async def set_password_hash(conn: Connection, identity: str, password_hash: str) -> None:
    """Replace a managed charger's password hash (the old password stops working)."""
    auth = await conn.fetchval(
        "UPDATE chargers SET password_hash = CASE WHEN auth = 'managed' THEN $2 ELSE password_hash END "
        "WHERE identity = $1 RETURNING auth",
        identity,
        password_hash,
    )
    if auth is None:
        raise ChargerNotFound(f"no charger {identity!r} in the registry")
    if auth != "managed":
        raise NotManaged(
            f"charger {identity!r} uses passthrough authentication: it has no password here"
        )


async def reseal_secrets(conn: Connection, keys: KeyRing) -> int:
    """Seal again with the first key every secret sealed with another one; returns how many."""
    changed = 0
    async with conn.transaction() as tx:
        rows = await tx.fetch(
            "SELECT identity, upstream_secret, secret_key_id FROM chargers "
            "WHERE upstream_secret IS NOT NULL AND secret_key_id <> $1 FOR UPDATE",
            keys.primary_id,
        )
        for row in rows:
            plain = keys.open(row["identity"], row["upstream_secret"], row["secret_key_id"])
            sealed, sealed_with = keys.seal(row["identity"], plain)
            await tx.execute(
                "UPDATE chargers SET upstream_secret = $2, secret_key_id = $3 WHERE identity = $1",
                row["identity"],
                sealed,
                sealed_with,
            )
            changed += 1
    return changed


def public_base_url(config: Config) -> str | None:
    """The base URL chargers are given: `[registry] public_url`, else derived from `[proxy]`.

    None when `public_url` is unset and the proxy listens on a loopback or wildcard address:
    the derived URL would name localhost, which no charger can reach.
    """
    if config.registry.public_url:
        return config.registry.public_url.rstrip("/")
    host = config.proxy.host
    if host in ("", "0.0.0.0", "::", "localhost") or _is_loopback(host):
        return None
    scheme = "wss" if config.proxy.tls_cert else "ws"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{config.proxy.port}{config.proxy.path_prefix.rstrip('/')}"


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def ocpp_url(config: Config, identity: str) -> str | None:
    """The URL a charger is configured with (the base URL and its percent-encoded identity), or
    None when there is no usable base URL (see `public_base_url`)."""
    base = public_base_url(config)
    return None if base is None else f"{base}/{quote(identity, safe='')}"
