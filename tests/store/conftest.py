"""Fixtures: one embedded PostgreSQL server for the whole run, and a fresh database per test.

The server runs in a thread of its own (with its own Trio run), because pytest-trio gives every
test a separate Trio run and session-scoped fixtures cannot be async. Each test that asks for
`database_dsn` gets an empty database of its own on that server, dropped afterwards.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from proxy.runtime.config import DatabaseSettings
from proxy.store.embedded import EmbeddedPostgres
from testkit.postgres import FAST_SETTINGS, ServerThread, admin_execute, make_data_dir


@pytest.fixture
def server_dir() -> Iterator[Path]:
    """An empty directory an embedded server (running as any user) can use."""
    path = make_data_dir("ere-store-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    """The embedded server shared by every store test; stopped and deleted at the end."""
    data_dir = make_data_dir("ere-store-session-")
    thread = ServerThread(data_dir, settings=FAST_SETTINGS)
    try:
        yield thread.open().server
    finally:
        thread.close()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def database_dsn(pg_server: EmbeddedPostgres) -> AsyncIterator[str]:
    """DSN of an empty database for this test alone."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    await admin_execute(pg_server, f'CREATE DATABASE "{name}"')
    try:
        yield pg_server.dsn(name)
    finally:
        with trio.CancelScope(shield=True):
            await admin_execute(pg_server, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def settings(database_dsn: str) -> DatabaseSettings:
    return DatabaseSettings(dsn=database_dsn, pool_size=4, connect_timeout=5.0)
