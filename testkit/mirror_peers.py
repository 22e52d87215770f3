"""Mirror back-offices for the tests, and a charger that answers what mirrors may ask.

- `MirrorServer`: an `ocpp` CSMS on `websockets` (the CSMS classes of `testkit.ocpp_peers`, so
  independent of the proxy) that records every message it gets and can wait for them
  (`NotifyingConnection.wait_for`); its peers can call the charger (TriggerMessage, ...).
- `TriggerCharger16`: the 1.6 charger of `testkit.ocpp_peers` that also answers TriggerMessage
  and GetConfiguration, optionally holding its TriggerMessage answer until told (`hold`).
- `RawMirror`: a mirror on raw trio sockets: it completes the WebSocket handshake, then never
  reads (silent), or sends what it is given (`garbage`, maybe nothing) and records what it gets.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from ocpp.routing import on
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from websockets.asyncio.server import ServerConnection, serve

from testkit.ocpp_peers import (
    CSMS_CLASSES,
    SUBPROTOCOLS,
    TIMEOUT,
    Charger16,
    RecordingConnection,
)
from testkit.websocket import server_handshake


class NotifyingConnection(RecordingConnection):
    """A `RecordingConnection` whose readers can wait for what arrives."""

    def __init__(self, ws: ServerConnection) -> None:
        super().__init__(ws)
        self._arrived = asyncio.Event()

    async def recv(self) -> str:
        message = await super().recv()
        self._arrived.set()
        return message

    async def wait_for(self, check: Callable[[list[str]], object]) -> None:
        """Until `check(received)` holds (the caller bounds the wait)."""
        while not check(self.received):
            self._arrived.clear()
            await self._arrived.wait()


@dataclass(eq=False)
class MirrorPeer:
    """One connection to the mirror: the charger's identity, its log and its ChargePoint."""

    identity: str
    log: NotifyingConnection
    cp: Any  # a CSMS class of testkit.ocpp_peers


class MirrorServer:
    """A mirror CSMS on 127.0.0.1:`port`; each connection appears on `next_peer`. `async with`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._peers: asyncio.Queue[MirrorPeer] = asyncio.Queue()
        self.connections = 0

    async def __aenter__(self) -> MirrorServer:
        self._server = await serve(self._handle, "127.0.0.1", self.port, subprotocols=SUBPROTOCOLS)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def next_peer(self) -> MirrorPeer:
        return await self._peers.get()

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.subprotocol is not None and ws.request is not None
        self.connections += 1
        log = NotifyingConnection(ws)
        identity = ws.request.path.rsplit("/", 1)[-1]
        cp = CSMS_CLASSES[ws.subprotocol](identity, log, response_timeout=TIMEOUT)
        self._peers.put_nowait(MirrorPeer(identity, log, cp))
        try:
            await cp.start()
        except Exception:  # the connection closed: the test looks at what was recorded
            return


class TriggerCharger16(Charger16):
    """`Charger16` that also answers TriggerMessage (after `hold` is set, if one is given) and
    GetConfiguration; `triggered` lists the messages asked for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.triggered: list[str] = []
        self.trigger_arrived = asyncio.Event()
        self.hold: asyncio.Event | None = None

    @on(Action16.trigger_message)
    async def on_trigger_message(self, requested_message: str, **_: Any) -> Any:
        self.triggered.append(requested_message)
        self.trigger_arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        return self._answer(result16.TriggerMessage(status="Accepted"))

    @on(Action16.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> Any:
        known = [{"key": k, "readonly": False, "value": v} for k, v in self.configuration.items()]
        return self._answer(result16.GetConfiguration(configuration_key=known))


class RawMirror:
    """A misbehaving mirror on raw sockets; see the module docstring.

    `garbage` None: silent (never reads after its handshake; its receive buffer is made small,
    so a sender fills it soon); otherwise `received` keeps what each connection got after its
    handshake. `handshakes` counts completed handshakes; `changed` is replaced after each
    handshake and each read.
    """

    def __init__(self, garbage: bytes | None = None) -> None:
        self.garbage = garbage
        self.handshakes = 0
        self.received: list[bytearray] = []
        self.changed = trio.Event()
        self.port = 0

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def start(self, nursery: trio.Nursery) -> int:
        """Listen on a free port; returns it."""
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        listener = trio.SocketListener(sock)
        nursery.start_soon(trio.serve_listeners, self._handle, [listener])
        self.port = sock.getsockname()[1]
        return self.port

    async def wait_for_handshakes(self, n: int) -> None:
        await self.wait_until(lambda: self.handshakes >= n)

    async def wait_until(self, check: Callable[[], object]) -> None:
        """Until `check()` holds (the caller bounds the wait)."""
        while not check():
            await self.changed.wait()

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            if await server_handshake(stream, "/", ("ocpp1.6", "ocpp2.0.1", "ocpp2.1")) is None:
                return
            self.handshakes += 1
            self._notify()
            if self.garbage is None:
                await trio.sleep_forever()
            received = bytearray()
            self.received.append(received)
            try:
                if self.garbage:
                    await stream.send_all(self.garbage)
                while data := await stream.receive_some(65536):
                    received += data
                    self._notify()
            except trio.BrokenResourceError:
                return
