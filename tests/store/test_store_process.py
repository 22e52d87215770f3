"""The journal's events stored from a child process: stored, refused, killed, cancelled, hostile frames."""

from __future__ import annotations

import os
import signal
import socket

import msgspec
import pytest
import trio

from proxy.capture.database_store import encode_event
from proxy.capture.events import ChargerBooted, Event
from proxy.capture.journal import Journal
from proxy.capture.spill import SpillLog
from proxy.capture.store_process import (
    _FAILED,
    _PING,
    _STORE,
    MAX_FRAME,
    StoreFailed,
    StoreProcess,
    StoreUnavailable,
    _Connected,
    _frame,
    _Frames,
    serve,
)
from proxy.runtime.config import DatabaseSettings
from proxy.store.db import open_database
from testkit.session_events import REAL, rename, session_ids, start


def records(*events: Event) -> list[bytes]:
    return [encode_event(event)[0] for event in events]


def boot(n: int, event_id: str | None = None) -> Event:
    return ChargerBooted(
        event_id or f"00000000-0000-0000-0001-{n:012d}",
        f"CP-{n}",
        float(n),
        "Vendor",
        "Model",
        None,
        None,
        None,
        None,
        None,
        None,
        "Accepted",
    )


async def boots(db) -> int:
    return await db.fetchval("SELECT count(*) FROM charger_boots")


async def test_a_journal_stores_through_the_child_in_order(settings, tmp_path):
    async with open_database(settings) as db, StoreProcess(settings, db.dsn) as store:
        journal = Journal(SpillLog(tmp_path / "spill"), linger=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run, store)
            journal.submit([start()])
            journal.submit([rename()])
            with trio.fail_after(30):
                while journal.stats.stored < 2:
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
        assert await session_ids(db) == [REAL]
        assert store.started == 1
        assert journal.stats.database_errors == 0


async def test_a_refused_record_becomes_a_dead_letter_in_the_child_and_the_rest_is_stored(settings):
    async with open_database(settings) as db, StoreProcess(settings, db.dsn) as store:
        outcome = await store.store(records(boot(1), boot(2, event_id="not-a-uuid"), boot(3)))
        assert (outcome.stored, outcome.lost) == (2, [])
        [note] = outcome.dead_letters
        assert (note.identity, note.event_id, note.kind, note.stage) == (
            "CP-2",
            "not-a-uuid",
            "charger_booted",
            "store",
        )
        assert "uuid" in note.error
        assert await boots(db) == 2
        assert await db.fetchval("SELECT count(*) FROM capture_dead_letters") == 1
        assert store.started == 1


async def test_a_killed_child_is_replaced_and_the_journal_loses_nothing(settings, tmp_path):
    async with open_database(settings) as db, StoreProcess(settings, db.dsn) as store:
        journal = Journal(SpillLog(tmp_path / "spill"), linger=0, retry_interval=0.05)
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run, store)
            journal.submit([boot(1)])
            with trio.fail_after(30):
                while journal.stats.stored < 1:
                    await trio.sleep(0.02)
            assert store._process is not None
            os.kill(store._process.pid, signal.SIGKILL)
            await store._process.wait()
            journal.submit([boot(2)])
            journal.submit([boot(3)])
            with trio.fail_after(30):
                while journal.spilling or journal.stats.stored + journal.stats.replayed < 3:
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
        assert await boots(db) == 3
        assert journal.stats.database_errors >= 1
        assert journal.stats.lost == 0
        assert store.started == 2


async def test_a_cancelled_store_kills_the_child_and_the_next_call_starts_another(settings):
    async with open_database(settings) as db, StoreProcess(settings, db.dsn) as store:
        await store.store(records(boot(1)))
        first = store._process
        async with db.transaction() as conn:  # holds the row lock the next store needs
            await conn.execute("SELECT 1 FROM charger_boots WHERE identity = 'CP-1' FOR UPDATE")
            with trio.move_on_after(0.5) as scope:
                await store.store(records(boot(1, event_id="00000000-0000-0000-0002-000000000001")))
            assert scope.cancelled_caught
        assert first is not None and first.returncode is not None
        await store.store(records(boot(2)))
        assert store.started == 2
        assert await boots(db) == 2


async def test_no_database_fails_each_call_quickly_and_the_child_keeps_trying(tmp_path):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    settings = DatabaseSettings(
        dsn=f"postgresql://nobody@127.0.0.1:{port}/none", connect_timeout=0.2
    )
    async with StoreProcess(settings, settings.dsn) as store:
        with trio.fail_after(20):
            assert not await store.answers()
            with pytest.raises(StoreFailed, match="not connected yet|database unavailable"):
                await store.store(records(boot(1)))
        assert store.started == 1


async def test_leaving_ends_the_child(settings):
    async with StoreProcess(settings, settings.dsn) as store:
        assert await store.answers()
        process = store._process
    assert process is not None and process.returncode == 0


class _Ours:
    """The worker's end of a socket pair to `serve`, speaking frames by hand."""

    def __init__(self, sock: socket.socket) -> None:
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self.frames = _Frames(self.stream)

    async def ask(self, raw: bytes) -> tuple[int, bytes] | None:
        await self.stream.send_all(raw)
        return await self.frames.receive()


@pytest.fixture
async def child_end(nursery):
    """`serve` on one end of a socket pair with no database; the test holds the other end."""
    ours, theirs = socket.socketpair()
    ended = trio.Event()
    result: list[BaseException | None] = []

    async def run() -> None:
        try:
            connected = _Connected()
            connected.tried.set()  # and failed: no database here
            async with trio.SocketStream(trio.socket.from_stdlib_socket(theirs)) as stream:
                await serve(stream, connected)
            result.append(None)
        except BaseException as exc:
            result.append(exc)
        ended.set()

    nursery.start_soon(run)
    worker = _Ours(ours)
    yield worker, ended, result
    await worker.stream.aclose()


async def test_serve_answers_hostile_requests_with_failed_and_goes_on(child_end):
    ours, _, _ = child_end
    assert await ours.ask(_frame(9, b"")) == (_FAILED, b"StoreUnavailable('not connected yet')")
    assert (await ours.ask(_frame(_STORE, b"\xc1 garbage")))[0] == _FAILED
    assert (await ours.ask(_frame(_PING, b"")))[0] == _FAILED
    assert (await ours.ask(_frame(_STORE, msgspec.msgpack.encode([{"kind": "nope"}]))))[
        0
    ] == _FAILED


async def test_serve_ends_on_an_oversized_or_torn_frame(child_end):
    ours, ended, result = child_end
    await ours.stream.send_all((MAX_FRAME + 1).to_bytes(4, "little") + bytes([_STORE]))
    with trio.fail_after(10):
        await ended.wait()
    assert isinstance(result[0], StoreUnavailable)


async def test_serve_ends_quietly_when_the_worker_closes(child_end):
    ours, ended, result = child_end
    await ours.stream.send_all(_frame(_PING, b"")[:3])  # a torn header, then the worker is gone
    await ours.stream.aclose()
    with trio.fail_after(10):
        await ended.wait()
    assert isinstance(result[0], StoreUnavailable)


async def test_a_clean_close_ends_serve_without_error(child_end):
    ours, ended, result = child_end
    assert (await ours.ask(_frame(_PING, b"")))[0] == _FAILED
    await ours.stream.aclose()
    with trio.fail_after(10):
        await ended.wait()
    assert result == [None]
