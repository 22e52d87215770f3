"""A database that stops answering never blocks forwarding, the outbox's callers or the shutdown.

The server is stopped with SIGSTOP, postmaster and backends: the connections stay open, new ones
are queued by the kernel, and nothing ever answers, the way a hung or half-open server looks.
Every database call has a deadline, so the proxy notices in time, closes the chargers whose CALLs
it cannot store (their own queues take over), refuses new ones that need the outbox, and shuts
down while the database is still stalled.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
import trio

from proxy.runtime.config import DatabaseSettings
from proxy.store.db import open_database
from proxy.store.embedded import EmbeddedPostgres
from testkit.outbox_proxy import raw_credentials, running_proxy
from testkit.postgres import admin_fetch
from testkit.raw_charger import RawCharger, frame
from testkit.upstream import Csms

# Forwarded by both engines (see testkit.engines).
pytestmark = pytest.mark.usefixtures("each_engine")

STATUS = {"connectorId": 1, "status": "Available", "errorCode": "NoError"}


async def server_pids(server: EmbeddedPostgres) -> list[int]:
    """The postmaster and every backend of `server`."""
    postmaster = int((server.pgdata / "postmaster.pid").read_text().split()[0])
    rows = await admin_fetch(
        server, "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
    )
    return [postmaster, *(row["pid"] for row in rows)]


@contextmanager
def stopped(pids: list[int]) -> Iterator[None]:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


async def status_notification(charger: RawCharger, unique_id: str) -> None:
    await charger.send(frame(1, json.dumps([2, unique_id, "StatusNotification", STATUS]).encode()))


async def test_a_stalled_database_fails_outbox_calls_in_time_and_never_blocks_the_shutdown(
    pg_server, database_dsn, tmp_path, nursery
):
    settings = DatabaseSettings(
        dsn=database_dsn, pool_size=4, connect_timeout=2.0, query_timeout=1.0
    )
    csms = Csms()
    await csms.start(nursery)
    csms.stop()  # offline: every charger CALL is written to the outbox before it is answered
    with ExitStack() as resume:
        with trio.fail_after(
            60
        ):  # before: the shutdown waited for the stalled group commit forever
            async with running_proxy(settings, csms, tmp_path, call_timeout=1.0) as (
                port,
                _server,
                db,
            ):
                charger = await RawCharger.connect(port)
                try:
                    assert (await charger.upgrade("CP-1", raw_credentials("CP-1"))).startswith(
                        b"HTTP/1.1 101"
                    )
                    await status_notification(charger, "s1")
                    while not charger.reader.feed(await charger.stream.receive_some(4096)):
                        pass  # s1 answered: it is in the outbox
                    resume.enter_context(stopped(await server_pids(pg_server)))
                    await status_notification(charger, "s2")  # cannot be stored: never answered
                    messages = await charger.messages_until_close(reply_to_close=True)
                    assert [json.loads(m.data)[1] for m in messages[:-1]] == []
                    assert int.from_bytes(messages[-1].data[:2], "big") == 1001
                finally:
                    await charger.aclose()
                head = await RawCharger.connect(port)
                try:
                    answer = await head.upgrade("CP-2", raw_credentials("CP-2"))
                finally:
                    await head.aclose()
                assert answer.startswith(
                    b"HTTP/1.1 503"
                )  # the outbox cannot be claimed: refused at once
            # Here the proxy has shut down, with its database still stalled.
    async with open_database(settings, migrate=False) as db:
        assert await db.fetchval("SELECT count(*) FROM outbox_entries") == 1  # s1 only


async def test_a_charger_whose_back_office_accepts_it_is_forwarded_while_the_database_is_stalled(
    pg_server, database_dsn, tmp_path, nursery
):
    settings = DatabaseSettings(
        dsn=database_dsn, pool_size=4, connect_timeout=2.0, query_timeout=30.0
    )
    csms = Csms()
    await csms.start(nursery)
    with ExitStack() as resume:
        async with running_proxy(settings, csms, tmp_path) as (
            port,
            _server,
            _db,
        ):  # outbox deadlines: 30 s
            resume.enter_context(stopped(await server_pids(pg_server)))
            charger = await RawCharger.connect(port)
            try:
                with trio.fail_after(
                    10
                ):  # before: the handshake waited for the outbox lookup (60 s)
                    assert (await charger.upgrade("CP-1", raw_credentials("CP-1"))).startswith(
                        b"HTTP/1.1 101"
                    )
                    await status_notification(charger, "s1")
                    while not charger.reader.feed(await charger.stream.receive_some(4096)):
                        pass
                await csms.wait_until(lambda: [c[1] for c in csms.calls] == ["StatusNotification"])
            finally:
                await charger.aclose()
            resume.close()  # the database answers again before the proxy stops
