"""Schema migrations: numbered .sql files applied once each, in order.

Files live in `proxy/store/migrations/` and are named `NNN_what_it_does.sql`; the number is the
version. `apply_migrations` takes a PostgreSQL advisory lock (so processes starting together
apply each migration exactly once; the others wait, then find nothing to do), reads what
`schema_migrations` records, and applies every missing migration in its own transaction together
with its row in `schema_migrations`. Migration 001 creates that table.

Errors (`MigrationError`): a badly named or duplicated file; a database that records a migration
this code does not have (it was migrated by a newer version: refuse rather than run against a
schema we do not know); an applied file whose content has since changed; a statement that fails
(its migration is rolled back, earlier ones stay). Cancellation: the running migration is rolled
back and the lock released with its connection.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.abc import Traversable
from importlib.resources import files
from pathlib import Path

import asyncpg
import trio

from proxy.store.connection import CLEANUP_TIMEOUT, Connection
from proxy.store.errors import MigrationError

_FILE_NAME = re.compile(r"(\d+)_(\w+)\.sql")
# pg_advisory_lock key shared by every migrator of this schema (an arbitrary fixed int64).
MIGRATION_LOCK_KEY = 0x6572_6550_726F_7879 & 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def label(self) -> str:
        return f"{self.version:03d}_{self.name}"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Traversable | Path | None = None) -> list[Migration]:
    """The migrations in `directory` (default: the packaged ones), sorted by version."""
    source = directory if directory is not None else files("proxy.store") / "migrations"
    found: dict[int, Migration] = {}
    for entry in source.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.fullmatch(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNN_name.sql")
        version = int(match[1])
        if version in found:
            raise MigrationError(
                f"two migrations have version {version}: {found[version].label}, {entry.name}"
            )
        found[version] = Migration(version, match[2], entry.read_text(encoding="utf-8"))
    return [found[version] for version in sorted(found)]


async def apply_migrations(
    conn: Connection, migrations: list[Migration] | None = None
) -> list[Migration]:
    """Apply what the database lacks; returns the migrations applied by this call.

    `conn` must be one session (`Database.connection()`), not the pool: the lock is per session.
    """
    if migrations is None:
        migrations = load_migrations()
    # No statement deadline here: waiting for another process's migrations, or a migration on a
    # big table, may take long (the pool restores the session's settings on release).
    await conn.execute("SET statement_timeout = 0")
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        return await _apply_locked(conn, migrations)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
            try:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                pass  # a broken session has released its locks already


async def applied_versions(conn: Connection) -> dict[int, str]:
    """version -> checksum of the migrations the database records (empty before 001)."""
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return {}
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}


async def _apply_locked(conn: Connection, migrations: list[Migration]) -> list[Migration]:
    applied = await applied_versions(conn)
    known = {migration.version: migration for migration in migrations}
    unknown = sorted(set(applied) - set(known))
    if unknown:
        raise MigrationError(
            f"the database has migration(s) {', '.join(map(str, unknown))} that this version does not know "
            f"(it was migrated by a newer version; this one knows up to {max(known, default=0)})"
        )
    done: list[Migration] = []
    for migration in migrations:
        if migration.version in applied:
            if applied[migration.version] != migration.checksum:
                raise MigrationError(f"migration {migration.label} changed after it was applied")
            continue
        try:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
        except asyncpg.PostgresError as exc:
            raise MigrationError(
                f"migration {migration.label} failed: {type(exc).__name__}: {exc}"
            ) from exc
        done.append(migration)
    return done
