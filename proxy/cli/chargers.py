"""`ere-proxy chargers add|list|remove|rotate-password|reseal|generate-key`: the charger registry.

The one-time credential output here is the only place a secret is ever printed.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from typing import Any, TextIO, cast

import msgspec

from proxy.routing.auth import hash_password
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
        (
            c.identity,
            c.auth,
            "yes" if c.enabled else "no",
            c.upstream,
            c.upstream_username or "-",
            "sealed" if c.has_upstream_secret else "-",
            c.updated_at.strftime("%Y-%m-%d %H:%M:%S%z"),
        )
        for c in chargers
    ]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip(),
            file=stdout,
        )


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
                charger = await add_charger(
                    db, args.identity, route, keys=keys, enabled=not args.disabled
                )
                shown = _credentials(config, charger.identity, charger.auth, password)
                _print_credentials(shown, args.json, stdout, stderr)
            elif args.action == "list":
                chargers = await list_chargers(db)
                if args.json:
                    entries = [
                        c.summary() | {"ocpp_url": ocpp_url(config, c.identity)} for c in chargers
                    ]
                    print(json.dumps(entries, indent=2), file=stdout)
                else:
                    _print_table(chargers, stdout)
            elif args.action == "remove":
                await remove_charger(db, args.identity)
                print(f"removed charger {args.identity}", file=stdout)
            elif args.action == "rotate-password":
                password = generate_password()
                await set_password_hash(db, args.identity, hash_password(password))
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
