"""A trio-websocket charger (speaking raw OCPP-J) through the proxy to the `websockets` CSMS.

A second, independent client stack: its bytes are recorded at the TCP stream and compared with
what the CSMS read from its socket, in both directions. Covers a charger CALL, a CSMS-initiated
CALL, pings both ways, and a charger-initiated close with code 1000 and a reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from ocpp.v16 import call as call16
from trio_websocket import WebSocketConnection, wrap_client_stream
from websockets.frames import Opcode

from testkit.ocpp_peers import TIMEOUT, CsmsThread, after_handshake, wait_future
from testkit.proxy_process import ProxyProcess


class RecordingStream(trio.abc.Stream):
    """A trio stream that keeps a copy of every byte sent and received."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.sent = bytearray()
        self.received = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)
        self.sent += data

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        self.received += data
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


class RawCharger:
    """OCPP-J by hand over a trio-websocket connection, keeping every message sent and received."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.sent: list[str] = []
        self.received: list[str] = []

    async def send(self, message: list[Any]) -> None:
        text = json.dumps(message, separators=(",", ":"))
        self.sent.append(text)
        await self.ws.send_message(text)

    async def receive(self) -> list[Any]:
        text = await self.ws.get_message()
        assert isinstance(text, str)
        self.received.append(text)
        message: list[Any] = json.loads(text)
        return message


@pytest.fixture
def csms(proxy: ProxyProcess) -> Iterator[CsmsThread]:
    with CsmsThread(proxy.upstream_port) as running:
        yield running


async def test_trio_websocket_charger_passes_byte_identical(
    proxy: ProxyProcess, csms: CsmsThread
) -> None:
    assert csms.server is not None
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            stream = RecordingStream(await trio.open_tcp_stream("127.0.0.1", proxy.port))
            # Documented to wrap any trio stream; only its annotation names SocketStream.
            ws = await wrap_client_stream(
                nursery,
                stream,
                f"127.0.0.1:{proxy.port}",
                "/ocpp/CP-TRIO",
                subprotocols=["ocpp1.6"],  # type: ignore[arg-type]
            )
            charger = RawCharger(ws)
            upstream = await wait_future(csms.submit(csms.server.next_peer()))

            # A charger CALL, answered by the CSMS.
            boot = {"chargePointVendor": "ERE", "chargePointModel": "E2E-TRIO"}
            await charger.send([2, "boot-1", "BootNotification", boot])
            answer = await charger.receive()
            produced = upstream.cp.answers[0]
            assert answer == [
                3,
                "boot-1",
                {
                    "currentTime": produced.current_time,
                    "interval": produced.interval,
                    "status": "Accepted",
                },
            ]

            # Pings both ways: each pong must come from the far end, not from the proxy.
            await ws.ping(b"charger-ping")

            async def csms_ping() -> None:
                await (await upstream.ws.ping(b"csms-ping"))

            await wait_future(csms.submit(csms_ping()))

            # A CALL initiated by the CSMS, answered by the charger.
            pending = csms.submit(
                upstream.cp.call(call16.ChangeConfiguration(key="HeartbeatInterval", value="60"))
            )
            request = await charger.receive()
            assert request[0] == 2 and request[2:] == [
                "ChangeConfiguration",
                {"key": "HeartbeatInterval", "value": "60"},
            ]
            await charger.send([3, request[1], {"status": "Accepted"}])
            result = await wait_future(pending)
            assert result.status == "Accepted"

            await ws.aclose(1000, "charger done")
            closed = await wait_future(csms.submit(_wait(upstream.closed)))

    assert ws.subprotocol == upstream.ws.subprotocol == "ocpp1.6"
    assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (
        1000,
        "charger done",
    )
    assert ws.closed is not None and (ws.closed.code, ws.closed.reason) == (1000, "charger done")
    assert charger.sent == upstream.log.received
    assert upstream.log.sent == charger.received
    assert (Opcode.PING, b"charger-ping") in upstream.tap.frames
    assert (Opcode.PONG, b"csms-ping") in upstream.tap.frames
    assert after_handshake(stream.sent) == after_handshake(upstream.tap.received)
    assert after_handshake(upstream.tap.sent) == after_handshake(stream.received)


async def _wait(future: Any) -> Any:
    return await future
