"""The `ere-proxy` command (also `python -m proxy`).

Subcommands: `proxy` runs the proxy role, `worker` one ERE job worker, `api` the partner API,
`run` every role on this machine (the proxy workers, `ere.workers` job workers and, with `[api]
enabled`, the partner API); these four need a configuration file
and exit with one line on stderr without one, or when another `run` or `proxy` holds the data
directory (see `data_dir_lock.py`). `db shell|migrate` (and `migrate`) reach the database (see
`db.py`), `sessions list|show` shows the captured sessions (see `sessions.py`), `import sessions`
stores a partner's sessions from a CSV file (see `imports.py`), `quarter
close|reopen|status`, `payout run|status`, `rev export` and `jobs list|requeue` drive the ERE
accounting (see `ere/admin/accounting_cli.py`), `partners`, `customers`, `mandates` and `links
add|list|…` manage who is paid for which charger (see `ere/admin/records_cli.py`), `chargers
add|list|remove|rotate-password|reseal|generate-key` manages the charger registry in the
database (see `chargers.py`), `outbox status|dead-letters|requeue` shows what the outboxes hold,
`hash-password` prints a password hash for a `managed` route (`--generate`: a new random
password, shown once on stderr, and its fast hash; see `routing/auth.py`). The configuration file comes from
`--config` or the ERE_PROXY_CONFIG environment variable; for the other commands, without either
the defaults apply.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import msgspec
import trio

from proxy.cli.chargers import add_chargers_parser, chargers_command
from proxy.cli.data_dir_lock import DataDirInUse, hold_data_dir
from proxy.cli.db import add_db_parsers, db_shell, run_migrate, run_purge, takes_extra_arguments
from proxy.cli.outbox import add_outbox_parser, outbox_command
from proxy.cli.sessions import add_sessions_parser, sessions_command
from proxy.routing.auth import hash_generated_password, hash_password
from proxy.routing.registry.records import generate_password
from proxy.runtime.config import (
    EXIT_CANNOT_START,
    CannotStart,
    Config,
    ConfigError,
    load_config,
)
from proxy.runtime.logs import setup_logging
from proxy.store.db import describe_database

log = logging.getLogger("proxy.cli")

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
    api = sub.add_parser("api", help="run the partner API role")
    api.add_argument("--config", type=Path, default=os.environ.get("ERE_PROXY_CONFIG"))
    api.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    worker = sub.add_parser("worker", help="run one ERE job worker")
    worker.add_argument("--config", type=Path, default=os.environ.get("ERE_PROXY_CONFIG"))
    worker.add_argument(
        "--worker-index", type=int, default=0, help="which metrics port (ere.admin_port + index)"
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=os.environ.get("ERE_PROXY_CONFIG"))
    add_db_parsers(sub, common)
    add_chargers_parser(sub, common)
    add_outbox_parser(sub, common)
    add_sessions_parser(sub, common)
    if full:
        from proxy.cli.imports import add_import_parser
        from proxy.ere.admin.accounting_cli import add_accounting_parsers
        from proxy.ere.admin.records_cli import add_ere_admin_parsers

        add_import_parser(sub, common)
        add_accounting_parsers(sub, common)
        add_ere_admin_parsers(sub, common)
    # The password is read from a prompt or stdin only: on the command line it would show in
    # `ps` and the shell's history.
    hashing = sub.add_parser(
        "hash-password", help="print a hash for a charger password (prompted, or one line of stdin)"
    )
    hashing.add_argument(
        "--generate",
        action="store_true",
        help="make a random password instead (shown once, on stderr) and print its fast hash: "
        "checked at once, never behind a flood of wrong passwords",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser(full=not argv or argv[0] not in _ROLE_COMMANDS)
    args, extra = parser.parse_known_args(argv)
    if extra and not takes_extra_arguments(args):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "hash-password" and args.generate:
        password = generate_password()
        print(f"password (shown only this once): {password}", file=sys.stderr)
        print(hash_generated_password(password))
        return 0
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
    if args.command in _SERVING_COMMANDS and args.config is None:
        print(
            f"ere-proxy: {args.command} needs a configuration file: --config FILE or "
            "ERE_PROXY_CONFIG (examples/proxy.toml documents every setting)",
            file=sys.stderr,
        )
        return 2
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"ere-proxy: {exc}", file=sys.stderr)
        return 2
    if args.command not in _SERVING_COMMANDS:
        setup_logging(config.log.level, None)
        return trio.run(_tool_command, config, args, extra)
    if args.worker_index is not None:
        from proxy.runtime.supervisor import end_with_supervisor

        end_with_supervisor()
    with ExitStack() as held:
        lock = args.command not in ("worker", "api") and args.worker_index is None
        if lock and uses_data_dir(config):
            try:  # before anything is logged: a second instance gets one line
                held.enter_context(hold_data_dir(config.database.data_dir))
            except (DataDirInUse, OSError) as exc:
                print(f"ere-proxy: {exc}", file=sys.stderr)
                return 1
        setup_logging(config.log.level, args.worker_index)
        log.info(
            "ere-proxy starting",
            extra={
                "command": args.command,
                "config": str(args.config.absolute()),
                "data_dir": str(Path(config.database.data_dir).absolute()),
                "database": describe_database(config.database),
            },
        )
        return _run_roles(args, config)


# Commands that serve until stopped; each needs a configuration file.
_SERVING_COMMANDS = ("proxy", "run", "worker", "api")


def uses_data_dir(config: Config) -> bool:
    """Whether the proxy role keeps state under `[database] data_dir`: the embedded server, the
    capture's spill logs or the outbox's verifier key."""
    embedded = config.registry.enabled and not config.database.dsn
    return config.capture.enabled or config.outbox.enabled or embedded


def _run_roles(args: argparse.Namespace, config: Config) -> int:
    """One ERE worker, the proxy role in this process, or (several proxy workers, or `run` with
    ERE workers) the supervisor of child processes; returns the exit status."""
    if args.command == "worker":
        from proxy.ere.jobs.worker import run_worker_role

        return _until_interrupted(run_worker_role, config, args.worker_index)
    if args.command == "api":
        from proxy.api.role import run_api_role

        return _until_interrupted(run_api_role, config)
    workers = args.workers or config.proxy.workers
    if workers != config.proxy.workers:
        config = msgspec.structs.replace(
            config, proxy=msgspec.structs.replace(config.proxy, workers=workers)
        )
    ere_workers = config.ere.workers if args.command == "run" else 0
    api = args.command == "run" and config.api.enabled
    if (workers > 1 or ere_workers or api) and args.worker_index is None:
        from proxy.runtime.supervisor import supervise

        return _until_interrupted(supervise, args.config, workers, ere_workers, api)
    from proxy.runtime.role import run_proxy_role

    return _until_interrupted(run_proxy_role, args.config, config, args.worker_index or 0)


def _until_interrupted(role: Callable[..., Awaitable[int | None]], *role_args: Any) -> int:
    """Run a role to its end; its exit status (0 when it returns None), or 130 after SIGINT.

    A role stops gracefully on the first SIGTERM or SIGINT. Ctrl-C in a terminal reaches the
    supervisor and its children alike, and the supervisor passes it on: a child gets it twice,
    and Trio raises the second as KeyboardInterrupt once the role is done. That ends the
    process quietly instead of with a traceback.
    """
    try:
        return trio.run(role, *role_args) or 0
    except KeyboardInterrupt:
        return 130
    except (CannotStart, BaseExceptionGroup) as failure:
        reason = _cannot_start(failure)
        if reason is None:
            raise
        log.error("cannot start", extra={"reason": str(reason)})
        return EXIT_CANNOT_START


def _cannot_start(failure: BaseException) -> CannotStart | None:
    """The `CannotStart` that ended a role (alone, or nested in exception groups), else None."""
    while isinstance(failure, BaseExceptionGroup) and len(failure.exceptions) == 1:
        failure = failure.exceptions[0]
    return failure if isinstance(failure, CannotStart) else None


async def _tool_command(config: Config, args: argparse.Namespace, extra: list[str]) -> int:
    """The commands that do one thing and exit; returns the exit status."""
    if args.command == "migrate" or (args.command == "db" and args.action == "migrate"):
        return await run_migrate(config)
    if args.command == "db" and args.action == "purge":
        return await run_purge(config, args)
    if args.command == "db":
        return await db_shell(config, extra)
    if args.command == "sessions":
        return await sessions_command(config, args)
    if args.command == "import":
        from proxy.cli.imports import import_command

        return await import_command(config, args)
    if args.command == "chargers":
        return await chargers_command(config, args)
    if args.command == "outbox":
        return await outbox_command(config, args)
    if hasattr(args, "ere_group"):  # partners, customers, mandates, links
        from proxy.ere.admin.records_cli import ere_admin_command

        return await ere_admin_command(config, args)
    from proxy.ere.admin.accounting_cli import accounting_command

    assert args.command in _ACCOUNTING_COMMANDS
    return await accounting_command(config, args)
