"""An in-process proxy that captures sessions, for tests that need every real part.

Real sockets on 127.0.0.1, a trio-websocket back-office (`testkit.upstream.Upstream`),
the real journal with its spill log in a directory the test chooses, the real store process
(`python -m proxy.capture.store_process`) and the test's PostgreSQL database. `Healthy` is a well-behaved
charger (trio-websocket) kept connected beside whatever the test does; `Hostile` speaks raw frames.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url, serve_websocket

from proxy.capture.journal import Journal
from proxy.capture.spill import SpillLog
from proxy.capture.store_process import StoreProcess
from proxy.forward.listener import listening_port, open_listener
from proxy.forward.server import ProxyServer
from proxy.routing.router import StaticRouter
from proxy.runtime.config import DatabaseSettings
from proxy.runtime.metrics import JournalCollector, ProxyMetrics
from proxy.store.db import Database, open_database
from testkit.in_process_proxy import proxy_config
from testkit.raw_charger import RawCharger, frame
from testkit.upstream import Upstream

WAIT = 30.0  # bound on anything another process (the store process, PostgreSQL) brings about


@dataclass
class CaptureProxy:
    port: int
    journal: Journal
    spill: SpillLog
    db: Database
    upstream: Upstream
    metrics: ProxyMetrics

    def url(self, identity: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp/{identity}"

    async def settled(self, limit: float = WAIT) -> None:
        """Wait until every submitted event is accounted for and nothing waits on disk."""
        stats = self.journal.stats
        with trio.fail_after(limit):
            while (
                self.journal.spilling
                or self.journal.queued
                or stats.stored + stats.replayed + getattr(stats, "dead_letters", 0) + stats.lost
                < stats.submitted
            ):
                await trio.sleep(0.02)


@asynccontextmanager
async def capture_proxy(
    settings: DatabaseSettings,
    spill_dir: Path,
    *,
    spill_options: dict[str, Any] | None = None,
    **journal_options: Any,
) -> AsyncIterator[CaptureProxy]:
    """The proxy, its journal running through a store process, and the back-office; all stopped on exit."""
    async with trio.open_nursery() as nursery, open_database(settings) as db:
        upstream = Upstream()
        upstream.port = (
            await nursery.start(serve_websocket, upstream.handler, "127.0.0.1", 0, None)
        ).port
        config = proxy_config(upstream.port)
        spill = SpillLog(spill_dir, **(spill_options or {}))
        journal = Journal(spill, **journal_options)
        metrics = ProxyMetrics()
        metrics.registry.register(JournalCollector(journal))
        server = ProxyServer(config, StaticRouter(config), metrics, journal)
        listener = open_listener(config.proxy, reuse_port=False)
        async with StoreProcess(settings, db.dsn) as store, trio.open_nursery() as inner:
            await inner.start(journal.run, store)
            await inner.start(server.run, [listener])
            try:
                yield CaptureProxy(listening_port(listener), journal, spill, db, upstream, metrics)
            finally:
                inner.cancel_scope.cancel()
        spill.close()
        nursery.cancel_scope.cancel()


class Healthy:
    """A well-behaved OCPP 1.6 charger; `check()` proves the proxy still serves it."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.count = 0

    async def check(self) -> None:
        self.count += 1
        await self.ws.send_message(json.dumps([2, f"h{self.count}", "Heartbeat", {}]))
        with trio.fail_after(WAIT):
            answer = json.loads(await self.ws.get_message())
        assert answer == [3, f"h{self.count}", {"echo": "Heartbeat"}]


@asynccontextmanager
async def healthy_charger(
    proxy: CaptureProxy, identity: str = "HEALTHY-1"
) -> AsyncIterator[Healthy]:
    async with open_websocket_url(proxy.url(identity), subprotocols=["ocpp1.6"]) as ws:
        healthy = Healthy(ws)
        await healthy.check()
        yield healthy
        await healthy.check()


class Hostile:
    """A charger sending hand-made frames; `call` waits for the back-office's answer."""

    def __init__(self, charger: RawCharger) -> None:
        self.charger = charger
        self.sent: list[bytes] = []
        self._received: list[Any] = []

    async def send(self, text: bytes) -> None:
        self.sent.append(text)
        await self.charger.send(frame(1, text))

    async def send_at_once(self, texts: list[bytes]) -> None:
        """Send frames in one write: the proxy reads them together and submits their events in a row."""
        self.sent += texts
        await self.charger.send(b"".join(frame(1, text) for text in texts))

    async def call(self, text: bytes) -> Any:
        """Send a CALL and return the next message the proxy forwards back (the answer)."""
        await self.send(text)
        return await self.answer()

    async def answer(self) -> Any:
        """The next message the proxy forwards to this charger."""
        with trio.fail_after(WAIT):
            while not self._received:
                data, self.charger.buffer = (
                    self.charger.buffer or await self.charger.stream.receive_some(65536),
                    b"",
                )
                self._received += [
                    json.loads(bytes(m.data)) for m in self.charger.reader.feed(data)
                ]
        return self._received.pop(0)


@asynccontextmanager
async def hostile_charger(
    proxy: CaptureProxy, identity: str, subprotocol: str
) -> AsyncIterator[Hostile]:
    charger = await RawCharger.connect(proxy.port)
    try:
        head = await charger.upgrade(identity, protocols=subprotocol)
        assert head.startswith(b"HTTP/1.1 101"), head
        yield Hostile(charger)
    finally:
        await charger.aclose()
