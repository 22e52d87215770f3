"""A back-office stand-in on trio-websocket, an implementation independent of the proxy's.

`Upstream` answers every OCPP CALL with a CALLRESULT echoing the action and records each peer
(path, subprotocol, Authorization, what it received, how it closed); `refuse_with` makes it
reject handshakes. `Csms` answers like a back-office (real transaction ids from 7001), can be
stopped and started, and can answer with CALLERRORs or not at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

SUBPROTOCOLS = ["ocpp1.6", "ocpp2.0.1"]


@dataclass
class UpstreamPeer:
    path: str
    subprotocol: str | None
    authorization: str | None
    received: list[str | bytes] = field(default_factory=list)
    close_code: int | None = None
    remote: str | None = None  # the address the proxy connected from
    headers: list[tuple[bytes, bytes]] = field(
        default_factory=list
    )  # as received, lower-case names


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
            headers=[(bytes(n).lower(), bytes(v)) for n, v in request.headers],
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


async def serve_upstream(nursery: trio.Nursery) -> Upstream:
    """An `Upstream` listening on a free 127.0.0.1 port until the nursery ends."""
    upstream = Upstream()
    server = await nursery.start(serve_websocket, upstream.handler, "127.0.0.1", 0, None)
    upstream.port = server.port
    return upstream


class Csms(Upstream):
    """The upstream back-office: answers like one (real transaction ids from 7000), can be stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.answer_calls = False
        self.calls: list[
            tuple[str, str, dict[str, Any]]
        ] = []  # (identity, action, payload) answered
        self.errors_for: dict[str, int] = {}  # action → CALLERRORs to give before answering
        self.unanswered: set[str] = set()  # actions received (and recorded) but never answered
        self._next_id = 7000
        self._scope: trio.CancelScope | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        async def serve(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as self._scope:
                await serve_websocket(
                    self.answering, "127.0.0.1", self.port, None, task_status=task_status
                )

        server = await nursery.start(serve)
        self.port = server.port

    def stop(self) -> None:
        assert self._scope is not None
        self._scope.cancel()

    async def answering(self, request) -> None:
        if self.refuse_with is not None:
            await request.reject(self.refuse_with, body=b"no")
            return
        ws = await request.accept(subprotocol=request.proposed_subprotocols[0])
        identity = request.path.rsplit("/", 1)[-1]
        self.connections[identity] = ws
        self._notify()
        try:
            while True:
                call = json.loads(await ws.get_message())
                if call[0] != 2:
                    continue
                _, unique_id, action, payload = call
                if action in self.unanswered:
                    self.calls.append((identity, action, payload))
                    self._notify()
                    continue
                if self.errors_for.get(action, 0) > 0:
                    self.errors_for[action] -= 1
                    await ws.send_message(
                        json.dumps([4, unique_id, "InternalError", "try later", {}])
                    )
                    continue
                answer: dict[str, Any] = {}
                if action == "StartTransaction":
                    self._next_id += 1
                    answer = {"transactionId": self._next_id, "idTagInfo": {"status": "Accepted"}}
                elif action == "Authorize":
                    answer = {
                        "idTagInfo": {
                            "status": "Blocked" if payload["idTag"] == "BAD" else "Accepted"
                        }
                    }
                elif action == "BootNotification":
                    answer = {
                        "status": "Accepted",
                        "currentTime": "2026-11-21T10:00:00Z",
                        "interval": 60,
                    }
                await ws.send_message(json.dumps([3, unique_id, answer]))
                self.calls.append((identity, action, payload))
                self._notify()
        except ConnectionClosed:
            pass
        finally:
            if self.connections.get(identity) is ws:
                del self.connections[identity]
            self._notify()
