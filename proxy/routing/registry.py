"""The charger registry in the database: records, sealed upstream secrets, and a router over them.

A charger row says where its link goes (`upstream`), how the charger authenticates (`passthrough`
or `managed` with a scrypt `password_hash`) and, for managed chargers, which credential the proxy
presents upstream. Upstream secrets are sealed with AES-256-GCM (the identity as associated data,
so a sealed value cannot be moved to another row) under a key that lives only in the environment
variable named by `[registry] secret_key_env`; each row records the id of the key that sealed it.
The variable may hold several comma-separated keys: the first seals, all open, so keys rotate by
prepending a new key, running `ere-proxy chargers reseal`, then dropping the old one.

`DatabaseRouter` answers `lookup` from an in-memory snapshot (the accept path never waits for the
database); `run` loads it, then refreshes it every `refresh_interval` seconds (rows whose
`updated_at` moved, plus a cheap count to notice removals) and rereads everything every
`full_reload_interval`. Precedence of a lookup:

1. a row in the database: its route, or refused (404) when the row is disabled or its upstream
   secret cannot be opened (the problem is logged once, without the secret);
2. the TOML `[chargers."<identity>"]` table;
3. the TOML `[default_route]`;
4. refused (404).

`chargers_command` implements `ere-proxy chargers ...`; the one-time credential output there is
the only place a secret is ever printed.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import hashlib
import json
import logging
import os
import re
import secrets
import string
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, TextIO, cast
from urllib.parse import quote

import msgspec
import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from proxy.routing.auth import hash_password
from proxy.runtime.config import Config, Route
from proxy.wire.handshake import MAX_IDENTITY_LENGTH
from proxy.routing.router import StaticRouter
from proxy.store.connection import Connection
from proxy.store.db import DATABASE_ERRORS, Database, open_database

log = logging.getLogger("proxy.registry")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NONCE_BYTES = 12
# Rows changed this long before the last look are fetched again, for transactions that were
# still open (their updated_at lies before they became visible).
_OVERLAP = timedelta(seconds=30)
_PASSWORD_ALPHABET = string.ascii_letters + string.digits
_PASSWORD_LENGTH = 32  # about 190 bits; within OCPP's 16..40 characters, no symbols to mistype


class RegistryError(Exception):
    """A registry operation that cannot be done; the message names the charger, never a secret."""


class InvalidIdentity(RegistryError, ValueError):
    pass


class ChargerExists(RegistryError):
    pass


class ChargerNotFound(RegistryError):
    pass


class NotManaged(RegistryError):
    pass


class SecretKeyError(RegistryError):
    """The secret key is missing, malformed, or not the one that sealed a value."""


def validate_identity(identity: str) -> str:
    """`identity` if OCPP allows it in a charger URL (the handshake's own rule), else InvalidIdentity."""
    if not identity or len(identity) > MAX_IDENTITY_LENGTH:
        raise InvalidIdentity(f"identity must be 1 to {MAX_IDENTITY_LENGTH} characters")
    if ":" in identity or _CONTROL.search(identity) or identity in (".", ".."):
        raise InvalidIdentity("identity must not contain ':' or control characters, nor be '.' or '..'")
    return identity


def generate_password() -> str:
    """A strong random charger password."""
    return "".join(secrets.choice(_PASSWORD_ALPHABET) for _ in range(_PASSWORD_LENGTH))


def generate_key() -> str:
    """A new secret key, in the form the key environment variable takes."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def key_id(key: bytes) -> str:
    """A short, non-secret name of a key, stored next to what it sealed."""
    return hashlib.sha256(b"ere-proxy secret key id\0" + key).hexdigest()[:16]


class KeyRing:
    """The keys that seal and open upstream secrets; the first one seals."""

    def __init__(self, keys: Sequence[bytes], source: str = "the secret key") -> None:
        if not keys:
            raise SecretKeyError(f"{source} holds no key")
        self.source = source
        self._ciphers = {key_id(key): AESGCM(key) for key in keys}
        self.primary_id = key_id(keys[0])
        self._keys = list(keys)

    def derive(self, purpose: bytes) -> dict[str, bytes]:
        """A 32-byte sub-key per key for `purpose` (HKDF-SHA256), by the key's id, primary first."""
        return {key_id(key): HKDF(hashes.SHA256(), 32, None, purpose).derive(key) for key in self._keys}

    @classmethod
    def parse(cls, text: str, source: str = "the secret key") -> KeyRing:
        """Keys from comma-separated base64 (standard or URL-safe) of 32 bytes each."""
        keys = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            try:
                key = base64.b64decode(part.replace("-", "+").replace("_", "/"), validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) != 32:
                raise SecretKeyError(
                    f"{source} must be base64 of 32 random bytes (see `ere-proxy chargers generate-key`)"
                )
            keys.append(key)
        return cls(keys, source)

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str] | None = None) -> KeyRing | None:
        """The keys in environment variable `name`, or None when it is unset or empty."""
        text = (os.environ if environ is None else environ).get(name, "")
        return cls.parse(text, f"environment variable {name}") if text.strip() else None

    def seal(self, identity: str, secret: str) -> tuple[bytes, str]:
        """(nonce + ciphertext, key id) of `secret`, bound to `identity`."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self.primary_id].encrypt(nonce, secret.encode(), identity.encode())
        return nonce + sealed, self.primary_id

    def open(self, identity: str, sealed: bytes, sealed_with: str) -> str:
        cipher = self._ciphers.get(sealed_with)
        if cipher is None:
            raise SecretKeyError(
                f"the upstream secret of {identity!r} was sealed with key {sealed_with}, "
                f"which {self.source} does not hold"
            )
        try:
            plain = cipher.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], identity.encode())
        except InvalidTag:
            raise SecretKeyError(f"the upstream secret of {identity!r} does not open with key {sealed_with}") from None
        return plain.decode()


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
                raise SecretKeyError(f"the upstream secret of {self.identity!r} needs the secret key, which is not set")
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


_COLUMNS = (
    "identity, upstream, auth, password_hash, upstream_username, upstream_secret, secret_key_id, "
    "ca_bundle, enabled, created_at, updated_at"
)


def _charger(row: Any) -> Charger:
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
            raise SecretKeyError("storing an upstream secret needs the secret key, which is not set")
        sealed, sealed_with = keys.seal(identity, route.upstream_password)
    row = await conn.fetchrow(
        f"INSERT INTO chargers (identity, upstream, auth, password_hash, upstream_username, upstream_secret, "
        f"secret_key_id, ca_bundle, enabled) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
        f"ON CONFLICT (identity) DO NOTHING RETURNING {_COLUMNS}",
        identity, route.upstream, route.auth, route.password_hash, route.upstream_username, sealed,
        sealed_with, route.ca_bundle, enabled,
    )  # fmt: skip
    if row is None:
        raise ChargerExists(f"charger {identity!r} already exists")
    return _charger(row)


async def get_charger(conn: Connection, identity: str) -> Charger | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM chargers WHERE identity = $1", identity)
    return None if row is None else _charger(row)


async def list_chargers(conn: Connection) -> list[Charger]:
    return [_charger(row) for row in await conn.fetch(f"SELECT {_COLUMNS} FROM chargers ORDER BY identity")]


async def remove_charger(conn: Connection, identity: str) -> None:
    if await conn.fetchval("DELETE FROM chargers WHERE identity = $1 RETURNING identity", identity) is None:
        raise ChargerNotFound(f"no charger {identity!r} in the registry")


async def set_password_hash(conn: Connection, identity: str, password_hash: str) -> None:
    """Replace a managed charger's password hash (the old password stops working)."""
    auth = await conn.fetchval(
        "UPDATE chargers SET password_hash = CASE WHEN auth = 'managed' THEN $2 ELSE password_hash END "
        "WHERE identity = $1 RETURNING auth",
        identity, password_hash,
    )  # fmt: skip
    if auth is None:
        raise ChargerNotFound(f"no charger {identity!r} in the registry")
    if auth != "managed":
        raise NotManaged(f"charger {identity!r} uses passthrough authentication: it has no password here")


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
                row["identity"], sealed, sealed_with,
            )  # fmt: skip
            changed += 1
    return changed


def public_base_url(config: Config) -> str:
    """The base URL chargers are given: `[registry] public_url`, else derived from `[proxy]`."""
    if config.registry.public_url:
        return config.registry.public_url.rstrip("/")
    scheme = "wss" if config.proxy.tls_cert else "ws"
    host = config.proxy.host
    if host in ("", "0.0.0.0", "::"):
        host = "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{config.proxy.port}{config.proxy.path_prefix.rstrip('/')}"


def ocpp_url(config: Config, identity: str) -> str:
    """The URL a charger is configured with: the base URL and its percent-encoded identity."""
    return f"{public_base_url(config)}/{quote(identity, safe='')}"


class DatabaseRouter:
    """A `Router` over the registry table with the TOML routes as fallback (see the module docstring)."""

    def __init__(self, config: Config, keys: KeyRing | None) -> None:
        self._fallback = StaticRouter(config)
        self._settings = config.registry
        self._keys = keys
        # identity -> route, or None for a row that refuses its charger
        self._routes: dict[str, Route | None] = {}
        self._problems: dict[str, str] = {}  # identity -> the problem last logged
        self._since: datetime | None = None  # database time of the last look
        self._wakeup = trio.Event()

    def lookup(self, identity: str) -> Route | None:
        try:
            return self._routes[identity]
        except KeyError:
            return self._fallback.lookup(identity)

    def replace(self, config: Config) -> None:
        """Take the TOML routes of a reloaded configuration (the database rows are unaffected)."""
        self._fallback.replace(config)

    def refresh_soon(self) -> None:
        """Make `run` look at the database now rather than at the next interval."""
        self._wakeup.set()

    def __len__(self) -> int:
        """How many chargers the database snapshot holds."""
        return len(self._routes)

    async def run(self, db: Database, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the snapshot (errors propagate), report started, then keep it fresh until cancelled."""
        await self.reload(db)
        task_status.started()
        last_full = trio.current_time()
        while True:
            with trio.move_on_after(self._settings.refresh_interval):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            try:
                if trio.current_time() - last_full >= self._settings.full_reload_interval:
                    await self.reload(db)
                    last_full = trio.current_time()
                else:
                    await self.refresh(db)
            except DATABASE_ERRORS as exc:
                log.warning(
                    "charger registry refresh failed; keeping the last snapshot",
                    extra={"error": f"{type(exc).__name__}: {exc}"},
                )

    async def reload(self, db: Database) -> None:
        """Replace the snapshot with every row of the table."""
        async with db.transaction(isolation="repeatable_read", readonly=True) as conn:
            now = await conn.fetchval("SELECT now()")
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM chargers")
        routes = {row["identity"]: self._entry(_charger(row)) for row in rows}
        self._routes, self._since = routes, now
        for identity in set(self._problems) - set(routes):
            del self._problems[identity]

    async def refresh(self, db: Database) -> None:
        """Apply the rows changed since the last look, and drop rows that are gone."""
        if self._since is None:
            await self.reload(db)
            return
        async with db.transaction(isolation="repeatable_read", readonly=True) as conn:
            now = await conn.fetchval("SELECT now()")
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM chargers WHERE updated_at > $1", self._since - _OVERLAP
            )
            changed = {row["identity"]: self._entry(_charger(row)) for row in rows}
            known = set(self._routes) | set(changed)
            gone: set[str] = set()
            if await conn.fetchval("SELECT count(*) FROM chargers") != len(known):
                present = {row["identity"] for row in await conn.fetch("SELECT identity FROM chargers")}
                gone = known - present
        self._routes.update(changed)
        for identity in gone:
            self._routes.pop(identity, None)
            self._problems.pop(identity, None)
        self._since = now

    def _entry(self, charger: Charger) -> Route | None:
        if not charger.enabled:
            return None
        try:
            route = charger.route(self._keys)
        except (RegistryError, ValueError) as exc:
            problem = str(exc)
            if self._problems.get(charger.identity) != problem:
                log.error(
                    "charger refused: its registry row is unusable",
                    extra={"identity": charger.identity, "error": problem},
                )
                self._problems[charger.identity] = problem
            return None
        self._problems.pop(charger.identity, None)
        return route


# --- `ere-proxy chargers ...` ----------------------------------------------------------------

EXIT_OK, EXIT_CONFLICT, EXIT_USAGE = 0, 1, 2


def add_chargers_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `chargers` subcommand group; `common` carries `--config`."""
    chargers = sub.add_parser("chargers", help="manage the charger registry in the database")
    actions = chargers.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", parents=[common], help="register a charger; prints its URL and credentials once")
    add.add_argument("identity")
    add.add_argument("--upstream", required=True, help="ws:// or wss:// base URL of the charger's back-office")
    add.add_argument("--managed", action="store_true", help="the proxy checks a password it generates for the charger")
    add.add_argument("--upstream-username", help="username sent upstream (managed; default: the identity)")
    secret = add.add_mutually_exclusive_group()
    secret.add_argument(
        "--upstream-password-env", metavar="VAR", help="environment variable holding the upstream password"
    )
    secret.add_argument("--upstream-password-stdin", action="store_true", help="read the upstream password from stdin")
    add.add_argument("--ca-bundle", help="CA bundle (PEM) for a private upstream CA")
    add.add_argument("--disabled", action="store_true", help="register the charger but refuse it for now")
    add.add_argument("--json", action="store_true", help="print the result as JSON")
    listing = actions.add_parser("list", parents=[common], help="list registered chargers (never their secrets)")
    listing.add_argument("--json", action="store_true")
    remove = actions.add_parser("remove", parents=[common], help="delete a charger from the registry")
    remove.add_argument("identity")
    rotate = actions.add_parser(
        "rotate-password", parents=[common], help="issue a new charger password; prints it once"
    )
    rotate.add_argument("identity")
    rotate.add_argument("--json", action="store_true")
    actions.add_parser("reseal", parents=[common], help="seal every upstream secret again with the first key")
    actions.add_parser("generate-key", parents=[common], help="print a new random secret key")


def _fail(message: str, code: int, stderr: TextIO) -> int:
    print(f"ere-proxy: {message}", file=stderr)
    return code


def _read_upstream_password(args: argparse.Namespace, stdin: TextIO) -> str | None:
    if args.upstream_password_env:
        value = os.environ.get(args.upstream_password_env)
        if not value:
            raise ValueError(f"environment variable {args.upstream_password_env} is not set")
        return value
    if args.upstream_password_stdin:
        value = getpass.getpass("upstream password: ") if stdin.isatty() else stdin.readline().rstrip("\r\n")
        if not value:
            raise ValueError("no upstream password on stdin")
        return value
    return None


def _credentials(config: Config, identity: str, auth: str, password: str | None) -> dict[str, Any]:
    shown: dict[str, Any] = {"identity": identity, "ocpp_url": ocpp_url(config, identity), "auth": auth}
    if password is not None:
        shown |= {"username": identity, "password": password}
    return shown


def _print_credentials(shown: dict[str, Any], as_json: bool, stdout: TextIO, stderr: TextIO) -> None:
    if as_json:
        print(json.dumps(shown), file=stdout)
    else:
        for key in ("identity", "ocpp_url", "auth", "username", "password"):
            if key in shown:
                print(f"{key + ':':<10}{shown[key]}", file=stdout)
    if "password" in shown:
        print("The password is shown only this once; configure it on the charger now.", file=stderr)


def _print_table(chargers: list[Charger], stdout: TextIO) -> None:
    header = ("IDENTITY", "AUTH", "ENABLED", "UPSTREAM", "UPSTREAM USER", "SECRET", "UPDATED")
    rows = [
        (c.identity, c.auth, "yes" if c.enabled else "no", c.upstream, c.upstream_username or "-",
         "sealed" if c.has_upstream_secret else "-", c.updated_at.strftime("%Y-%m-%d %H:%M:%S%z"))
        for c in chargers
    ]  # fmt: skip
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip(), file=stdout)


async def chargers_command(
    config: Config,
    args: argparse.Namespace,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one `ere-proxy chargers` action; returns the exit code (0 ok, 1 not found/exists, 2 usage)."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    if args.action == "generate-key":
        print(generate_key(), file=stdout)
        return EXIT_OK
    route: Route | None = None
    password: str | None = None
    keys: KeyRing | None = None
    try:
        if args.action in ("add", "reseal"):
            keys = KeyRing.from_env(config.registry.secret_key_env)
        if args.action == "add":
            validate_identity(args.identity)
            password = generate_password() if args.managed else None
            upstream_password = _read_upstream_password(args, stdin)
            if not args.managed and (args.upstream_username or upstream_password is not None):
                raise ValueError("--upstream-username and an upstream password need --managed")
            if upstream_password is not None and keys is None:
                raise SecretKeyError(
                    f"storing an upstream secret needs a key in {config.registry.secret_key_env} "
                    "(see `ere-proxy chargers generate-key`)"
                )
            route = Route(
                upstream=args.upstream,
                auth="managed" if args.managed else "passthrough",
                password_hash=hash_password(password) if password is not None else None,
                upstream_username=args.upstream_username,
                upstream_password=upstream_password,
                ca_bundle=args.ca_bundle,
            )
        elif args.action == "remove" or args.action == "rotate-password":
            validate_identity(args.identity)
        elif args.action == "reseal" and keys is None:
            raise SecretKeyError(f"reseal needs the keys in {config.registry.secret_key_env}")
    except (ValueError, SecretKeyError, msgspec.ValidationError) as exc:
        return _fail(str(exc), EXIT_USAGE, stderr)

    try:
        async with open_database(config.database) as db:
            if args.action == "add":
                assert route is not None
                charger = await add_charger(db, args.identity, route, keys=keys, enabled=not args.disabled)
                shown = _credentials(config, charger.identity, charger.auth, password)
                _print_credentials(shown, args.json, stdout, stderr)
            elif args.action == "list":
                chargers = await list_chargers(db)
                if args.json:
                    entries = [c.summary() | {"ocpp_url": ocpp_url(config, c.identity)} for c in chargers]
                    print(json.dumps(entries, indent=2), file=stdout)
                else:
                    _print_table(chargers, stdout)
            elif args.action == "remove":
                await remove_charger(db, args.identity)
                print(f"removed charger {args.identity}", file=stdout)
            elif args.action == "rotate-password":
                password = generate_password()
                await set_password_hash(db, args.identity, hash_password(password))
                _print_credentials(_credentials(config, args.identity, "managed", password), args.json, stdout, stderr)
            elif args.action == "reseal":
                count = await reseal_secrets(db, cast(KeyRing, keys))
                print(f"resealed {count} upstream secret(s) with key {cast(KeyRing, keys).primary_id}", file=stdout)
    except RegistryError as exc:
        return _fail(str(exc), EXIT_CONFLICT, stderr)
    except DATABASE_ERRORS as exc:  # includes StoreError (e.g. the database is unreachable)
        return _fail(f"{type(exc).__name__}: {exc}", EXIT_CONFLICT, stderr)
    return EXIT_OK
