"""A charger that stops reading pauses its back-office's writes, on both engines, and nothing is
lost or buffered without bound meanwhile; other chargers are served as usual."""

from __future__ import annotations

import json
from functools import partial

import trio
from trio_websocket import open_websocket_url

from proxy.wire.codec import TEXT, FrameReader, encode_frame
from testkit import websocket
from testkit.in_process_proxy import proxy_config, roundtrip, start_proxy
from testkit.raw_charger import RawCharger

CALL = json.dumps([2, "f", "DataTransfer", {"data": "x" * 16000}]).encode()
FRAME = encode_frame(TEXT, CALL, mask=False)
# Far above what socket buffers and the proxy's one held chunk per direction can take.
BOUND = 16 << 20
STALLED = 1.0  # a write to the proxy that makes no progress this long: the back-office is paused


class FloodingBackOffice:
    """Floods connections for "SLOW" until the proxy stops taking bytes; echoes CALLs otherwise."""

    def __init__(self) -> None:
        self.sent = 0
        self.paused = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        accepted = await websocket.server_handshake(stream, "/ocpp", ("ocpp1.6",))
        if accepted is None:
            return
        target, _, trailing = accepted
        if target.endswith("/SLOW"):
            while self.sent < BOUND:
                with trio.move_on_after(STALLED) as stalled:
                    await stream.send_all(FRAME)
                if stalled.cancelled_caught:
                    self.paused.set()
                    break
                self.sent += len(FRAME)
            await trio.sleep_forever()
        reader = FrameReader(from_client=True)
        data = trailing
        while True:
            for message in reader.feed(data):
                if message.opcode != TEXT:
                    return  # its close: the proxy closes the connection
                unique_id = json.loads(message.data)[1]
                answer = json.dumps([3, unique_id, {"echo": "Heartbeat"}]).encode()
                await stream.send_all(encode_frame(TEXT, answer, mask=False))
            data = await stream.receive_some(65536)
            if not data:
                return


async def test_a_charger_that_never_reads_pauses_its_back_office_and_others_go_on(nursery) -> None:
    office = FloodingBackOffice()
    listeners = await nursery.start(partial(trio.serve_tcp, office.handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    proxy = await start_proxy(nursery, proxy_config(port))
    slow = await RawCharger.connect(proxy.port)
    head = await slow.upgrade("SLOW")
    assert head.startswith(b"HTTP/1.1 101")

    with trio.fail_after(BOUND / 1e5):  # far beyond what filling a few buffers takes
        await office.paused.wait()
    assert 0 < office.sent < BOUND  # paused: the proxy does not read on without bound

    async with open_websocket_url(proxy.url("OTHER"), subprotocols=["ocpp1.6"]) as other:
        assert json.loads(await roundtrip(other, "o1")) == [3, "o1", {"echo": "Heartbeat"}]

    received = len(slow.buffer)
    with trio.fail_after(30):
        while received < office.sent:
            received += len(await slow.stream.receive_some(1 << 20))
    assert received >= office.sent  # everything the back-office got out arrived
    await slow.aclose()
