"""A fast fake upstream back-office (CSMS) for benchmarks and tests.

Serves WebSocket on /ocpp/<identity> (subprotocols ocpp1.6 and ocpp2.0.1: the first one the
charger offers that is supported) and answers every OCPP CALL at once with a CALLRESULT: a
realistic payload for the handful of actions whose answers chargers depend on (BootNotification,
Heartbeat, Authorize, Start/StopTransaction), `{}` for everything else. Pings get pongs, a close
gets its close echoed. StartTransaction answers carry transaction ids from one counter per
`FakeCsms` (never 2,000,000,000 or more: that range belongs to the proxy's provisional ids).

It works on raw frames with the project codec, one `receive_some` and at most one `send_all` per
batch of frames, so it stays cheap per frame and is not the bottleneck of a run.

In-process (Trio), `FakeCsms` also stops and starts like a back-office going down and coming
back, records the CALLs it answered (`record=True`), and sends its own CALLs to chargers:

    csms = FakeCsms(record=True)
    port = await nursery.start(csms.serve)
    await csms.stop()   # refuse new connections, close open ones with 1001
    await csms.start()  # listen again on the same port
    csms.received["CP1"]  # [ReceivedCall(action, payload, unique_id, answer), ...]
    await csms.wait_connected("CP1")
    await csms.call("CP1", "RemoteStopTransaction", {"transactionId": 1}, timeout=10)

    python -m testkit.fake_csms --port 9001 [--host 127.0.0.1] [--max-seconds 600] [--reuse-port]
"""

from __future__ import annotations

import argparse
import errno
import itertools
import math
import struct
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson
import trio

from testkit import websocket

SUPPORTED = ("ocpp1.6", "ocpp2.0.1")
PATH_PREFIX = "/ocpp/"
PROVISIONAL_IDS_FROM = 2_000_000_000  # the proxy's provisional transactionIds start here
CLOSE_TIMEOUT = 2.0  # how long a stop waits for a peer's close reply
STOP_TIMEOUT = 5.0  # bound on a stop's grace for one connection (a peer that stopped reading)
RECEIVE_SIZE = 65536
BACKLOG = 4096

_ACCEPTED_16 = b'{"idTagInfo":{"status":"Accepted"}}'
_GOING_AWAY = websocket.encode_frame(
    websocket.CLOSE, struct.pack("!H", 1001) + b"going away", mask=False
)
_ACCEPT_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


def _now() -> bytes:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()).encode()


class ReceivedCall(NamedTuple):
    """A CALL the fake CSMS answered: its action, payload and id, and the answer's payload."""

    action: str
    payload: Any
    unique_id: str
    answer: Any


class CallFailed(Exception):
    """`FakeCsms.call` got no CALLRESULT: charger not connected, gone, or answered a CALLERROR."""


class _Pending:
    """A CALL of the CSMS waiting for the charger's answer (`reply` None: the charger went away)."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: list[Any] | None = None


class _Connection:
    """One accepted connection: its stream, stop state, send lock and the CSMS's CALLs in flight."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.stopping = False
        self.scope = trio.CancelScope()  # the whole connection; a stop puts a deadline on it
        self.reading = (
            trio.CancelScope()
        )  # handshake and answering; a stop cancels it while cancellable
        self.cancellable = True  # False while the answers to a batch are being sent
        self._lock = trio.Lock()  # the CSMS's own CALLs are sent from other tasks
        self.waiting: dict[str, _Pending] = {}

    def stop(self) -> None:
        """Decide the stop: nothing read from now on is answered; a receive under way is cut."""
        self.stopping = True
        if self.cancellable:
            self.reading.cancel()
        self.scope.deadline = min(self.scope.deadline, trio.current_time() + STOP_TIMEOUT)

    async def send(self, data: bytes) -> None:
        """Send `data` whole; no extra checkpoint when no other task is sending."""
        try:
            self._lock.acquire_nowait()
        except trio.WouldBlock:
            await self._lock.acquire()
        try:
            await self.stream.send_all(data)
        finally:
            self._lock.release()

    def resolve(self, message: websocket.MessageLike) -> None:
        """Hand a CALLRESULT/CALLERROR to the `FakeCsms.call` waiting for it (others are ignored)."""
        pending = self.waiting.pop(message.unique_id or "", None)
        if pending is not None:
            pending.reply = orjson.loads(message.data)
            pending.done.set()

    def fail_waiting(self) -> None:
        """Wake every `FakeCsms.call` still waiting: the connection is going."""
        for pending in self.waiting.values():
            pending.done.set()
        self.waiting.clear()


class FakeCsms:
    """The fake back-office as a Trio object: `serve` it in a nursery, `stop`/`start` it at will.

    `port=0` picks a free port once; later starts listen on that same port. `record=True` keeps,
    per identity, every CALL answered in order in `received` (a CALL counts once its answer has
    been handed to the socket). Transaction ids count up from `first_transaction_id` for the
    object's whole life, across stops and starts. `current_time`: the time BootNotification and
    Heartbeat answers give (default: the clock's, to the second).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        record: bool = False,
        first_transaction_id: int = 1,
        reuse_port: bool = False,
        current_time: str | None = None,
    ) -> None:
        if not 1 <= first_transaction_id < PROVISIONAL_IDS_FROM:
            raise ValueError(f"first_transaction_id must be in 1..{PROVISIONAL_IDS_FROM - 1}")
        self.host, self.port, self.record, self.reuse_port = host, port, record, reuse_port
        self.received: dict[str, list[ReceivedCall]] = {}
        self._transaction_ids = itertools.count(first_transaction_id)
        self._call_ids = itertools.count(1)
        self._nursery: trio.Nursery | None = None
        self._listeners: list[trio.SocketListener] = []
        self._open: set[_Connection] = set()
        self._all_closed = trio.Event()
        self._connections: dict[str, _Connection] = {}  # identity -> its latest open connection
        self._arrivals: dict[str, trio.Event] = {}
        now = _now if current_time is None else lambda: current_time.encode()
        common: dict[str, Callable[[], bytes]] = {
            "BootNotification": lambda: (
                b'{"status":"Accepted","currentTime":"%s","interval":300}' % now()
            ),
            "Heartbeat": lambda: b'{"currentTime":"%s"}' % now(),
            "StartTransaction": self._start_transaction,
            "StopTransaction": lambda: _ACCEPTED_16,
        }
        self._answers_16 = {**common, "Authorize": lambda: _ACCEPTED_16}
        self._answers_201 = {
            **common,
            "Authorize": lambda: b'{"idTokenInfo":{"status":"Accepted"}}',
        }

    def _start_transaction(self) -> bytes:
        transaction_id = next(self._transaction_ids)
        if transaction_id >= PROVISIONAL_IDS_FROM:
            raise RuntimeError(
                "transaction ids exhausted (the next one is in the provisional range)"
            )
        return b'{"idTagInfo":{"status":"Accepted"},"transactionId":%d}' % transaction_id

    # -- listening ----------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled; `nursery.start` returns the port."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await self.start()
                task_status.started(self.port)
                await trio.sleep_forever()
            finally:
                self._nursery = None
                self._close_listeners()

    async def start(self) -> None:
        """Listen (again) on `port`; raises OSError if it cannot be bound, RuntimeError if not serving."""
        if self._nursery is None:
            raise RuntimeError("start() needs serve() running")
        if self._listeners:
            raise RuntimeError("already listening")
        if self.reuse_port:
            sock = trio.socket.socket()
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
            await sock.bind((self.host, self.port))
            sock.listen(BACKLOG)
            self._listeners = [trio.SocketListener(sock)]
        else:
            self._listeners = await trio.open_tcp_listeners(
                self.port, host=self.host, backlog=BACKLOG
            )
        self.port = self._listeners[0].socket.getsockname()[1]
        for listener in self._listeners:
            self._nursery.start_soon(self._accept, listener)

    async def stop(self) -> None:
        """Go down like a back-office shutting down; returns once every connection is closed.

        New connections are refused at once. Each open connection finishes answering the frames
        it is handling, then gets a close 1001 "going away" and up to CLOSE_TIMEOUT for the
        peer's close reply. Nothing read after the stop is answered or recorded.
        """
        self._close_listeners()
        for connection in self._open:
            connection.stop()
        if self._open:
            self._all_closed = trio.Event()
            await self._all_closed.wait()

    def _close_listeners(self) -> None:
        listeners, self._listeners = self._listeners, []
        for listener in listeners:
            listener.socket.close()  # wakes its `_accept` with ClosedResourceError

    async def _accept(self, listener: trio.SocketListener) -> None:
        while True:
            try:
                stream = await listener.accept()
            except trio.ClosedResourceError:
                return
            except (
                OSError
            ) as exc:  # out of file descriptors or memory: wait, as trio.serve_listeners does
                if exc.errno not in _ACCEPT_RESOURCE_ERRORS:
                    raise
                await trio.sleep(0.1)
                continue
            connection = _Connection(stream)
            self._open.add(connection)  # now, so that a stop before the task runs still sees it
            assert self._nursery is not None
            self._nursery.start_soon(self._serve_connection, connection)

    # -- connections --------------------------------------------------------------------------

    def connected(self, identity: str) -> bool:
        """True while a charger with this identity is connected and not being stopped."""
        connection = self._connections.get(identity)
        return connection is not None and not connection.stopping

    async def wait_connected(self, identity: str) -> None:
        """Return once a charger with this identity is connected; bound it with trio.fail_after."""
        while not self.connected(identity):
            await self._arrivals.setdefault(identity, trio.Event()).wait()

    async def call(self, identity: str, action: str, payload: Any, timeout: float = 10.0) -> Any:
        """Send a CALL to the connected charger `identity` and return its CALLRESULT payload.

        Raises CallFailed when the charger is not connected, goes away first or answers with a
        CALLERROR, and trio.TooSlowError when no answer comes within `timeout` seconds of sending.
        """
        connection = self._connections.get(identity)
        if connection is None or connection.stopping:
            raise CallFailed(f"{identity} is not connected")
        unique_id = f"csms-{next(self._call_ids)}"
        pending = connection.waiting[unique_id] = _Pending()
        try:
            frame = websocket.encode_frame(
                websocket.TEXT, orjson.dumps([2, unique_id, action, payload]), mask=False
            )
            try:
                await connection.send(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise CallFailed(f"{identity} went away before {action} could be sent") from exc
            with trio.fail_after(timeout):
                await pending.done.wait()
        finally:
            connection.waiting.pop(unique_id, None)
        reply = pending.reply
        if reply is None:
            raise CallFailed(f"{identity} went away before answering {action}")
        if reply[0] == websocket.CALLERROR:
            raise CallFailed(f"{identity} answered {action} with {reply[2]}: {reply[3]}")
        return reply[2]

    async def _serve_connection(self, connection: _Connection) -> None:
        """Handshake, answer frames, close; always closes the stream and forgets the connection."""
        try:
            with connection.scope:
                await self._converse(connection)
        except (
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            websocket.ProtocolError,
            websocket.HandshakeError,
        ):
            pass
        finally:
            self._open.discard(connection)
            if not self._open:
                self._all_closed.set()
            await trio.aclose_forcefully(connection.stream)

    async def _converse(self, connection: _Connection) -> None:
        if connection.stopping:
            return
        reader, stopped = None, True  # stopped unless the peer ends the connection first
        with connection.reading:
            accepted = await websocket.server_handshake(connection.stream, PATH_PREFIX, SUPPORTED)
            if accepted is None:
                return
            target, subprotocol, pending = accepted
            identity = urllib.parse.unquote(target[len(PATH_PREFIX) :].partition("?")[0])
            self._connections[identity] = connection
            if (arrival := self._arrivals.pop(identity, None)) is not None:
                arrival.set()
            reader = websocket.FrameReader(from_client=True)
            try:
                answers = self._answers_201 if subprotocol == "ocpp2.0.1" else self._answers_16
                stopped = await self._answer_frames(connection, identity, reader, answers, pending)
            finally:
                if self._connections.get(identity) is connection:
                    del self._connections[identity]
                connection.fail_waiting()
        if reader is not None and stopped:
            await self._going_away(connection, reader)

    async def _answer_frames(
        self,
        connection: _Connection,
        identity: str,
        reader: websocket.ReaderLike,
        answers: dict[str, Callable[[], bytes]],
        pending: bytes,
    ) -> bool:
        """Answer batches of frames until the peer closes (False) or a stop is decided (True).

        A stop cancels `connection.reading` only while this waits for bytes, never while it
        sends answers: a batch being answered is finished (and recorded).
        """
        stream, encode, TEXT, CALL, record = (
            connection.stream,
            websocket.encode_frame,
            websocket.TEXT,
            websocket.CALL,
            self.record,
        )
        while True:
            if connection.stopping:
                return True
            connection.cancellable = True
            data = pending or await stream.receive_some(RECEIVE_SIZE)
            connection.cancellable = False
            pending = b""
            if connection.stopping:  # decided while the bytes were being read: leave them be
                return True
            if not data:
                return False
            out = []
            answered: list[tuple[websocket.MessageLike, bytes]] = []
            closing = False
            for message in reader.feed(data):
                if message.opcode == TEXT:
                    if message.message_type == CALL:
                        make = answers.get(message.action or "")
                        payload = make() if make else b"{}"
                        out.append(
                            encode(
                                TEXT,
                                b"[3," + orjson.dumps(message.unique_id) + b"," + payload + b"]",
                                mask=False,
                            )
                        )
                        if record:
                            answered.append((message, payload))
                    elif message.message_type in (websocket.CALLRESULT, websocket.CALLERROR):
                        connection.resolve(message)
                elif message.opcode == websocket.PING:
                    out.append(encode(websocket.PONG, message.data, mask=False))
                elif message.opcode == websocket.CLOSE:
                    out.append(encode(websocket.CLOSE, message.data[:2], mask=False))
                    closing = True
                    break
            if out:
                await connection.send(b"".join(out))
                if answered:
                    self._record(identity, answered)
            if closing:
                return False

    def _record(self, identity: str, answered: list[tuple[websocket.MessageLike, bytes]]) -> None:
        log = self.received.setdefault(identity, [])
        for message, answer in answered:
            call = orjson.loads(message.data)
            log.append(ReceivedCall(call[2], call[3], call[1], orjson.loads(answer)))

    async def _going_away(self, connection: _Connection, reader: websocket.ReaderLike) -> None:
        """Send close 1001 and wait (bounded) for the peer's close; what else arrives is dropped."""
        with trio.move_on_after(CLOSE_TIMEOUT):
            await connection.send(_GOING_AWAY)
            while data := await connection.stream.receive_some(RECEIVE_SIZE):
                if any(message.opcode == websocket.CLOSE for message in reader.feed(data)):
                    return


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m testkit.fake_csms", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument(
        "--max-seconds", type=float, default=0, help="stop after this long (0: never)"
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="SO_REUSEPORT: several processes share the port (past one process's open files)",
    )
    parser.add_argument(
        "--first-transaction-id",
        type=int,
        default=1,
        help="distinct ranges keep ids unique over several processes",
    )
    args = parser.parse_args(argv)

    async def run() -> None:
        csms = FakeCsms(
            args.host,
            args.port,
            reuse_port=args.reuse_port,
            first_transaction_id=args.first_transaction_id,
        )
        with trio.move_on_after(args.max_seconds or math.inf):
            async with trio.open_nursery() as nursery:
                await nursery.start(csms.serve)
                print(
                    f"fake CSMS on ws://{args.host}:{args.port}{PATH_PREFIX}<identity> ({websocket.CODEC})",
                    flush=True,
                )

    try:
        trio.run(run)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
