"""`ere-proxy partners users add|list|remove`: the people of a partner who use the dashboard.

`add PARTNER EMAIL --role admin|viewer` adds a user; the password is prompted for (twice) on a
terminal, else read as one line of stdin (as `hash-password` reads it: on the command line it
would show in `ps` and the shell's history), at least 12 characters. `list PARTNER` shows the
users (address, role, added, failed log-ins, locked until; `--json` as JSON); `remove PARTNER
EMAIL` removes one and ends their log-in sessions. See `proxy.api.dashboard.users`.

Errors: an unknown partner or user, a malformed address, an address in use, a short password or
two that differ prints one line and exits 2; a database that cannot be reached exits 1.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any, TextIO

from proxy.api.dashboard.roles import ROLES
from proxy.api.dashboard.users import (
    add_user,
    hash_user_password,
    list_users,
    remove_user,
    validate_email,
    validate_role,
)
from proxy.ere.admin.cli_exit import exit_code
from proxy.ere.admin.records_output import Output
from proxy.ere.admin.validation import AdminInputError, validate_id
from proxy.runtime.config import Config
from proxy.store.db import open_database

__all__ = ["add_user_parsers", "users_command"]


def add_user_parsers(partner_actions: Any, common: argparse.ArgumentParser) -> None:
    """`users add|list|remove` under the `partners` command."""
    users = partner_actions.add_parser("users", help="people who log in to the partner dashboard")
    actions = users.add_subparsers(dest="user_action", required=True)
    add = actions.add_parser(
        "add", parents=[common], help="add a user (password prompted, or one line of stdin)"
    )
    add.add_argument("partner_id")
    add.add_argument("email")
    add.add_argument("--role", required=True, metavar="{" + ",".join(ROLES) + "}")
    listing = actions.add_parser("list", parents=[common], help="list a partner's users")
    listing.add_argument("partner_id")
    listing.add_argument("--json", action="store_true")
    remove = actions.add_parser("remove", parents=[common], help="remove a user")
    remove.add_argument("partner_id")
    remove.add_argument("email")


def _read_password(stdin: TextIO) -> str:
    if stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("password again: ") != password:
            raise AdminInputError("password: the two passwords differ")
        return password
    return stdin.readline().rstrip("\n")


async def users_command(
    config: Config,
    args: argparse.Namespace,
    stdout: TextIO,
    stderr: TextIO,
    stdin: TextIO | None = None,
) -> int:
    """Run one `partners users` action; returns the exit code (see the module docstring)."""
    out = Output(stdout, getattr(args, "json", False))

    async def act() -> None:
        partner_id = validate_id(args.partner_id, "partner id")
        if args.user_action == "add":
            email, role = validate_email(args.email), validate_role(args.role)
            password_hash = hash_user_password(_read_password(stdin or sys.stdin))
            async with open_database(config.database) as db:
                await add_user(db, partner_id, email, password_hash, role)
            out.line(f"added {role} {email} to partner {partner_id}")
        elif args.user_action == "list":
            async with open_database(config.database) as db:
                users = await list_users(db, partner_id)
            header = ("EMAIL", "ROLE", "ADDED", "FAILED LOG-INS", "LOCKED UNTIL")
            rows = [
                [u["email"], u["role"], u["created_at"], u["failed_attempts"], u["locked_until"]]
                for u in users
            ]
            out.json_or(users, lambda: out.table(header, rows))
        else:
            email = validate_email(args.email)
            async with open_database(config.database) as db:
                await remove_user(db, partner_id, email)
            out.line(f"removed {email} from partner {partner_id}")

    return await exit_code(act(), stderr)
