"""Closed and paid quarters for partner API tests: history stated and paid out as the ERE
workers would do it (the API makes neither statements nor payouts), on any day the tests run.

`ere_settings(directory)` are the `[ere]` settings such tests give the workers and the API
alike (payouts from €1.00, one close shard, the provider named on invoices, files under
`directory`). `close_and_pay(db, quarter, settings)` closes a quarter and runs its payout run
(and its statements job) as of a day after its grace period.

`state_and_pay(db, *identities)` gives the current customer of each charger a paid statement:
the quarter after the last one closed (when none is: the third quarter of last year, which no
writes of today's tests touch and no other close precedes) gets, for each charger, a link
period to that customer, the customer's mandate for its year and a finished session of 30 kWh
(records of the past, as the proxy and the admin would have kept them; the API refuses to
backdate), and is then closed and paid with a factor table of its own (€0.30 per ERE; the
shipped table may lack the year). It returns that quarter. Closing a quarter of this year
would refuse today's link and mandate changes, so a quarter that reaches this year is an
`AssertionError`.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec

from proxy.ere.core.quarters import Quarter
from proxy.ere.jobs.close_requests import request_close
from proxy.ere.jobs.payouts import request_payout
from proxy.runtime.config import Config, EreSettings
from proxy.store.db import Database
from testkit.ere_books import run_jobs
from testkit.partner_api import seed_session

__all__ = ["PROVIDER", "close_and_pay", "ere_settings", "state_and_pay"]

PROVIDER = {
    "provider_name": "ERE Provider BV",
    "provider_address": "Stationsplein 1, 3511 ED Utrecht",
    "provider_kvk": "12345678",
    "provider_vat_number": "NL123456789B01",
}
_FACTORS = """
[[year]]
year = {year}
renewable_share = 0.505
co2_g_per_mj = 183
mj_per_kwh = 3.6
placeholder = false
source = "tests: the 2026 figures"
"""
_PRICE = """
[[price]]
quarter = "{quarter}"
eur_per_ere = 0.30
placeholder = false
source = "tests"
"""


def ere_settings(directory: Path, **overrides: object) -> EreSettings:
    return msgspec.convert(
        {
            "close_shards": 1,
            "payout_minimum": "1.00",
            "payout_dir": str(directory / "payouts"),
            "statement_dir": str(directory / "statements"),
            "debtor_name": "ERE Provider BV",
            "debtor_iban": "NL91ABNA0417164300",
            "debtor_bic": "ABNANL2A",
            **PROVIDER,
            **overrides,
        },
        EreSettings,
    )


async def close_and_pay(db: Database, quarter: Quarter, settings: EreSettings) -> list[str]:
    """Close `quarter` and pay it out (the jobs' outcomes), as of a day after its grace."""
    now = quarter.end + timedelta(days=settings.close_grace_days + 1)
    config = Config(ere=settings)
    async with db.transaction() as conn:
        await request_close(conn, quarter, settings, now)
    states = await run_jobs(db, config)
    async with db.transaction() as conn:
        await request_payout(conn, quarter, settings, now)
    return states + await run_jobs(db, config)


async def state_and_pay(db: Database, *identities: str) -> Quarter:
    """Each charger's customer stated and paid in one past quarter (module docstring)."""
    today = datetime.now(UTC)
    closed = [Quarter.parse(q) for (q,) in await db.fetch("SELECT quarter FROM quarter_closes")]
    quarter = max(closed).next() if closed else Quarter(today.year - 1, 3)
    assert quarter.year < today.year, f"{quarter} is this year's: closing it would freeze today"
    for identity in identities:
        await _history(db, quarter, identity)
    with tempfile.TemporaryDirectory(prefix="ere-paid-") as directory:
        factors = Path(directory) / "factors.toml"
        prices = "".join(_PRICE.format(quarter=Quarter(quarter.year, n)) for n in range(1, 5))
        factors.write_text(_FACTORS.format(year=quarter.year) + prices)
        settings = ere_settings(Path(directory), factors_file=str(factors))
        states = await close_and_pay(db, quarter, settings)
    failed = [state for state in states if not state.endswith(":done")]
    assert not failed, failed
    return quarter


async def _history(db: Database, quarter: Quarter, identity: str) -> None:
    """A link period, a mandate and a session of `identity`'s current customer in `quarter`."""
    customer_id, ean = await db.fetchrow(
        "SELECT l.customer_id, c.ean FROM charger_links l JOIN customers c USING (customer_id)"
        " WHERE l.identity = $1 ORDER BY l.valid_from DESC LIMIT 1",
        identity,
    )
    await db.execute(
        "INSERT INTO charger_links (identity, customer_id, max_power_w, valid_from, valid_until,"
        " ended_at, ended_by, end_reason) VALUES ($1, $2, 11000, $3, $4, $4, 'tests', 'history')",
        identity,
        customer_id,
        quarter.start,
        quarter.end,
    )
    await db.execute(
        "INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until, consent)"
        " VALUES ($1, $2, $3, $4, $4, $5, $6::jsonb) ON CONFLICT (ean, year) DO NOTHING",
        ean,
        quarter.year,
        customer_id,
        quarter.first_day.replace(month=1, day=1),
        quarter.last_day.replace(month=12, day=31),
        json.dumps({"by": "customer", "method": "online-checkbox"}),
    )
    start = quarter.start + timedelta(days=10, hours=8)
    await seed_session(
        db,
        identity,
        f"tx-paid-{quarter}-{identity}",
        started_at=start,
        stopped_at=start + timedelta(hours=4),
        kwh="30",
    )
