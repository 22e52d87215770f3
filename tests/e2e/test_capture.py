"""Session capture end to end: `ocpp` peers charge through the proxy process, sessions land in
PostgreSQL (the embedded server the proxy starts) with exactly the energy the charger reported,
and the signed meter values of OCPP 2.0.1 and 2.1 stations are kept with their sessions."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from ocpp.v16 import call as call16
from ocpp.v21 import call as call21
from ocpp.v201 import call as call201

from proxy.store.embedded import EmbeddedPostgres
from testkit.ocpp_peers import (
    TIMEOUT,
    Charger16,
    Charger21,
    Charger201,
    CsmsServer,
    open_charger,
    timestamp,
)
from testkit.postgres import make_data_dir
from testkit.proxy_process import CONFIG, ProxyProcess, running_proxy
from testkit.signed_sessions import meter_key, signed_meter_value

ENERGY = "Energy.Active.Import.Register"
# The 2.x stations: each version's charger class and CALL classes.
STATIONS = {"ocpp2.0.1": (Charger201, call201), "ocpp2.1": (Charger21, call21)}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir("ere-capture-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def capture_config(data_dir: Path) -> str:
    template = CONFIG.replace("[capture]\nenabled = false\n", "[capture]\nenabled = true\n")
    return template + f'\n[database]\ndata_dir = "{data_dir}"\n'


async def sessions(
    data_dir: Path, expected: int, columns: str = "identity, transaction_id, status, energy_wh"
) -> list[tuple]:
    """`columns` of the completed sessions once there are `expected` of them (bounded wait for the
    journal), by identity."""
    dsn = EmbeddedPostgres(data_dir).dsn("ere_proxy")
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            rows = await conn.fetch(
                f"SELECT {columns} FROM sessions WHERE status = 'completed' ORDER BY identity"
            )
            if len(rows) >= expected or time.monotonic() > deadline:
                return [tuple(r) for r in rows]
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


def energy_sample(kwh: float, signed: dict[str, str] | None = None) -> dict[str, Any]:
    """A sampled energy register reading of `kwh`, with its `signedMeterValue` if given."""
    sample: dict[str, Any] = {
        "value": kwh,
        "measurand": ENERGY,
        "unit_of_measure": {"unit": "kWh"},
    }
    if signed is not None:
        sample["signed_meter_value"] = signed
    return sample


async def transaction_2x(
    proxy: ProxyProcess,
    version: str,
    identity: str,
    transaction_id: str,
    samples: Sequence[dict[str, Any]],
) -> None:
    """Charge through the proxy as a `version` station: TransactionEvent Started, Updated..., Ended,
    one of `samples` each."""
    charger_class, call = STATIONS[version]
    kinds = ["Started", *["Updated"] * (len(samples) - 2), "Ended"]
    async with open_charger(proxy.url(identity), [version], charger_class, identity) as charger:
        for seq, (kind, sample) in enumerate(zip(kinds, samples, strict=True)):
            await charger.cp.call(
                call.TransactionEvent(
                    event_type=kind,
                    timestamp=timestamp(),
                    trigger_reason="MeterValuePeriodic",
                    seq_no=seq,
                    transaction_info={"transaction_id": transaction_id},
                    evse={"id": 1, "connector_id": 1},
                    meter_value=[{"timestamp": timestamp(), "sampled_value": [sample]}],
                )
            )


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
            readings = [energy_sample(kwh) for kwh in (0.25, 3.5, 7.75)]
            await transaction_2x(proxy, "ocpp2.0.1", "CP-201", "tx-e2e", readings)
            await transaction_2x(proxy, "ocpp2.1", "CP-21", "tx-e2e-21", readings)
        return await sessions(data_dir, expected=3)


def test_sessions_of_every_protocol_land_with_the_reported_energy(
    tmp_path: Path, data_dir: Path
) -> None:
    with running_proxy(tmp_path, capture_config(data_dir)) as proxy:
        rows = asyncio.run(charge(proxy, data_dir))
    transaction_16 = rows[0][1]
    assert rows == [
        ("CP-16", transaction_16, "completed", Decimal(42370)),
        ("CP-201", "tx-e2e", "completed", Decimal(7500)),
        ("CP-21", "tx-e2e-21", "completed", Decimal(7500)),
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
        assert len(asyncio.run(charge(proxy, data_dir))) == 3
        children = store_processes(proxy.process.pid)
        assert len(children) == 1
    assert not Path(f"/proc/{children[0]}").exists()


# How each version's station signs, and the fields it sends beside the data at the begin and the
# end: a 2.0.1 station sends every field with every value, the algorithm named in the OCMF record
# (here by default: P-256); a 2.1 station names the algorithm only in `signingMethod`, beside the
# data (here P-384, so a reading checked as P-256 would not verify), and sends its public key
# once per transaction.
SIGNED_STYLES: dict[str, tuple[ec.EllipticCurve, dict[str, Any], dict[str, Any]]] = {
    "ocpp2.0.1": (ec.SECP256R1(), {}, {}),
    "ocpp2.1": (
        ec.SECP384R1(),
        {"signing_method": "ECDSA-secp384r1-SHA256"},
        {"signing_method": "ECDSA-secp384r1-SHA256", "with_key": False},
    ),
}
PLAIN_KWH = (0.0, 120.0, 99.0)  # disagree with the signed 100.0 and 142.37 kWh

SIGNED_KEPT = """
SELECT m.value, (capture_sample_body(m.sampled_at, d.name, m.value, m.phase, m.location,
                                     m.context, m.signed_data, m.detail)->'signed')::text
FROM meter_samples m JOIN measurands d ON d.code = m.measurand
JOIN sessions s ON s.session_id = m.session_id
WHERE s.identity = $1
"""


def identity_of(version: str) -> str:
    """The identity of the signing station of `version`."""
    return f"CP-S-{version}"


async def charge_signed(
    proxy: ProxyProcess, data_dir: Path
) -> tuple[dict[str, list[dict[str, str] | None]], list[tuple], dict[str, str], dict[str, dict]]:
    """A session per 2.x version whose Started and Ended readings a meter signs, with an unsigned
    Updated between. Returns what was signed, per version, and what the store kept: the sessions,
    the pinned keys, and each session's signed values by their plain reading."""
    sent: dict[str, list[dict[str, str] | None]] = {}
    async with asyncio.timeout(TIMEOUT):
        async with CsmsServer(proxy.upstream_port):
            for version, (curve, begin, end) in SIGNED_STYLES.items():
                key, now = meter_key(curve), datetime.now(UTC)
                sent[version] = [
                    signed_meter_value(key, "B", "100.0", now, **begin),
                    None,
                    signed_meter_value(key, "E", "142.37", now, **end),
                ]
                samples = [
                    energy_sample(kwh, signed)
                    for kwh, signed in zip(PLAIN_KWH, sent[version], strict=True)
                ]
                await transaction_2x(proxy, version, identity_of(version), "tx-signed", samples)
        rows = await sessions(
            data_dir,
            expected=2,
            columns="identity, transaction_id, meter_class, energy_wh, energy_source",
        )
        conn = await asyncpg.connect(EmbeddedPostgres(data_dir).dsn("ere_proxy"))
        try:
            pinned = dict(await conn.fetch("SELECT identity, public_key FROM meter_keys"))
            kept = {
                version: {
                    value: json.loads(signed)
                    for value, signed in await conn.fetch(SIGNED_KEPT, identity_of(version))
                }
                for version in SIGNED_STYLES
            }
        finally:
            await conn.close()
    return sent, rows, pinned, kept


def test_signed_meter_values_of_2x_stations_are_kept_with_their_sessions(
    tmp_path: Path, data_dir: Path
) -> None:
    """The energy comes from the signed readings, verified with the key the station sent first,
    and every signed value is kept whole: data, signing method, encoding and key as sent."""
    with running_proxy(tmp_path, capture_config(data_dir)) as proxy:
        sent, rows, pinned, kept = asyncio.run(charge_signed(proxy, data_dir))
    signed_energy = ("signed-verified", Decimal("42370.000"), "signed")
    assert rows == [
        (identity_of("ocpp2.0.1"), "tx-signed", *signed_energy),
        (identity_of("ocpp2.1"), "tx-signed", *signed_energy),
    ]
    for version, values in sent.items():
        begin = values[0]
        assert begin is not None
        assert pinned[identity_of(version)] == begin["publicKey"]
        assert kept[version] == {
            Decimal(int(kwh * 1000)): None
            if value is None
            else {
                "signed_meter_data": value["signedMeterData"],
                "signing_method": value.get("signingMethod"),
                "encoding_method": value["encodingMethod"],
                "public_key": value.get("publicKey"),
            }
            for kwh, value in zip(PLAIN_KWH, values, strict=True)
        }
