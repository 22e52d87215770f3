"""The bench's charger fleet simulator against the fake back-office on real 127.0.0.1 sockets: its
sent log matches what the back-office received, through an outage, SIGUSR1 and offline periods."""

from __future__ import annotations

import json
import os
import signal

import pytest
import trio

from bench.load.simulator import SimConfig, simulate
from testkit.fake_csms import FakeCsms
from testkit.ledger import counts, exactly_once


@pytest.fixture
async def csms(nursery):
    server = FakeCsms(record=True, first_transaction_id=100)
    await nursery.start(server.serve)
    return server


async def test_a_fleet_through_a_stop_and_a_start_sends_every_transaction_message_once(
    csms, nursery, autojump_clock, tmp_path
):
    """The simulator's sent log against the CSMS's record, with a back-office outage mid-run."""
    config = SimConfig(
        url=f"ws://127.0.0.1:{csms.port}/ocpp",
        chargers=20,
        protocol="mixed",
        sessions=2,
        samples=2,
        interval=1.0,
        max_seconds=300,
        sent_log=str(tmp_path / "sent.json"),
    )

    async def outage() -> None:
        await trio.sleep(2.5)
        await csms.stop()
        await trio.sleep(5)
        await csms.start()

    nursery.start_soon(outage)
    summary = await simulate(config)
    assert not summary["timed_out"] and summary["resent"] > 0
    sent = json.loads((tmp_path / "sent.json").read_text())
    assert exactly_once(sent, csms.received) == []
    expected = {
        "chargers": 20,
        "starts": 20,
        "meter_values": 40,
        "stops": 20,
        "transaction_events": 80,
    }
    assert counts(sent) == expected


async def test_sigusr1_lets_every_session_under_way_end_and_starts_no_new_one(
    csms, nursery, autojump_clock
):
    """A fleet without bounds finishes on SIGUSR1: each charger stops its session normally."""
    config = SimConfig(
        url=f"ws://127.0.0.1:{csms.port}/ocpp",
        chargers=4,
        protocol="mixed",
        sessions=0,
        samples=2,
        interval=1.0,
        duration=0,
        max_seconds=3600,
    )

    async def finish_later() -> None:
        await trio.sleep(30)  # several sessions per charger
        os.kill(os.getpid(), signal.SIGUSR1)

    nursery.start_soon(finish_later)
    summary = await simulate(config)
    assert summary["timed_out"] is False
    for charger in summary["chargers"]:
        assert len(charger["transactions"]) >= 2
        assert all(t["meter_stop"] is not None for t in charger["transactions"])


async def test_offline_periods_drop_and_restore_each_connection_without_losing_a_message(
    csms, autojump_clock, tmp_path
):
    """Chargers whose network drops now and then: every period ends in a reconnection, and what
    they sent is in the back-office once, with no error, resend or unplanned reconnect."""
    config = SimConfig(
        url=f"ws://127.0.0.1:{csms.port}/ocpp",
        chargers=10,
        protocol="mixed",
        sessions=3,
        samples=3,
        interval=1.0,
        max_seconds=600,
        offline_every=4.0,
        offline_for=2.0,
        sent_log=str(tmp_path / "sent.json"),
    )
    summary = await simulate(config)
    assert (summary["timed_out"], summary["errors"], summary["resent"], summary["reconnects"]) == (
        False,
        {},
        0,
        0,
    )
    assert all(charger["offline_periods"] >= 1 for charger in summary["chargers"])
    sent = json.loads((tmp_path / "sent.json").read_text())
    assert exactly_once(sent, csms.received) == []
    assert counts(sent) == {
        "chargers": 10,
        "starts": 15,
        "meter_values": 45,
        "stops": 15,
        "transaction_events": 75,
    }
