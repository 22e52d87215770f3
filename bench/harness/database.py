"""One statement or query on a database from a scenario's plain (non-async) code."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg


def fetch(dsn: str, query: str, *args: Any, timeout: float = 60.0) -> list:
    """The rows of one query, on a connection of its own."""

    async def run() -> list:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return list(await conn.fetch(query, *args, timeout=timeout))
        finally:
            await conn.close()

    return asyncio.run(run())


def execute(dsn: str, statement: str, timeout: float = 60.0) -> None:
    """Run one statement (CREATE DATABASE too: outside any transaction)."""

    async def run() -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute(statement, timeout=timeout)
        finally:
            await conn.close()

    asyncio.run(run())
