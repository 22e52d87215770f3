"""`ere-proxy chargers add|list|remove|rotate-password|reseal|generate-key`: the charger registry.

The one-time credential output here is the only place a secret is ever printed. `list` shows the
routes of the configuration file's `[chargers]` too, each with its source (a registry entry wins
over a file route of the same identity, and `add` warns of one); a charger's OCPP URL is shown
only when `[registry] public_url` is set or the proxy listens on an address chargers can reach.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any, TextIO, cast

import msgspec

from proxy.cli.tables import print_table
from proxy.routing.auth import hash_generated_password
from proxy.routing.registry.errors import RegistryError, SecretKeyError
from proxy.routing.registry.records import (
    Charger,
    add_charger,
    generate_password,
    list_chargers,
    ocpp_url,
    remove_charger,
    reseal_secrets,
    set_password_hash,
    validate_identity,
)
from proxy.routing.registry.sealing import KeyRing, generate_key
from proxy.runtime.config import Config, Route
from proxy.store.db import DATABASE_ERRORS, open_database

EXIT_OK, EXIT_CONFLICT, EXIT_USAGE = 0, 1, 2


def add_chargers_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `chargers` subcommand group; `common` carries `--config`."""
    chargers = sub.add_parser("chargers", help="manage the charger registry in the database")
    actions = chargers.add_subparsers(dest="action", required=True)
    add = actions.add_parser(
        "add", parents=[common], help="register a charger; prints its URL and credentials once"
    )
    add.add_argument("identity")
    add.add_argument(
        "--upstream", required=True, help="ws:// or wss:// base URL of the charger's back-office"
    )
    add.add_argument(
        "--managed",
        action="store_true",
        help="the proxy checks a password it generates for the charger",
    )
    add.add_argument(
        "--upstream-username", help="username sent upstream (managed; default: the identity)"
    )
    secret = add.add_mutually_exclusive_group()
    secret.add_argument(
        "--upstream-password-env",
        metavar="VAR",
        help="environment variable holding the upstream password",
    )
    secret.add_argument(
        "--upstream-password-stdin",
        action="store_true",
        help="read the upstream password from stdin",
    )
    add.add_argument("--ca-bundle", help="CA bundle (PEM) for a private upstream CA")
    add.add_argument(
        "--disabled", action="store_true", help="register the charger but refuse it for now"
    )
    add.add_argument("--json", action="store_true", help="print the result as JSON")
    listing = actions.add_parser(
        "list", parents=[common], help="list registered chargers (never their secrets)"
    )
    listing.add_argument("--json", action="store_true")
    remove = actions.add_parser(
        "remove", parents=[common], help="delete a charger from the registry"
    )
    remove.add_argument("identity")
    rotate = actions.add_parser(
        "rotate-password", parents=[common], help="issue a new charger password; prints it once"
    )
    rotate.add_argument("identity")
    rotate.add_argument("--json", action="store_true")
    actions.add_parser(
        "reseal", parents=[common], help="seal every upstream secret again with the first key"
    )
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
        value = (
            getpass.getpass("upstream password: ")
            if stdin.isatty()
            else stdin.readline().rstrip("\r\n")
        )
        if not value:
            raise ValueError("no upstream password on stdin")
        return value
    return None


NO_PUBLIC_URL = (
    "[registry] public_url is not set and [proxy] host is local: set public_url to the address "
    "chargers reach the proxy at (e.g. wss://proxy.example.com/ocpp) to be shown their URL"
)


def _credentials(config: Config, identity: str, auth: str, password: str | None) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "identity": identity,
        "ocpp_url": ocpp_url(config, identity),
        "auth": auth,
    }
    if password is not None:
        shown |= {"username": identity, "password": password}
    return shown


def _print_credentials(
    shown: dict[str, Any], as_json: bool, stdout: TextIO, stderr: TextIO
) -> None:
    if shown["ocpp_url"] is None:
        print(f"ere-proxy: {NO_PUBLIC_URL}", file=stderr)
    if as_json:
        print(json.dumps(shown), file=stdout)
    else:
        for key in ("identity", "ocpp_url", "auth", "username", "password"):
            if key in shown:
                value = (
                    shown[key] if shown[key] is not None else "(unknown: see [registry] public_url)"
                )
                print(f"{key + ':':<10}{value}", file=stdout)
    if "password" in shown:
        print("The password is shown only this once; configure it on the charger now.", file=stderr)


def _listing(config: Config, registered: list[Charger]) -> list[dict[str, Any]]:
    """Registry entries and file routes, by identity; `in_effect` is false for a route the
    proxy does not use (a file route a registry entry overrides, or every registry entry when
    the registry is off)."""
    names = {c.identity for c in registered}
    entries = [
        c.summary()
        | {"source": "registry", "in_effect": config.registry.enabled}
        | {"ocpp_url": ocpp_url(config, c.identity)}
        for c in registered
    ]
    for identity, route in config.chargers.items():
        entries.append(
            {
                "identity": identity,
                "upstream": route.upstream,
                "auth": route.auth,
                "upstream_username": route.upstream_username,
                "upstream_secret": route.upstream_password is not None,
                "ca_bundle": route.ca_bundle,
                "enabled": True,
                "source": "config",
                "in_effect": not (config.registry.enabled and identity in names),
                "ocpp_url": ocpp_url(config, identity),
            }
        )
    return sorted(entries, key=lambda e: (e["identity"], e["source"] != "registry"))


def _print_listing(config: Config, entries: list[dict[str, Any]], stdout: TextIO) -> None:
    header = (
        "IDENTITY",
        "SOURCE",
        "AUTH",
        "ENABLED",
        "UPSTREAM",
        "UPSTREAM USER",
        "SECRET",
        "UPDATED (UTC)",
    )
    rows = []
    for e in entries:
        source, secret = e["source"], None
        if not e["in_effect"]:
            source += " (registry wins)" if source == "config" else " (off in config)"
        if e["upstream_secret"]:
            secret = "sealed" if e["source"] == "registry" else "in config"
        enabled = "yes" if e["enabled"] else "no"
        rows.append(
            (
                e["identity"],
                source,
                e["auth"],
                enabled,
                e["upstream"],
                e["upstream_username"],
                secret,
                _time(e),
            )
        )
    print_table(header, rows, stdout)
    default = config.default_route
    other = f"go to {default.upstream} ([default_route])" if default else "are refused (404)"
    print(f"other identities {other}", file=stdout)


def _time(entry: dict[str, Any]) -> str | None:
    updated = entry.get("updated_at")  # ISO 8601 in UTC; file routes have none
    return updated[:19].replace("T", " ") if updated else None


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
                password_hash=hash_generated_password(password) if password is not None else None,
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
                charger = await add_charger(
                    db, args.identity, route, keys=keys, enabled=not args.disabled
                )
                shown = _credentials(config, charger.identity, charger.auth, password)
                _print_credentials(shown, args.json, stdout, stderr)
                if charger.identity in config.chargers:
                    print(
                        f'ere-proxy: warning: the configuration file routes [chargers."{charger.identity}"] '
                        "too; the registry entry wins (remove the file's to avoid confusion)",
                        file=stderr,
                    )
            elif args.action == "list":
                entries = _listing(config, await list_chargers(db))
                if args.json:
                    print(json.dumps(entries, indent=2), file=stdout)
                else:
                    _print_listing(config, entries, stdout)
            elif args.action == "remove":
                await remove_charger(db, args.identity)
                print(f"removed charger {args.identity}", file=stdout)
            elif args.action == "rotate-password":
                password = generate_password()
                await set_password_hash(db, args.identity, hash_generated_password(password))
                _print_credentials(
                    _credentials(config, args.identity, "managed", password),
                    args.json,
                    stdout,
                    stderr,
                )
            elif args.action == "reseal":
                count = await reseal_secrets(db, cast(KeyRing, keys))
                print(
                    f"resealed {count} upstream secret(s) with key {cast(KeyRing, keys).primary_id}",
                    file=stdout,
                )
    except RegistryError as exc:
        return _fail(str(exc), EXIT_CONFLICT, stderr)
    except DATABASE_ERRORS as exc:  # includes StoreError (e.g. the database is unreachable)
        return _fail(f"{type(exc).__name__}: {exc}", EXIT_CONFLICT, stderr)
    return EXIT_OK
