"""asyncpg's query methods made awaitable from Trio, through a trio-asyncio loop.

`Connection` wraps either an asyncpg pool (each call borrows a connection for that call) or one
acquired asyncpg connection (calls share its session: transactions, advisory locks, temp tables).
Every call runs as an asyncio task on the given loop and is awaited from Trio.

Errors: asyncpg's own exceptions pass through unchanged (`asyncpg.PostgresError` subclasses for
anything the server refused, `asyncpg.InterfaceError` for misuse). Cancellation: cancelling the
Trio caller cancels the asyncio task, and asyncpg asks the server to cancel the running query;
the call returns only after that has settled. A transaction left by an exception or cancellation
is rolled back (shielded, bounded); a connection that cannot even roll back is closed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_asyncio

# How long cleanup (rollback, release) may take once the caller is gone.
CLEANUP_TIMEOUT = 10.0


class Connection:
    """Query methods on an asyncpg pool or connection; see the module docstring."""

    def __init__(self, target: Any, loop: Any) -> None:
        self._target = target
        self._loop = loop

    def _aio(self, function: Callable[..., Any]) -> Callable[..., Any]:
        return trio_asyncio.aio_as_trio(function, loop=self._loop)

    async def execute(self, query: str, *args: object, timeout: float | None = None) -> str:
        """Run one statement (or, without arguments, several separated by `;`); returns its status."""
        return await self._aio(self._target.execute)(query, *args, timeout=timeout)

    async def executemany(
        self, query: str, args: Iterable[Sequence[object]], *, timeout: float | None = None
    ) -> None:
        """Run one statement for each argument tuple, pipelined; atomic as a whole."""
        await self._aio(self._target.executemany)(query, args, timeout=timeout)

    async def fetch(self, query: str, *args: object, timeout: float | None = None) -> list[Any]:
        """All rows, as asyncpg Records (indexable by position and by column name)."""
        return await self._aio(self._target.fetch)(query, *args, timeout=timeout)

    async def fetchrow(self, query: str, *args: object, timeout: float | None = None) -> Any:
        """The first row, or None."""
        return await self._aio(self._target.fetchrow)(query, *args, timeout=timeout)

    async def fetchval(
        self, query: str, *args: object, column: int = 0, timeout: float | None = None
    ) -> Any:
        """One value of the first row, or None."""
        return await self._aio(self._target.fetchval)(query, *args, column=column, timeout=timeout)

    async def copy_records_to_table(
        self,
        table: str,
        *,
        records: Iterable[Sequence[object]],
        columns: Sequence[str] | None = None,
        schema_name: str | None = None,
        timeout: float | None = None,
    ) -> str:
        """Bulk insert with COPY (binary format); the fastest way in for many rows."""
        return await self._aio(self._target.copy_records_to_table)(
            table, records=records, columns=columns, schema_name=schema_name, timeout=timeout
        )

    @asynccontextmanager
    async def transaction(
        self, *, isolation: str | None = None, readonly: bool = False
    ) -> AsyncIterator[Connection]:
        """Commit on a clean exit, roll back on an exception or cancellation.

        On a pool, borrows one connection for the whole block and yields it; on a connection,
        yields itself (nested blocks become savepoints).
        """
        async with self._session() as conn:
            tx = conn._target.transaction(isolation=isolation, readonly=readonly)
            try:
                # BEGIN and COMMIT inside too: cancelled while one is under way, the connection's
                # state is unknown, and the rollback below either settles it or closes it.
                await conn._aio(tx.start)()
                yield conn
                await conn._aio(tx.commit)()
            except BaseException:
                with trio.CancelScope(shield=True):
                    rolled_back = False
                    with trio.move_on_after(CLEANUP_TIMEOUT):
                        try:
                            await conn._aio(tx.rollback)()
                            rolled_back = True
                        except Exception:
                            pass
                    if not rolled_back:
                        conn._target.terminate()
                raise

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Connection]:
        """This connection itself; `Database` overrides it to borrow one from the pool."""
        yield self
