"""Capture through faults: the database goes away mid-run, the proxy is killed mid-outage.

Chargers (`ocpp` over `websockets`) run sessions through the proxy process, whose journal writes
to a PostgreSQL server the test owns (so the test can kill and restart it). Afterwards every
session and every meter sample must be in the database exactly once.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from ocpp.v16 import call as call16

from testkit.ocpp_peers import TIMEOUT, Charger16, CsmsServer, open_charger, timestamp
from testkit.postgres import create_database, make_data_dir, start_database
from testkit.proxy_process import ProxyProcess, log_problems, metric, start_capture_proxy
from testkit.waiting import wait_until

# Forwarded by both engines (see testkit.engines).
pytestmark = pytest.mark.usefixtures("each_engine")

CHARGERS = 12
READINGS = 6  # per session: half before the outage, half during it


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir("ere-faults-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def run_session(
    proxy: ProxyProcess, number: int, halfway: asyncio.Barrier, resume: asyncio.Event
) -> None:
    identity = f"CP-F{number:02d}"
    async with open_charger(proxy.url(identity), ["ocpp1.6"], Charger16, identity) as charger:
        cp = charger.cp
        start = await cp.call(
            call16.StartTransaction(
                connector_id=1, id_tag="T", meter_start=0, timestamp=timestamp()
            )
        )
        for reading in range(1, READINGS + 1):
            if reading == READINGS // 2 + 1:
                await halfway.wait()
                await resume.wait()
            sample = {
                "value": str(reading * 1000),
                "measurand": "Energy.Active.Import.Register",
                "unit": "Wh",
            }
            await cp.call(
                call16.MeterValues(
                    connector_id=1,
                    transaction_id=start.transaction_id,
                    meter_value=[{"timestamp": timestamp(), "sampled_value": [sample]}],
                )
            )
        await cp.call(
            call16.StopTransaction(
                meter_stop=READINGS * 1000 + number,
                timestamp=timestamp(),
                transaction_id=start.transaction_id,
            )
        )


async def traffic(proxy: ProxyProcess, outage) -> None:
    """All chargers run a session; `outage()` runs (in a thread) when every one is halfway."""
    halfway = asyncio.Barrier(CHARGERS + 1)
    resume = asyncio.Event()
    async with asyncio.timeout(TIMEOUT):
        async with CsmsServer(proxy.upstream_port):
            sessions = [
                asyncio.create_task(run_session(proxy, n, halfway, resume)) for n in range(CHARGERS)
            ]
            await halfway.wait()
            await asyncio.to_thread(outage)
            resume.set()
            await asyncio.gather(*sessions)


async def stored(dsn: str) -> tuple[list[tuple], int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        sessions = await conn.fetch(
            "SELECT identity, status, energy_wh FROM sessions ORDER BY identity"
        )
        samples = await conn.fetchval("SELECT count(*) FROM meter_samples")
        duplicates = await conn.fetchval(
            "SELECT count(*) FROM (SELECT 1 FROM meter_samples GROUP BY session_id, sampled_at, value HAVING count(*) > 1) d"
        )
        return [tuple(r) for r in sessions], samples, duplicates
    finally:
        await conn.close()


def expected_sessions() -> list[tuple]:
    return [(f"CP-F{n:02d}", "completed", Decimal(READINGS * 1000 + n)) for n in range(CHARGERS)]


def all_stored(dsn: str) -> bool:
    sessions, samples, _ = asyncio.run(stored(dsn))
    return sessions == expected_sessions() and samples == CHARGERS * READINGS


def test_database_killed_mid_run_loses_and_doubles_nothing(tmp_path: Path, data_dir: Path) -> None:
    database = start_database(data_dir)
    dsn = create_database(database)
    proxy = start_capture_proxy(tmp_path, data_dir, dsn)
    try:
        asyncio.run(traffic(proxy, database.crash))
        wait_until(
            lambda: metric(proxy, "ere_proxy_journal_spilled_total") > 0,
            "events to be spilled",
            TIMEOUT,
        )
        database = start_database(data_dir)  # the same cluster comes back
        wait_until(lambda: all_stored(dsn), "every session and sample in the database", TIMEOUT)
        _sessions, samples, duplicates = asyncio.run(stored(dsn))
        assert (samples, duplicates) == (CHARGERS * READINGS, 0)
        assert metric(proxy, "ere_proxy_journal_lost_total") == 0
    finally:
        assert proxy.terminate() == 0
        database.close()
    # The outage itself is logged (database errors, asyncpg's reconnect attempts); nothing else may be.
    problems = [
        line
        for line in log_problems(proxy.stderr())
        if "database" not in line and "asyncpg" not in line
    ]
    assert problems == []


def test_proxy_killed_with_events_in_the_spill_log_replays_them_after_restart(
    tmp_path: Path, data_dir: Path
) -> None:
    database = start_database(data_dir)
    dsn = create_database(database)
    proxy = start_capture_proxy(tmp_path, data_dir, dsn)
    try:
        asyncio.run(traffic(proxy, database.crash))
        wait_until(
            lambda: (
                metric(proxy, "ere_proxy_journal_spill_bytes") > 0
                and metric(proxy, "ere_proxy_journal_spill_unflushed") == 0
            ),
            "the spill log to be synced",
            TIMEOUT,
        )
        proxy.process.kill()  # SIGKILL while the events sit in the spill log
        proxy.process.wait()
        database = start_database(data_dir)
        proxy = start_capture_proxy(tmp_path, data_dir, dsn)
        wait_until(lambda: all_stored(dsn), "the spilled events replayed", TIMEOUT)
        assert asyncio.run(stored(dsn))[2] == 0
    finally:
        if proxy.process.poll() is None:
            proxy.terminate()
        database.close()
