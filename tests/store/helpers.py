"""Helpers shared by the store tests.

Directories handed to embedded servers are made under the system temp directory with mode 0711:
when tests run as root the server runs as an unprivileged user, which must be able to enter them
(pytest's own tmp_path lies under a 0700 directory).
"""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path

import asyncpg
import trio
import trio_asyncio

from proxy.store.embedded import EmbeddedPostgres

# Durability is not under test; these make new clusters and CREATE DATABASE quick.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def make_server_dir(prefix: str = "ere-store-") -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


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


class ServerThread:
    """An embedded server kept running by a Trio run in a background thread until `close()`."""

    def __init__(self, data_dir: Path, settings: dict[str, str] | None = FAST_SETTINGS) -> None:
        self.server = EmbeddedPostgres(data_dir, settings=settings)
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._serve,), name="embedded-postgres")

    def open(self) -> EmbeddedPostgres:
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self.server

    def close(self) -> None:
        if self._token is not None and self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()

    async def _serve(self) -> None:
        self._stop = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._started.set()
            return
        try:
            self._started.set()
            await self._stop.wait()
        finally:
            await self.server.stop()
