"""A mirror through an outage of the primary: it gets a copy of every charger CALL, whether a link
forwarded it (the native engine or the Trio pumps) or the outbox's relay answered it offline.
"""

from __future__ import annotations

import json

import msgspec
import pytest
import trio

from proxy.runtime.config import Mirror, Route
from proxy.wire.codec import TEXT
from testkit.mirror_peers import RawMirror
from testkit.outbox_proxy import PASSWORD_HASH, START, call, connect, running_proxy
from testkit.reference_codec import ReferenceFrameReader
from testkit.upstream import Csms
from testkit.waiting import eventually

# Forwarded by both engines (see testkit.engines).
pytestmark = pytest.mark.usefixtures("each_engine")


def copies(mirror: RawMirror) -> list[list]:
    """The texts the mirror's first connection got, decoded."""
    if not mirror.received:
        return []
    frames = ReferenceFrameReader(from_client=True).feed(bytes(mirror.received[0]))
    return [json.loads(m.data) for m in frames if m.opcode == TEXT]


@pytest.mark.parametrize("allow", [(), ("TriggerMessage",)], ids=["copies", "calls"])
async def test_the_mirror_gets_the_calls_answered_offline_and_forwarded_after(
    settings, tmp_path, nursery, allow
):
    mirror = RawMirror(b"")
    mirror_port = await mirror.start(nursery)
    csms = Csms()
    await csms.start(nursery)
    route = Route(
        upstream=f"ws://127.0.0.1:{csms.port}/ocpp",
        auth="managed",
        password_hash=PASSWORD_HASH,
        mirrors=(
            msgspec.convert({"url": f"ws://127.0.0.1:{mirror_port}/m", "allow": allow}, Mirror),
        ),
    )
    async with running_proxy(settings, csms, tmp_path, route) as (port, server, _db):
        async with connect(port, "CP-mirrored") as ws:
            await call(ws, "a", "Authorize", {"idTag": "T"})
            csms.stop()  # an outage while forwarding
            await eventually(lambda: server.metrics.outbox.offline._value.get() == 1)
            start = await call(ws, "s", "StartTransaction", START)
            assert start[2]["transactionId"] >= 2_000_000_000  # answered by the proxy
            await csms.start(nursery)
            await csms.wait_until(lambda: "CP-mirrored" in csms.connections)
            await eventually(lambda: server.metrics.outbox.offline._value.get() == 0)
            await call(ws, "h", "Heartbeat", {})
            with trio.fail_after(10):
                await mirror.wait_until(lambda: len(copies(mirror)) >= 3)
    assert [(m[1], m[2]) for m in copies(mirror)] == [
        ("a", "Authorize"),
        ("s", "StartTransaction"),
        ("h", "Heartbeat"),
    ]
    assert mirror.handshakes == 1  # the mirror's connection outlived the primary's outage
