"""Storing the journal's events from a process of its own, so database work never stalls a link.

Building a batch's statement arguments and asyncpg's encoding run in Python: with capture on, a
worker forwarding 2,000 CALLs/s spent steps of 20-80 ms on them in the thread that forwards
frames (bench/RESULTS.md). `StoreProcess` is the journal's `EventStore` in a proxy worker: it
starts a child (`python -m proxy.capture.store_process`) over a socket pair and sends it each batch of
records (the journal has encoded each event already); the child stores it with
`proxy.capture.database_store.DatabaseStore` and answers. The worker only frames and sends; decoding,
bisecting a batch the database refuses and writing dead letters all happen in the child, which
the OS schedules apart, at a lower priority (nice 10) so that a worker forwarding frames gets the
CPU first. Bisection lives there, rather than in the journal calling `store` on halves, because
each step is then a transaction on a connection at hand instead of a round trip through this
socket with a batch re-sent, and the forwarding thread never does any of it.

Wire (both ways): `length (u32 LE) | kind (u8) | payload`. Requests: STORE (a msgpack array
whose items are the records, each a msgpack value of its own) and PING (empty); answers: OK
(for STORE the msgpack `StoreOutcome`: events stored, dead letters made, dead letters lost; for
PING empty) or FAILED (the error, UTF-8). One request at a time, answered in order. A record the
child cannot decode becomes a dead letter; a request it cannot decode at all is answered FAILED.

Errors and cancellation: a FAILED answer raises `StoreFailed` with the child's error. A child
that is gone, or an exchange that fails or is cancelled half-way (the journal's `store_timeout`),
raises `StoreUnavailable` (or the cancellation) and the child is killed: it may still be storing
that batch, which is harmless since storing is idempotent and the journal keeps the batch. The
next call starts a new child. The child connects to the database at start (requests wait for
that first attempt) and, if that fails, retries in the background, answering FAILED meanwhile.
Once connected it makes the capture tables' monthly partitions of this month and the next, and
again every hour (`proxy.store.partitions`).
It ends when the worker closes its end (or dies), after the request it is on, and ignores SIGINT
and SIGTERM: it stops through its worker, which spills what it did not store.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import struct
import sys
from collections.abc import Sequence

import msgspec
import trio

from proxy.capture.database_store import DatabaseStore, StoreOutcome
from proxy.capture.journal import EventStore
from proxy.runtime.config import DatabaseSettings
from proxy.runtime.logs import setup_logging
from proxy.store.db import DATABASE_ERRORS, Database, open_database
from proxy.store.partitions import ensure_ahead

log = logging.getLogger("proxy.store_process")

_HEADER = struct.Struct("<IB")
_STORE, _PING, _OK, _FAILED = 1, 2, 3, 4
MAX_FRAME = 256 * 1024 * 1024  # far above a batch (1,000 events of ~1 KB); a sanity bound
_STOP_TIMEOUT = 5.0  # for the child to finish the request it is on after the worker closes
_RECONNECT_DELAY = 1.0
_NICENESS = 10
_DSN_ENV = "ERE_PROXY_STORE_DSN"  # the DSN may hold a password: not on the command line
_PARTITIONS_EVERY = 3600.0  # seconds between making the capture tables' partitions ahead
_PARTITIONS_TIMEOUT = 60.0
_PARTITION_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, trio.TooSlowError)

_encoder = msgspec.msgpack.Encoder()
_records = msgspec.msgpack.Decoder(list[msgspec.Raw])
_outcome = msgspec.msgpack.Decoder(StoreOutcome)


class StoreFailed(Exception):
    """The child answered that storing failed (its error is the message)."""


class StoreUnavailable(Exception):
    """No answer from the child: it exited, or the exchange broke off."""


class _Frames:
    """Reads whole frames from a stream; a read cancelled between chunks loses nothing."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def receive(self) -> tuple[int, bytes] | None:
        """The next frame's kind and payload; None at a clean end of stream."""
        while True:
            if len(self._buffer) >= _HEADER.size:
                length, kind = _HEADER.unpack_from(self._buffer)
                if length > MAX_FRAME:
                    raise StoreUnavailable(f"frame of {length} bytes is over the limit")
                end = _HEADER.size + length
                if len(self._buffer) >= end:
                    payload = bytes(self._buffer[_HEADER.size : end])
                    del self._buffer[:end]
                    return kind, payload
            chunk = await self._stream.receive_some(1 << 20)
            if not chunk:
                if self._buffer:
                    raise StoreUnavailable("stream ended inside a frame")
                return None
            self._buffer += chunk


def _frame(kind: int, payload: bytes) -> bytes:
    return _HEADER.pack(len(payload), kind) + payload


class StoreProcess:
    """The journal's `EventStore` in a child process (see the module docstring).

    Use within `async with`: entering starts the child and waits until it has connected (or
    failed to: the journal then spills until it can store), so a worker reports ready with its
    store process up; leaving closes the child's socket, lets the child finish the request it is on (up to 5 s) and
    then kills it.
    """

    def __init__(
        self, settings: DatabaseSettings, dsn: str, *, log_level: str = "info", worker: int = 0
    ) -> None:
        self._command = [
            sys.executable,
            "-m",
            "proxy.capture.store_process",
            "--worker",
            str(worker),
            "--connect-timeout",
            str(settings.connect_timeout),
            "--log-level",
            log_level,
        ]
        self._env = {**os.environ, _DSN_ENV: dsn}
        self._lock = trio.Lock()
        self._process: trio.Process | None = None
        self._stream: trio.SocketStream | None = None
        self._frames: _Frames | None = None
        self.started = 0  # children started so far

    async def __aenter__(self) -> StoreProcess:
        async with self._lock:
            await self._start()
        if not await self.answers():  # the journal spills until it does
            log.warning("store process cannot store yet")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with trio.CancelScope(shield=True):
            await self._stop(_STOP_TIMEOUT)

    async def store(self, records: Sequence[bytes]) -> StoreOutcome:
        answer = await self._call(
            _STORE, _encoder.encode([msgspec.Raw(record) for record in records])
        )
        try:
            return _outcome.decode(answer)
        except (
            msgspec.DecodeError
        ) as exc:  # a child of another version: its batch is stored, not counted
            raise StoreFailed(f"unreadable answer from the store process: {exc}") from exc

    async def answers(self) -> bool:
        try:
            await self._call(_PING, b"")
        except (StoreFailed, StoreUnavailable):
            return False
        return True

    async def _call(self, kind: int, payload: bytes) -> bytes:
        async with self._lock:
            if self._frames is None:
                await self._start()
            assert self._stream is not None and self._frames is not None
            try:
                await self._stream.send_all(_frame(kind, payload))
                answer = await self._frames.receive()
            except BaseException as exc:
                with trio.CancelScope(shield=True):
                    code = await self._stop(0)
                if isinstance(exc, (trio.BrokenResourceError, trio.ClosedResourceError, OSError)):
                    raise StoreUnavailable(f"store process gone (exit code {code})") from exc
                raise
            if answer is None:
                code = await self._stop(_STOP_TIMEOUT)
                raise StoreUnavailable(f"store process exited (exit code {code})")
        status, text = answer
        if status != _OK:
            raise StoreFailed(text.decode(errors="replace"))
        return text

    async def _start(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            fd = theirs.fileno()
            self._process = await trio.lowlevel.open_process(
                [*self._command, "--fd", str(fd)], pass_fds=(fd,), env=self._env
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        self._frames = _Frames(self._stream)
        self.started += 1
        log.info("store process started", extra={"pid": self._process.pid})

    async def _stop(self, grace: float) -> int | None:
        """Close the child's socket, wait up to `grace` seconds, then kill it; its exit code."""
        process, stream = self._process, self._stream
        self._process = self._stream = self._frames = None
        if stream is not None:
            await stream.aclose()
        if process is None:
            return None
        with trio.move_on_after(grace):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        if process.returncode:
            log.warning(
                "store process exited", extra={"pid": process.pid, "exit_code": process.returncode}
            )
        return process.returncode


class _Connected:
    """The child's database once connected; `tried` is set after the first attempt either way."""

    def __init__(self) -> None:
        self.store: EventStore | None = None
        self.error = "not connected yet"
        self.tried = trio.Event()


async def _connect(settings: DatabaseSettings, connected: _Connected) -> None:
    """Open the database, retrying until it answers; keep it open until cancelled."""
    while True:
        try:
            async with open_database(settings, migrate=False) as db:
                connected.store = DatabaseStore(db)
                connected.tried.set()
                await _partitions_ahead(db)
        except DATABASE_ERRORS as exc:
            connected.store, connected.error = None, f"database unavailable: {exc}"
            log.warning(
                "store process cannot reach the database; retrying", extra={"error": str(exc)}
            )
        connected.tried.set()
        await trio.sleep(_RECONNECT_DELAY)


async def _partitions_ahead(db: Database) -> None:
    """Make the capture tables' partitions of this month and the next, now and every hour.

    A failure is logged and tried again at the next turn: the store makes a missing month's
    partition itself before the batch that needs it.
    """
    while True:
        try:
            with trio.fail_after(_PARTITIONS_TIMEOUT):
                async with db.transaction() as conn:
                    await ensure_ahead(conn)
        except _PARTITION_ERRORS as exc:
            log.warning("cannot make capture partitions ahead", extra={"error": str(exc)})
        await trio.sleep(_PARTITIONS_EVERY)


async def serve(stream: trio.SocketStream, connected: _Connected) -> None:
    """Answer requests on `stream`, one at a time, until the worker closes it."""
    frames = _Frames(stream)
    while (request := await frames.receive()) is not None:
        kind, payload = request
        await connected.tried.wait()
        try:
            if connected.store is None:
                raise StoreUnavailable(connected.error)
            if kind == _STORE:
                records = [bytes(record) for record in _records.decode(payload)]
                answer = _frame(_OK, _encoder.encode(await connected.store.store(records)))
            elif kind == _PING:
                if not await connected.store.answers():
                    raise StoreUnavailable("the database does not answer")
                answer = _frame(_OK, b"")
            else:
                raise StoreUnavailable(f"unknown request kind {kind}")
        except Exception as exc:
            answer = _frame(_FAILED, repr(exc).encode("utf-8", "backslashreplace"))
        await stream.send_all(answer)


async def _child(fd: int, settings: DatabaseSettings) -> None:
    stream = trio.SocketStream(trio.socket.fromfd(fd, socket.AF_UNIX, socket.SOCK_STREAM))
    os.close(fd)  # fromfd duplicated it
    connected = _Connected()
    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(_connect, settings, connected)
        try:
            await serve(stream, connected)
        except (trio.BrokenResourceError, StoreUnavailable) as exc:
            log.warning("store process: worker connection broken", extra={"error": str(exc)})
        nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.capture.store_process")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    # Forwarding comes first: when the worker and this process want the same CPU, the worker wins
    # it; should storing fall behind, the journal's channel fills and events go to the spill log.
    os.nice(_NICENESS)
    setup_logging(args.log_level, args.worker)
    # One request at a time: the store and its probe never need more than two connections.
    settings = DatabaseSettings(
        dsn=os.environ.get(_DSN_ENV, ""), pool_size=2, connect_timeout=args.connect_timeout
    )
    if not settings.dsn:
        log.error("store process: no DSN in the environment")
        return 2
    trio.run(_child, args.fd, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
