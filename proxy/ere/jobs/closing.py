"""Closing a quarter in the database: the jobs that turn sessions into frozen statement lines.

`ere-proxy quarter close 2026Q3` queues a `close` job. Its handler opens a new revision of the
quarter (`quarter_closes`, state `closing`) and queues one `close-shard` job per shard; customers
are spread over shards by a hash of their id, so shards share nothing and run on any worker in
parallel. A shard loads its customers, their chargers' sessions, mandates and everything already
stated for them, assesses every session (`core.eligibility.assess`), closes the quarter for
them (`core.statements.close_quarter`, a pure function) and inserts the lines, the sessions each
line counted, and each session's assessment, all in the job's transaction. The shard that finds
every other shard done marks the quarter `closed` (the quarter's row lock serialises that check).

Rules:
- quarters close in order: a quarter closes only once the one before it is closed (unless no
  quarter was ever closed), and never after a later one;
- a closed quarter is never rewritten: its lines are only ever inserted (the primary key refuses
  a second line for the same customer, EAN, delivery quarter and kind), and later changes to its
  sessions become adjustment lines of the next close;
- reopening (`quarter reopen`, audited) marks the revision `reopened` and queues a new revision's
  close; it is refused once the quarter was paid out, or when a later quarter is closed.

Sessions of chargers not linked to a customer are assessed by shard 0 (they earn nothing).
Errors: `CloseRefused` for a close or reopen the rules forbid (the CLI reports it; a job fails).
"""

from __future__ import annotations

import bisect
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Any

from proxy.ere.core.ean import Ean
from proxy.ere.core.eligibility import (
    Assessment,
    ChargerLink,
    Mandate,
    SessionContext,
    SessionRecord,
    assess,
)
from proxy.ere.core.factors import FactorTable
from proxy.ere.core.fees import FeePlan
from proxy.ere.core.quarters import Quarter
from proxy.ere.core.statements import (
    LineKind,
    QuarterStatement,
    SessionShare,
    StatementLine,
    close_quarter,
)
from proxy.ere.jobs.queue import Job, enqueue
from proxy.store.connection import Connection


class CloseRefused(ValueError):
    """A close or reopen that the rules in the module docstring forbid."""


async def check_can_close(conn: Connection, quarter: Quarter) -> None:
    """Raise CloseRefused unless `quarter` may be closed now (see the module docstring)."""
    rows = await conn.fetch("SELECT quarter, state FROM quarter_closes WHERE state <> 'reopened'")
    current = {Quarter.parse(row[0]): row[1] for row in rows}
    if quarter in current:
        raise CloseRefused(f"{quarter} is already {current[quarter]}")
    later = sorted(q for q in current if q > quarter)
    if later:
        raise CloseRefused(f"{later[0]} is already closed, so {quarter} can no longer be closed")
    if current and quarter.previous() not in current:
        raise CloseRefused(f"{quarter.previous()} must be closed first (quarters close in order)")
    unfinished = [str(q) for q, state in current.items() if state != "closed"]
    if unfinished:
        raise CloseRefused(f"{', '.join(unfinished)} is still closing")


async def request_close(conn: Connection, quarter: Quarter, shards: int) -> bool:
    """Queue the close of `quarter` (in the caller's transaction); False if already queued."""
    await check_can_close(conn, quarter)
    revision = await _next_revision(conn, quarter)
    return await enqueue(
        conn, "close", f"{quarter}/r{revision}", {"quarter": str(quarter), "shards": shards}
    )


async def reopen(conn: Connection, quarter: Quarter, actor: str, reason: str, shards: int) -> int:
    """Mark the closed revision reopened (audited) and queue the new revision's close."""
    row = await conn.fetchrow(
        "SELECT revision, state FROM quarter_closes WHERE quarter = $1 AND state <> 'reopened' FOR UPDATE",
        str(quarter),
    )
    if row is None or row[1] != "closed":
        raise CloseRefused(f"{quarter} is not closed" + (f" (it is {row[1]})" if row else ""))
    later = await conn.fetchval(
        "SELECT min(quarter) FROM quarter_closes WHERE quarter > $1 AND state <> 'reopened'",
        str(quarter),
    )
    if later is not None:
        raise CloseRefused(
            f"{later} is closed after {quarter}: correct {quarter} through adjustments instead"
        )
    if await conn.fetchval("SELECT count(*) FROM payout_runs WHERE quarter = $1", str(quarter)):
        raise CloseRefused(
            f"{quarter} was paid out: its corrections go into the next quarter as adjustments"
        )
    if not reason.strip():
        raise CloseRefused("a reopen needs a reason (it is kept in the audit log)")
    await conn.execute(
        "UPDATE quarter_closes SET state = 'reopened' WHERE quarter = $1 AND revision = $2",
        str(quarter),
        row[0],
    )
    await conn.execute(
        "INSERT INTO ere_audit_log (actor, action, subject, reason, details) VALUES ($1, 'reopen', $2, $3, $4::jsonb)",
        actor,
        str(quarter),
        reason,
        json.dumps({"revision": row[0]}),
    )
    revision = row[0] + 1
    await enqueue(
        conn, "close", f"{quarter}/r{revision}", {"quarter": str(quarter), "shards": shards}
    )
    return revision


async def _next_revision(conn: Connection, quarter: Quarter) -> int:
    latest = await conn.fetchval(
        "SELECT max(revision) FROM quarter_closes WHERE quarter = $1", str(quarter)
    )
    return (latest or 0) + 1


# -- job handlers ---------------------------------------------------------------------------------
async def start_close(conn: Connection, job: Job) -> None:
    """`close` job: open the revision and queue its shards."""
    quarter = Quarter.parse(job.args["quarter"])
    shards = int(job.args["shards"])
    revision = int(job.key.rpartition("/r")[2])
    await check_can_close(conn, quarter)
    await conn.execute(
        "INSERT INTO quarter_closes (quarter, revision, state, shards) VALUES ($1, $2, 'closing', $3)",
        str(quarter),
        revision,
        shards,
    )
    for shard in range(shards):
        await enqueue(
            conn,
            "close-shard",
            f"{quarter}/r{revision}/{shard}",
            {"quarter": str(quarter), "revision": revision, "shard": shard, "shards": shards},
        )


async def close_shard(conn: Connection, job: Job, factors: FactorTable) -> None:
    """`close-shard` job: state this shard's customers' lines; the last shard closes the quarter."""
    quarter = Quarter.parse(job.args["quarter"])
    revision, shard, shards = (
        int(job.args["revision"]),
        int(job.args["shard"]),
        int(job.args["shards"]),
    )
    data = await _load_shard(conn, quarter, shard, shards)
    assessments = assess_all(data)
    closed = _closed_statements(data.closed_lines, data.closed_sessions)
    statement = close_quarter(
        quarter,
        [a for a in assessments if a.customer_id in data.plans],
        factors,
        closed,
        data.plans,
    )
    await _store(conn, statement, revision, assessments, quarter)
    # NO KEY UPDATE: shards serialise here, yet the key-share locks that every shard's lines
    # hold on this row (their foreign key) do not block it, so two finishing shards cannot deadlock.
    await conn.fetchrow(
        "SELECT 1 FROM quarter_closes WHERE quarter = $1 AND revision = $2 FOR NO KEY UPDATE",
        str(quarter),
        revision,
    )
    others = await conn.fetchval(
        "SELECT count(*) FROM ere_jobs WHERE kind = 'close-shard' AND job_key LIKE $1 AND state <> 'done'"
        " AND job_id <> $2",
        f"{quarter}/r{revision}/%",
        job.job_id,
    )
    if others == 0:
        await conn.execute(
            "UPDATE quarter_closes SET state = 'closed', closed_at = now() WHERE quarter = $1 AND revision = $2",
            str(quarter),
            revision,
        )


# -- loading --------------------------------------------------------------------------------------
class ShardData:
    """What one shard reads: its customers' links, mandates, sessions and earlier statements."""

    def __init__(self) -> None:
        self.plans: dict[str, FeePlan] = {}
        self.links: dict[str, tuple[ChargerLink, Decimal]] = {}  # identity -> (link, max power W)
        self.mandates: dict[str, list[Mandate]] = defaultdict(list)  # customer -> mandates
        self.sessions: list[SessionRecord] = []
        self.closed_lines: list[Any] = []
        self.closed_sessions: list[Any] = []


_SHARD_CUSTOMERS = """
SELECT customer_id, ean, referral_discount FROM customers WHERE mod(abs(hashtext(customer_id)), $1) = $2
"""
_SESSIONS = """
SELECT s.session_id, s.identity, s.transaction_id, s.connector_id, s.evse_id, s.started_at, s.stopped_at,
       s.meter_start_wh, s.meter_stop_wh, s.last_reading_at, s.last_reading_wh, s.energy_wh, s.meter_class,
       s.status, coalesce(x.exported, 0)
FROM sessions s
LEFT JOIN LATERAL (
    SELECT max(m.value) - min(m.value) AS exported FROM meter_samples m JOIN measurands d ON d.code = m.measurand
    WHERE m.session_id = s.session_id AND d.name = 'Energy.Active.Export.Register'
) x ON true
WHERE s.started_at < $2 AND (s.identity = ANY($1::text[]) OR ($3 AND s.identity NOT IN (SELECT identity FROM charger_links)))
"""
_CLOSED_LINES = """
SELECT l.quarter, l.customer_id, l.ean, l.delivery_quarter, l.kind, l.kwh, l.ere, l.eur_per_ere, l.gross,
       l.fee_rate, l.fee, l.fee_vat, l.net
FROM statement_lines l JOIN quarter_closes c ON (c.quarter, c.revision) = (l.quarter, l.revision)
WHERE c.state = 'closed' AND l.customer_id = ANY($1::text[])
"""
_CLOSED_SESSIONS = """
SELECT s.quarter, s.customer_id, s.ean, s.delivery_quarter, s.kind, s.session_id, s.kwh
FROM statement_sessions s JOIN quarter_closes c ON (c.quarter, c.revision) = (s.quarter, s.revision)
WHERE c.state = 'closed' AND s.customer_id = ANY($1::text[])
"""


async def _load_shard(conn: Connection, quarter: Quarter, shard: int, shards: int) -> ShardData:
    data = ShardData()
    customers = await conn.fetch(_SHARD_CUSTOMERS, shards, shard)
    eans = {}
    for customer_id, ean, discount in customers:
        data.plans[customer_id] = FeePlan(referral_discounts=(discount,) if discount else ())
        eans[customer_id] = Ean(ean)
    ids = list(data.plans)
    for identity, customer_id, max_power in await conn.fetch(
        "SELECT identity, customer_id, max_power_w FROM charger_links WHERE customer_id = ANY($1::text[])",
        ids,
    ):
        data.links[identity] = (ChargerLink(customer_id, eans[customer_id]), max_power)
    for customer_id, ean, valid_from, valid_until in await conn.fetch(
        "SELECT customer_id, ean, valid_from, valid_until FROM mandates WHERE customer_id = ANY($1::text[])",
        ids,
    ):
        data.mandates[customer_id].append(Mandate(customer_id, Ean(ean), valid_from, valid_until))
    rows = await conn.fetch(_SESSIONS, list(data.links), quarter.end, shard == 0)
    data.sessions = [_record(row) for row in rows]
    data.closed_lines = await conn.fetch(_CLOSED_LINES, ids)
    data.closed_sessions = await conn.fetch(_CLOSED_SESSIONS, ids)
    return data


def _record(row: Sequence[Any]) -> SessionRecord:
    (
        session_id,
        identity,
        transaction_id,
        connector_id,
        evse_id,
        started_at,
        stopped_at,
        meter_start,
        meter_stop,
        last_at,
        last_wh,
        energy,
        meter_class,
        status,
        exported,
    ) = row
    return SessionRecord(
        session_id,
        identity,
        transaction_id,
        connector_id,
        started_at,
        stopped_at,
        meter_start,
        meter_stop,
        last_at,
        last_wh,
        energy,
        meter_class,
        status,
        exported_wh=Decimal(exported),
        evse_id=evse_id,
    )


def assess_all(data: ShardData) -> list[Assessment]:
    """Assess every loaded session against its link, mandates and neighbours on its connector."""
    by_connector: dict[tuple[str, int | None, int | None], list[SessionRecord]] = defaultdict(list)
    for session in data.sessions:
        by_connector[session.identity, session.evse_id, session.connector_id].append(session)
    assessments = []
    for sessions in by_connector.values():
        for session, neighbours in _with_overlap_candidates(sessions):
            link, max_power = data.links.get(session.identity, (None, Decimal(1)))
            mandates = (
                tuple(m for m in data.mandates.get(link.customer_id, ()) if m.ean == link.ean)
                if link
                else ()
            )
            context = SessionContext(link, max_power, mandates, neighbours)
            assessments.append(assess(session, context))
    return assessments


def _with_overlap_candidates(
    sessions: list[SessionRecord],
) -> Iterable[tuple[SessionRecord, tuple[SessionRecord, ...]]]:
    """Each session with the sessions of its connector that could overlap it (by start and end).

    Sorting by start keeps this near-linear: only sessions starting before this one ends, and
    not ending before it starts, can overlap (the longest session bounds how far back to look).
    """
    dated = sorted(
        ((s.started_at, s) for s in sessions if s.started_at is not None), key=lambda pair: pair[0]
    )
    starts = [start for start, _ in dated]
    longest = max(((s.ended_at or start) - start for start, s in dated), default=timedelta(0))
    for session in sessions:
        start = session.started_at
        if start is None:
            yield session, ()
            continue
        end = max(session.ended_at or start, start)
        low = bisect.bisect_left(starts, start - longest)
        high = bisect.bisect_right(starts, end)
        yield session, tuple(other for _, other in dated[low:high] if other is not session)


def _closed_statements(lines: list[Any], sessions: list[Any]) -> list[QuarterStatement]:
    """The earlier statements (this shard's customers only) as `close_quarter` takes them."""
    shares: dict[tuple[str, str, str, str, str], list[SessionShare]] = defaultdict(list)
    for quarter, customer_id, ean, delivered, kind, session_id, kwh in sessions:
        shares[quarter, customer_id, ean, delivered, kind].append(SessionShare(session_id, kwh))
    by_quarter: dict[str, list[StatementLine]] = defaultdict(list)
    for (
        quarter,
        customer_id,
        ean,
        delivered,
        kind,
        kwh,
        ere,
        price,
        gross,
        rate,
        fee,
        vat,
        net,
    ) in lines:
        by_quarter[quarter].append(
            StatementLine(
                Quarter.parse(quarter),
                Quarter.parse(delivered),
                LineKind(kind),
                customer_id,
                Ean(ean),
                kwh,
                ere,
                price,
                gross,
                rate,
                fee,
                vat,
                net,
                tuple(
                    sorted(
                        shares[quarter, customer_id, ean, delivered, kind],
                        key=lambda share: share.session_id,
                    )
                ),
            )
        )
    return [QuarterStatement(Quarter.parse(q), tuple(ls)) for q, ls in sorted(by_quarter.items())]


# -- storing --------------------------------------------------------------------------------------
async def _store(
    conn: Connection,
    statement: QuarterStatement,
    revision: int,
    assessments: list[Assessment],
    quarter: Quarter,
) -> None:
    q = str(statement.quarter)
    await conn.copy_records_to_table(
        "statement_lines",
        records=[
            (
                q,
                revision,
                line.customer_id,
                str(line.ean),
                str(line.delivery_quarter),
                line.kind.value,
                line.kwh,
                line.ere,
                line.eur_per_ere,
                line.gross,
                line.fee_rate,
                line.fee,
                line.fee_vat,
                line.net,
                len(line.sessions),
            )
            for line in statement.lines
        ],
        columns=[
            "quarter",
            "revision",
            "customer_id",
            "ean",
            "delivery_quarter",
            "kind",
            "kwh",
            "ere",
            "eur_per_ere",
            "gross",
            "fee_rate",
            "fee",
            "fee_vat",
            "net",
            "sessions",
        ],
    )
    await conn.copy_records_to_table(
        "statement_sessions",
        records=[
            (
                q,
                revision,
                line.customer_id,
                str(line.ean),
                str(line.delivery_quarter),
                line.kind.value,
                share.session_id,
                share.kwh,
            )
            for line in statement.lines
            for share in line.sessions
        ],
        columns=[
            "quarter",
            "revision",
            "customer_id",
            "ean",
            "delivery_quarter",
            "kind",
            "session_id",
            "kwh",
        ],
    )
    await conn.execute(
        """
        INSERT INTO session_assessments (session_id, quarter, eligibility, reason, detail, kwh, customer_id, ean)
        SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::numeric[],
                             $7::text[], $8::text[])
        ON CONFLICT (session_id) DO UPDATE SET quarter = EXCLUDED.quarter, eligibility = EXCLUDED.eligibility,
            reason = EXCLUDED.reason, detail = EXCLUDED.detail, kwh = EXCLUDED.kwh,
            customer_id = EXCLUDED.customer_id, ean = EXCLUDED.ean, assessed_at = now()
    """,
        *_columns(
            [
                (
                    a.session_id,
                    str(quarter),
                    a.eligibility.value,
                    a.reason.value,
                    a.detail,
                    a.kwh,
                    a.customer_id,
                    str(a.ean) if a.ean is not None else None,
                )
                for a in assessments
            ],
            8,
        ),
    )


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*rows)] if rows else [[] for _ in range(width)]
