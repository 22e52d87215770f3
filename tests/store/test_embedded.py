"""The embedded server: create, start, stop, restart, share a directory, fail clearly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import trio
import trio_asyncio

from proxy.store.embedded import EmbeddedPostgres, open_embedded_postgres
from proxy.store.errors import EmbeddedPostgresError
from testkit.postgres import FAST_SETTINGS, make_data_dir


async def query(dsn: str, sql: str) -> object:
    async with trio_asyncio.open_loop() as loop:
        conn = await trio_asyncio.aio_as_trio(asyncpg.connect, loop=loop)(dsn)
        try:
            return await trio_asyncio.aio_as_trio(conn.fetchval, loop=loop)(sql)
        finally:
            await trio_asyncio.aio_as_trio(conn.close, loop=loop)()


def server_is_running(pid: int) -> bool:
    """True for a live process; false once it exited (even before its parent reaped it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def postmaster_pid(server: EmbeddedPostgres) -> int:
    return int((server.pgdata / "postmaster.pid").read_text().split()[0])


async def test_restart_on_the_same_directory_keeps_the_data(server_dir: Path) -> None:
    async with open_embedded_postgres(server_dir, settings=FAST_SETTINGS) as server:
        assert server.started_here
        await query(server.dsn(), "CREATE TABLE kept AS SELECT 42 AS answer")
        pid = postmaster_pid(server)
        if os.geteuid() == 0:
            assert server.pgdata.stat().st_uid != 0  # the server does not run as root
    assert not server_is_running(pid)
    assert not (server.pgdata / "postmaster.pid").exists()  # a clean (fast) shutdown
    async with open_embedded_postgres(server_dir, settings=FAST_SETTINGS) as again:
        assert await query(again.dsn(), "SELECT answer FROM kept") == 42
    assert "database system is shut down" in (server_dir / "postgres.log").read_text()


async def test_handles_sharing_a_directory_share_one_server_and_the_last_stops_it(
    server_dir: Path,
) -> None:
    first = EmbeddedPostgres(server_dir, settings=FAST_SETTINGS)
    second = EmbeddedPostgres(server_dir, settings=FAST_SETTINGS)
    await first.start()
    await second.start()
    assert first.started_here and not second.started_here and second.dsn() == first.dsn()
    pid = postmaster_pid(first)
    await first.stop()  # the one that started it leaves first: the server stays for the other
    assert await query(second.dsn(), "SELECT 1") == 1
    await second.stop()
    assert not server_is_running(pid)


ORPHAN_MAKER = """
import sys, trio
from proxy.store.embedded import EmbeddedPostgres
async def main():
    server = EmbeddedPostgres(sys.argv[1], settings={"fsync": "off"})
    await server.start()
    print(server.dsn(), flush=True)
    await trio.sleep_forever()
trio.run(main)
"""


async def test_a_server_left_by_a_crashed_process_is_restarted(server_dir: Path) -> None:
    crashing = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_MAKER, str(server_dir)], stdout=subprocess.PIPE
    )
    try:
        assert crashing.stdout is not None
        await trio.to_thread.run_sync(crashing.stdout.readline)
        old_pid = int((server_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    finally:
        crashing.kill()  # SIGKILL: no cleanup; the server (in a session of its own) lives on
        crashing.wait()
        if crashing.stdout is not None:
            crashing.stdout.close()
    assert server_is_running(old_pid)
    async with open_embedded_postgres(server_dir, settings=FAST_SETTINGS) as server:
        assert server.started_here
        assert postmaster_pid(server) != old_pid and not server_is_running(old_pid)
        assert await query(server.dsn(), "SELECT 1") == 1


async def test_run_reports_started_and_stops_on_cancellation(server_dir: Path) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(EmbeddedPostgres(server_dir, settings=FAST_SETTINGS).run)
        pid = postmaster_pid(server)
        assert await query(server.dsn(), "SELECT 2") == 2
        nursery.cancel_scope.cancel()
    assert not server_is_running(pid)


async def test_run_raises_if_the_server_dies(server_dir: Path) -> None:
    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(EmbeddedPostgres(server_dir, settings=FAST_SETTINGS).run)
            os.kill(postmaster_pid(server), 9)
    assert caught.group_contains(EmbeddedPostgresError, match="stopped")


async def test_servers_in_different_directories_start_side_by_side() -> None:
    dirs = [make_data_dir() for _ in range(3)]
    answers: list[object] = []

    async def one(path: Path) -> None:
        async with open_embedded_postgres(path, settings=FAST_SETTINGS) as server:
            answers.append(await query(server.dsn(), "SELECT current_setting('data_directory')"))

    try:
        async with trio.open_nursery() as nursery:
            for path in dirs:
                nursery.start_soon(one, path)
    finally:
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)
    assert sorted(answers) == sorted(str(path / "postgres") for path in dirs)


async def test_a_server_that_cannot_start_fails_with_its_log(server_dir: Path) -> None:
    with pytest.raises(EmbeddedPostgresError, match="did not start") as caught:
        async with open_embedded_postgres(server_dir, settings={"shared_buffers": "plenty"}):
            pass
    assert "shared_buffers" in str(caught.value)  # the log tail names the bad setting


async def test_a_data_dir_too_long_for_the_socket_is_refused(server_dir: Path) -> None:
    with pytest.raises(EmbeddedPostgresError, match="too long"):
        async with open_embedded_postgres(server_dir / ("x" * 120)):
            pass


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
async def test_a_directory_the_server_user_cannot_enter_is_named(server_dir: Path) -> None:
    server_dir.chmod(0o700)
    with pytest.raises(EmbeddedPostgresError, match=f"cannot enter {server_dir}"):
        async with open_embedded_postgres(server_dir / "data"):
            pass
