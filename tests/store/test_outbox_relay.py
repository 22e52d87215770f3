"""The outbox on real sockets and a real PostgreSQL: offline answers, replay, id mapping, bounds.

The proxy runs in-process with its outbox store; the upstream is a trio-websocket CSMS that
the tests start and stop; chargers are trio-websocket clients.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url, serve_websocket

from proxy.config import Config, OutboxSettings, ProxySettings, Route
from proxy.journal import DatabaseStore, Journal
from proxy.link import Link
from proxy.metrics import ProxyMetrics
from proxy.outbox_admin import outbox_command
from proxy.outbox_store import OutboxStore
from proxy.routing import StaticRouter
from proxy.server import ProxyServer, listening_port, open_listener
from proxy.spill import SpillLog
from proxy.store.db import Database, open_database
from tests.integration.conftest import RawCharger, Upstream, frame

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
                await nursery.start(journal.run, DatabaseStore(db))
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
            # Nothing left to rewrite: once a CALL is answered the charger is back on byte forwarding,
            # though it sends nothing but CALLs, and its next CALL passes through the link.
            assert (await call(ws, "h", "Heartbeat", {}))[0] == 3
            await wait_for(lambda: isinstance(server.links.get("CP-1"), Link))
            assert (await call(ws, "h2", "Heartbeat", {}))[0] == 3
            assert [c[1] for c in csms.calls][-2:] == ["Heartbeat", "Heartbeat"]


async def test_upstream_lost_mid_link_keeps_the_charger_and_remote_stop_reaches_it(settings, tmp_path, nursery):
    csms = Csms()
    await csms.start(nursery)
    async with running_proxy(settings, csms, tmp_path) as (port, server, db):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ocpp/CP-2", subprotocols=["ocpp1.6"]) as ws:
            assert (await call(ws, "a", "Authorize", {"idTag": "BAD"}))[2] == {"idTagInfo": {"status": "Blocked"}}
            csms.stop()  # an outage while forwarding
            await wait_for(lambda: server.metrics.outbox.offline._value.get() == 1)
            # Answered by the proxy now: the authorisation cache knows BAD; an unknown tag is accepted.
            assert (await call(ws, "a2", "Authorize", {"idTag": "BAD"}))[2] == {"idTagInfo": {"status": "Blocked"}}
            start = await call(ws, "s", "StartTransaction", START)
            provisional = start[2]["transactionId"]
            await csms.start(nursery)
            await csms.wait_until(lambda: [c[1] for c in csms.calls] == ["Authorize", "Authorize", "StartTransaction"])
            await csms.wait_until(lambda: "CP-2" in csms.connections)
            # The back-office stops the transaction by its real id; the charger sees its provisional one.
            up = csms.connections["CP-2"]
            await up.send_message(json.dumps([2, "r1", "RemoteStopTransaction", {"transactionId": 7001}]))
            remote = json.loads(await ws.get_message())
            assert remote[:3] == [2, "r1", "RemoteStopTransaction"] and remote[3] == {"transactionId": provisional}
            await ws.send_message(json.dumps([3, "r1", {"status": "Accepted"}]))
            assert server.metrics.outbox.rewrites._value.get() >= 1


async def test_a_full_outbox_closes_the_charger_and_refuses_it_until_the_upstream_is_back(settings, tmp_path, nursery):
    csms = Csms()
    await csms.start(nursery)
    csms.stop()
    async with running_proxy(settings, csms, tmp_path, max_entries_per_charger=2) as (port, server, db):
        url = f"ws://127.0.0.1:{port}/ocpp/CP-3"
        # A raw charger: trio-websocket's client leaks its socket when the server closes first.
        charger = await RawCharger.connect(port)
        try:
            assert (await charger.upgrade("CP-3")).startswith(b"HTTP/1.1 101")
            for index, status in enumerate(["Available", "Preparing", "Charging"]):
                notification = {"connectorId": 1, "status": status, "errorCode": "NoError"}
                await charger.send(frame(1, json.dumps([2, f"h{index}", "StatusNotification", notification]).encode()))
            messages = await charger.messages_until_close(reply_to_close=True)
        finally:
            await charger.aclose()
        assert [json.loads(m.data)[1] for m in messages[:-1]] == ["h0", "h1"]  # h2 got no answer
        assert struct.unpack("!H", messages[-1].data[:2])[0] == 1001
        assert await db.fetchval("SELECT count(*) FROM outbox_entries") == 2  # nothing dropped
        # While the upstream is down, the charger is refused: it keeps its own queue.
        charger = await RawCharger.connect(port)
        try:
            assert (await charger.upgrade("CP-3")).startswith(b"HTTP/1.1 503")
        finally:
            await charger.aclose()
        await csms.start(nursery)
        async with open_websocket_url(url, subprotocols=["ocpp1.6"]) as ws:
            # The charger's own queued message goes after the outbox's two.
            await call(ws, "h3", "StatusNotification", {"connectorId": 1, "status": "Charging", "errorCode": "NoError"})
            await csms.wait_until(lambda: len(csms.calls) == 3)
        assert [c[2]["status"] for c in csms.calls] == ["Available", "Preparing", "Charging"]


async def test_callerrors_are_retried_then_dead_lettered_and_replay_goes_on(settings, tmp_path, nursery):
    csms = Csms()
    await csms.start(nursery)
    csms.stop()
    csms.errors_for["StatusNotification"] = 5  # more than the retries
    async with running_proxy(settings, csms, tmp_path, retry_attempts=2) as (port, server, db):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ocpp/CP-4", subprotocols=["ocpp1.6"]) as ws:
            await call(ws, "s1", "StatusNotification", {"connectorId": 1, "status": "Faulted", "errorCode": "OtherError"})
            assert (await call(ws, "d", "DataTransfer", {"vendorId": "x"}))[0] == 4  # not answerable offline
            await call(ws, "hb", "Heartbeat", {})
            await csms.start(nursery)
            await csms.wait_until(lambda: [c[1] for c in csms.calls] == ["Heartbeat"])
            await wait_for(lambda: db.fetchval("SELECT count(*) = 1 FROM outbox_entries"))
            row = await db.fetchrow("SELECT action, attempts, dead_reason FROM outbox_entries")
            assert (row["action"], row["attempts"]) == ("StatusNotification", 2)
            assert row["dead_reason"] == "CALLERROR InternalError: try later"
            assert server.metrics.outbox.dead_letters._value.get() == 1
        # Operators see the dead letter and can put it back.
        config = Config(database=settings)
        out = io.StringIO()
        assert await outbox_command(config, argparse.Namespace(action="dead-letters", identity=None), stdout=out) == 0
        assert "CP-4 #1 StatusNotification after 2 attempts" in out.getvalue()
        assert "CALLERROR InternalError: try later" in out.getvalue() and '"Faulted"' in out.getvalue()
        requeue = argparse.Namespace(action="requeue", identity="CP-4", seq=1)
        assert await outbox_command(config, requeue, stdout=io.StringIO()) == 0
        err = io.StringIO()
        assert await outbox_command(config, requeue, stdout=io.StringIO(), stderr=err) == 1
        assert "no dead letter CP-4 #1" in err.getvalue()
        out = io.StringIO()
        assert await outbox_command(config, argparse.Namespace(action="status"), stdout=out) == 0
        assert out.getvalue().splitlines()[1].split()[:3] == ["CP-4", "1", "0"]


async def test_hostile_frames_while_offline_lose_nothing_and_break_nothing(settings, tmp_path, nursery):
    csms = Csms()
    await csms.start(nursery)
    csms.stop()
    async with running_proxy(settings, csms, tmp_path) as (port, server, db):
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ocpp/CP-5", subprotocols=["ocpp1.6"]) as ws:
            await ws.send_message("not json at all")
            await ws.send_message(b"\x00\xffbinary")
            await ws.send_message('[2, "x"]')  # too short to be a CALL
            odd_start = await call(ws, "s", "StartTransaction", {"connectorId": "one"})  # no idTag, no timestamp
            assert odd_start[0] == 3 and odd_start[2]["idTagInfo"] == {"status": "Invalid"}
            odd_meter = {"connectorId": 1, "transactionId": [1], "meterValue": "x" * 1000}
            assert (await call(ws, "m", "MeterValues", odd_meter))[2] == {}
            assert (await call(ws, "h", "Heartbeat", {}))[0] == 3  # still answered
            await csms.start(nursery)
            await csms.wait_until(lambda: len(csms.calls) == 3)
        assert [c[1] for c in csms.calls] == ["StartTransaction", "MeterValues", "Heartbeat"]
        assert csms.calls[1][2] == odd_meter  # forwarded as it came
