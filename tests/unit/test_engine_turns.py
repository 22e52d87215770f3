"""A link's wait for the native engine (parked on its `Turn`): it always ends with the link in
hand.

Two socket pairs stand for a charger's and an upstream's connections; the engine's own thread
forwards between them while the link's task is parked on its turn.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import trio

from proxy._codec import Handback
from proxy.forward.engine import ForwardingEngine, Turn
from proxy.runtime.metrics import CHARGER_TO_UPSTREAM, UPSTREAM_TO_CHARGER, ProxyMetrics
from proxy.wire.codec import FrameReader, Message


class Owner:
    def passed_natively(self, side: int, messages: list[Message], at: float) -> None:
        pass


@pytest.fixture
def pairs() -> Iterator[tuple[socket.socket, ...]]:
    """(proxy's charger end, charger, proxy's upstream end, upstream)."""
    charger = socket.socketpair()
    upstream = socket.socketpair()
    sockets = (*charger, *upstream)
    for sock in sockets:
        sock.setblocking(False)
    yield sockets
    for sock in sockets:
        sock.close()


def engine() -> ForwardingEngine:
    metrics = ProxyMetrics()
    return ForwardingEngine(
        (metrics.direction(CHARGER_TO_UPSTREAM), metrics.direction(UPSTREAM_TO_CHARGER))
    )


async def wait_back(turn: Turn) -> Handback:
    """The wait as `Link.run` does it."""
    if turn.parks():
        await trio.lowlevel.wait_task_rescheduled(turn)
    assert turn.handback is not None
    return turn.handback


def adopt(forwarding: ForwardingEngine, pairs: tuple[socket.socket, ...]) -> Turn:
    readers = (
        FrameReader(from_client=True, max_message_size=65536),
        FrameReader(from_client=False, max_message_size=65536),
    )
    fds = (pairs[0].fileno(), pairs[2].fileno())
    turn = forwarding.adopt(Owner(), fds, readers, (b"", b""), ([], []), frozenset(), False)
    assert turn is not None
    return turn


async def test_a_cancelled_wait_asks_for_the_link_and_returns_with_it(pairs):
    forwarding = engine()
    reached = []
    async with trio.open_nursery() as nursery:
        await nursery.start(forwarding.run)
        turn = adopt(forwarding, pairs)
        with trio.fail_after(10):
            with trio.CancelScope() as scope:
                nursery.start_soon(_cancel_when_parked, scope, turn)
                back = await wait_back(turn)
                reached.append("back")
                await trio.lowlevel.checkpoint()  # the cancellation is met here, not before
                reached.append("past the checkpoint")
        nursery.cancel_scope.cancel()
    assert back.why == "released"
    assert reached == ["back"]
    assert scope.cancelled_caught


async def _cancel_when_parked(scope: trio.CancelScope, turn: Turn) -> None:
    while turn.waiter is None:  # set as the link's task parks
        await trio.lowlevel.checkpoint()
    scope.cancel()


async def test_the_wait_ends_when_the_engine_stops(pairs):
    forwarding = engine()
    async with trio.open_nursery() as nursery:
        await nursery.start(forwarding.run)
        turn = adopt(forwarding, pairs)
        nursery.start_soon(_stop_when_parked, nursery, turn)
        with trio.fail_after(10):
            back = await wait_back(turn)
    assert back.why == "released"
    assert forwarding.broken  # new links stay with the pumps


async def _stop_when_parked(nursery: trio.Nursery, turn: Turn) -> None:
    while turn.waiter is None:
        await trio.lowlevel.checkpoint()
    nursery.cancel_scope.cancel()  # the engine's task too: it hands every link back


async def test_a_link_handed_back_before_the_wait_is_returned_at_once(pairs):
    forwarding = engine()
    async with trio.open_nursery() as nursery:
        await nursery.start(forwarding.run)
        turn = adopt(forwarding, pairs)
        forwarding.release(turn)
        with trio.fail_after(10):
            while turn.handback is None:
                await trio.sleep(0.01)
            back = await wait_back(turn)
        nursery.cancel_scope.cancel()
    assert back is turn.handback and back.why == "released"
    assert turn.waiter is None
