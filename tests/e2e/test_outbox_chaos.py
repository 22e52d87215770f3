"""Chaos: the upstream goes down under a fleet; every transaction message arrives exactly once.

The proxy process (capture and outbox on, a real PostgreSQL) serves 1,000 simulated chargers
(`bench.load.simulator`, half OCPP 1.6, half 2.0.1, sessions back to back) and a handful of
mobilityhouse `ocpp` ChargePoints (1.6 and 2.0.1) that start their transactions during the
outage. The upstream (`testkit.fake_csms.FakeCsms`, recording) is stopped like a back-office going
down, for 30 s (and 5 minutes in the long variant), then started again. Afterwards:

- the upstream received every StartTransaction, MeterValues, StopTransaction and
  TransactionEvent exactly once, in each charger's order, with transactionIds that map one to
  one onto what the chargers were told (`testkit.ledger.exactly_once`);
- a RemoteStopTransaction the upstream sends with its real id reaches the 1.6 ChargePoint with
  the provisional id it got offline, and its StopTransaction reaches the upstream with the real id;
- the session store holds the real ids only.

A second test SIGKILLs the proxy in the middle of an outage and restarts it: the outboxes in
PostgreSQL replay, and nothing the chargers sent is lost or arrives twice.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio
from ocpp.routing import on
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v201 import call as call201

from testkit.engines import ENGINE_VARIABLE, with_engine
from testkit.fake_csms import FakeCsms
from testkit.ledger import counts, exactly_once
from testkit.ocpp_peers import Charger16, Charger201, open_charger, timestamp, wait_future
from testkit.ports import free_port
from testkit.postgres import create_database, make_data_dir, start_database
from testkit.proxy_process import CONFIG, REPO, ProxyProcess, log_problems, metric, spawn_proxy
from testkit.waiting import until

pytestmark = pytest.mark.slow

CHARGERS = 1000
OCPP_CHARGERS = 4  # two 1.6, two 2.0.1
BEFORE = 8.0  # seconds of normal operation before the outage


class RemoteStoppable16(Charger16):
    """A 1.6 ChargePoint that accepts RemoteStopTransaction and remembers the id it was given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.remote_stop: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    @on(Action16.remote_stop_transaction)
    def on_remote_stop_transaction(self, transaction_id: int) -> Any:
        if not self.remote_stop.done():
            self.remote_stop.set_result(transaction_id)
        return self._answer(result16.RemoteStopTransaction(status="Accepted"))


class AsyncioThread:
    """An asyncio loop in a thread for the `ocpp` peers; `submit` runs a coroutine there."""

    def __enter__(self) -> AsyncioThread:
        ready = threading.Event()

        def run() -> None:  # the loop is made in its thread: this one runs trio
            self.loop = asyncio.new_event_loop()
            ready.set()
            self.loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def submit(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)


def sent_log(sent: list[str], received: list[str]) -> list[dict[str, Any]]:
    """An `ocpp` ChargePoint's transaction CALLs in the simulator's sent-log shape."""
    answers = {m[1]: m[2] for m in map(json.loads, received) if m[0] == 3}
    log = []
    for _, unique_id, action, payload in (m for m in map(json.loads, sent) if m[0] == 2):
        if unique_id in answers:
            entry = {"action": action, "payload": payload}
            if action == "StartTransaction":
                entry["transaction_id"] = answers[unique_id]["transactionId"]
            log.append(entry)
    return log


async def ocpp_session(
    url: str, identity: str, version: str, outage: asyncio.Event, done: asyncio.Event
) -> dict:
    """Boot, start a transaction once the outage began, meter until `done`, then stop it."""
    cls = RemoteStoppable16 if version == "ocpp1.6" else Charger201
    async with open_charger(url, [version], cls, identity) as peer:
        cp = peer.cp
        reading = 1000
        await outage.wait()
        if version == "ocpp1.6":
            start = await cp.call(
                call16.StartTransaction(
                    connector_id=1, id_tag="T1", meter_start=reading, timestamp=timestamp()
                )
            )
            given = start.transaction_id
            while not cp.remote_stop.done():
                reading += 100
                value = [{"timestamp": timestamp(), "sampledValue": [{"value": str(reading)}]}]
                await cp.call(
                    call16.MeterValues(connector_id=1, transaction_id=given, meter_value=value)
                )
                await asyncio.wait([cp.remote_stop], timeout=0.5)
            stopped_id = cp.remote_stop.result()
            await cp.call(
                call16.StopTransaction(
                    meter_stop=reading + 1, timestamp=timestamp(), transaction_id=given
                )
            )
            result = {"given": given, "remote_stop_id": stopped_id}
        else:
            tx = {"transaction_id": f"{identity}-tx"}
            sampled = lambda value: [
                {"timestamp": timestamp(), "sampled_value": [{"value": value}]}
            ]
            await cp.call(
                call201.TransactionEvent(
                    event_type="Started",
                    timestamp=timestamp(),
                    trigger_reason="Authorized",
                    seq_no=0,
                    transaction_info=tx,
                    meter_value=sampled(reading),
                )
            )
            seq = 0
            while not done.is_set():
                seq += 1
                reading += 100
                await cp.call(
                    call201.TransactionEvent(
                        event_type="Updated",
                        timestamp=timestamp(),
                        trigger_reason="MeterValuePeriodic",
                        seq_no=seq,
                        transaction_info=tx,
                        meter_value=sampled(reading),
                    )
                )
                await asyncio.sleep(0.5)
            await cp.call(
                call201.TransactionEvent(
                    event_type="Ended",
                    timestamp=timestamp(),
                    trigger_reason="StopAuthorized",
                    seq_no=seq + 1,
                    transaction_info=tx,
                    meter_value=sampled(reading),
                )
            )
            result = {}
        return {**result, "sent": sent_log(peer.log.sent, peer.log.received)}


@pytest.fixture
def data_dir() -> Iterator[Path]:
    import shutil

    path = make_data_dir("ere-chaos-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_proxy(
    directory: Path,
    data_dir: Path,
    dsn: str,
    upstream_port: int,
    port: int = 0,
    admin_port: int = 0,
    name: str = "proxy",
) -> ProxyProcess:
    """Start the proxy with capture and the outbox on; `port`/`admin_port` 0: free ones."""
    port, admin_port = port or free_port(), admin_port or free_port()
    text = with_engine(
        CONFIG.replace("[capture]\nenabled = false\n", "[capture]\nenabled = true\n")
    )
    text = text.replace(
        "[outbox]\nenabled = false\n",
        "[outbox]\nenabled = true\nredial_min = 0.5\nredial_max = 2.0\n",
    )
    text += f'\n[database]\ndsn = "{dsn}"\ndata_dir = "{data_dir / "proxy"}"\n'
    config = directory / f"{name}.toml"
    config.write_text(text.format(port=port, admin_port=admin_port, upstream_port=upstream_port))
    return spawn_proxy(config, directory / f"{name}.stderr", (port, admin_port, upstream_port))


def start_simulator(
    directory: Path,
    port: int,
    chargers: int,
    prefix: str,
    duration: float,
    *,
    interval: float,
    call_timeout: float,
) -> subprocess.Popen[bytes]:
    """The fleet (half 1.6, half 2.0.1, sessions back to back): summary, stderr and sent log in `directory`."""
    with (directory / "sim.json").open("wb") as out, (directory / "sim.stderr").open("wb") as err:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.load.simulator",
                "--url",
                f"ws://127.0.0.1:{port}/ocpp",
                "--chargers",
                str(chargers),
                "--protocol",
                "mixed",
                "--sessions",
                "0",
                "--samples",
                "3",
                "--interval",
                str(interval),
                "--duration",
                str(duration),
                "--max-seconds",
                str(duration + 120),
                "--call-timeout",
                str(call_timeout),
                "--prefix",
                prefix,
                "--sent-log",
                str(directory / "sent.json"),
                "--password",
                "charger-password",  # what proves a charger that reconnects during the outage
            ],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )


async def provisional_sessions(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM sessions WHERE transaction_id ~ '^[0-9]+$' AND transaction_id::numeric >= 2000000000"
        )
    finally:
        await conn.close()


# The short outage on both forwarding engines, the long one on the default (native) engine.
@pytest.mark.parametrize(
    ("outage", "engine"),
    [(30.0, "native"), (30.0, "python"), (300.0, "native")],
    ids=["30s-native", "30s-python", "5min-native"],
)
async def test_upstream_outage_under_a_fleet_delivers_everything_exactly_once(
    outage, engine, tmp_path, data_dir, monkeypatch
):
    monkeypatch.setenv(ENGINE_VARIABLE, engine)
    database = await trio.to_thread.run_sync(start_database, data_dir)
    dsn = await trio.to_thread.run_sync(create_database, database)
    csms = FakeCsms(port=free_port(), record=True, first_transaction_id=1)
    simulator = proxy = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(csms.serve)
            proxy = await trio.to_thread.run_sync(start_proxy, tmp_path, data_dir, dsn, csms.port)
            duration = (
                BEFORE + outage + 40
            )  # sessions go on after the outage (connecting takes a while too)
            simulator = start_simulator(
                tmp_path, proxy.port, CHARGERS, "CHAOS", duration, interval=2, call_timeout=30
            )
            with AsyncioThread() as peers:
                outage_started, done = asyncio.Event(), asyncio.Event()
                versions = ["ocpp1.6", "ocpp2.0.1"] * (OCPP_CHARGERS // 2)
                sessions = [
                    peers.submit(
                        ocpp_session(proxy.url(f"OCPP-{i}"), f"OCPP-{i}", v, outage_started, done)
                    )
                    for i, v in enumerate(versions)
                ]
                total = CHARGERS + OCPP_CHARGERS
                await until(
                    lambda: metric(proxy, "ere_proxy_connected_chargers") == total, "the fleet", 60
                )
                await trio.sleep(BEFORE)
                await csms.stop()
                peers.loop.call_soon_threadsafe(outage_started.set)
                await until(
                    lambda: metric(proxy, "ere_proxy_links_offline") == total,
                    "every link offline",
                    30,
                )
                await trio.sleep(outage)
                assert metric(proxy, "ere_proxy_connected_chargers") == total  # nobody was dropped
                assert metric(proxy, "ere_proxy_outbox_queued_total") > 0
                await csms.start()
                await until(
                    lambda: metric(proxy, "ere_proxy_links_offline") == 0, "every link back", 60
                )
                # The back-office stops each 1.6 ChargePoint's transaction by the id it knows.
                for i, version in enumerate(versions):
                    if version == "ocpp1.6":
                        identity = f"OCPP-{i}"
                        real = next(
                            c.answer["transactionId"]
                            for c in csms.received[identity]
                            if c.action == "StartTransaction"
                        )
                        await csms.call(identity, "RemoteStopTransaction", {"transactionId": real})
                peers.loop.call_soon_threadsafe(done.set)
                results = [await wait_future(session) for session in sessions]
            assert await trio.to_thread.run_sync(simulator.wait, duration + 150) == 0, (
                tmp_path / "sim.stderr"
            ).read_text()
            await until(
                lambda: metric(proxy, "ere_proxy_outbox_entries") == 0, "the outboxes to drain", 240
            )
            nursery.cancel_scope.cancel()

        summary = json.loads((tmp_path / "sim.json").read_text())
        assert (summary["timed_out"], summary["errors"], summary["resent"]) == (
            False,
            {},
            0,
        )  # chargers saw no outage
        sent = json.loads((tmp_path / "sent.json").read_text())
        for i, result in enumerate(results):
            sent[f"OCPP-{i}"] = result["sent"]
        assert exactly_once(sent, csms.received) == []
        figures = counts(csms.received)
        assert figures["chargers"] == CHARGERS + OCPP_CHARGERS and figures["starts"] > CHARGERS // 2
        for i, result in enumerate(results):
            if versions[i] == "ocpp1.6":
                assert result["given"] >= 2_000_000_000  # started offline: a provisional id
                assert result["remote_stop_id"] == result["given"]  # the real id, mapped back
        assert metric(proxy, "ere_proxy_outbox_dead_letters_total") == 0
        assert metric(proxy, "ere_proxy_transaction_id_rewrites_total") > 0
        # The renames follow every event of the outage through the journal and its store
        # process: after five minutes of a fleet offline, that backlog takes a while.
        await until(
            lambda: asyncio.run(provisional_sessions(dsn)) == 0,
            "real ids in the session store",
            360,
        )
    finally:
        if simulator is not None and simulator.poll() is None:
            simulator.kill()
            simulator.wait()
        status = proxy.terminate() if proxy is not None else 0
        await trio.to_thread.run_sync(database.close)
    assert status == 0
    problems = [
        line for line in log_problems(proxy.stderr()) if "outbox entry dead-lettered" not in line
    ]
    assert problems == []


KILLED_CHARGERS = 200


async def test_a_proxy_killed_during_an_outage_replays_every_outbox_after_its_restart(
    tmp_path, data_dir, each_engine
):
    """SIGKILL mid-outage: what the chargers were answered offline is in PostgreSQL, and goes
    upstream exactly once after the restart (the chargers' re-sent CALLs are not doubled)."""
    database = await trio.to_thread.run_sync(start_database, data_dir)
    dsn = await trio.to_thread.run_sync(create_database, database)
    csms = FakeCsms(port=free_port(), record=True, first_transaction_id=1)
    simulator = proxy = None
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(csms.serve)
            proxy = await trio.to_thread.run_sync(
                start_proxy, tmp_path, data_dir, dsn, csms.port, 0, 0, "killed"
            )
            duration = 45.0
            simulator = start_simulator(
                tmp_path, proxy.port, KILLED_CHARGERS, "KILL", duration, interval=1, call_timeout=15
            )
            await until(
                lambda: metric(proxy, "ere_proxy_connected_chargers") == KILLED_CHARGERS,
                "the fleet",
                60,
            )
            await trio.sleep(3)
            await csms.stop()
            await until(
                lambda: metric(proxy, "ere_proxy_links_offline") == KILLED_CHARGERS,
                "every link offline",
                30,
            )
            await trio.sleep(5)  # sessions go on offline
            assert metric(proxy, "ere_proxy_outbox_queued_total") > 0
            proxy.process.kill()
            await trio.to_thread.run_sync(proxy.process.wait)

            proxy = await trio.to_thread.run_sync(
                start_proxy,
                tmp_path,
                data_dir,
                dsn,
                csms.port,
                proxy.port,
                proxy.admin_port,
                "restarted",
            )
            await until(
                lambda: metric(proxy, "ere_proxy_links_offline") == KILLED_CHARGERS,
                "the fleet, offline",
                60,
            )
            await until(
                lambda: metric(proxy, "ere_proxy_outbox_entries") > 0, "the stored outboxes", 30
            )
            await trio.sleep(3)  # and on, offline, after the restart
            await csms.start()
            await until(
                lambda: metric(proxy, "ere_proxy_links_offline") == 0, "every link back", 60
            )
            assert await trio.to_thread.run_sync(simulator.wait, duration + 150) == 0, (
                tmp_path / "sim.stderr"
            ).read_text()
            await until(
                lambda: metric(proxy, "ere_proxy_outbox_entries") == 0, "the outboxes to drain", 240
            )
            nursery.cancel_scope.cancel()

        summary = json.loads((tmp_path / "sim.json").read_text())
        assert summary["timed_out"] is False
        assert summary["reconnects"] >= KILLED_CHARGERS  # every charger lost its connection once
        sent = json.loads((tmp_path / "sent.json").read_text())
        assert exactly_once(sent, csms.received) == []
        assert counts(csms.received)["chargers"] == KILLED_CHARGERS
        assert metric(proxy, "ere_proxy_outbox_dead_letters_total") == 0
    finally:
        if simulator is not None and simulator.poll() is None:
            simulator.kill()
            simulator.wait()
        status = proxy.terminate() if proxy is not None else 0
        await trio.to_thread.run_sync(database.close)
    assert status == 0
    assert log_problems(proxy.stderr()) == []
