"""Closing a quarter in the database: the jobs that turn sessions into frozen statement lines.

`ere-proxy quarter close 2026Q3` queues a `close` job (`proxy.ere.jobs.close_requests`, which
also holds the rules for which quarter may close and the `CloseRules` a close applies). Its
handler checks those rules again, opens a new revision of the quarter (`quarter_closes`, state
`closing`, with the rules it applies), freezes which referred customers were active in the
quarter (`close_referrals`: a customer referred before the quarter's end with an eligible session
delivered in it lowers the referrer's fee by one step), and queues one `close-shard` job per shard; customers are spread over shards
by a hash of their id, so shards share nothing and run on any worker in parallel. A shard loads
its customers, their chargers' link periods and sessions, mandates and everything already
stated for them, assesses every session (`core.eligibility.assess`), closes the quarter for them
(`core.statements.close_quarter`, a pure function) and inserts the lines, the sessions each line
counted and the assessments, all in the job's transaction. The shard that finds every other
shard done marks the quarter `closed` (the quarter's row lock serialises that check).

Attribution: a session belongs to the customer whose link period (`charger_links`, half-open
`[valid_from, valid_until)`) contains the session's end (its start while it has no end), so a
charger moved to another customer keeps its past with the first; a mandate covers days up to
its revocation (`least(valid_until, revoked_effective)`). Sessions no period covers are
assessed `not-linked` by the shard of the charger's first link (shard 0 for chargers never
linked); they earn nothing.

Assessments are frozen: a close stores the assessment (verdict, reason, detail, inputs) of every
session delivered in its quarter, and of every other session whose verdict differs from the one
stored last (or that has none yet); nothing is overwritten (`session_assessments`, one row per
session, quarter and revision; `current_session_assessments` shows the latest).

A closed quarter is never rewritten: its lines are only ever inserted (the primary key refuses a
second line for the same customer, EAN, delivery quarter and kind), and later changes to its
sessions become adjustment lines of the next close.

Errors: `CloseRefused` for a close the rules forbid (the job fails with its message).
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from proxy.ere.core.ean import Ean
from proxy.ere.core.eligibility import Assessment
from proxy.ere.core.factors import FactorTable
from proxy.ere.core.fees import referral_plan
from proxy.ere.core.quarters import Quarter
from proxy.ere.core.statements import (
    LineKind,
    QuarterStatement,
    SessionShare,
    StatementLine,
    close_quarter,
)
from proxy.ere.jobs.close_inputs import assess_all, load_close_data
from proxy.ere.jobs.close_requests import CloseRules, check_can_close
from proxy.ere.jobs.queue import Job, enqueue
from proxy.runtime.config import EreSettings
from proxy.store.connection import Connection


# -- job handlers ---------------------------------------------------------------------------------
def _rules(job: Job) -> CloseRules:
    """The rules the close was requested with (the defaults for a job queued without them)."""
    if "rules" in job.args:
        return CloseRules.from_json(job.args["rules"])
    return CloseRules.from_settings(EreSettings(close_shards=int(job.args["shards"])))


async def start_close(conn: Connection, job: Job) -> None:
    """`close` job: open the revision, freeze the quarter's active referrals, queue the shards."""
    quarter = Quarter.parse(job.args["quarter"])
    rules = _rules(job)
    requested = job.args.get("requested_at")
    requested_at = datetime.fromisoformat(requested) if requested else datetime.now(UTC)
    revision = int(job.key.rpartition("/r")[2])
    # Closes start one at a time: two first closes (of Q2 and Q3) would both pass the order
    # check before either inserts its revision. Held until this job's transaction ends.
    await conn.execute("LOCK TABLE quarter_closes IN SHARE ROW EXCLUSIVE MODE")
    await check_can_close(conn, quarter, requested_at, rules.grace)
    await conn.execute(
        "INSERT INTO quarter_closes (quarter, revision, state, shards, rules) VALUES ($1, $2, 'closing', $3, $4::jsonb)",
        str(quarter),
        revision,
        rules.shards,
        json.dumps(rules.as_json() | {"requested_at": requested_at.isoformat()}),
    )
    active = await _active_referrals(conn, quarter, rules)
    await conn.executemany(
        "INSERT INTO close_referrals (quarter, revision, referrer_id, referred_id) VALUES ($1, $2, $3, $4)",
        [(str(quarter), revision, referrer, referred) for referrer, referred in active],
    )
    for shard in range(rules.shards):
        await enqueue(
            conn,
            "close-shard",
            f"{quarter}/r{revision}/{shard}",
            {
                "quarter": str(quarter),
                "revision": revision,
                "shard": shard,
                "shards": rules.shards,
                "rules": rules.as_json(),
            },
        )


# Referred customers and their referrers, for referrals recorded before the quarter's end ($1):
# one recorded later (in the grace period, or before a re-close) counts from the next quarter.
_REFERRALS = """
SELECT c.customer_id, c.ean, r.customer_id FROM customers c JOIN referral_codes r ON r.code = c.referred_by
WHERE r.customer_id IS NOT NULL AND c.referred_at < $1
"""


async def _active_referrals(
    conn: Connection, quarter: Quarter, rules: CloseRules
) -> list[tuple[str, str]]:
    """(referrer, referred) for each referred customer with an eligible session delivered in
    `quarter`, assessed exactly as the shards will assess it."""
    rows = await conn.fetch(_REFERRALS, quarter.end)
    if not rows:
        return []
    referrer_of = {referred: referrer for referred, _, referrer in rows}
    data = await load_close_data(
        conn, quarter, {referred: Ean(ean) for referred, ean, _ in rows}, None
    )
    active = {
        a.customer_id
        for a, _ in assess_all(data, rules)
        if a.eligible and a.ended_at is not None and quarter.contains(a.ended_at)
    }
    return sorted((referrer_of[c], c) for c in active if c is not None)


async def close_shard(conn: Connection, job: Job, factors: FactorTable) -> None:
    """`close-shard` job: state this shard's customers' lines; the last shard closes the quarter."""
    quarter = Quarter.parse(job.args["quarter"])
    revision, shard, shards = (
        int(job.args["revision"]),
        int(job.args["shard"]),
        int(job.args["shards"]),
    )
    rules = _rules(job)
    customers = await conn.fetch(_SHARD_CUSTOMERS, shards, shard)
    data = await load_close_data(
        conn, quarter, {c: Ean(ean) for c, ean in customers}, shard, shards
    )
    referrals = dict(
        await conn.fetch(
            "SELECT referrer_id, count(*)::int FROM close_referrals WHERE quarter = $1 AND revision = $2"
            " GROUP BY 1",
            str(quarter),
            revision,
        )
    )
    plans = {c: referral_plan(referrals.get(c, 0), rules.referral_step) for c in data.eans}
    assessed = assess_all(data, rules)
    assessments = [a for a, _ in assessed]
    closed = _closed_statements(data.closed_lines, data.closed_sessions)
    statement = close_quarter(
        quarter,
        [a for a in assessments if a.customer_id in data.eans],
        factors,
        closed,
        plans,
    )
    await _store_lines(conn, statement, revision, referrals)
    await _store_assessments(conn, quarter, revision, assessed)
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


_SHARD_CUSTOMERS = """
SELECT customer_id, ean FROM customers WHERE mod(abs(hashtext(customer_id)), $1) = $2
"""


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
_LINE_COLUMNS = (
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
    "active_referrals",
)
_SHARE_COLUMNS = (
    "quarter",
    "revision",
    "customer_id",
    "ean",
    "delivery_quarter",
    "kind",
    "session_id",
    "kwh",
)


async def _store_lines(
    conn: Connection, statement: QuarterStatement, revision: int, referrals: dict[str, int]
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
                referrals.get(line.customer_id, 0),
            )
            for line in statement.lines
        ],
        columns=list(_LINE_COLUMNS),
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
        columns=list(_SHARE_COLUMNS),
    )


async def _store_assessments(
    conn: Connection,
    quarter: Quarter,
    revision: int,
    assessed: list[tuple[Assessment, dict[str, Any]]],
) -> None:
    """Add the assessments this close must keep (see the module docstring); never overwrite."""
    previous = {
        row[0]: tuple(row[1:])
        for row in await conn.fetch(
            "SELECT session_id, eligibility, reason, detail, kwh, customer_id, ean"
            " FROM current_session_assessments WHERE session_id = ANY($1::bigint[])",
            [a.session_id for a, _ in assessed],
        )
    }
    rows = []
    for a, inputs in assessed:
        ean = str(a.ean) if a.ean is not None else None
        verdict = (a.eligibility.value, a.reason.value, a.detail, a.kwh, a.customer_id, ean)
        delivered_now = a.ended_at is not None and quarter.contains(a.ended_at)
        if delivered_now or previous.get(a.session_id) != verdict:
            rows.append((a.session_id, str(quarter), revision, *verdict, json.dumps(inputs)))
    await conn.execute(
        """
        INSERT INTO session_assessments (session_id, quarter, revision, eligibility, reason, detail, kwh,
                                         customer_id, ean, inputs)
        SELECT session_id, quarter, revision, eligibility, reason, detail, kwh, customer_id, ean, inputs::jsonb
        FROM unnest($1::bigint[], $2::text[], $3::integer[], $4::text[], $5::text[], $6::text[], $7::numeric[],
                    $8::text[], $9::text[], $10::text[])
            AS t(session_id, quarter, revision, eligibility, reason, detail, kwh, customer_id, ean, inputs)
    """,
        *_columns(rows, 10),
    )


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [list(column) for column in zip(*rows)] if rows else [[] for _ in range(width)]
