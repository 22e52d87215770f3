"""ERE books for store tests: two customers, their mandates and chargers, sessions as the
sessions table holds them, and the job queue run in the test's process.

Customer A (partner P1, paid directly) has a mandate for all of 2026 and charger CP-A; customer
B (partner P2, a partner account) has one from 15 August 2026 and charger CP-B; both chargers
are linked from 1 January 2026. `config` pays out from €1.00 and closes in three shards.
Quarters are closed and paid as of `LATER` (1 February 2027), when every quarter of 2026 may be.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import msgspec

from proxy.ere.core.ean import check_digit
from proxy.ere.core.quarters import Quarter
from proxy.ere.jobs.close_requests import request_close
from proxy.ere.jobs.payouts import request_payout
from proxy.ere.jobs.queue import run_one
from proxy.ere.jobs.worker import handlers
from proxy.runtime.config import Config, DatabaseSettings, EreSettings

Q2, Q3, Q4 = Quarter.parse("2026Q2"), Quarter.parse("2026Q3"), Quarter.parse("2026Q4")
LATER = datetime(2027, 2, 1, tzinfo=UTC)  # when these tests close quarters: 2026 has ended


def ean(n: int) -> str:
    body = f"8716871200000{n:04d}"
    return body + str(check_digit(body))


EAN_A, EAN_B = ean(1), ean(2)


def config(settings: DatabaseSettings, tmp_path: Path) -> Config:
    ere = msgspec.convert(
        {
            "close_shards": 3,
            "payout_minimum": "1.00",
            "payout_dir": str(tmp_path / "payouts"),
            "statement_dir": str(tmp_path / "statements"),
            "debtor_name": "ERE Provider BV",
            "debtor_iban": "NL91ABNA0417164300",
            "debtor_bic": "ABNANL2A",
            "provider_name": "ERE Provider BV",
            "provider_address": "Stationsplein 1, 3511 ED Utrecht",
            "provider_kvk": "12345678",
            "provider_vat_number": "NL123456789B01",
        },
        EreSettings,
    )
    return Config(database=settings, ere=ere)


async def seed(db) -> None:
    await db.execute("""
        INSERT INTO partners (partner_id, name, kind, payout_model, iban, account_name) VALUES
            ('P1', 'Installer One', 'installer', 'direct', NULL, NULL),
            ('P2', 'Supplier Two', 'energy-supplier', 'partner-account', 'NL20INGB0001234567', 'Supplier Two BV')""")
    await db.execute(f"""
        INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean, grid_operator, iban,
                               email) VALUES
            ('A', 'P1', 'Anna de Vries', 'Kerkstraat 1', '1234 AB', 'Utrecht', '{EAN_A}', 'Stedin',
             'NL91ABNA0417164300', 'anna@example.nl'),
            ('B', 'P2', 'Bram Jansen', 'Dorpsweg 2', '5678 CD', 'Zwolle', '{EAN_B}', 'Enexis', NULL,
             'bram@example.nl')""")
    consent = '{"by": "customer", "method": "online-checkbox"}'
    await db.execute(f"""
        INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until, consent) VALUES
            ('{EAN_A}', 2026, 'A', '2026-01-01', '2026-01-01', '2026-12-31', '{consent}'),
            ('{EAN_B}', 2026, 'B', '2026-08-10', '2026-08-15', '2026-12-31', '{consent}')""")
    await db.execute("""
        INSERT INTO charger_links (identity, customer_id, max_power_w, valid_from) VALUES
            ('CP-A', 'A', 11000, '2026-01-01T00:00+01:00'), ('CP-B', 'B', 11000, '2026-01-01T00:00+01:00')""")


async def add_session(
    db,
    identity: str,
    transaction: str,
    start: datetime,
    kwh: str,
    meter_class: str = "signed-verified",
) -> None:
    wh = Decimal(kwh) * 1000
    await db.execute(
        """
        INSERT INTO sessions (identity, transaction_id, connector_id, started_at, stopped_at, meter_start_wh,
                              meter_stop_wh, status, meter_class)
        VALUES ($1, $2, 1, $3, $4, 1000000, $5, 'completed', $6)""",
        identity,
        transaction,
        start,
        start + timedelta(hours=6),
        1000000 + wh,
        meter_class,
    )


async def run_jobs(db, cfg: Config) -> list[str]:
    """Run every due job in this process (as a worker would); returns each outcome's state."""
    states = []
    jobs = handlers(cfg)
    while (outcome := await run_one(db, jobs, retry_base=1.0, max_attempts=1)).job is not None:
        states.append(
            f"{outcome.job.kind}:{outcome.state}{' ' + outcome.error if outcome.error else ''}"
        )
    return states


async def lines(db, quarter: str) -> list[tuple]:
    rows = await db.fetch(
        """
        SELECT customer_id, delivery_quarter, kind, kwh, ere, gross, fee, fee_vat, net, sessions
        FROM statement_lines WHERE quarter = $1 ORDER BY customer_id, delivery_quarter""",
        quarter,
    )
    return [tuple(row) for row in rows]


def money(*values: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(v) for v in values)


async def close(db, cfg: Config, quarter: Quarter, now: datetime = LATER) -> list[str]:
    """Request the close of `quarter` at `now` and run the jobs it queues."""
    async with db.transaction() as conn:
        await request_close(conn, quarter, cfg.ere, now)
    return await run_jobs(db, cfg)


async def pay(db, cfg: Config, quarter: Quarter, now: datetime = LATER) -> list[str]:
    """Request the payout run of `quarter` at `now` and run the jobs it queues."""
    async with db.transaction() as conn:
        await request_payout(conn, quarter, cfg.ere, now)
    return await run_jobs(db, cfg)
