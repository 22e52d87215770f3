"""Both forwarding engines, driven with the same traffic, give the same bytes and the same events.

One script of charger traffic (raw frames, cut into chunks every which way: several frames per
chunk, a frame split over chunks and byte by byte, a fragmented message, pings, a CALL of the
back-office, an unparseable MeterValues, untracked actions, the close handshake) goes through an
in-process proxy once with `[proxy] engine = "native"` and once with "python", to the same
deterministic back-office (`FakeCsms`). Compared: every byte the charger receives, every CALL the
back-office answers, every session event captured (their times aside), and the metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.lowlevel

from proxy.capture.events import Event
from proxy.capture.journal import Journal
from proxy.capture.spill import SpillLog
from proxy.forward.listener import listening_port, open_listener
from proxy.forward.server import ProxyServer
from proxy.routing.router import StaticRouter
from proxy.runtime.metrics import ProxyMetrics
from testkit.fake_csms import FakeCsms
from testkit.in_process_proxy import proxy_config
from testkit.raw_charger import RawCharger, frame

TEXT, CONTINUATION, CLOSE, PING = 1, 0, 8, 9
WAIT = 10.0


@pytest.fixture
def _on_each_engine() -> None:
    """This module runs both engines in each test itself."""


class RecordingJournal(Journal):
    """The real journal (not run: events stay queued), keeping a copy of what is submitted."""

    def __init__(self, spill: SpillLog) -> None:
        super().__init__(spill)
        self.events: list[Event] = []

    def submit(self, events: list[Event]) -> None:
        self.events.extend(events)
        super().submit(events)


def call(unique_id: str, action: str, payload: dict[str, Any]) -> bytes:
    return frame(TEXT, json.dumps([2, unique_id, action, payload]).encode())


def sample(value: float) -> dict[str, Any]:
    return {
        "timestamp": "2026-12-07T10:00:00Z",
        "sampledValue": [{"value": str(value), "measurand": "Energy.Active.Import.Register"}],
    }


# Frames each step of the script brings back to the charger (answers, and a pong).
STEP_ANSWERS = (1, 3, 1, 1, 2, 2, 1)


def script() -> list[list[bytes]]:
    """Steps of chunks; after each step the charger waits for the answers it brings."""
    boot = call("1", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})
    beats = b"".join(call(f"h{i}", "Heartbeat", {}) for i in range(3))
    status = call(
        "2", "StatusNotification", {"connectorId": 1, "errorCode": "NoError", "status": "Preparing"}
    )
    start = call(
        "3",
        "StartTransaction",
        {"connectorId": 1, "idTag": "T1", "meterStart": 1000, "timestamp": "2026-12-07T10:00:00Z"},
    )
    meter = json.dumps(
        [
            2,
            "4",
            "MeterValues",
            {"connectorId": 1, "transactionId": 1, "meterValue": [sample(1500)]},
        ]
    ).encode()
    fragmented = [
        frame(TEXT, meter[:10], fin=False),
        frame(PING, b"keep"),
        frame(CONTINUATION, meter[10:30], fin=False),
        frame(CONTINUATION, meter[30:], fin=True),
    ]
    broken = call("5", "MeterValues", {"connectorId": "one", "meterValue": "nope"})
    data = call("6", "DataTransfer", {"vendorId": "V", "data": "x" * 3000})
    stop = call(
        "7",
        "StopTransaction",
        {"transactionId": 1, "meterStop": 4000, "timestamp": "2026-12-07T11:00:00Z"},
    )
    return [
        [boot],
        [beats[:5], beats[5:40], beats[40:]],
        [bytes([b]) for b in status],
        [start],
        [b"".join(fragmented)],
        [broken + data[:100], data[100:]],
        [stop],
    ]


async def run_traffic(engine: str, tmp_path: Path) -> dict[str, Any]:
    """The script through a proxy forwarding with `engine`; what each party saw."""
    csms = FakeCsms(record=True, current_time="2026-12-01T00:00:00Z")  # both runs alike
    journal = RecordingJournal(SpillLog(tmp_path / engine))
    async with trio.open_nursery() as nursery:
        upstream_port = await nursery.start(csms.serve)
        config = proxy_config(upstream_port, engine=engine)
        metrics = ProxyMetrics()
        server = ProxyServer(config, StaticRouter(config), metrics, journal)
        listener = open_listener(config.proxy, reuse_port=False)
        await nursery.start(server.run, [listener])
        charger = await RawCharger.connect(listening_port(listener))
        head = await charger.upgrade("CP-DIFF")
        assert head.startswith(b"HTTP/1.1 101")
        seen = Seen(charger)
        with trio.fail_after(WAIT):
            await seen.more(charger.buffer)  # read behind the 101
            for step, answers in zip(script(), STEP_ANSWERS, strict=True):
                for chunk in step:
                    await charger.send(chunk)
                    await trio.lowlevel.checkpoint()
                await seen.until(len(seen.frames) + answers)
            # A CALL of the back-office, answered by the charger.
            asked = trio.Event()

            async def ask() -> None:
                answer = await csms.call("CP-DIFF", "GetConfiguration", {"key": ["A"]})
                assert answer == {"configurationKey": []}
                asked.set()

            nursery.start_soon(ask)
            await seen.until(len(seen.frames) + 1)
            unique_id = json.loads(seen.frames[-1].data)[1]
            await charger.send(
                frame(TEXT, json.dumps([3, unique_id, {"configurationKey": []}]).encode())
            )
            await asked.wait()
            await charger.send(frame(CLOSE, (1000).to_bytes(2, "big") + b"done"))
            while chunk := await charger.stream.receive_some(65536):
                await seen.more(chunk)
        await charger.aclose()
        with trio.fail_after(WAIT):
            while server.links:
                await trio.sleep(0.01)
        adopted = server.engine.adopted if server.engine is not None else 0
        nursery.cancel_scope.cancel()
    return {
        "received": seen.received,
        "answered": [
            (c.action, c.payload, c.unique_id, c.answer) for c in csms.received["CP-DIFF"]
        ],
        "events": [_timeless(e) for e in journal.events],
        "metrics": _forwarding_samples(metrics),
        "adopted": adopted,
    }


class Seen:
    """Every byte and frame the charger receives."""

    def __init__(self, charger: RawCharger) -> None:
        self.charger = charger
        self.received = b""
        self.frames: list[Any] = []

    async def more(self, chunk: bytes) -> None:
        self.received += chunk
        self.frames += self.charger.reader.feed(chunk)

    async def until(self, count: int) -> None:
        while len(self.frames) < count:
            chunk = await self.charger.stream.receive_some(65536)
            assert chunk, "the proxy hung up"
            await self.more(chunk)


def _timeless(event: Event) -> dict[str, Any]:
    fields = msgspec.to_builtins(event)
    for name in ("at", "event_id"):
        fields.pop(name, None)
    return fields


def _forwarding_samples(
    metrics: ProxyMetrics,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Counters of what was forwarded, and whether forwarding times were observed (how many
    depends on how the bytes happened to be read: chunks, not frames)."""
    samples = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            key = s.name, tuple(sorted(s.labels.items()))
            if family.name in ("ere_proxy_frames", "ere_proxy_calls", "ere_proxy_bytes"):
                if s.name.endswith("_total"):
                    samples[key] = s.value
            elif family.name == "ere_proxy_forward_seconds" and s.name.endswith("_count"):
                samples[key] = s.value > 0
    return samples


async def test_both_engines_forward_and_capture_the_same(tmp_path: Path) -> None:
    native = await run_traffic("native", tmp_path)
    python = await run_traffic("python", tmp_path)
    assert native["adopted"] == 1 and python["adopted"] == 0  # each engine really forwarded
    assert native["received"] == python["received"]
    assert native["answered"] == python["answered"]
    assert [a for a, *_ in native["answered"]] == [
        "BootNotification",
        "Heartbeat",
        "Heartbeat",
        "Heartbeat",
        "StatusNotification",
        "StartTransaction",
        "MeterValues",
        "MeterValues",
        "DataTransfer",
        "StopTransaction",
    ]
    assert native["events"] == python["events"]
    kinds = [e["kind"] for e in native["events"]]
    assert kinds == [
        "charger_booted",
        "status_changed",
        "transaction_started",
        "meter_values",
        "unparseable",
        "transaction_stopped",
    ]
    assert native["metrics"] == python["metrics"]
