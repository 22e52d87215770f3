"""Faults for end-to-end tests of the ERE worker, capture and forwarding alerts, and the peers
that bring them about.

- `create_worker_role`: a login role for the ERE workers with the privileges they use, so a
  test can revoke one (a pipeline read or a job claim then fails the way it does in production);
- `holding`: a transaction kept open with the locks its statements took, so a job that needs
  them waits (hangs) until the block ends;
- `ShiftableClock`: the environment of a process whose clocks (wall and monotonic) the test can
  move forward while it runs (libfaketime reading an offset from a file);
- `SlowBackOffice`: a back-office that accepts the WebSocket upgrade and then reads slowly, so
  the proxy's writes to it are held up (forwarding latency);
- `keep_sending`: a charger that sends a frame again and again until cancelled;
- `until_firing`: wait, bounded, until Prometheus shows alerts firing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import trio
import trio_asyncio

from testkit.postgres import sql
from testkit.prometheus import WAIT, Prometheus
from testkit.system_roles import FAKETIME_LIB
from testkit.waiting import until
from testkit.websocket import TEXT, client_handshake, encode_frame, server_handshake

WORKER_ROLE = "ere_worker"
# Bound on an alert firing once its fault is there (the freshness SLI is sampled per minute).
ALERT_WAIT = 150.0


async def create_worker_role(dsn: str, role: str = WORKER_ROLE) -> str:
    """A login role that may read and write every table and sequence of the (migrated) database
    `dsn`, as an ERE worker's own role does; the DSN that logs in as it (trust authentication)."""
    await sql(
        dsn,
        (f"CREATE ROLE {role} LOGIN",),
        (f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",),
        (f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}",),
    )
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}"))


@asynccontextmanager
async def holding(dsn: str, *statements: str) -> AsyncIterator[None]:
    """Run `statements` in a transaction that stays open, its locks held, until the block ends
    (then it is rolled back)."""
    async with trio_asyncio.open_loop() as loop:
        conn = await trio_asyncio.aio_as_trio(asyncpg.connect, loop=loop)(dsn)
        try:
            transaction = conn.transaction()
            await trio_asyncio.aio_as_trio(transaction.start, loop=loop)()
            for statement in statements:
                await trio_asyncio.aio_as_trio(conn.execute, loop=loop)(statement)
            yield
            await trio_asyncio.aio_as_trio(transaction.rollback, loop=loop)()
        finally:
            await trio_asyncio.aio_as_trio(conn.close, loop=loop)()


class ShiftableClock:
    """Clocks of a process run under libfaketime at an offset read from `path` at every reading
    (wall and monotonic alike): `env` starts it `offset` seconds from the real time (0: at it;
    negative: in the past), `shift` moves it to another offset."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self.shift(offset)

    def env(self) -> dict[str, str]:
        return os.environ | {
            "LD_PRELOAD": FAKETIME_LIB,
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_NO_CACHE": "1",
        }

    def shift(self, seconds: int) -> None:
        self.path.write_text(f"{seconds:+d}\n")


class SlowBackOffice:
    """A back-office that accepts every WebSocket upgrade under /ocpp, answers nothing and reads
    at most `read_bytes` every `pause` seconds: a charger that sends faster than that fills the
    socket buffers, and the proxy's writes to this back-office wait for it to read."""

    def __init__(self, read_bytes: int = 65536, pause: float = 0.01) -> None:
        self.read_bytes, self.pause = read_bytes, pause
        self.port = 0
        self.received = 0  # bytes read after the upgrade

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on a free loopback port (`nursery.start` returns it) until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._serve_one, listeners)

    async def _serve_one(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                if await server_handshake(stream, "/ocpp", ("ocpp1.6", "ocpp2.0.1")) is None:
                    return
                while data := await stream.receive_some(self.read_bytes):
                    self.received += len(data)
                    await trio.sleep(self.pause)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the proxy closed the link


async def keep_sending(
    port: int,
    identity: str,
    frame: Callable[[], bytes],
    every: float,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A 1.6 charger connected to the proxy on `port` sends `frame()` every `every` seconds (0:
    as fast as its socket takes them) until cancelled; what it receives is read and dropped."""

    async def discard(stream: trio.SocketStream) -> None:
        while await stream.receive_some(65536):
            pass

    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream, trio.open_nursery() as nursery:
        with trio.fail_after(WAIT):
            await client_handshake(stream, f"127.0.0.1:{port}", f"/ocpp/{identity}", ["ocpp1.6"])
        nursery.start_soon(discard, stream)
        task_status.started()
        while True:
            await stream.send_all(frame())
            await trio.sleep(every)


def text_frame(message: list[Any]) -> bytes:
    """An OCPP message as the masked text frame a charger sends."""
    return encode_frame(TEXT, json.dumps(message).encode(), mask=True)


def unique_id(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns()}"


async def until_firing(prometheus: Prometheus, *names: str, limit: float = ALERT_WAIT) -> None:
    """Wait until each alert (by name, any of its rules) is firing; fail after `limit` s each."""
    for name in names:

        def is_firing(name: str = name) -> bool:
            return prometheus.alert_states().get(name) == "firing"

        await until(is_firing, f"alert {name} firing", limit)
