"""One outage of a mirror back-office for all the chargers mirrored to it: `SharedRedial` (sans-IO)
and `MirrorRedials`, its Trio shell, with many connections redialling a mirror that is down."""

from __future__ import annotations

import math

import trio
import trio.testing

from proxy.forward.backoff import SharedRedial
from proxy.forward.mirror import MirrorRedials
from proxy.runtime.config import OutboxSettings


def test_dials_go_freely_until_one_fails_then_one_probe_at_a_time():
    redial = SharedRedial(minimum=1.0, maximum=8.0, jitter=0.0)
    assert [redial.turn(0.0) for _ in range(3)] == ["dial"] * 3
    assert redial.next_probe_at == math.inf
    redial.failed(0.1, probe=False)
    # dials under way before the outage was known fail too: no longer back-off for that
    redial.failed(0.2, probe=False)
    redial.failed(0.3, probe=False)
    assert redial.next_probe_at == 1.1
    assert redial.turn(1.0) == "wait"
    assert redial.turn(1.1) == "probe"
    assert redial.turn(1.2) == "wait" and redial.next_probe_at == math.inf  # one at a time
    redial.failed(1.5, probe=True)
    assert redial.next_probe_at == 3.5  # the back-off doubled
    assert redial.turn(3.5) == "probe"
    redial.abandoned()  # that connection ended before its dial did
    assert redial.turn(3.6) == "probe"
    redial.reached(probe=True)
    assert [redial.turn(3.7) for _ in range(3)] == ["dial"] * 3
    redial.failed(4.0, probe=False)
    assert redial.next_probe_at == 5.0  # back from the minimum after the mirror was reached


def test_a_dial_that_reaches_the_mirror_ends_the_outage_though_it_was_no_probe():
    redial = SharedRedial(minimum=1.0, maximum=8.0, jitter=0.0)
    redial.failed(0.0, probe=False)
    assert redial.turn(0.5) == "wait"
    redial.reached(probe=False)
    assert redial.turn(0.5) == "dial"


async def test_connections_waiting_for_a_down_mirror_dial_one_at_a_time(autojump_clock):
    """Fifty connections redialling a mirror that refuses every dial for 60 s, then answers."""
    redials = MirrorRedials(OutboxSettings(redial_min=1.0, redial_max=8.0))
    in_flight = most = dials = 0
    back_at = 60.0

    async def connection() -> None:
        nonlocal in_flight, most, dials
        while True:
            probe = await redials.turn("m:443")
            in_flight += 1
            if trio.current_time() > 0:  # not the first wave, dialled before anything was known
                most = max(most, in_flight)
            dials += 1
            await trio.sleep(0.05)  # the dial
            in_flight -= 1
            reached = trio.current_time() >= back_at
            redials.dialled("m:443", probe, reached)
            if reached:
                return

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(connection)
        await trio.sleep(0.5)  # the first probe comes after 0.8 s at the earliest
        assert redials.waiting["m:443"] == 50  # the first 50 dials failed; all wait now
        first_wave = dials
        await trio.sleep(back_at - 0.5)
        # probes ~1, 3, 7, 15, 23, ... s in (the back-off doubles up to 8 s, ±20 %): at most
        # 11 before the mirror is back, where each connection redialling would make hundreds
        assert dials - first_wave <= 12
        assert most == 1  # after the first wave, never more than one dial at a time
    assert first_wave == 50
    assert redials.waiting["m:443"] == 0


async def test_a_probe_given_up_lets_the_next_connection_probe(autojump_clock):
    redials = MirrorRedials(OutboxSettings(redial_min=1.0, redial_max=8.0))
    redials.dialled("m:443", probe=False, reached=False)  # the mirror is down
    assert await redials.turn("m:443")  # this connection probes, after the back-off
    turns: list[bool] = []

    async def another_connection() -> None:
        turns.append(await redials.turn("m:443"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(another_connection)
        await trio.testing.wait_all_tasks_blocked()
        assert turns == [] and redials.waiting["m:443"] == 1  # one probe at a time
        redials.abandoned("m:443")  # the probing connection ended before its dial did
    assert turns == [True]  # the other one probes now
