"""Session capture end to end: `ocpp` peers charge through the proxy process, sessions land in
PostgreSQL (the embedded server the proxy starts) with exactly the energy the charger reported."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from proxy.store.embedded import EmbeddedPostgres
from testkit.ocpp_peers import TIMEOUT, Charger16, Charger201, CsmsServer, open_charger, timestamp
from testkit.postgres import make_data_dir
from testkit.proxy_process import CONFIG, ProxyProcess, running_proxy


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir("ere-capture-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def capture_config(data_dir: Path) -> str:
    template = CONFIG.replace("[capture]\nenabled = false\n", "[capture]\nenabled = true\n")
    return template + f'\n[database]\ndata_dir = "{data_dir}"\n'


async def sessions(data_dir: Path, expected: int) -> list[tuple]:
    """The sessions table once `expected` sessions are completed (bounded wait for the journal)."""
    dsn = EmbeddedPostgres(data_dir).dsn("ere_proxy")
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            rows = await conn.fetch(
                "SELECT identity, transaction_id, status, energy_wh FROM sessions WHERE status = 'completed' "
                "ORDER BY identity"
            )
            if len(rows) >= expected or time.monotonic() > deadline:
                return [tuple(r) for r in rows]
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def charge(proxy: ProxyProcess, data_dir: Path) -> list[tuple]:
    async with asyncio.timeout(TIMEOUT):
        async with CsmsServer(proxy.upstream_port):
            async with open_charger(proxy.url("CP-16"), ["ocpp1.6"], Charger16, "CP-16") as charger:
                cp = charger.cp
                await cp.call(
                    call16.BootNotification(
                        charge_point_model="E",
                        charge_point_vendor="V",
                        meter_type="EM340-PF",
                        meter_serial_number="S1",
                    )
                )
                start = await cp.call(
                    call16.StartTransaction(
                        connector_id=1, id_tag="T", meter_start=1000, timestamp=timestamp()
                    )
                )
                sample = {
                    "value": "21.5",
                    "measurand": "Energy.Active.Import.Register",
                    "unit": "kWh",
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
                        meter_stop=43370, timestamp=timestamp(), transaction_id=start.transaction_id
                    )
                )
            async with open_charger(
                proxy.url("CP-201"), ["ocpp2.0.1"], Charger201, "CP-201"
            ) as charger:
                cp = charger.cp
                for seq, (kind, kwh) in enumerate(
                    (("Started", 0.25), ("Updated", 3.5), ("Ended", 7.75))
                ):
                    reading = [
                        {
                            "timestamp": timestamp(),
                            "sampled_value": [
                                {
                                    "value": kwh,
                                    "measurand": "Energy.Active.Import.Register",
                                    "unit_of_measure": {"unit": "kWh"},
                                }
                            ],
                        }
                    ]
                    await cp.call(
                        call201.TransactionEvent(
                            event_type=kind,
                            timestamp=timestamp(),
                            trigger_reason="MeterValuePeriodic",
                            seq_no=seq,
                            transaction_info={"transaction_id": "tx-e2e"},
                            evse={"id": 1, "connector_id": 1},
                            meter_value=reading,
                        )
                    )
        return await sessions(data_dir, expected=2)


def test_sessions_of_both_protocols_land_with_the_reported_energy(
    tmp_path: Path, data_dir: Path
) -> None:
    with running_proxy(tmp_path, capture_config(data_dir)) as proxy:
        rows = asyncio.run(charge(proxy, data_dir))
    transaction_16 = rows[0][1]
    assert rows == [
        ("CP-16", transaction_16, "completed", Decimal(42370)),
        ("CP-201", "tx-e2e", "completed", Decimal(7500)),
    ]


def store_processes(parent: int) -> list[int]:
    """Pids of the store processes whose parent is `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if (
            int(stat[stat.rindex(")") + 2 :].split()[1]) == parent
            and b"proxy.capture.store_process" in cmdline
        ):
            found.append(int(entry.name))
    return found


def test_the_worker_stores_through_one_store_process_that_ends_with_it(
    tmp_path: Path, data_dir: Path
) -> None:
    with running_proxy(tmp_path, capture_config(data_dir)) as proxy:
        assert len(asyncio.run(charge(proxy, data_dir))) == 2
        children = store_processes(proxy.process.pid)
        assert len(children) == 1
    assert not Path(f"/proc/{children[0]}").exists()
