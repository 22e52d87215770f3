"""The outbox on real sockets and a real PostgreSQL: offline answers, replay, id mapping, bounds.

The proxy runs in-process with its outbox store; the upstream is a trio-websocket CSMS that
the tests start and stop; chargers are trio-websocket clients.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url, serve_websocket

from proxy.config import Config, OutboxSettings, ProxySettings, Route
from proxy.journal import Journal
from proxy.metrics import ProxyMetrics
from proxy.outbox_store import OutboxStore
from proxy.routing import StaticRouter
from proxy.server import ProxyServer, listening_port, open_listener
from proxy.spill import SpillLog
from proxy.store.db import Database, open_database
from tests.integration.conftest import Upstream

START = {"connectorId": 1, "idTag": "TAG1", "meterStart": 1000, "timestamp": "2026-11-21T10:00:00Z"}


class Csms(Upstream):
    """The upstream back-office: answers like one (real transaction ids from 7000), can be stopped."""

    def __init__(self) -> None:
        super().__init__()
        self.answer_calls = False
        self.calls: list[tuple[str, str, dict[str, Any]]] = []  # (identity, action, payload) answered
        self.errors_for: dict[str, int] = {}  # action → CALLERRORs to give before answering
        self._next_id = 7000
        self._scope: trio.CancelScope | None = None

    async def start(self, nursery: trio.Nursery) -> None:
        async def serve(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as self._scope:
                await serve_websocket(self.answering, "127.0.0.1", self.port, None, task_status=task_status)

        server = await nursery.start(serve)
        self.port = server.port

    def stop(self) -> None:
        assert self._scope is not None
        self._scope.cancel()

    async def answering(self, request) -> None:
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
                if self.errors_for.get(action, 0) > 0:
                    self.errors_for[action] -= 1
                    await ws.send_message(json.dumps([4, unique_id, "InternalError", "try later", {}]))
                    continue
                answer: dict[str, Any] = {}
                if action == "StartTransaction":
                    self._next_id += 1
                    answer = {"transactionId": self._next_id, "idTagInfo": {"status": "Accepted"}}
                elif action == "Authorize":
                    answer = {"idTagInfo": {"status": "Blocked" if payload["idTag"] == "BAD" else "Accepted"}}
                elif action == "BootNotification":
                    answer = {"status": "Accepted", "currentTime": "2026-11-21T10:00:00Z", "interval": 60}
                await ws.send_message(json.dumps([3, unique_id, answer]))
                self.calls.append((identity, action, payload))
                self._notify()
        except ConnectionClosed:
            pass
        finally:
            if self.connections.get(identity) is ws:
                del self.connections[identity]
            self._notify()


@asynccontextmanager
async def running_proxy(settings, csms: Csms, tmp_path, **outbox: Any):
    """A proxy with outbox (and capture) on the test database; yields (port, server, db)."""
    proxy = msgspec.convert({"host": "127.0.0.1", "port": 0, "close_timeout": 1.0, "dial_timeout": 1.0}, ProxySettings)
    outbox_settings = msgspec.convert({"redial_min": 0.05, "redial_max": 0.2, "retry_interval": 0.05, **outbox},
                                      OutboxSettings)
    config = Config(proxy=proxy, outbox=outbox_settings,
                    default_route=Route(upstream=f"ws://127.0.0.1:{csms.port}/ocpp"))
    async with open_database(settings) as db:
        spill = SpillLog(tmp_path / "spill")
        journal = Journal(spill)
        store = OutboxStore(db, config.outbox, refresh_interval=0.1)
        server = ProxyServer(config, StaticRouter(config), ProxyMetrics(), journal, store)
        listener = open_listener(config.proxy, reuse_port=False)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(journal.run, db)
                await nursery.start(store.run)
                await nursery.start(server.run, [listener])
                yield listening_port(listener), server, db
                server.shutdown()
                await server.stopped.wait()
                nursery.cancel_scope.cancel()
        finally:
            spill.close()


async def call(ws, unique_id: str, action: str, payload: dict[str, Any]) -> Any:
    await ws.send_message(json.dumps([2, unique_id, action, payload]))
    with trio.fail_after(10):
        while True:
            message = json.loads(await ws.get_message())
            if message[0] in (3, 4) and message[1] == unique_id:
                return message


async def wait_for(condition, db: Database | None = None) -> None:
    """Poll `condition` (sync or async) until true, bounded: for state inside the proxy or the database."""
    with trio.fail_after(10):
        while True:
            value = condition()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return
            await trio.sleep(0.01)


async def test_offline_session_is_replayed_in_order_with_the_real_transaction_id(settings, tmp_path, nursery):
    csms = Csms()
    await csms.start(nursery)
    csms.stop()  # the back-office is down when the charger connects
    async with running_proxy(settings, csms, tmp_path) as (port, server, db):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ocpp/CP-1", subprotocols=["ocpp1.6"]) as ws:
            assert ws.subprotocol == "ocpp1.6"
            boot = await call(ws, "b", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
            assert boot[2]["status"] == "Accepted" and boot[2]["interval"] == 300
            start = await call(ws, "s", "StartTransaction", START)
            provisional = start[2]["transactionId"]
            assert provisional >= 2_000_000_000 and start[2]["idTagInfo"] == {"status": "Accepted"}
            meter = {"connectorId": 1, "transactionId": provisional, "meterValue": [
                {"timestamp": "2026-11-21T10:30:00Z", "sampledValue": [{"value": "1500"}]}]}
            assert (await call(ws, "m", "MeterValues", meter))[2] == {}
            assert await db.fetchval("SELECT count(*) FROM outbox_entries") == 3
            await csms.start(nursery)
            await csms.wait_until(lambda: len(csms.calls) == 3)
            assert [c[1] for c in csms.calls] == ["BootNotification", "StartTransaction", "MeterValues"]
            assert csms.calls[2][2]["transactionId"] == 7001  # the provisional id, rewritten
            # Live now: a StopTransaction with the provisional id reaches the back-office with the real one.
            stop = {"transactionId": provisional, "meterStop": 2000, "timestamp": "2026-11-21T11:00:00Z"}
            assert (await call(ws, "e", "StopTransaction", stop))[0] == 3
            assert csms.calls[3][1:] == ("StopTransaction", {**stop, "transactionId": 7001})
            await wait_for(lambda: db.fetchval("SELECT count(*) FROM sessions WHERE status = 'completed'"))
            row = await db.fetchrow("SELECT transaction_id, energy_wh FROM sessions")
            assert (row["transaction_id"], int(row["energy_wh"])) == ("7001", 1000)
            assert await db.fetchval("SELECT count(*) FROM outbox_entries") == 0
