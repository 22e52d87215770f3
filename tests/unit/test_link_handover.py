"""A link that loses its upstream hands the charger's unanswered CALL to the relay, exactly once.

The race under test: the charger's CALL and the upstream's close arrive in the same scheduler
step, so either pump may run first. Whichever does, the CALL must reach the relay once: as a
carried message (it was forwarded, or being forwarded, to the lost upstream) or as leftover bytes
(read after the link decided to end, and not forwarded).
"""

from __future__ import annotations

import struct

import pytest
import trio
from trio.testing import MemoryReceiveStream, MemorySendStream

from proxy.forward.link import Link, OutboxWatch
from proxy.forward.policy import LinkEnd
from proxy.forward.side import Side
from proxy.outbox.learned import AuthorizationCache, LiveObserver
from proxy.runtime.metrics import ProxyMetrics
from proxy.wire.codec import CLOSE, TEXT, FrameReader, encode_frame

METRICS = ProxyMetrics()


def _side(
    name: str, reader: FrameReader, mask: bool
) -> tuple[Side, MemoryReceiveStream, MemorySendStream]:
    """A side whose incoming bytes the test puts in directly (no checkpoint in between)."""
    incoming, outgoing = MemoryReceiveStream(), MemorySendStream()
    side = Side(
        name, trio.StapledStream(outgoing, incoming), reader, METRICS.direction(name), mask=mask
    )
    return side, incoming, outgoing


def _call(unique_id: str) -> bytes:
    return encode_frame(TEXT, b'[2,"%s","Heartbeat",{}]' % unique_id.encode(), mask=True)


@pytest.mark.parametrize(
    "attempt", range(10)
)  # the scheduler may order the two wake-ups either way
async def test_a_call_arriving_with_the_upstream_close_reaches_the_relay_once(attempt):
    charger, from_charger, _ = _side("charger", FrameReader(from_client=True), mask=False)
    upstream, from_upstream, _ = _side("upstream", FrameReader(from_client=False), mask=True)
    watch = OutboxWatch(LiveObserver("ocpp1.6", AuthorizationCache(), {}), lambda learned: None)
    link = Link("CP", charger, upstream, close_timeout=1.0, outbox=watch)
    ended: list[LinkEnd] = []

    async def run() -> None:
        ended.append(await link.run())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        from_charger.put_data(
            _call("c1")
        )  # in one step: the charger's CALL and the upstream's close
        from_upstream.put_data(encode_frame(CLOSE, struct.pack("!H", 1001), mask=False))
        from_upstream.put_eof()

    assert ended == [LinkEnd.UPSTREAM_LOST]
    carried = [message.unique_id for message in link.carried]
    leftover = [
        message.unique_id for message in FrameReader(from_client=True).feed(link.charger.trailing)
    ]
    assert carried + leftover == ["c1"]
