"""Embedded PostgreSQL for tests and benchmarks: scratch directories, a server kept running in a
thread, statements on its maintenance database, and `sql` (statements on any database from
Trio: asyncpg on an asyncio loop of its own, in a thread).

Directories handed to embedded servers are made under the system temp directory with mode 0711:
when run as root the server runs as an unprivileged user, which must be able to enter them
(pytest's own tmp_path lies under a 0700 directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import trio
import trio_asyncio

from proxy.store.embedded import EmbeddedPostgres

# Durability is not under test; these make new clusters and CREATE DATABASE quick.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def make_data_dir(prefix: str = "ere-pg-") -> Path:
    """A fresh directory an embedded server running as any user can use (mode 0711)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


def postmaster_pid(data_dir: Path) -> int | None:
    """The running postmaster of the embedded server in `data_dir`, or None."""
    try:
        pid = int((data_dir / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"postgres" in cmdline else None


def stop_server(data_dir: Path, grace: float = 15.0) -> None:
    """Stop a postmaster left running in `data_dir` (fast shutdown, then immediate, then kill)."""
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
        pid = postmaster_pid(data_dir)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and postmaster_pid(data_dir) == pid:
            time.sleep(0.1)


def remove_data_dir(data_dir: Path) -> None:
    stop_server(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


class ServerThread:
    """An embedded PostgreSQL kept running by a Trio run in a background thread until `close()`."""

    def __init__(self, data_dir: Path, settings: dict[str, str] | None = None) -> None:
        self.server = EmbeddedPostgres(data_dir, settings=settings)  # default settings: fsync on
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(
            target=trio.run, args=(self._serve,), name="embedded-postgres"
        )

    def open(self) -> ServerThread:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def close(self) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()

    def crash(self) -> None:
        """SIGQUIT the postmaster (immediate shutdown, crash recovery at the next start)."""
        pid_file = self.server.pgdata / "postmaster.pid"
        os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
        deadline = time.monotonic() + 30
        while pid_file.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("PostgreSQL did not go away after SIGQUIT")
            time.sleep(0.02)
        self.close()

    async def _serve(self) -> None:
        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        try:
            self._ready.set()
            await self._stop.wait()
        finally:
            await self.server.stop()


def start_database(data_dir: Path) -> ServerThread:
    """A durable server (fsync on) in `data_dir / "db"`, running until `close()`."""
    return ServerThread(data_dir / "db").open()


def create_database(server: ServerThread, name: str = "ere_proxy") -> str:
    """CREATE DATABASE `name` on a running server (from outside any Trio run); its DSN."""
    trio.run(admin_execute, server.server, f'CREATE DATABASE "{name}"')
    return server.server.dsn(name)


async def admin_execute(server: EmbeddedPostgres, *statements: str) -> None:
    """Run statements on the server's maintenance database, outside any transaction."""
    async with trio_asyncio.open_loop() as loop:
        conn = await trio_asyncio.aio_as_trio(asyncpg.connect, loop=loop)(server.dsn())
        try:
            for statement in statements:
                await trio_asyncio.aio_as_trio(conn.execute, loop=loop)(statement)
        finally:
            await trio_asyncio.aio_as_trio(conn.close, loop=loop)()


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


async def sql(dsn: str, *statements: tuple[Any, ...]) -> list[Any]:
    """Run (statement, *args) tuples in order on one connection; the rows of the last one."""

    async def run() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            rows: list[Any] = []
            for statement, *args in statements:
                rows = await conn.fetch(statement, *args)
            return rows
        finally:
            await conn.close()

    return await trio.to_thread.run_sync(asyncio.run, run())
