"""A StopTransaction the charger sends while the proxy shuts down is forwarded and captured."""

from __future__ import annotations

import json

import msgspec
import trio
from trio_websocket import serve_websocket

from proxy.capture.journal import DatabaseStore, Journal
from proxy.capture.spill import SpillLog
from proxy.forward.listener import listening_port, open_listener
from proxy.forward.server import ProxyServer
from proxy.routing.router import StaticRouter
from proxy.runtime.config import Config, ProxySettings, Route
from proxy.runtime.metrics import ProxyMetrics
from proxy.store.db import open_database
from testkit.raw_charger import RawCharger, frame
from testkit.upstream import Upstream


async def test_stop_sent_after_our_close_reaches_the_sessions_table(settings, tmp_path, nursery):
    up = Upstream()
    up.answer_calls = False  # the test answers the StartTransaction itself, with a transactionId
    upstream_server = await nursery.start(serve_websocket, up.handler, "127.0.0.1", 0, None)
    proxy_settings = msgspec.convert(
        {"host": "127.0.0.1", "port": 0, "close_timeout": 5.0}, ProxySettings
    )
    config = Config(
        proxy=proxy_settings,
        default_route=Route(upstream=f"ws://127.0.0.1:{upstream_server.port}/ocpp"),
    )
    async with open_database(settings) as db:
        spill = SpillLog(tmp_path / "spill")
        journal = Journal(spill)
        server = ProxyServer(config, StaticRouter(config), ProxyMetrics(), journal)
        listener = open_listener(config.proxy, reuse_port=False)
        async with trio.open_nursery() as inner:
            await inner.start(journal.run, DatabaseStore(db))
            await inner.start(server.run, [listener])
            charger = await RawCharger.connect(listening_port(listener))
            assert (await charger.upgrade("CP-late")).startswith(b"HTTP/1.1 101")
            start = {
                "connectorId": 1,
                "idTag": "T",
                "meterStart": 100,
                "timestamp": "2026-01-01T10:00:00Z",
            }
            await charger.send(frame(1, json.dumps([2, "s", "StartTransaction", start]).encode()))
            await up.wait_until(lambda: up.peers and up.peers[0].received)
            accepted = {"transactionId": 1, "idTagInfo": {"status": "Accepted"}}
            await up.connections["/ocpp/CP-late"].send_message(json.dumps([3, "s", accepted]))
            [answer] = await _messages(charger, 1)
            assert json.loads(answer.data)[0] == 3
            server.shutdown()  # nothing in flight: the charger gets our 1001 at once
            assert (await charger.stream.receive_some(2))[:1] == b"\x88"
            stop = {"transactionId": 1, "meterStop": 5100, "timestamp": "2026-01-01T11:00:00Z"}
            await charger.send(
                frame(1, json.dumps([2, "e", "StopTransaction", stop]).encode())
                + frame(8, b"\x03\xe9")
            )
            await server.stopped.wait()
            await charger.aclose()
            with trio.fail_after(10):
                while (
                    await db.fetchval("SELECT count(*) FROM sessions WHERE status = 'completed'")
                    == 0
                ):
                    await trio.sleep(0.02)  # the journal writes in the background
            inner.cancel_scope.cancel()
        spill.close()
        row = await db.fetchrow("SELECT status, energy_wh FROM sessions")
    assert (row["status"], int(row["energy_wh"])) == ("completed", 5000)


async def _messages(charger: RawCharger, count: int) -> list:
    messages: list = []
    while len(messages) < count:
        messages += charger.reader.feed(await charger.stream.receive_some(65536))
    return messages
