"""Independent peers for the end-to-end tests: a CSMS and chargers that record what passed.

Both ends are the mobilityhouse `ocpp` ChargePoint over the `websockets` asyncio API, so neither
shares code with the proxy. Each end is recorded twice:

- `RecordingConnection` sits between a ChargePoint and its WebSocket and keeps every text message
  sent and received, in order;
- `TappedClientConnection` / `TappedServerConnection` keep every byte written to and read from
  the TCP socket (opening handshake included) and every frame received, pings and closes too.

`CsmsThread` runs the CSMS on its own asyncio loop in a thread, for tests whose charger runs on
trio; `wait_future` awaits its results from trio.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
import threading
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import trio
from ocpp.charge_point import ChargePoint
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v21 import ChargePoint as ChargePoint21
from ocpp.v21.enums import Action as Action21
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201.enums import Action as Action201
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import Event
from websockets.typing import Subprotocol

TIMEOUT = 15.0  # bound on one scenario; a hang fails the test instead of blocking the run
# What the CSMS speaks, in its order of preference (the newest first).
SUBPROTOCOLS = [Subprotocol("ocpp2.1"), Subprotocol("ocpp2.0.1"), Subprotocol("ocpp1.6")]

T = TypeVar("T")


def timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def after_handshake(stream: bytes | bytearray) -> bytes:
    """The WebSocket frames of a recorded byte stream: everything after the HTTP head."""
    head, separator, frames = bytes(stream).partition(b"\r\n\r\n")
    assert separator, f"no complete HTTP head in {head[:200]!r}"
    return frames


# -- recording --------------------------------------------------------------------------------


class WireTap:
    """Every byte one end wrote to and read from its TCP connection, and the frames it received."""

    def __init__(self) -> None:
        self.sent = bytearray()
        self.received = bytearray()
        self.frames: list[tuple[Opcode, bytes]] = []


class _TapTransport:
    """An asyncio transport that copies every write into `sink` before passing it on."""

    def __init__(self, transport: asyncio.Transport, sink: bytearray) -> None:
        self._transport = transport
        self._sink = sink

    def write(self, data: bytes) -> None:
        self._sink += data
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Tapped(Connection):
    """Base of the tapped `websockets` connections: fills `self.tap` at the socket and frame level."""

    tap: WireTap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tap = WireTap()
        super().connection_made(transport)
        self.transport = cast(asyncio.Transport, _TapTransport(self.transport, self.tap.sent))

    def data_received(self, data: bytes) -> None:
        self.tap.received += data
        super().data_received(data)

    def process_event(self, event: Event) -> None:
        if isinstance(event, Frame):
            self.tap.frames.append((event.opcode, bytes(event.data)))
        super().process_event(event)


class TappedClientConnection(_Tapped, ClientConnection):
    """A `websockets` client connection with a `WireTap`."""


class TappedServerConnection(_Tapped, ServerConnection):
    """A `websockets` server connection with a `WireTap`."""


class RecordingConnection:
    """The `recv`/`send` pair an ocpp ChargePoint uses, keeping each text message as it passes."""

    def __init__(self, ws: ClientConnection | ServerConnection) -> None:
        self.ws = ws
        self.sent: list[str] = []
        self.received: list[str] = []

    async def recv(self) -> str:
        message = await self.ws.recv()
        assert isinstance(message, str), f"OCPP-J travels in text frames, got {message!r}"
        self.received.append(message)
        return message

    async def send(self, message: str) -> None:
        # Recorded first: websockets writes before its first await, so this is wire order.
        self.sent.append(message)
        await self.ws.send(message)


@dataclass(eq=False)
class Peer:
    """One end of a link: its WebSocket, its message log, its ChargePoint, and how it closed."""

    ws: TappedClientConnection | TappedServerConnection
    log: RecordingConnection
    cp: Any  # one of the ChargePoint classes below
    closed: asyncio.Future[ConnectionClosed]  # what ended the ChargePoint's receive loop

    @property
    def tap(self) -> WireTap:
        return self.ws.tap


async def receive_until_closed(cp: ChargePoint) -> ConnectionClosed:
    """Run the ChargePoint's receive loop; return the ConnectionClosed that ends it."""
    try:
        await cp.start()
    except ConnectionClosed as closed:
        return closed
    raise AssertionError("ChargePoint.start() returned without the connection closing")


def assert_transparent(charger: Peer, csms: Peer) -> None:
    """Both directions carried the same messages and the same frame bytes; one subprotocol on both ends.

    Call once both connections are closed, so that every byte has arrived.
    """
    assert charger.log.sent == csms.log.received
    assert csms.log.sent == charger.log.received
    assert after_handshake(charger.tap.sent) == after_handshake(csms.tap.received)
    assert after_handshake(csms.tap.sent) == after_handshake(charger.tap.received)
    for peer in (charger, csms):  # the taps saw the very messages the ChargePoints handled
        texts = [data for opcode, data in peer.tap.frames if opcode is Opcode.TEXT]
        assert texts == [message.encode() for message in peer.log.received]
    assert charger.ws.subprotocol is not None
    assert charger.ws.subprotocol == csms.ws.subprotocol


# -- the CSMS ---------------------------------------------------------------------------------


class Csms16(ChargePoint16):
    """An OCPP 1.6 central system; `answers` holds every CALLRESULT it produced, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers: list[Any] = []
        self.transaction_id = 1 + secrets.randbelow(2**31 - 2)
        self.metered_transactions: list[int | None] = []
        self.stopped_transactions: list[int] = []

    def _answer(self, result: T) -> T:
        self.answers.append(result)
        return result

    @on(Action16.boot_notification)
    def on_boot_notification(
        self, charge_point_vendor: str, charge_point_model: str, **_: Any
    ) -> Any:
        return self._answer(
            result16.BootNotification(current_time=timestamp(), interval=300, status="Accepted")
        )

    @on(Action16.heartbeat)
    def on_heartbeat(self) -> Any:
        return self._answer(result16.Heartbeat(current_time=timestamp()))

    @on(Action16.authorize)
    def on_authorize(self, id_tag: str) -> Any:
        return self._answer(result16.Authorize(id_tag_info={"status": "Accepted"}))

    @on(Action16.status_notification)
    def on_status_notification(
        self, connector_id: int, error_code: str, status: str, **_: Any
    ) -> Any:
        return self._answer(result16.StatusNotification())

    @on(Action16.start_transaction)
    def on_start_transaction(
        self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any
    ) -> Any:
        return self._answer(
            result16.StartTransaction(
                transaction_id=self.transaction_id, id_tag_info={"status": "Accepted"}
            )
        )

    @on(Action16.meter_values)
    def on_meter_values(
        self, connector_id: int, meter_value: list[Any], transaction_id: int | None = None
    ) -> Any:
        self.metered_transactions.append(transaction_id)
        return self._answer(result16.MeterValues())

    @on(Action16.data_transfer)
    def on_data_transfer(
        self, vendor_id: str, message_id: str | None = None, data: str | None = None
    ) -> Any:
        return self._answer(result16.DataTransfer(status="Accepted", data=str(len(data or ""))))

    @on(Action16.stop_transaction)
    def on_stop_transaction(
        self, meter_stop: int, timestamp: str, transaction_id: int, **_: Any
    ) -> Any:
        self.stopped_transactions.append(transaction_id)
        return self._answer(result16.StopTransaction(id_tag_info={"status": "Accepted"}))


class _Csms2(ChargePoint):
    """The CSMS of OCPP 2.0.1 and 2.1, whose messages used here are alike; `answers` holds every
    CALLRESULT it produced, in order, built from its own version's `call_result` module."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers: list[Any] = []
        self.transaction_events: list[
            tuple[str, int, str]
        ] = []  # (eventType, seqNo, transactionId)

    def _answer(self, result: T) -> T:
        self.answers.append(result)
        return result

    @on(Action201.boot_notification)
    def on_boot_notification(self, charging_station: dict[str, Any], reason: str, **_: Any) -> Any:
        return self._answer(
            self._call_result.BootNotification(
                current_time=timestamp(), interval=300, status="Accepted"
            )
        )

    @on(Action201.heartbeat)
    def on_heartbeat(self, **_: Any) -> Any:
        return self._answer(self._call_result.Heartbeat(current_time=timestamp()))

    @on(Action201.authorize)
    def on_authorize(self, id_token: dict[str, Any], **_: Any) -> Any:
        return self._answer(self._call_result.Authorize(id_token_info={"status": "Accepted"}))

    @on(Action201.status_notification)
    def on_status_notification(self, **_: Any) -> Any:
        return self._answer(self._call_result.StatusNotification())

    @on(Action201.transaction_event)
    def on_transaction_event(
        self, event_type: str, seq_no: int, transaction_info: dict[str, Any], **_: Any
    ) -> Any:
        self.transaction_events.append((event_type, seq_no, transaction_info["transaction_id"]))
        total_cost = None if event_type == "Started" else round(0.35 * seq_no, 2)
        return self._answer(
            self._call_result.TransactionEvent(
                total_cost=total_cost, id_token_info={"status": "Accepted"}
            )
        )


class Csms201(_Csms2, ChargePoint201):
    """An OCPP 2.0.1 CSMS."""


class Csms21(_Csms2, ChargePoint21):
    """An OCPP 2.1 CSMS; `settlements` holds the pspRef of every NotifySettlement (new in 2.1)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settlements: list[str] = []

    @on(Action21.notify_settlement)
    def on_notify_settlement(self, psp_ref: str, **_: Any) -> Any:
        self.settlements.append(psp_ref)
        return self._answer(self._call_result.NotifySettlement())


CSMS_CLASSES: dict[str, type[ChargePoint]] = {
    "ocpp1.6": Csms16,
    "ocpp2.0.1": Csms201,
    "ocpp2.1": Csms21,
}


class CsmsServer:
    """A `websockets` CSMS on 127.0.0.1:`port`; each accepted connection appears on `peers`.

    The ChargePoint class follows the negotiated subprotocol. Use as `async with`.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.peers: asyncio.Queue[Peer] = asyncio.Queue()

    async def __aenter__(self) -> CsmsServer:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            self.port,
            subprotocols=SUBPROTOCOLS,
            create_connection=TappedServerConnection,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Go down like a back-office shutting down: stop listening, close every connection with
        1001 (going away) and wait for the closes; stopping again does nothing more."""
        self._server.close()
        await self._server.wait_closed()

    async def next_peer(self) -> Peer:
        return await self.peers.get()

    async def _handle(self, ws: ServerConnection) -> None:
        assert isinstance(ws, TappedServerConnection) and ws.subprotocol is not None
        identity = ws.request.path.rsplit("/", 1)[-1] if ws.request else ""
        log = RecordingConnection(ws)
        cp = CSMS_CLASSES[ws.subprotocol](identity, log, response_timeout=TIMEOUT)
        peer = Peer(ws, log, cp, asyncio.get_running_loop().create_future())
        self.peers.put_nowait(peer)
        try:
            closed = await receive_until_closed(cp)
        except asyncio.CancelledError:
            peer.closed.cancel()
            raise
        except Exception as exc:
            # For a test that awaits `peer.closed`; marked as seen, so that a peer no test looks at
            # (a hostile frame the ocpp package cannot parse) does not log "Future exception was
            # never retrieved" later, in whichever test runs when it is collected. websockets
            # logs the failure of the handler itself as it happens.
            peer.closed.set_exception(exc)
            peer.closed.exception()
            raise
        peer.closed.set_result(closed)


# -- chargers ---------------------------------------------------------------------------------


class Charger16(ChargePoint16):
    """An OCPP 1.6 charge point answering the central system; `answers` as for the CSMS."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers: list[Any] = []
        self.configuration: dict[str, str] = {}

    def _answer(self, result: T) -> T:
        self.answers.append(result)
        return result

    @on(Action16.remote_start_transaction)
    def on_remote_start_transaction(self, id_tag: str, **_: Any) -> Any:
        return self._answer(result16.RemoteStartTransaction(status="Accepted"))

    @on(Action16.change_configuration)
    def on_change_configuration(self, key: str, value: str) -> Any:
        self.configuration[key] = value
        return self._answer(result16.ChangeConfiguration(status="Accepted"))

    @on(Action16.reset)
    def on_reset(self, type: str) -> Any:
        return self._answer(result16.Reset(status="Accepted"))


class _Charger2(ChargePoint):
    """A charging station of OCPP 2.0.1 or 2.1 answering the CSMS; `answers` as for the CSMS."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers: list[Any] = []
        self.variables: dict[tuple[str, str], str] = {}

    def _answer(self, result: T) -> T:
        self.answers.append(result)
        return result

    @on(Action201.request_start_transaction)
    def on_request_start_transaction(
        self, id_token: dict[str, Any], remote_start_id: int, **_: Any
    ) -> Any:
        return self._answer(self._call_result.RequestStartTransaction(status="Accepted"))

    @on(Action201.get_variables)
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        results = []
        for item in get_variable_data:
            key = (item["component"]["name"], item["variable"]["name"])
            known = key in self.variables
            result = {
                "attribute_status": "Accepted" if known else "UnknownVariable",
                "component": item["component"],
                "variable": item["variable"],
            }
            if known:
                result["attribute_value"] = self.variables[key]
            results.append(result)
        return self._answer(self._call_result.GetVariables(get_variable_result=results))

    @on(Action201.set_variables)
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
        results = []
        for item in set_variable_data:
            self.variables[(item["component"]["name"], item["variable"]["name"])] = item[
                "attribute_value"
            ]
            results.append(
                {
                    "attribute_status": "Accepted",
                    "component": item["component"],
                    "variable": item["variable"],
                }
            )
        return self._answer(self._call_result.SetVariables(set_variable_result=results))

    @on(Action201.reset)
    def on_reset(self, type: str, **_: Any) -> Any:
        return self._answer(self._call_result.Reset(status="Accepted"))


class Charger201(_Charger2, ChargePoint201):
    """An OCPP 2.0.1 charging station."""


class Charger21(_Charger2, ChargePoint21):
    """An OCPP 2.1 charging station."""


@asynccontextmanager
async def open_charger(
    url: str,
    subprotocols: list[str],
    cls: type[ChargePoint],
    identity: str,
    *,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Peer]:
    """Connect a charger of class `cls` to `url` (with `headers` in its upgrade request, e.g.
    Basic credentials) and run its receive loop while the block runs."""
    offer = [Subprotocol(p) for p in subprotocols]
    async with connect(
        url,
        subprotocols=offer,
        additional_headers=headers,
        create_connection=TappedClientConnection,
    ) as ws:
        assert isinstance(ws, TappedClientConnection)
        log = RecordingConnection(ws)
        cp = cls(identity, log, response_timeout=TIMEOUT)
        peer = Peer(ws, log, cp, asyncio.ensure_future(receive_until_closed(cp)))
        try:
            yield peer
        finally:
            await ws.close()
            await asyncio.wait([peer.closed])


# -- the CSMS in a thread, for trio tests ----------------------------------------------------


class CsmsThread:
    """A `CsmsServer` on its own asyncio loop in a thread; `submit` runs coroutines there."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.server: CsmsServer | None = None

    def __enter__(self) -> CsmsThread:
        self._thread = threading.Thread(target=self._run, name=f"csms-{self.port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(TIMEOUT):
            raise TimeoutError("CSMS thread did not start")
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "CSMS thread did not stop"
        if self._error is not None:
            raise self._error

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with CsmsServer(self.port) as self.server:
            self._ready.set()
            await self._stop.wait()


async def wait_future(future: concurrent.futures.Future[T]) -> T:
    """Await a future of another thread from trio, without blocking the trio loop."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    future.add_done_callback(lambda _: token.run_sync_soon(done.set))
    try:
        await done.wait()
    except trio.Cancelled:
        future.cancel()
        raise
    return future.result()
