"""Worker processes SIGKILLed in the middle of a quarter close and of a payout run.

Two databases on one PostgreSQL server get the same customers and sessions. In the reference
database the close and the payout run in this process, undisturbed. In the other, two
`ere-proxy worker` processes run them, and the test makes them stop half-way: it holds a table
lock that the jobs need for their last writes, waits until both workers are blocked on it (their
statement lines are written, uncommitted), SIGKILLs them and lets go. Fresh workers then run the
jobs again. Afterwards both databases hold the same statement lines, one transfer per payee, and
the payout file is byte for byte the one the killed worker had written and the reference one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
import trio

from proxy.ere.core.ean import check_digit
from proxy.ere.core.quarters import Quarter
from proxy.ere.jobs.close_requests import request_close
from proxy.ere.jobs.payouts import request_payout
from proxy.ere.jobs.queue import run_one
from proxy.ere.jobs.worker import handlers
from proxy.runtime.config import Config, DatabaseSettings, EreSettings
from proxy.store import open_database
from testkit.postgres import ServerThread, admin_execute, make_data_dir
from testkit.proxy_process import REPO, log_problems

pytestmark = pytest.mark.slow

Q3 = Quarter.parse("2026Q3")
CUSTOMERS = 400
SESSIONS_PER_CUSTOMER = 30
PAID_AT = datetime(2026, 10, 2, 9, tzinfo=UTC)


@pytest.fixture
def server() -> Iterator[ServerThread]:
    data_dir = make_data_dir("ere-worker-kill-")
    thread = ServerThread(data_dir).open()
    try:
        yield thread
    finally:
        thread.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def ere_settings(directory: Path) -> dict:
    return {
        "close_shards": 4,
        "payout_minimum": "35.00",
        "payout_dir": str(directory / "payouts"),
        "statement_dir": str(directory / "statements"),
        "debtor_name": "ERE Provider BV",
        "debtor_iban": "NL91ABNA0417164300",
        "debtor_bic": "ABNANL2A",
        "provider_name": "ERE Provider BV",
        "provider_address": "Stationsplein 1, 3511 ED Utrecht",
        "provider_kvk": "12345678",
        "provider_vat_number": "NL123456789B01",
        "poll_interval": 0.2,
    }


async def seed(conn) -> None:
    """Customers (every third on a partner-account partner), one charger each, sessions in Q3."""
    eans = [f"87168712{n:09d}" for n in range(CUSTOMERS)]
    eans = [body + str(check_digit(body)) for body in eans]
    await conn.execute("""
        INSERT INTO partners (partner_id, name, kind, payout_model, iban, account_name) VALUES
            ('P1', 'Installer One', 'installer', 'direct', NULL, NULL),
            ('P2', 'Supplier Two', 'energy-supplier', 'partner-account', 'NL20INGB0001234567', 'Supplier Two BV')""")
    await conn.execute(
        """
        INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean, grid_operator, iban,
                               email)
        SELECT 'C' || n, CASE WHEN n % 3 = 0 THEN 'P2' ELSE 'P1' END, 'Customer ' || n, 'Straat ' || n,
               '1234 AB', 'Utrecht', e, 'Stedin', 'NL91ABNA0417164300', 'c' || n || '@example.nl'
        FROM unnest($1::text[]) WITH ORDINALITY AS t(e, n)""",
        eans,
    )
    await conn.execute("""
        INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until, consent)
        SELECT ean, 2026, customer_id, '2026-01-01', '2026-01-01', '2026-12-31', '{"by": "customer"}'
        FROM customers""")
    await conn.execute(
        "INSERT INTO charger_links (identity, customer_id, max_power_w, valid_from)"
        " SELECT 'CP-' || customer_id, customer_id, 11000, '2026-01-01T00:00+01:00' FROM customers"
    )
    await conn.execute(
        """
        INSERT INTO sessions (identity, transaction_id, connector_id, started_at, stopped_at, meter_start_wh,
                              meter_stop_wh, status, meter_class)
        SELECT 'CP-' || c.customer_id, s::text, 1,
               timestamptz '2026-07-01 06:00+00' + s * interval '2 days' + length(c.customer_id) * interval '1 min',
               timestamptz '2026-07-01 09:00+00' + s * interval '2 days' + length(c.customer_id) * interval '1 min',
               1000000, 1000000 + 5000 + ((hashtext(c.customer_id || s) & 65535) % 20000),
               'completed', CASE WHEN s % 17 = 0 THEN 'unknown' ELSE 'signed-verified' END
        FROM customers c, generate_series(1, $1) AS s""",
        SESSIONS_PER_CUSTOMER,
    )


async def snapshot(conn) -> dict[str, list[tuple]]:
    return {
        "lines": [
            tuple(r)
            for r in await conn.fetch(
                "SELECT quarter, revision, customer_id, ean, delivery_quarter, kind, kwh, ere, gross, fee, fee_vat,"
                " net, sessions FROM statement_lines ORDER BY 3, 5, 6"
            )
        ],
        "assessments": [
            tuple(r)
            for r in await conn.fetch(
                "SELECT s.transaction_id, s.identity, a.reason, a.kwh FROM session_assessments a"
                " JOIN sessions s USING (session_id) ORDER BY 2, 1"
            )
        ],
        "transfers": [
            tuple(r)
            for r in await conn.fetch(
                "SELECT run_id, payee_kind, payee_id, amount, end_to_end FROM payout_transfers ORDER BY 2, 3"
            )
        ],
        "carry_overs": [
            tuple(r)
            for r in await conn.fetch(
                "SELECT run_id, customer_id, amount, reason FROM payout_carry_overs ORDER BY 2"
            )
        ],
    }


class Workers:
    """`ere-proxy worker` processes on one configuration."""

    def __init__(self, config: Path, logs: Path) -> None:
        self.config, self.logs, self.started = config, logs, 0
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, count: int) -> None:
        for _ in range(count):
            with (self.logs / f"worker-{self.started}.stderr").open("wb") as stderr:
                self.processes.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "proxy", "worker", "--config", str(self.config)],
                        cwd=REPO,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=stderr,
                    )
                )
            self.started += 1

    def kill(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()
        self.processes.clear()

    def stop(self) -> list[int]:
        for process in self.processes:
            process.terminate()
        return [process.wait(30) for process in self.processes]


async def until(check, what: str, limit: float = 120) -> None:
    """Poll a database condition that other processes bring about, for at most `limit` s."""
    with trio.fail_after(limit):
        while not await check():
            await trio.sleep(0.1)


async def blocked_on_locks(db) -> int:
    return await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )


async def test_workers_killed_mid_close_and_mid_payout_leave_nothing_doubled(server, tmp_path):
    configs = {}
    for name in ("reference", "killed"):
        await admin_execute(server.server, f'CREATE DATABASE "{name}"')
        (tmp_path / name).mkdir()
        configs[name] = Config(
            database=DatabaseSettings(dsn=server.server.dsn(name)),
            ere=msgspec.convert(ere_settings(tmp_path / name), EreSettings),
        )

    # The reference: data, close and payout in this process, undisturbed.
    reference = configs["reference"]
    async with open_database(reference.database) as db:
        await seed(db)
        async with db.transaction() as conn:
            await request_close(conn, Q3, reference.ere)
        await run_all(db, reference)
        async with db.transaction() as conn:
            await request_payout(conn, Q3, reference.ere, PAID_AT)
        await run_all(db, reference)
        expected = await snapshot(db)
    assert len(expected["lines"]) == CUSTOMERS and expected["transfers"] and expected["carry_overs"]

    # The same with worker processes, killed twice.
    killed = configs["killed"]
    config = tmp_path / "worker.toml"
    settings = "\n".join(
        f"{key} = {json.dumps(v)}" for key, v in ere_settings(tmp_path / "killed").items()
    )
    config.write_text(
        f'[log]\nlevel = "info"\n[database]\ndsn = {json.dumps(killed.database.dsn)}\n[ere]\n{settings}\n'
    )
    workers = Workers(config, tmp_path)
    payout_file = tmp_path / "killed" / "payouts" / "payout-2026Q3.xml"
    try:
        async with open_database(killed.database) as db:
            await seed(db)
            async with db.connection() as holder:
                async with holder.transaction():  # the shards' last write waits for this lock
                    await holder.execute("LOCK TABLE session_assessments IN EXCLUSIVE MODE")
                    async with db.transaction() as conn:
                        await request_close(conn, Q3, killed.ere)
                    workers.start(2)
                    await until(
                        lambda: equals(blocked_on_locks(db), 2), "both workers blocked in a shard"
                    )
                    workers.kill()
                assert (
                    await db.fetchval("SELECT count(*) FROM statement_lines") == 0
                )  # nothing was committed
                workers.start(2)
                await until(
                    lambda: equals(db.fetchval("SELECT state FROM quarter_closes"), "closed"),
                    "the close",
                )

                async with holder.transaction():  # the payout's transfers wait for this lock
                    await holder.execute("LOCK TABLE payout_transfers IN EXCLUSIVE MODE")
                    async with db.transaction() as conn:
                        await request_payout(conn, Q3, killed.ere, PAID_AT)
                    await until(
                        lambda: equals(blocked_on_locks(db), 1), "a worker blocked in the payout"
                    )
                    written = payout_file.read_bytes()  # the file was written before the kill
                    workers.kill()
            assert await db.fetchval("SELECT count(*) FROM payout_runs") == 0
            workers.start(1)
            await until(
                lambda: equals(
                    db.fetchval("SELECT state FROM ere_jobs WHERE kind = 'statements'"), "done"
                ),
                "the payout",
            )
            assert workers.stop() == [0]
            assert await snapshot(db) == expected
            # No job ever failed: the kills left no trace, and shards finishing together do not deadlock.
            assert (
                await db.fetchval(
                    "SELECT count(*) FROM ere_jobs WHERE attempts > 0 OR state <> 'done'"
                )
                == 0
            )
    finally:
        workers.kill()

    assert (
        payout_file.read_bytes()
        == written
        == (tmp_path / "reference" / "payouts" / payout_file.name).read_bytes()
    )
    # Nothing half-written is left, and the settlement of the pooled transfer is the reference's.
    reference = tmp_path / "reference" / "payouts"
    written_files = sorted(p.name for p in payout_file.parent.iterdir())
    assert written_files == sorted(p.name for p in reference.iterdir())
    assert written_files == [
        payout_file.name,
        "settlement-2026Q3-P2.csv",
        "settlement-2026Q3-P2.html",
    ]
    for name in written_files:
        assert (payout_file.parent / name).read_bytes() == (reference / name).read_bytes(), name
    for log in tmp_path.glob("worker-*.stderr"):
        assert log_problems(log.read_text()) == [], log.name


async def run_all(db, config: Config) -> None:
    jobs = handlers(config)
    while (await run_one(db, jobs, retry_base=1, max_attempts=1)).job is not None:
        pass


async def equals(awaitable, expected) -> bool:
    return await awaitable == expected
