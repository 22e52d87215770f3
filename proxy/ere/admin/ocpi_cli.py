"""`ere-proxy partners ocpi create|list|revoke`: a partner's OCPI platform (a CPO's back office).

`create PARTNER` makes the partner's platform connection and prints its credentials token A
once (only its hash is kept) with our versions URL (`[api] public_url` + `/ocpi/versions`):
the operator gives both to the CPO, whose platform registers with them and gets token C (see
`proxy.api.ocpi`). A partner has one platform at a time. `list PARTNER` shows its platforms
(status, registered roles, versions URL, CDRs received; never a token), `--json` as JSON;
`revoke PARTNER` ends the current one at once: none of its tokens works any more, and a new
`create` gives a new token A (the way back for a platform that lost its token C).

Errors: an unknown partner, a second platform, or none to revoke prints one line and exits 2;
a database that cannot be reached exits 1.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from proxy.api.ocpi.app import base_url
from proxy.api.ocpi.platforms import create_platform, list_platforms, revoke_platform
from proxy.ere.admin.cli_exit import exit_code
from proxy.ere.admin.records_output import Output
from proxy.ere.admin.validation import validate_id
from proxy.runtime.config import Config
from proxy.store.db import open_database

__all__ = ["add_ocpi_parsers", "ocpi_command"]


def add_ocpi_parsers(partner_actions: Any, common: argparse.ArgumentParser) -> None:
    """`ocpi create|list|revoke` under the `partners` command."""
    ocpi = partner_actions.add_parser("ocpi", help="a partner's OCPI 2.2.1 platform")
    actions = ocpi.add_subparsers(dest="ocpi_action", required=True)
    create = actions.add_parser(
        "create", parents=[common], help="make the platform connection (token A printed once)"
    )
    create.add_argument("partner_id")
    listing = actions.add_parser("list", parents=[common], help="a partner's platforms")
    listing.add_argument("partner_id")
    listing.add_argument("--json", action="store_true")
    revoke = actions.add_parser("revoke", parents=[common], help="end the partner's platform")
    revoke.add_argument("partner_id")


def _roles(platform: dict[str, Any]) -> str:
    return " ".join(f"{r['role']}:{r['country_code']}/{r['party_id']}" for r in platform["roles"])


async def ocpi_command(
    config: Config, args: argparse.Namespace, stdout: TextIO, stderr: TextIO
) -> int:
    """Run one `partners ocpi` action; returns the exit code (see the module docstring)."""
    out = Output(stdout, getattr(args, "json", False))

    async def act() -> None:
        partner_id = validate_id(args.partner_id, "partner id")
        if args.ocpi_action == "create":
            async with open_database(config.database) as db:
                platform, token = await create_platform(db, partner_id)
            versions = f"{base_url(config.api)}/ocpi/versions"
            print(
                f"OCPI platform {platform['platform_id']} for partner {partner_id}: give the CPO "
                f"the versions URL {versions} and this token A, shown only this once:",
                file=stderr,
            )
            out.line(f"versions URL: {versions}")
            out.line(f"token A:      {token}")
        elif args.ocpi_action == "list":
            async with open_database(config.database) as db:
                platforms = await list_platforms(db, partner_id)
            header = ("PLATFORM", "STATUS", "ROLES", "VERSIONS URL", "CDRS", "CREATED", "REVOKED")
            rows = [
                [
                    p["platform_id"],
                    p["status"],
                    _roles(p),
                    p["versions_url"],
                    p["cdrs"],
                    p["created_at"],
                    p["revoked_at"],
                ]
                for p in platforms
            ]
            out.json_or(platforms, lambda: out.table(header, rows))
        else:
            async with open_database(config.database) as db:
                revoked = await revoke_platform(db, partner_id)
            out.line(f"revoked OCPI platform {revoked['platform_id']} of partner {partner_id}")

    return await exit_code(act(), stderr)
