"""Capture through a database crash under a fleet: 200 chargers, the server killed mid-run.

The bench's fleet simulator (`bench.load.simulator`, 100 OCPP 1.6 and 100 OCPP 2.0.1 chargers)
runs sessions through the proxy process to the fake CSMS (`testkit.fake_csms`). While sessions
are under way the PostgreSQL server behind the journal is crashed (SIGQUIT: immediate shutdown)
and restarted a few seconds later. Afterwards the database must hold every session the simulator
ran, with exactly the meter start and stop it reported and exactly as many meter samples as it
sent: nothing lost, nothing stored twice. Latency is measured by `python -m bench outage`, not
asserted here.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from testkit.postgres import create_database, make_data_dir, start_database
from testkit.proxy_process import REPO, ProxyProcess, log_problems, metric, start_capture_proxy
from testkit.waiting import wait_until

CHARGERS = 200
SESSIONS = 3  # per charger
SAMPLES = 4  # periodic readings per session, one a second: a session lasts about 5 s
OUTAGE = 4.0  # seconds the database stays down
RUN_LIMIT = 60.0  # bound on the simulator's whole run
SETTLE_LIMIT = 30.0  # bound on the journal catching up once the database is back

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("each_engine")]  # both engines


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir("ere-fleet-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_csms(port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        csms = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "testkit.fake_csms",
                "--port",
                str(port),
                "--max-seconds",
                str(RUN_LIMIT * 3),
            ],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def listening() -> bool:
        assert csms.poll() is None, log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    wait_until(listening, "the fake CSMS", 15)
    return csms


def start_simulator(proxy: ProxyProcess, directory: Path) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "bench.load.simulator",
        "--url",
        f"ws://127.0.0.1:{proxy.port}/ocpp",
        "--chargers",
        str(CHARGERS),
        "--protocol",
        "mixed",
        "--sessions",
        str(SESSIONS),
        "--samples",
        str(SAMPLES),
        "--interval",
        "1",
        "--max-seconds",
        str(RUN_LIMIT),
        "--prefix",
        "FLEET",
    ]
    with (
        (directory / "simulator.json").open("wb") as out,
        (directory / "simulator.stderr").open("wb") as err,
    ):
        return subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=err)


def expected_rows(summary: dict) -> dict[tuple[str, str], tuple]:
    """(identity, transactionId) -> (status, meter start, meter stop, energy, samples) as reported."""
    rows = {}
    for charger in summary["chargers"]:
        for tx in charger["transactions"]:
            start, stop = Decimal(tx["meter_start"]), Decimal(tx["meter_stop"])
            rows[charger["identity"], tx["transaction_id"]] = (
                "completed",
                start,
                stop,
                stop - start,
                tx["samples"],
            )
    return rows


async def stored_rows(dsn: str) -> tuple[dict[tuple[str, str], tuple], int]:
    """What the database holds in the same shape, and the number of duplicated samples."""
    conn = await asyncpg.connect(dsn)
    try:
        records = await conn.fetch(
            """SELECT s.identity, s.transaction_id, s.status, s.meter_start_wh, s.meter_stop_wh, s.energy_wh,
                      (SELECT count(*) FROM meter_samples m WHERE m.session_id = s.session_id) AS samples
               FROM sessions s"""
        )
        duplicates = await conn.fetchval(
            """SELECT count(*) FROM (SELECT 1 FROM meter_samples
               GROUP BY session_id, sampled_at, measurand, value HAVING count(*) > 1) d"""
        )
    finally:
        await conn.close()
    return {(r[0], r[1]): (r[2], r[3], r[4], r[5], r[6]) for r in records}, duplicates


def test_fleet_capture_survives_a_database_crash(tmp_path: Path, data_dir: Path) -> None:
    database = start_database(data_dir)
    dsn = create_database(database)
    proxy = start_capture_proxy(tmp_path, data_dir, dsn)
    csms = start_csms(proxy.upstream_port, tmp_path / "csms.log")
    simulator = None
    try:
        simulator = start_simulator(proxy, tmp_path)
        wait_until(
            lambda: metric(proxy, "ere_proxy_connected_chargers") == CHARGERS,
            "the fleet to connect",
            20,
        )
        wait_until(lambda: metric(proxy, "ere_proxy_journal_stored_total") > 0, "events stored", 10)
        time.sleep(2.0)  # into the first sessions
        database.crash()  # SIGQUIT: immediate shutdown, crash recovery at the next start
        wait_until(
            lambda: metric(proxy, "ere_proxy_journal_spilled_total") > 0, "events to be spilled", 10
        )
        time.sleep(OUTAGE)
        database = start_database(data_dir)  # the same cluster comes back after crash recovery
        assert simulator.wait(RUN_LIMIT + 10) == 0, (tmp_path / "simulator.stderr").read_text()
        summary = json.loads((tmp_path / "simulator.json").read_text())

        # The fleet itself ran undisturbed: the proxy kept forwarding through the outage.
        assert (summary["timed_out"], summary["errors"], summary["resent"]) == (False, {}, 0)
        expected = expected_rows(summary)
        assert len(expected) == CHARGERS * SESSIONS
        assert (
            metric(proxy, "ere_proxy_journal_spilled_total") > 0
        )  # the outage did hit the journal

        latest: list = [None]

        def all_stored() -> bool:
            latest[0] = asyncio.run(stored_rows(dsn))
            return latest[0][0] == expected

        try:
            wait_until(all_stored, "every session and sample in the database", SETTLE_LIMIT)
        except AssertionError:
            rows = latest[0][0] if latest[0] else {}
            missing = sorted(set(expected) - set(rows))[:5]
            wrong = sorted(
                (k, rows[k], expected[k])
                for k in set(expected) & set(rows)
                if rows[k] != expected[k]
            )[:5]
            extra = sorted(set(rows) - set(expected))[:5]
            raise AssertionError(
                f"missing {missing}, differing {wrong}, unexpected {extra}"
            ) from None
        assert latest[0][1] == 0  # no sample stored twice
        assert metric(proxy, "ere_proxy_journal_lost_total") == 0
    finally:
        if simulator is not None and simulator.poll() is None:
            simulator.kill()
            simulator.wait()
        csms.terminate()
        csms.wait(10)
        status = proxy.terminate()
        database.close()
    assert status == 0
    # The outage itself is logged (database errors, asyncpg's reconnect attempts); nothing else may be.
    problems = [
        line
        for line in log_problems(proxy.stderr())
        if "database" not in line and "asyncpg" not in line
    ]
    assert problems == []
