"""Monthly partitions of the capture tables: made ahead of time and on demand, listed for the purge.

`charger_events` and `meter_samples` are partitioned by UTC month of the time the proxy received
the event (migration 030). A row for a month without a partition goes to the default partition
(and moves to its month's when that is made), where only row deletes can purge it, so every
writer calls `ensure_months` with the receive times of its batch first (one round trip; it creates
only what is missing, under a transaction advisory lock so writers creating the same month
together do not fail), and the store process calls `ensure_ahead` when it connects and every hour,
so that the month boundary normally finds its partition made. `months_before` lists the
partitions that lie wholly before a time, for the purge to drop.

Errors: the database's, unchanged. Creating a partition takes a lock on the parent table that
waits for transactions writing to it, and holds it to the end of the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any, Protocol

CAPTURE_TABLES = ("charger_events", "meter_samples")
AHEAD_MONTHS = 2  # this month and the next: a store process down for weeks still finds its month

_ENSURE = "SELECT capture_month_partitions($1::date[])"

# Leaf partitions of a table with their upper bound, from the catalog's partition bounds.
_PARTITIONS = """
SELECT c.relname, (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = $1::regclass AND c.relispartition
"""


class Connection(Protocol):
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...


def month_of(at: datetime) -> date:
    """The first day of `at`'s UTC month."""
    utc = at.astimezone(UTC)
    return date(utc.year, utc.month, 1)


async def ensure_months(conn: Connection, times: Iterable[datetime]) -> int:
    """Make sure the months of `times` have their partitions; how many partitions were made."""
    months = sorted({month_of(at) for at in times})
    if not months:
        return 0
    return int(await conn.fetchval(_ENSURE, months))


async def ensure_ahead(
    conn: Connection, now: datetime | None = None, months: int = AHEAD_MONTHS
) -> int:
    """Make the partitions of the `months` months from `now` on; how many were made."""
    start = month_of(now or datetime.now(UTC))
    wanted = []
    for n in range(months):
        index = start.month - 1 + n
        wanted.append(date(start.year + index // 12, index % 12 + 1, 1))
    return int(await conn.fetchval(_ENSURE, wanted))


async def months_before(conn: Connection, table: str, cutoff: datetime) -> list[str]:
    """Names of `table`'s partitions whose every row lies before `cutoff`, oldest first."""
    rows = await conn.fetch(_PARTITIONS, table)  # the default partition has no upper bound
    bounded = sorted((upper, name) for name, upper in rows if upper is not None)
    return [name for upper, name in bounded if upper <= cutoff]
