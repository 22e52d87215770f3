"""The outbox on real sockets and a real PostgreSQL: offline answers, replay, id mapping, bounds.

The proxy runs in-process with its outbox store; the upstream is a trio-websocket CSMS that
the tests start and stop; chargers are trio-websocket clients.
"""

from __future__ import annotations

import argparse
import io
import json
import struct

import pytest
import trio

from proxy.cli.outbox import outbox_command
from proxy.forward.link import Link
from proxy.runtime.config import Config
from testkit.outbox_proxy import START, call, connect, raw_credentials, running_proxy
from testkit.raw_charger import RawCharger, frame
from testkit.upstream import Csms
from testkit.waiting import eventually

# Forwarded by both engines (see testkit.engines).
pytestmark = pytest.mark.usefixtures("each_engine")


async def test_offline_session_is_replayed_in_order_with_the_real_transaction_id(
    settings, tmp_path, nursery
):
    csms = Csms()
    await csms.start(nursery)
    csms.stop()  # the back-office is down when the charger connects
    async with running_proxy(settings, csms, tmp_path, unknown_id_tag="Accepted") as (
        port,
        server,
        db,
    ):
        async with connect(port, "CP-1") as ws:
            assert ws.subprotocol == "ocpp1.6"
            boot = await call(
                ws, "b", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}
            )
            assert boot[2]["status"] == "Accepted" and boot[2]["interval"] == 300
            start = await call(ws, "s", "StartTransaction", START)
            provisional = start[2]["transactionId"]
            assert provisional >= 2_000_000_000 and start[2]["idTagInfo"] == {"status": "Accepted"}
            meter = {
                "connectorId": 1,
                "transactionId": provisional,
                "meterValue": [
                    {"timestamp": "2026-11-21T10:30:00Z", "sampledValue": [{"value": "1500"}]}
                ],
            }
            assert (await call(ws, "m", "MeterValues", meter))[2] == {}
            assert await db.fetchval("SELECT count(*) FROM outbox_entries") == 3
            await csms.start(nursery)
            await csms.wait_until(lambda: len(csms.calls) == 3)
            assert [c[1] for c in csms.calls] == [
                "BootNotification",
                "StartTransaction",
                "MeterValues",
            ]
            assert csms.calls[2][2]["transactionId"] == 7001  # the provisional id, rewritten
            # Live now: a StopTransaction with the provisional id reaches the back-office with the real one.
            stop = {
                "transactionId": provisional,
                "meterStop": 2000,
                "timestamp": "2026-11-21T11:00:00Z",
            }
            assert (await call(ws, "e", "StopTransaction", stop))[0] == 3
            assert csms.calls[3][1:] == ("StopTransaction", {**stop, "transactionId": 7001})
            await eventually(
                lambda: db.fetchval("SELECT count(*) FROM sessions WHERE status = 'completed'")
            )
            row = await db.fetchrow("SELECT transaction_id, energy_wh FROM sessions")
            assert (row["transaction_id"], int(row["energy_wh"])) == ("7001", 1000)
            assert await db.fetchval("SELECT count(*) FROM outbox_entries") == 0
            # Nothing left to rewrite: once a CALL is answered the charger is back on byte forwarding,
            # though it sends nothing but CALLs, and its next CALL passes through the link.
            assert (await call(ws, "h", "Heartbeat", {}))[0] == 3
            await eventually(lambda: isinstance(server.links.get("CP-1"), Link))
            assert (await call(ws, "h2", "Heartbeat", {}))[0] == 3
            assert [c[1] for c in csms.calls][-2:] == ["Heartbeat", "Heartbeat"]


async def test_a_session_answered_offline_is_captured_though_the_worker_died_before_storing_it(
    settings, tmp_path, nursery
):
    csms = Csms()
    await csms.start(nursery)
    csms.stop()
    # The first worker answers a whole session offline, and dies with its events unstored.
    async with running_proxy(
        settings, csms, tmp_path / "first", unknown_id_tag="Accepted", capture_stored=False
    ) as (port, _server, db):
        async with connect(port, "CP-1") as ws:
            provisional = (await call(ws, "s", "StartTransaction", START))[2]["transactionId"]
            meter = {
                "connectorId": 1,
                "transactionId": provisional,
                "meterValue": [
                    {"timestamp": "2026-11-21T10:30:00Z", "sampledValue": [{"value": "1500"}]}
                ],
            }
            await call(ws, "m", "MeterValues", meter)
            stop = {
                "transactionId": provisional,
                "meterStop": 2000,
                "timestamp": "2026-11-21T11:00:00Z",
            }
            await call(ws, "e", "StopTransaction", stop)
        assert (
            await db.fetchval("SELECT count(*) FROM outbox_entries WHERE captured IS NOT NULL") == 3
        )
        assert await db.fetchval("SELECT count(*) FROM charger_events") == 0
    # The charger comes back through another worker, and its back-office with it.
    await csms.start(nursery)
    async with running_proxy(settings, csms, tmp_path / "second") as (port, _server, db):
        async with connect(port, "CP-1"):
            await csms.wait_until(lambda: len(csms.calls) == 3)
            await eventually(  # under the back-office's id once the replay assigned it
                lambda: db.fetchval(
                    "SELECT count(*) FROM sessions WHERE status = 'completed'"
                    " AND transaction_id = '7001'"
                )
            )
        rows = await db.fetch("SELECT transaction_id, energy_wh FROM sessions")
        assert [(r["transaction_id"], int(r["energy_wh"])) for r in rows] == [("7001", 1000)]


async def test_upstream_lost_mid_link_keeps_the_charger_and_remote_stop_reaches_it(
    settings, tmp_path, nursery
):
    csms = Csms()
    await csms.start(nursery)
    async with running_proxy(settings, csms, tmp_path) as (port, server, _db):
        async with connect(port, "CP-2") as ws:
            assert (await call(ws, "a", "Authorize", {"idTag": "BAD"}))[2] == {
                "idTagInfo": {"status": "Blocked"}
            }
            csms.stop()  # an outage while forwarding
            await eventually(lambda: server.metrics.outbox.offline._value.get() == 1)
            # Answered by the proxy now: the authorisation cache knows BAD.
            assert (await call(ws, "a2", "Authorize", {"idTag": "BAD"}))[2] == {
                "idTagInfo": {"status": "Blocked"}
            }
            start = await call(ws, "s", "StartTransaction", START)
            provisional = start[2]["transactionId"]
            await csms.start(nursery)
            await csms.wait_until(
                lambda: [c[1] for c in csms.calls] == ["Authorize", "Authorize", "StartTransaction"]
            )
            await csms.wait_until(lambda: "CP-2" in csms.connections)
            # The back-office stops the transaction by its real id; the charger sees its provisional one.
            up = csms.connections["CP-2"]
            await up.send_message(
                json.dumps([2, "r1", "RemoteStopTransaction", {"transactionId": 7001}])
            )
            remote = json.loads(await ws.get_message())
            assert remote[:3] == [2, "r1", "RemoteStopTransaction"] and remote[3] == {
                "transactionId": provisional
            }
            await ws.send_message(json.dumps([3, "r1", {"status": "Accepted"}]))
            assert server.metrics.outbox.rewrites._value.get() >= 1


async def test_a_full_outbox_closes_the_charger_and_refuses_it_until_the_upstream_is_back(
    settings, tmp_path, nursery
):
    csms = Csms()
    await csms.start(nursery)
    csms.stop()
    async with running_proxy(settings, csms, tmp_path, max_entries_per_charger=2) as (
        port,
        server,
        db,
    ):
        # A raw charger: trio-websocket's client leaks its socket when the server closes first.
        charger = await RawCharger.connect(port)
        try:
            assert (await charger.upgrade("CP-3", raw_credentials("CP-3"))).startswith(
                b"HTTP/1.1 101"
            )
            for index, status in enumerate(["Available", "Preparing", "Charging"]):
                notification = {"connectorId": 1, "status": status, "errorCode": "NoError"}
                await charger.send(
                    frame(
                        1, json.dumps([2, f"h{index}", "StatusNotification", notification]).encode()
                    )
                )
            messages = await charger.messages_until_close(reply_to_close=True)
        finally:
            await charger.aclose()
        assert [json.loads(m.data)[1] for m in messages[:-1]] == ["h0", "h1"]  # h2 got no answer
        assert struct.unpack("!H", messages[-1].data[:2])[0] == 1001
        assert await db.fetchval("SELECT count(*) FROM outbox_entries") == 2  # nothing dropped
        # While the upstream is down, the charger is refused: it keeps its own queue.
        charger = await RawCharger.connect(port)
        try:
            assert (await charger.upgrade("CP-3", raw_credentials("CP-3"))).startswith(
                b"HTTP/1.1 503"
            )
        finally:
            await charger.aclose()
        await csms.start(nursery)
        # The proxy takes the upstream as down for a second after a failed dial (what it skips
        # dialling for new handshakes); the charger comes back once that has passed.
        await trio.sleep_until(max(server.dialer.down_until.values(), default=0.0))
        async with connect(port, "CP-3") as ws:
            # The charger's own queued message goes after the outbox's two.
            await call(
                ws,
                "h3",
                "StatusNotification",
                {"connectorId": 1, "status": "Charging", "errorCode": "NoError"},
            )
            await csms.wait_until(lambda: len(csms.calls) == 3)
        assert [c[2]["status"] for c in csms.calls] == ["Available", "Preparing", "Charging"]


async def test_callerrors_are_retried_then_dead_lettered_and_replay_goes_on(
    settings, tmp_path, nursery
):
    csms = Csms()
    await csms.start(nursery)
    csms.stop()
    csms.errors_for["StatusNotification"] = 5  # more than the retries
    async with running_proxy(settings, csms, tmp_path, retry_attempts=2) as (port, server, db):
        async with connect(port, "CP-4") as ws:
            await call(
                ws,
                "s1",
                "StatusNotification",
                {"connectorId": 1, "status": "Faulted", "errorCode": "OtherError"},
            )
            assert (await call(ws, "d", "DataTransfer", {"vendorId": "x"}))[
                0
            ] == 4  # not answerable offline
            await call(ws, "hb", "Heartbeat", {})
            await csms.start(nursery)
            await csms.wait_until(lambda: [c[1] for c in csms.calls] == ["Heartbeat"])
            await eventually(lambda: db.fetchval("SELECT count(*) = 1 FROM outbox_entries"))
            row = await db.fetchrow("SELECT action, attempts, dead_reason FROM outbox_entries")
            assert (row["action"], row["attempts"]) == ("StatusNotification", 2)
            assert row["dead_reason"] == "CALLERROR InternalError: try later"
            assert server.metrics.outbox.dead_letters._value.get() == 1
        # Operators see the dead letter and can put it back.
        config = Config(database=settings)
        out = io.StringIO()
        assert (
            await outbox_command(
                config, argparse.Namespace(action="dead-letters", identity=None), stdout=out
            )
            == 0
        )
        assert "CP-4 #1 StatusNotification after 2 attempts" in out.getvalue()
        assert (
            "CALLERROR InternalError: try later" in out.getvalue() and '"Faulted"' in out.getvalue()
        )
        requeue = argparse.Namespace(action="requeue", identity="CP-4", seq=1)
        assert await outbox_command(config, requeue, stdout=io.StringIO()) == 0
        err = io.StringIO()
        assert await outbox_command(config, requeue, stdout=io.StringIO(), stderr=err) == 1
        assert "no dead letter CP-4 #1" in err.getvalue()
        out = io.StringIO()
        assert await outbox_command(config, argparse.Namespace(action="status"), stdout=out) == 0
        assert out.getvalue().splitlines()[1].split()[:3] == ["CP-4", "1", "0"]


async def test_hostile_frames_while_offline_lose_nothing_and_break_nothing(
    settings, tmp_path, nursery
):
    csms = Csms()
    await csms.start(nursery)
    csms.stop()
    async with running_proxy(settings, csms, tmp_path) as (port, _server, _db):
        async with connect(port, "CP-5") as ws:
            await ws.send_message("not json at all")
            await ws.send_message(b"\x00\xffbinary")
            await ws.send_message('[2, "x"]')  # too short to be a CALL
            odd_start = await call(
                ws, "s", "StartTransaction", {"connectorId": "one"}
            )  # no idTag, no timestamp
            assert odd_start[0] == 3 and odd_start[2]["idTagInfo"] == {"status": "Invalid"}
            odd_meter = {"connectorId": 1, "transactionId": [1], "meterValue": "x" * 1000}
            assert (await call(ws, "m", "MeterValues", odd_meter))[2] == {}
            assert (await call(ws, "h", "Heartbeat", {}))[0] == 3  # still answered
            await csms.start(nursery)
            await csms.wait_until(lambda: len(csms.calls) == 3)
        assert [c[1] for c in csms.calls] == ["StartTransaction", "MeterValues", "Heartbeat"]
        assert csms.calls[1][2] == odd_meter  # forwarded as it came
