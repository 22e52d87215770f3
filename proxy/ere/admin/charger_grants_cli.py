"""`ere-proxy partners chargers grant|revoke|list`: chargers the operator gives a partner.

`grant PARTNER [IDENTITY ...] [--file PATH]` gives the partner chargers that already connect
through the proxy, so its partner API keys can read them and link them to its customers (see
`proxy.ere.admin.charger_grants`); `--file` reads one identity per line (blank lines and lines
starting with `#` are skipped), for a fleet. `revoke PARTNER IDENTITY ...` ends grants; `list
PARTNER` shows the chargers granted now (`--json` as JSON).

Errors: an unknown partner, a malformed identity, a charger another partner holds, or an
unreadable file prints one line and exits 2 (nothing is granted then); a database that cannot be
reached exits 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, TextIO

from proxy.ere.admin.charger_grants import (
    MAX_IDENTITIES,
    grant_chargers,
    list_charger_grants,
    revoke_charger_grants,
)
from proxy.ere.admin.cli_exit import exit_code
from proxy.ere.admin.records_output import Output
from proxy.ere.admin.validation import AdminInputError, validate_id
from proxy.runtime.config import Config
from proxy.store.db import open_database

__all__ = ["add_charger_grant_parsers", "charger_grants_command"]

_MAX_FILE_BYTES = 8 << 20


def add_charger_grant_parsers(partner_actions: Any, common: argparse.ArgumentParser) -> None:
    """`chargers grant|revoke|list` under the `partners` command."""
    chargers = partner_actions.add_parser("chargers", help="chargers given to a partner")
    actions = chargers.add_subparsers(dest="grant_action", required=True)
    grant = actions.add_parser(
        "grant", parents=[common], help="give a partner chargers that connect already"
    )
    grant.add_argument("partner_id")
    grant.add_argument("identities", nargs="*", metavar="IDENTITY")
    grant.add_argument("--file", type=Path, help="one identity per line")
    revoke = actions.add_parser("revoke", parents=[common], help="end grants")
    revoke.add_argument("partner_id")
    revoke.add_argument("identities", nargs="+", metavar="IDENTITY")
    listing = actions.add_parser("list", parents=[common], help="chargers granted to a partner")
    listing.add_argument("partner_id")
    listing.add_argument("--json", action="store_true")


def _read_identities(path: Path) -> list[str]:
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_FILE_BYTES + 1)
    except OSError as error:
        raise AdminInputError(f"--file: cannot read {path}: {error.strerror or error}") from None
    if len(data) > _MAX_FILE_BYTES:
        raise AdminInputError(f"--file: larger than {_MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise AdminInputError("--file: not UTF-8 text") from None
    lines = [line.strip() for line in text.splitlines()]
    identities = [line for line in lines if line and not line.startswith("#")]
    if len(identities) > MAX_IDENTITIES:
        raise AdminInputError(f"--file: more than {MAX_IDENTITIES} identities")
    return identities


async def charger_grants_command(
    config: Config, args: argparse.Namespace, stdout: TextIO, stderr: TextIO
) -> int:
    """Run one `partners chargers` action; returns the exit code (see the module docstring)."""
    out = Output(stdout, getattr(args, "json", False))

    async def act() -> None:
        partner_id = validate_id(args.partner_id, "partner id")
        if args.grant_action == "list":
            async with open_database(config.database) as db:
                grants = await list_charger_grants(db, partner_id)
            rows = [[g["identity"], g["granted_at"], g["granted_by"]] for g in grants]
            out.json_or(grants, lambda: out.table(("IDENTITY", "GRANTED", "BY"), rows))
        elif args.grant_action == "grant":
            identities = list(args.identities)
            if args.file is not None:
                identities += _read_identities(args.file)
            async with open_database(config.database) as db:
                granted = await grant_chargers(db, partner_id, identities)
            out.line(f"granted {len(granted)} charger(s) to partner {partner_id}")
        else:
            async with open_database(config.database) as db:
                revoked = await revoke_charger_grants(db, partner_id, args.identities)
            out.line(f"revoked {len(revoked)} grant(s) of partner {partner_id}")

    return await exit_code(act(), stderr)
