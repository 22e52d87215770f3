"""The `ere-proxy` command (also `python -m proxy`).

Subcommands: `proxy` runs the proxy role, `worker` one ERE job worker, `run` every role on this
machine (the proxy workers and `ere.workers` job workers), `migrate` brings the database schema
up to date, `quarter close|reopen|status`, `payout run|status`, `rev export` and `jobs
list|requeue` drive the ERE accounting (see `ere/admin/accounting_cli.py`), `partners`,
`customers`, `mandates` and `links add|list|…` manage who is paid for which charger (see
`ere/admin/records_cli.py`), `chargers add|list|remove|
rotate-password|reseal|generate-key` manages the charger registry in the database (see
`registry.py`), `outbox status|dead-letters|requeue` shows what the outboxes hold, `hash-password` prints a password hash for a `managed` route. The configuration
file comes from `--config` or the ERE_PROXY_CONFIG environment variable; without either the
defaults apply.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

import msgspec
import trio

from proxy.cli.chargers import add_chargers_parser, chargers_command
from proxy.cli.outbox import add_outbox_parser, outbox_command
from proxy.routing.auth import hash_password
from proxy.runtime.config import Config, ConfigError, load_config
from proxy.runtime.logs import setup_logging

# The proxy role's processes do not import the ERE accounting modules (SEPA, XML schemas, IBAN
# data: about 20 MB per process), so their commands are only known to the full parser.
_ROLE_COMMANDS = ("proxy", "run")
_ACCOUNTING_COMMANDS = ("quarter", "payout", "rev", "jobs")


def _parser(full: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ere-proxy", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("proxy", "run the proxy role"),
        ("run", "run all roles on this machine"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--config", type=Path, default=os.environ.get("ERE_PROXY_CONFIG"))
        cmd.add_argument(
            "--workers", type=int, help="proxy processes sharing the port (default: from config)"
        )
        cmd.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    worker = sub.add_parser("worker", help="run one ERE job worker")
    worker.add_argument("--config", type=Path, default=os.environ.get("ERE_PROXY_CONFIG"))
    worker.add_argument(
        "--worker-index", type=int, default=0, help="which metrics port (ere.admin_port + index)"
    )
    migrate = sub.add_parser("migrate", help="apply pending database migrations and list them")
    migrate.add_argument("--config", type=Path, default=os.environ.get("ERE_PROXY_CONFIG"))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=os.environ.get("ERE_PROXY_CONFIG"))
    add_chargers_parser(sub, common)
    add_outbox_parser(sub, common)
    if full:
        from proxy.ere.admin.accounting_cli import add_accounting_parsers
        from proxy.ere.admin.records_cli import add_ere_admin_parsers

        add_accounting_parsers(sub, common)
        add_ere_admin_parsers(sub, common)
    # The password is read from a prompt or stdin only: on the command line it would show in
    # `ps` and the shell's history.
    sub.add_parser(
        "hash-password", help="print a hash for a charger password (prompted, or one line of stdin)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(full=not argv or argv[0] not in _ROLE_COMMANDS).parse_args(argv)
    if args.command == "hash-password":
        password = (
            getpass.getpass("password: ")
            if sys.stdin.isatty()
            else sys.stdin.readline().rstrip("\n")
        )
        if not password:
            print("ere-proxy: no password given", file=sys.stderr)
            return 2
        print(hash_password(password))
        return 0
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"ere-proxy: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        setup_logging(config.log.level, None)
        return trio.run(run_migrate, config)
    if args.command == "chargers":
        setup_logging(config.log.level, None)
        return trio.run(chargers_command, config, args)
    if args.command == "outbox":
        setup_logging(config.log.level, None)
        return trio.run(outbox_command, config, args)
    if hasattr(args, "ere_group"):  # partners, customers, mandates, links
        from proxy.ere.admin.records_cli import ere_admin_command

        setup_logging(config.log.level, None)
        return trio.run(ere_admin_command, config, args)
    if args.command in _ACCOUNTING_COMMANDS:
        from proxy.ere.admin.accounting_cli import accounting_command

        setup_logging(config.log.level, None)
        return trio.run(accounting_command, config, args)
    if args.command == "worker":
        setup_logging(config.log.level, args.worker_index)
        from proxy.ere.jobs.worker import run_worker_role

        trio.run(run_worker_role, config, args.worker_index)
        return 0
    workers = args.workers or config.proxy.workers
    if workers != config.proxy.workers:
        config = msgspec.structs.replace(
            config, proxy=msgspec.structs.replace(config.proxy, workers=workers)
        )
    setup_logging(config.log.level, args.worker_index)
    ere_workers = config.ere.workers if args.command == "run" else 0
    if (workers > 1 or ere_workers) and args.worker_index is None:
        from proxy.runtime.supervisor import supervise

        return trio.run(supervise, args.config, workers, ere_workers)
    from proxy.runtime.role import run_proxy_role

    trio.run(run_proxy_role, args.config, config, args.worker_index or 0)
    return 0


async def run_migrate(config: Config) -> int:
    """`ere-proxy migrate`: apply pending migrations, print each one applied."""
    from proxy.store import StoreError, open_database
    from proxy.store.migrate import apply_migrations

    try:
        async with open_database(config.database, migrate=False) as db:
            async with db.connection() as conn:
                applied = await apply_migrations(conn)
                version = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    except StoreError as exc:
        print(f"ere-proxy: {exc}", file=sys.stderr)
        return 1
    for migration in applied:
        print(f"applied {migration.label}")
    print(
        f"schema is at version {version}"
        if applied
        else f"schema is up to date (version {version})"
    )
    return 0
