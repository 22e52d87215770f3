"""The purge: deleting capture evidence older than the retention period, the only way it goes.

The database keeps `charger_events`, `sessions`, `meter_samples` and the assessments of closes
(migrations 011 and 012 refuse their DELETE); `purge` deletes in one transaction that has set
`ere.purge` (SET LOCAL), which those triggers allow, and only what lies wholly before `before`
(00:00 Dutch time), a day at least `[ere] retention_years` before today:

* sessions that ended (their stop, else last reading, else start) and were last updated before
  it, and that no statement of a quarter ending after it counted, with their meter samples and
  assessments;
* charger events received before it, except those naming the transaction of a session kept:
  its own id, and for a 1.6 transaction started offline also its provisional id and the
  assignment of the real one (`transaction_id_assigned`), the frames its audit pack holds
  (`proxy.ere.jobs.rev_export.raw_frames`).

Statement lines and sessions, quarter closes, payout runs, invoices, REV export records and the
audit log are bookkeeping and are not purged. Each purge writes one `ere_audit_log` row (action
`purge`, its counts per table); a dry run counts the same rows, rolls back and logs nothing.

How: `charger_events` and `meter_samples` are partitioned by month (`proxy.store.partitions`);
a month wholly before `before` whose every row goes is dropped as a whole (its rows counted as
deleted), other rows are deleted one by one. Dropping a partition locks its table against
writers until the purge's transaction ends (a dry run too, which rolls the drops back).

Errors: `PurgeRefused` for a `before` inside the retention period; database errors propagate
(nothing is deleted then).
"""

from __future__ import annotations

import json
from datetime import date, datetime
from zoneinfo import ZoneInfo

from proxy.store.connection import Connection
from proxy.store.partitions import CAPTURE_TABLES, months_before

__all__ = ["PURGED_TABLES", "PurgeRefused", "latest_purge_date", "purge"]

DUTCH_TIME = ZoneInfo("Europe/Amsterdam")
PURGED_TABLES = ("session_assessments", "meter_samples", "sessions", "charger_events")


class PurgeRefused(ValueError):
    """A purge that would delete data still inside the retention period."""


_SELECT_SESSIONS = """
CREATE TEMPORARY TABLE purged_sessions ON COMMIT DROP AS
SELECT x.session_id FROM sessions x
WHERE coalesce(x.stopped_at, x.last_reading_at, x.started_at, x.updated_at) < $1
  AND x.updated_at < $1
  AND NOT EXISTS (
      SELECT 1 FROM statement_sessions s WHERE s.session_id = x.session_id
        AND make_date(left(s.quarter, 4)::integer, right(s.quarter, 1)::integer * 3, 1)
            + interval '1 month' > $1)
"""
# The rows of each table that go: the samples and sessions selected, events received before the
# cut-off that name no session kept. `{t}` is the table or one of its partitions.
_GOES = {
    "session_assessments": "session_id IN (SELECT session_id FROM purged_sessions)",
    "meter_samples": "session_id IN (SELECT session_id FROM purged_sessions)",
    "sessions": "session_id IN (SELECT session_id FROM purged_sessions)",
    "charger_events": """e.received_at < $1
          AND NOT EXISTS (SELECT 1 FROM kept k
                          WHERE k.identity = e.identity AND k.transaction_id = e.body->>'transaction_id')
          AND NOT (e.kind = 'transaction_id_assigned'
                   AND EXISTS (SELECT 1 FROM sessions x
                               WHERE x.identity = e.identity AND x.transaction_id = e.body->>'real_id'))""",
}
_KEPT = {
    "charger_events": """
        WITH kept AS (
            SELECT identity, transaction_id FROM sessions
            UNION
            SELECT a.identity, a.body->>'provisional_id' FROM charger_events a
            JOIN sessions x ON x.identity = a.identity AND x.transaction_id = a.body->>'real_id'
            WHERE a.kind = 'transaction_id_assigned'
        )"""
}
# How many rows of a partition stay and how many go (a partition whose rows all go is dropped).
_COUNT = "{kept} SELECT count(*) FILTER (WHERE NOT ({goes})), count(*) FROM {table} e"
_DELETE = "{kept} DELETE FROM {table} e WHERE {goes}"
_AUDIT = """
INSERT INTO ere_audit_log (actor, action, subject, reason, details)
VALUES ($1, 'purge', $2, $3, $4::jsonb)
"""


class _DryRun(Exception):
    """Rolls the dry run's transaction back."""


def latest_purge_date(today: date, retention_years: int) -> date:
    """The latest `before` a purge may use: `today`, `retention_years` years earlier."""
    year = today.year - retention_years
    return (
        today.replace(year=year, day=28)
        if (today.month, today.day) == (2, 29)
        else today.replace(year=year)
    )


async def purge(
    db: Connection,
    before: date,
    *,
    retention_years: int,
    today: date,
    actor: str,
    dry_run: bool = False,
) -> dict[str, int]:
    """Delete (or with `dry_run` only count) what lies before `before`; rows per table.

    Raises `PurgeRefused` when `before` is after `latest_purge_date(today, retention_years)`.
    """
    latest = latest_purge_date(today, retention_years)
    if before > latest:
        raise PurgeRefused(
            f"before: {before} is inside the retention period of {retention_years} years;"
            f" the latest allowed today is {latest}"
        )
    cutoff = datetime(before.year, before.month, before.day, tzinfo=DUTCH_TIME)
    counts: dict[str, int] = {}
    try:
        async with db.transaction() as conn:
            await conn.execute("SET LOCAL ere.purge = 'on'")
            await conn.execute(_SELECT_SESSIONS, cutoff)
            for table in PURGED_TABLES:
                counts[table] = await _purge_table(conn, table, cutoff)
            if dry_run:
                raise _DryRun
            details = {"before": before.isoformat(), "deleted": counts}
            await conn.execute(
                _AUDIT,
                actor,
                f"data before {before}",
                f"past the retention period of {retention_years} years",
                json.dumps(details),
            )
    except _DryRun:
        pass
    return counts


async def _purge_table(conn: Connection, table: str, cutoff: datetime) -> int:
    """Delete what goes of `table`: partitions wholly before `cutoff` whose every row goes are
    dropped, the rest is deleted row by row; how many rows went."""
    kept, goes = _KEPT.get(table, ""), _GOES[table]
    args = (cutoff,) if "$1" in goes else ()
    gone = 0
    if table in CAPTURE_TABLES:
        for partition in await months_before(conn, table, cutoff):
            name = quote_ident(partition)
            staying, rows = await conn.fetchrow(
                _COUNT.format(kept=kept, goes=goes, table=name), *args
            )
            if staying == 0:
                await conn.execute(f"DROP TABLE {name}")
                gone += rows
    status = await conn.execute(_DELETE.format(kept=kept, goes=goes, table=table), *args)
    return gone + int(status.rsplit(" ", 1)[1])


def quote_ident(name: str) -> str:
    """`name` as an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
