"""The database handle: a pool of PostgreSQL connections usable from Trio.

`open_database(settings)` is an async context manager that, in order, starts the embedded server
if no DSN is configured (see `embedded.py`), opens a trio-asyncio loop and an asyncpg pool on it,
and applies pending migrations; on exit it undoes these in reverse (the pool closes before the
server stops). The `Database` it yields has the query methods of `Connection` (each call borrows a
pooled connection), `connection()` for one session and `transaction()` for an atomic block.
A connection goes back to the pool reset (asyncpg's reset query: RESET ALL, UNLISTEN *, CLOSE
ALL, advisory locks released), one more round trip per call; with `lean_release` only the
connections `connection()` lent are, for a role whose calls and transaction blocks leave nothing
in a session (SET LOCAL and transaction-level advisory locks only; no LISTEN).

Nothing here belongs on the forwarding path: every call may wait for the network, a lock or a
full pool. Code that forwards frames hands records to a bounded channel that a separate task
drains into the database, so a slow or absent database never delays a frame.

Errors: `DatabaseUnavailable` if no connection can be made within `connect_timeout` (retrying
refused connections and servers still starting up; a wrong password or missing database fails at
once), `EmbeddedPostgresError` and `MigrationError` from those steps; asyncpg's exceptions from
queries. Errors raised inside the `async with` block come out as themselves, not wrapped in the
exception groups of the internal nurseries. Cancellation: queries are cancelled on the server;
teardown is shielded and bounded (a pool that does not close in time is terminated).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import msgspec
import trio
import trio_asyncio

from proxy.runtime.config import DatabaseSettings
from proxy.store.connection import CLEANUP_TIMEOUT, Connection
from proxy.store.embedded import SUPERUSER, EmbeddedPostgres
from proxy.store.errors import DatabaseUnavailable, StoreError
from proxy.store.migrate import Migration, apply_migrations

# What a failed query or a lost connection can raise: callers that retry later catch these.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
    StoreError,
)

# The database the application uses on the embedded server (created on first start).
EMBEDDED_DATABASE = "ere_proxy"

# Connection failures worth retrying until connect_timeout: the server may still be starting.
_TRANSIENT = (OSError, TimeoutError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError)


class Database(Connection):
    """A connection pool; query methods borrow a connection per call. See the module docstring."""

    def __init__(
        self,
        pool: Any,
        loop: Any,
        dsn: str,
        applied: list[Migration],
        acquire_timeout: float = 60.0,
        *,
        lean_release: bool = False,
    ) -> None:
        super().__init__(pool, loop)
        self.dsn = dsn  # may contain a password: never log it, use `redact_dsn`
        self.applied_migrations = applied  # what opening this database applied
        self.acquire_timeout = acquire_timeout
        self._lean_release = lean_release

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """One pooled connection for the block (one session: locks, temp tables, SET), reset
        when it goes back.

        Waiting for a free connection is bounded too (`DatabaseUnavailable` after the client's
        statement deadline: every connection of the pool is stuck on a stalled server).
        """
        # A lean pool does not reset what it takes back: the session is reset here.
        async with self._borrow(reset=self._lean_release) as conn:
            yield conn

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[Connection]:
        """A pooled connection for one transaction block (`Connection.transaction`)."""
        async with self._borrow(reset=False) as conn:
            yield conn

    @asynccontextmanager
    async def _borrow(self, *, reset: bool) -> AsyncIterator[Connection]:
        try:
            raw = await self._aio(self._target.acquire)(timeout=self.acquire_timeout)
        except TimeoutError as exc:
            raise DatabaseUnavailable("no database connection became free in time") from exc
        try:
            yield Connection(raw, self._loop)
        finally:
            with trio.CancelScope(shield=True):
                if reset:
                    try:
                        await self._aio(raw.reset)(timeout=CLEANUP_TIMEOUT)
                    except Exception:
                        raw.terminate()  # a session that cannot be reset is not used again
                # asyncpg resets the session unless lean (and closes it if that takes longer
                # than the timeout)
                await self._aio(self._target.release)(raw, timeout=CLEANUP_TIMEOUT)


@asynccontextmanager
async def open_database(
    settings: DatabaseSettings,
    *,
    migrate: bool = True,
    migrations: list[Migration] | None = None,
    server_settings: Mapping[str, str] | None = None,
    query_timeout: float | None = None,
    lean_release: bool = False,
) -> AsyncIterator[Database]:
    """Open the configured database (see the module docstring).

    `migrate=False` skips migrations (`ere-proxy migrate` applies them itself and reports them);
    `migrations` replaces the packaged set; `server_settings` are extra postgresql.conf settings
    for an embedded server (e.g. fsync=off in tests), over `[database] embedded_settings`;
    `query_timeout` replaces the settings' deadline of every statement (the ERE workers' is
    longer); `lean_release` skips asyncpg's reset query on release but for `connection()` blocks
    (see the module docstring).
    """
    if query_timeout is not None:
        settings = msgspec.structs.replace(settings, query_timeout=query_timeout)
    with _unwrap_single_errors():
        if settings.dsn:
            async with _open(settings, settings.dsn, migrate, migrations, lean_release) as db:
                yield db
            return
        server = EmbeddedPostgres(
            Path(settings.data_dir),
            settings={**settings.embedded_server_settings(), **(server_settings or {})},
        )
        await server.start()
        try:
            await _ensure_embedded_database(server, settings)
            dsn = server.dsn(EMBEDDED_DATABASE)
            async with _open(settings, dsn, migrate, migrations, lean_release) as db:
                yield db
        finally:
            await server.stop()


@asynccontextmanager
async def _open(
    settings: DatabaseSettings,
    dsn: str,
    migrate: bool,
    migrations: list[Migration] | None,
    lean_release: bool,
) -> AsyncIterator[Database]:
    async with trio_asyncio.open_loop() as loop:
        pool = await _create_pool(
            loop,
            dsn,
            settings.pool_size,
            settings.connect_timeout,
            settings.query_timeout,
            lean_release=lean_release,
        )
        try:
            db = Database(
                pool,
                loop,
                dsn,
                [],
                settings.query_timeout + _CLIENT_GRACE,
                lean_release=lean_release,
            )
            if migrate:
                async with db.connection() as conn:
                    db.applied_migrations = await apply_migrations(conn, migrations)
            yield db
        finally:
            with trio.CancelScope(shield=True):
                with trio.move_on_after(CLEANUP_TIMEOUT) as closing:
                    await trio_asyncio.aio_as_trio(pool.close, loop=loop)()
                if closing.cancelled_caught:
                    pool.terminate()


# TCP keepalives (seconds): a server that vanished from the network is noticed within about a
# minute even on an idle connection. (A stalled server still answers keepalives from its kernel:
# the statement deadlines cover that.) Ignored on Unix sockets.
_KEEPALIVE_IDLE, _KEEPALIVE_INTERVAL, _KEEPALIVE_COUNT = 30, 10, 3
# The client waits this much longer than the server's statement_timeout: the server cancels first.
_CLIENT_GRACE = 5.0


def _session_settings(query_timeout: float) -> dict[str, str]:
    return {
        "statement_timeout": str(int(query_timeout * 1000)),
        "tcp_keepalives_idle": str(_KEEPALIVE_IDLE),
        "tcp_keepalives_interval": str(_KEEPALIVE_INTERVAL),
        "tcp_keepalives_count": str(_KEEPALIVE_COUNT),
    }


async def _keep_alive(conn: Any) -> None:
    """Turn on TCP keepalives on the client side of a new connection (TCP only)."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", _KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", _KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", _KEEPALIVE_COUNT),
    ):
        if hasattr(socket, option):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


async def _keep_session(conn: Any) -> None:
    """A lean pool's reset on release: nothing more than asyncpg's own rollback of a
    transaction left open (see the module docstring)."""


async def _create_pool(
    loop: Any,
    dsn: str,
    size: int,
    connect_timeout: float,
    query_timeout: float,
    *,
    lean_release: bool = False,
) -> Any:
    """An asyncpg pool with one connection open, retrying transient failures until the deadline.

    Every statement has a deadline: the server's `statement_timeout` (`query_timeout`), and
    asyncpg's `command_timeout` a little later for a server that does not answer at all.
    """
    create = trio_asyncio.aio_as_trio(asyncpg.create_pool, loop=loop)
    deadline = trio.current_time() + connect_timeout
    delay = 0.05
    while True:
        remaining = deadline - trio.current_time()
        try:
            with trio.fail_after(max(remaining, 0.0) + 1.0):  # asyncpg's own timeout comes first
                return await create(
                    dsn,
                    min_size=1,
                    max_size=size,
                    timeout=max(remaining, 0.001),
                    command_timeout=query_timeout + _CLIENT_GRACE,
                    server_settings=_session_settings(query_timeout),
                    init=_keep_alive,
                    reset=_keep_session if lean_release else None,
                    # Prepared statements stay cached (up to asyncpg's 100 per connection, least
                    # recently used out): a lifetime re-arms a 300 s timer at every use, and the
                    # trio-asyncio loop keeps each cancelled timer until it is due, so a busy
                    # pool piles up ~100,000 dead timers, every one walked by the collector.
                    max_cached_statement_lifetime=0,
                )
        except (*_TRANSIENT, trio.TooSlowError) as exc:
            error: BaseException = exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise DatabaseUnavailable(
                f"cannot connect to {redact_dsn(dsn)}: {_describe(exc)}"
            ) from exc
        if trio.current_time() + delay >= deadline:
            raise DatabaseUnavailable(
                f"cannot connect to {redact_dsn(dsn)} within {connect_timeout:g} s: {_describe(error)}"
            ) from error
        await trio.sleep(delay)
        delay = min(delay * 2, 1.0)


# Session advisory lock taken on the embedded server while its application database is made:
# processes starting together (a supervisor's workers) would otherwise both try, and the server
# would log the loser's duplicate-key ERROR although nothing went wrong.
_CREATE_DATABASE_LOCK = 0x6572655F70726F78  # "ere_prox"


async def _ensure_embedded_database(server: EmbeddedPostgres, settings: DatabaseSettings) -> None:
    """Create the application database on the embedded server on first start.

    One process at a time looks and creates (under an advisory lock), so the first start logs no
    error however many processes start together.
    """
    async with trio_asyncio.open_loop() as loop:
        pool = await _create_pool(
            loop, server.dsn(), 1, settings.connect_timeout, settings.query_timeout
        )
        aio = trio_asyncio.aio_as_trio
        try:
            conn = await aio(pool.acquire, loop=loop)()  # the lock belongs to this session
            try:
                execute, fetchval = aio(conn.execute, loop=loop), aio(conn.fetchval, loop=loop)
                await execute("SELECT pg_advisory_lock($1)", _CREATE_DATABASE_LOCK)
                query = "SELECT 1 FROM pg_database WHERE datname = $1"
                if not await fetchval(query, EMBEDDED_DATABASE):
                    await execute(f'CREATE DATABASE "{EMBEDDED_DATABASE}"')
                await execute("SELECT pg_advisory_unlock($1)", _CREATE_DATABASE_LOCK)
            finally:
                with trio.CancelScope(shield=True):  # (a release also drops a lock still held)
                    await aio(pool.release, loop=loop)(conn)
        finally:
            with trio.CancelScope(shield=True):
                await aio(pool.close, loop=loop)()


def describe_database(settings: DatabaseSettings) -> str:
    """Which database these settings open, for logs: the DSN without its password, or where the
    embedded server lives."""
    if settings.dsn:
        return redact_dsn(settings.dsn)
    pgdata = Path(settings.data_dir).absolute() / "postgres"
    return f"embedded PostgreSQL in {pgdata} (database {EMBEDDED_DATABASE}, user {SUPERUSER})"


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ***, for messages and logs."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


@contextmanager
def _unwrap_single_errors() -> Iterator[None]:
    """Re-raise a lone exception from the trio-asyncio loop's nurseries as itself."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from None
        raise
