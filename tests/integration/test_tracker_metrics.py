"""The session trackers' counters are exported per worker: live connections' counts at scrape
time, ended connections' kept, none counted twice (`ere_proxy_capture_tracker_events_total`)."""

from __future__ import annotations

import json
from collections.abc import Callable

import trio

from proxy.capture.journal import Journal
from proxy.capture.spill import SpillLog
from proxy.forward.listener import listening_port, open_listener
from proxy.forward.server import ProxyServer
from proxy.routing.router import StaticRouter
from proxy.runtime.metrics import ProxyMetrics
from testkit.in_process_proxy import proxy_config
from testkit.raw_charger import RawCharger, frame

TEXT = 1
WAIT = 10.0


def call(unique_id: str, action: str, payload: object) -> bytes:
    return frame(TEXT, json.dumps([2, unique_id, action, payload]).encode())


def tracker_events(metrics: ProxyMetrics, kind: str) -> float:
    value = metrics.registry.get_sample_value(
        "ere_proxy_capture_tracker_events_total", {"kind": kind}
    )
    assert value is not None  # every kind is exported from the start
    return value


async def until(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(WAIT):
        while not predicate():
            await trio.sleep(0.01)


async def test_tracker_counters_count_live_and_ended_connections(nursery, upstream, tmp_path):
    spill = SpillLog(tmp_path / "spill")
    config = proxy_config(upstream.port)
    metrics = ProxyMetrics()
    server = ProxyServer(config, StaticRouter(config), metrics, Journal(spill))  # journal not run
    listener = open_listener(config.proxy, reuse_port=False)
    await nursery.start(server.run, [listener])
    port = listening_port(listener)
    assert tracker_events(metrics, "unparseable") == 0
    assert tracker_events(metrics, "duplicate_ids") == 0
    try:
        first = await RawCharger.connect(port)
        assert (await first.upgrade("CP-T1")).startswith(b"HTTP/1.1 101")
        broken = call("m1", "MeterValues", {"connectorId": "one", "meterValue": "nope"})
        status = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
        # Two CALLs with one id, in one chunk: the second arrives before the first is answered.
        twice = call("s1", "StatusNotification", status) * 2
        await first.send(broken + call("m2", "MeterValues", "not an object") + twice)
        await until(lambda: tracker_events(metrics, "unparseable") == 2)  # while connected
        assert tracker_events(metrics, "duplicate_ids") == 1

        await first.aclose()
        await until(lambda: not server.links)
        assert tracker_events(metrics, "unparseable") == 2  # kept once the connection ended
        assert tracker_events(metrics, "duplicate_ids") == 1

        second = await RawCharger.connect(port)
        assert (await second.upgrade("CP-T2")).startswith(b"HTTP/1.1 101")
        await second.send(call("m3", "MeterValues", {"meterValue": 7}))
        await until(lambda: tracker_events(metrics, "unparseable") == 3)  # ended + live
        await second.aclose()
        await until(lambda: not server.links)
        assert tracker_events(metrics, "unparseable") == 3
        assert tracker_events(metrics, "duplicate_ids") == 1
    finally:
        spill.close()
