"""`ere_proxy_forward_seconds` on the Python forwarding path: one observation per forwarded chunk,
from the read to the write, the hand-off to session capture included."""

from __future__ import annotations

import json
import time

import pytest
import trio

from proxy.capture.events import Event
from proxy.capture.journal import Journal
from proxy.capture.spill import SpillLog
from proxy.forward.listener import listening_port, open_listener
from proxy.forward.server import ProxyServer
from proxy.routing.router import StaticRouter
from proxy.runtime.metrics import CHARGER_TO_UPSTREAM, ProxyMetrics
from testkit.in_process_proxy import proxy_config
from testkit.raw_charger import RawCharger, frame

TEXT = 1
SLOW = 0.05  # seconds the capture hand-off of each event takes here


@pytest.fixture
def _on_each_engine() -> None:
    """Only the Python path hands messages to capture while forwarding."""


class SlowJournal(Journal):
    """The real journal (not run), slow to take events, as a loaded interpreter would be."""

    def submit(self, events: list[Event]) -> None:
        time.sleep(SLOW)
        super().submit(events)


def sample(metrics: ProxyMetrics, suffix: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(
        f"ere_proxy_forward_seconds{suffix}", {"direction": CHARGER_TO_UPSTREAM, **labels}
    )
    return 0.0 if value is None else value


async def test_a_chunks_forwarding_time_includes_its_capture(nursery, upstream, tmp_path):
    spill = SpillLog(tmp_path / "spill")
    config = proxy_config(upstream.port, engine="python")
    metrics = ProxyMetrics()
    server = ProxyServer(config, StaticRouter(config), metrics, SlowJournal(spill))
    listener = open_listener(config.proxy, reuse_port=False)
    await nursery.start(server.run, [listener])
    charger = await RawCharger.connect(listening_port(listener))
    try:
        assert (await charger.upgrade("CP-LAT")).startswith(b"HTTP/1.1 101")
        status = {"connectorId": 1, "errorCode": "NoError", "status": "Available"}
        # Two captured CALLs in one chunk: one observation, both hand-offs in it.
        await charger.send(
            b"".join(
                frame(TEXT, json.dumps([2, unique_id, "StatusNotification", status]).encode())
                for unique_id in ("s1", "s2")
            )
        )
        with trio.fail_after(10):
            while sample(metrics, "_count") < 1:
                await trio.sleep(0.01)
        assert sample(metrics, "_count") == 1
        assert sample(metrics, "_sum") >= 2 * SLOW
        assert sample(metrics, "_bucket", le="0.1") == 0
    finally:
        await charger.aclose()
        spill.close()
