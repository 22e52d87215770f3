"""`ere-proxy partners keys create|list|rotate|revoke`: the keys partners call the partner API with.

`create PARTNER --scopes a,b` makes a key and prints it once (only its hash is kept: a lost key
is revoked and replaced, never shown again); `list PARTNER` shows a partner's keys (id, scopes,
created, last used, expiry, which key replaced which, revoked; never a secret), `--json` as
JSON; `rotate KEY_ID [--grace HOURS]` makes its successor (same partner and scopes, printed
once) and lets the old key work for the grace period (default 24 hours, 0: it stops at once);
`revoke KEY_ID` revokes one from now on. See `proxy.api.keys` for the key's form and the scopes.

Errors: an unknown partner, key or scope, a key revoked (or rotated) already, or a grace out of
range prints one line and exits 2; a database that cannot be reached exits 1.
"""

from __future__ import annotations

import argparse
import math
from datetime import timedelta
from typing import Any, TextIO

from proxy.api.key_store import MAX_GRACE, create_key, list_keys, revoke_key, rotate_key
from proxy.api.keys import SCOPES, parse_scopes
from proxy.ere.admin.cli_exit import exit_code
from proxy.ere.admin.records_output import Output
from proxy.ere.admin.validation import AdminInputError, validate_id
from proxy.runtime.config import Config
from proxy.store.db import open_database

__all__ = ["add_api_key_parsers", "api_keys_command"]


def add_api_key_parsers(partner_actions: Any, common: argparse.ArgumentParser) -> None:
    """`keys create|list|rotate|revoke` under the `partners` command."""
    keys = partner_actions.add_parser("keys", help="API keys of a partner")
    actions = keys.add_subparsers(dest="key_action", required=True)
    create = actions.add_parser("create", parents=[common], help="make a key (printed once)")
    create.add_argument("partner_id")
    create.add_argument("--scopes", required=True, help=f"comma-separated: {','.join(SCOPES)}")
    listing = actions.add_parser("list", parents=[common], help="list a partner's keys")
    listing.add_argument("partner_id")
    listing.add_argument("--json", action="store_true")
    rotate = actions.add_parser(
        "rotate", parents=[common], help="replace a key by a new one (printed once)"
    )
    rotate.add_argument("key_id")
    rotate.add_argument(
        "--grace",
        default="24",
        metavar="HOURS",
        help="hours the old key keeps working (default 24; 0: it stops at once)",
    )
    revoke = actions.add_parser("revoke", parents=[common], help="revoke a key")
    revoke.add_argument("key_id")


async def api_keys_command(
    config: Config, args: argparse.Namespace, stdout: TextIO, stderr: TextIO
) -> int:
    """Run one `partners keys` action; returns the exit code (see the module docstring)."""
    out = Output(stdout, getattr(args, "json", False))

    async def act() -> None:
        if args.key_action == "create":
            partner_id = validate_id(args.partner_id, "partner id")
            try:
                scopes = parse_scopes(args.scopes)
            except ValueError as error:
                raise AdminInputError(f"--scopes: {error}") from None
            async with open_database(config.database) as db:
                key = await create_key(db, partner_id, scopes)
            print(f"key {key.key_id} for partner {partner_id} ({','.join(scopes)})", file=stderr)
            print("the key is shown only this once; keep it secret:", file=stderr)
            out.line(key.key)
        elif args.key_action == "list":
            partner_id = validate_id(args.partner_id, "partner id")
            async with open_database(config.database) as db:
                keys = await list_keys(db, partner_id)
            header = (
                "KEY ID",
                "SCOPES",
                "CREATED",
                "LAST USED",
                "EXPIRES",
                "REPLACES",
                "REPLACED BY",
                "REVOKED",
            )
            rows = [
                [
                    k["key_id"],
                    k["scopes"],
                    k["created_at"],
                    k["last_used_at"],
                    k["expires_at"],
                    k["replaces"],
                    k["replaced_by"],
                    k["revoked_at"],
                ]
                for k in keys
            ]
            out.json_or(keys, lambda: out.table(header, rows))
        elif args.key_action == "rotate":
            grace = _grace(args.grace)
            async with open_database(config.database) as db:
                key, old = await rotate_key(db, args.key_id, grace)
            print(
                f"key {key.key_id} for partner {old['partner_id']} ({','.join(old['scopes'])}) "
                f"replaces {old['key_id']}, which works until {old['expires_at']}",
                file=stderr,
            )
            print("the key is shown only this once; keep it secret:", file=stderr)
            out.line(key.key)
        else:
            async with open_database(config.database) as db:
                revoked = await revoke_key(db, args.key_id)
            out.line(f"revoked key {revoked['key_id']} of partner {revoked['partner_id']}")

    return await exit_code(act(), stderr)


def _grace(text: str) -> timedelta:
    """`--grace` in hours (a decimal number, 0 to MAX_GRACE)."""
    hours = MAX_GRACE // timedelta(hours=1)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= hours:
        raise AdminInputError(f"--grace: a number of hours from 0 to {hours}, got {text[:40]!r}")
    return timedelta(hours=value)
