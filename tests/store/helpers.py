"""Helpers shared by the store tests.

Directories handed to embedded servers are made under the system temp directory with mode 0711:
when tests run as root the server runs as an unprivileged user, which must be able to enter them
(pytest's own tmp_path lies under a 0700 directory).
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
import trio_asyncio

from bench.pg import make_data_dir
from proxy.store.embedded import EmbeddedPostgres

# Durability is not under test; these make new clusters and CREATE DATABASE quick.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def make_server_dir(prefix: str = "ere-store-") -> Path:
    return make_data_dir(prefix)


async def admin_execute(server: EmbeddedPostgres, *statements: str) -> None:
    """Run statements on the server's maintenance database, outside any transaction."""
    async with trio_asyncio.open_loop() as loop:
        conn = await trio_asyncio.aio_as_trio(asyncpg.connect, loop=loop)(server.dsn())
        try:
            for statement in statements:
                await trio_asyncio.aio_as_trio(conn.execute, loop=loop)(statement)
        finally:
            await trio_asyncio.aio_as_trio(conn.close, loop=loop)()


def write_migrations(directory: Path, files: dict[str, str]) -> Path:
    """A migrations directory holding `files` (name -> SQL)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


async def admin_fetch(server: EmbeddedPostgres, query: str, *args: object) -> list:
    """Rows of one query on the server's maintenance database."""
    async with trio_asyncio.open_loop() as loop:
        conn = await trio_asyncio.aio_as_trio(asyncpg.connect, loop=loop)(server.dsn())
        try:
            return await trio_asyncio.aio_as_trio(conn.fetch, loop=loop)(query, *args)
        finally:
            await trio_asyncio.aio_as_trio(conn.close, loop=loop)()


async def backends_of(server: EmbeddedPostgres, database: str) -> list[int]:
    """Process ids of the client backends connected to `database`."""
    rows = await admin_fetch(
        server,
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
        database,
    )
    return [row["pid"] for row in rows]
