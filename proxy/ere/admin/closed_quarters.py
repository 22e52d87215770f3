"""The rule that keeps closed quarters as they were closed: no change takes effect inside one.

A change of a link (its start or end) or a mandate (its revocation) must take effect at or after
the end of the latest quarter whose close is `closed` in `quarter_closes` (Dutch time, see
`proxy.ere.core.quarters`). Quarters before it are closed too, or were never booked; either way
the statements already sent stay true. While a quarter is `closing` no change is accepted at
all: its shards read the links one after another, so a change between two shards' reads could
give a session to two customers or to none. The check locks `quarter_closes` (SHARE) until the
caller's transaction ends, so a close cannot start between the check and the change.

Errors: `refuse_inside_closed_quarter` raises `AdminInputError` naming the option, the instant
and the quarter (or the quarter that is closing). It must run inside a transaction.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from proxy.ere.admin.validation import AdminInputError
from proxy.ere.core.quarters import DUTCH_TIME, Quarter
from proxy.store.connection import Connection

__all__ = ["latest_closed_quarter", "refuse_inside_closed_quarter", "start_of_day_after"]


async def latest_closed_quarter(conn: Connection) -> Quarter | None:
    """The latest quarter whose current close is `closed`, or None."""
    quarter: str | None = await conn.fetchval(
        "SELECT max(quarter) FROM quarter_closes WHERE state = 'closed'"
    )
    return None if quarter is None else Quarter.parse(quarter)


async def refuse_inside_closed_quarter(
    conn: Connection, field: str, instant: datetime, shown: str | None = None
) -> None:
    """AdminInputError if a quarter is closing, or `instant` lies before the end of the latest
    closed quarter (`shown`: how the message writes the value, default the instant in Dutch
    time)."""
    await conn.execute("LOCK TABLE quarter_closes IN SHARE MODE")
    closing = await conn.fetchval("SELECT min(quarter) FROM quarter_closes WHERE state = 'closing'")
    if closing is not None:
        raise AdminInputError(
            f"{field}: {closing} is closing; links and mandates change once its close is done"
            " (see `ere-proxy quarter status`)"
        )
    closed = await latest_closed_quarter(conn)
    if closed is not None and instant < closed.end:
        shown = shown or instant.astimezone(DUTCH_TIME).isoformat()
        raise AdminInputError(
            f"{field}: {shown} lies in or before closed quarter {closed}; a change takes effect at or "
            f"after its end, {closed.end.isoformat()}"
        )


def start_of_day_after(day: date) -> datetime:
    """The first instant after `day` (Dutch time): when a mandate ending on `day` stops covering."""
    after = day + timedelta(days=1)
    return datetime(after.year, after.month, after.day, tzinfo=DUTCH_TIME)
