"""Rows kept for the retention period: asserting a change to them is refused, and a closed quarter
whose statement counted a session (so the purge must keep it)."""

from __future__ import annotations

import asyncpg
import pytest

KEPT = "kept for the retention period"


async def refused(db, statement: str, match: str = KEPT) -> None:
    """`statement` is refused by the retention triggers (the error message matches `match`)."""
    with pytest.raises(asyncpg.IntegrityConstraintViolationError, match=match):
        await db.execute(statement)


async def state_in_2021q1(db, transaction: str) -> None:
    """A closed 2021Q1 whose adjustment line counted the session of `transaction` (a quarter
    that ends after the purge's cut-off, so the session must stay)."""
    await db.execute(
        "INSERT INTO partners (partner_id, name, kind, payout_model) VALUES ('P', 'P', 'cpo', 'direct')"
    )
    await db.execute(
        "INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean, grid_operator)"
        " VALUES ('C', 'P', 'C', 'A 1', '1234 AB', 'X', '871687120000000010', 'Stedin')"
    )
    await db.execute(
        "INSERT INTO quarter_closes (quarter, shards, state) VALUES ('2021Q1', 1, 'closed')"
    )
    await db.execute(
        "INSERT INTO statement_lines VALUES ('2021Q1', 1, 'C', '871687120000000010', '2020Q4',"
        " 'adjustment', 10, 3, 0.3, 1, 0.2, 0.2, 0.03, 0.8, 1)"
    )
    await db.execute(
        "INSERT INTO statement_sessions SELECT '2021Q1', 1, 'C', '871687120000000010', '2020Q4',"
        " 'adjustment', session_id, 10 FROM sessions WHERE transaction_id = $1",
        transaction,
    )
