"""In-process proxy on real 127.0.0.1 sockets, a trio-websocket upstream, and raw chargers.

The upstream is an independent WebSocket implementation (trio-websocket) that answers every
OCPP CALL with a CALLRESULT and records what it received; hostile chargers speak raw bytes.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field

import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, open_websocket_url, serve_websocket

from proxy.forward.listener import listening_port, open_listener
from proxy.forward.server import ProxyServer
from proxy.routing.router import StaticRouter
from proxy.runtime.config import Config, ProxySettings, Route
from proxy.runtime.metrics import ProxyMetrics
from testkit.reference_codec import ReferenceFrameReader, reference_encode_frame

SUBPROTOCOLS = ["ocpp1.6", "ocpp2.0.1"]


@dataclass
class UpstreamPeer:
    path: str
    subprotocol: str | None
    authorization: str | None
    received: list[str | bytes] = field(default_factory=list)
    close_code: int | None = None
    remote: str | None = None  # the address the proxy connected from


class Upstream:
    """A CSMS stand-in: answers CALLs, records peers; `refuse_with` makes it reject handshakes."""

    def __init__(self) -> None:
        self.port = 0
        self.peers: list[UpstreamPeer] = []
        self.connections: dict[str, object] = {}
        self.refuse_with: int | None = None
        self.answer_calls = True  # False: the test answers CALLs itself (through `connections`)
        self.connected = trio.Event()
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate, timeout: float = 10) -> None:
        """Wait (bounded) until `predicate()` holds; re-checked whenever a peer's state changes."""
        with trio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()

    async def handler(self, request: WebSocketRequest) -> None:
        if self.refuse_with is not None:
            await request.reject(self.refuse_with, body=b"no")
            return
        offered = [p for p in request.proposed_subprotocols if p in SUBPROTOCOLS]
        headers = dict(request.headers)
        peer = UpstreamPeer(
            request.path,
            offered[0] if offered else None,
            headers.get(b"authorization", b"").decode() or None,
            remote=str(request.remote.address) if hasattr(request.remote, "address") else None,
        )
        self.peers.append(peer)
        ws = await request.accept(subprotocol=peer.subprotocol)
        self.connections[request.path] = ws
        self.connected.set()
        self._notify()
        try:
            while True:
                message = await ws.get_message()
                peer.received.append(message)
                self._notify()
                if self.answer_calls and isinstance(message, str) and message.startswith("[2,"):
                    try:
                        call = json.loads(message)
                    except ValueError:
                        continue
                    await ws.send_message(json.dumps([3, call[1], {"echo": call[2]}]))
        except ConnectionClosed as closed:
            peer.close_code = closed.reason.code
            self._notify()


@dataclass
class ProxyHandle:
    server: ProxyServer
    router: StaticRouter
    metrics: ProxyMetrics
    port: int

    def url(self, identity: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp/{identity}"


@pytest.fixture
async def upstream(nursery):
    up = Upstream()
    server = await nursery.start(serve_websocket, up.handler, "127.0.0.1", 0, None)
    up.port = server.port
    return up


async def start_proxy(nursery: trio.Nursery, config: Config) -> ProxyHandle:
    metrics = ProxyMetrics()
    router = StaticRouter(config)
    server = ProxyServer(config, router, metrics)
    listener = open_listener(config.proxy, reuse_port=False)
    await nursery.start(server.run, [listener])
    return ProxyHandle(server, router, metrics, listening_port(listener))


def proxy_config(
    upstream_port: int,
    *,
    chargers: dict[str, Route] | None = None,
    default: bool = True,
    **settings,
) -> Config:
    base = {
        "host": "127.0.0.1",
        "port": 0,
        "handshake_timeout": 2.0,
        "dial_timeout": 2.0,
        "close_timeout": 1.0,
    }
    base.update(settings)
    route = Route(upstream=f"ws://127.0.0.1:{upstream_port}/ocpp")
    return Config(
        proxy=msgspec.convert(base, ProxySettings),
        default_route=route if default else None,
        chargers=chargers or {},
    )


@pytest.fixture
async def proxy(nursery, upstream):
    return await start_proxy(nursery, proxy_config(upstream.port))


def metric(handle: ProxyHandle, name: str, **labels: str) -> float:
    value = handle.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class RawCharger:
    """A charger speaking raw bytes: its own upgrade request, then hand-made frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.reader = ReferenceFrameReader(from_client=False, max_message_size=1 << 24)
        self.buffer = b""

    @classmethod
    async def connect(cls, port: int) -> RawCharger:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def upgrade(
        self, identity: str = "CP-raw", extra: str = "", protocols: str = "ocpp1.6"
    ) -> bytes:
        """Send an upgrade request; return the status line and headers of the answer."""
        key = base64.b64encode(os.urandom(16)).decode()
        proto = f"Sec-WebSocket-Protocol: {protocols}\r\n" if protocols else ""
        await self.send(
            f"GET /ocpp/{identity} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{proto}{extra}\r\n".encode()
        )
        return await self.read_head()

    async def read_head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                break
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head

    async def read_all(self) -> bytes:
        """Everything until the proxy closes the connection."""
        data = self.buffer
        self.buffer = b""
        while chunk := await self.stream.receive_some(65536):
            data += chunk
        return data

    async def messages_until_close(self, reply_to_close: bool = False) -> list:
        """Frames the proxy sends until it closes the TCP connection (answering its close frame)."""
        messages = self.reader.feed(self.buffer)
        self.buffer = b""
        replied = False
        while True:
            if reply_to_close and self.reader.closed and not replied:
                replied = True
                await self.send(frame(8, messages[-1].data))
            try:
                chunk = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                return messages
            if not chunk:
                return messages
            messages += self.reader.feed(chunk)

    async def aclose(self) -> None:
        await self.stream.aclose()


@pytest.fixture
async def raw(proxy):
    """Opens raw chargers to the proxy and closes them all at teardown, whatever the test did."""
    opened: list[RawCharger] = []

    async def connect(port: int | None = None) -> RawCharger:
        charger = await RawCharger.connect(port or proxy.port)
        opened.append(charger)
        return charger

    yield connect
    for charger in opened:
        await charger.aclose()


def frame(opcode: int, payload: bytes, **kw) -> bytes:
    return reference_encode_frame(opcode, payload, mask=kw.pop("mask", True), **kw)


async def roundtrip(ws, unique_id: str) -> str:
    await ws.send_message(json.dumps([2, unique_id, "Heartbeat", {}]))
    return await ws.get_message()


@pytest.fixture
async def healthy(nursery, proxy):
    """A well-behaved charger kept connected through a test; `check()` proves it still works."""

    class Healthy:
        count = 0

        async def check(self) -> None:
            self.count += 1
            answer = json.loads(await roundtrip(self.ws, f"h{self.count}"))
            assert answer == [3, f"h{self.count}", {"echo": "Heartbeat"}]

    h = Healthy()
    ready = trio.Event()
    done = trio.Event()

    async def run() -> None:
        async with open_websocket_url(proxy.url("healthy"), subprotocols=["ocpp1.6"]) as ws:
            h.ws = ws
            ready.set()
            await done.wait()

    nursery.start_soon(run)
    await ready.wait()
    await h.check()
    yield h
    await h.check()
    done.set()
