"""One partner's sessions: those of chargers whose link period at the session's end belongs to
one of the partner's customers (an active session: at its start), as the close assigns them.

A session's end is its stop time, or an orphan's last reading (`SessionRecord.ended_at`); its
delivery quarter is the one that end falls in, Dutch time. Each session comes with its latest
assessment (`current_session_assessments`) and the statement lines that counted it.

Errors: `Problem` 404 for a session that is not this partner's; database errors pass through.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from proxy.api.key_store import Caller
from proxy.api.numbers import kwh, plain
from proxy.api.problems import Problem
from proxy.ere.core.quarters import Quarter
from proxy.store.connection import Connection

__all__ = ["END", "SessionData", "SessionFilter"]

END = "coalesce(s.stopped_at, CASE WHEN s.status = 'orphaned' THEN s.last_reading_at END)"
# Sessions with their link period's customer, of this partner only ($1: partner id). The
# assessment's LIMIT 1 (the view has one row per session anyway) keeps the planner from
# flattening the lateral subquery into a join with the whole view, which would compute every
# session's current assessment for each page; this way it is one index probe per row.
SCOPED = f"""
FROM sessions s
JOIN charger_links l ON l.identity = s.identity
     AND l.valid_from <= coalesce({END}, s.started_at)
     AND (l.valid_until IS NULL OR coalesce({END}, s.started_at) < l.valid_until)
JOIN customers c ON c.customer_id = l.customer_id AND c.partner_id = $1
LEFT JOIN LATERAL (
    SELECT v.eligibility, v.reason, v.detail, v.kwh, v.quarter, v.assessed_at
    FROM current_session_assessments v WHERE v.session_id = s.session_id LIMIT 1
) a ON true
"""
_COLUMNS = f"""
s.session_id, s.identity, s.transaction_id, s.connector_id, s.evse_id, s.status, s.started_at,
{END} AS ended_at, s.energy_wh, s.energy_source, s.meter_class, l.customer_id,
a.eligibility, a.reason, a.detail, a.kwh AS assessed_kwh, a.quarter AS assessed_quarter, a.assessed_at
"""
_STATED = """
SELECT t.session_id, t.quarter, t.revision, q.state, t.kind, t.delivery_quarter, t.kwh
FROM statement_sessions t JOIN quarter_closes q USING (quarter, revision)
JOIN customers c ON c.customer_id = t.customer_id AND c.partner_id = $1
WHERE t.session_id = ANY($2::bigint[])
ORDER BY t.quarter, t.revision, t.kind DESC, t.delivery_quarter
"""


class SessionFilter:
    """What a session list asks for (each None: any)."""

    def __init__(
        self,
        customer: str | None = None,
        charger: str | None = None,
        ended_from: datetime | None = None,
        ended_to: datetime | None = None,
        status: str | None = None,
    ) -> None:
        self.customer, self.charger, self.status = customer, charger, status
        self.ended_from, self.ended_to = ended_from, ended_to


def _session(row: Any, stated: list[dict[str, Any]]) -> dict[str, Any]:
    ended = row["ended_at"]
    eligibility = None
    if row["eligibility"] is not None:
        eligibility = {
            "status": row["eligibility"],
            "reason": row["reason"],
            "detail": row["detail"],
            "kwh": plain(row["assessed_kwh"]),
            "quarter": row["assessed_quarter"],
            "assessed_at": row["assessed_at"],
        }
    return {
        "id": row["session_id"],
        "charger": row["identity"],
        "transaction_id": row["transaction_id"],
        "connector_id": row["connector_id"],
        "evse_id": row["evse_id"],
        "status": row["status"],
        "started_at": row["started_at"],
        "ended_at": ended,
        "energy_kwh": kwh(row["energy_wh"]),
        "energy_source": row["energy_source"],
        "meter_class": row["meter_class"],
        "customer_id": row["customer_id"],
        "quarter": None if ended is None else str(Quarter.containing(ended)),
        "eligibility": eligibility,
        "statement_lines": stated,
    }


class SessionData:
    """The sessions of one partner (see the module docstring)."""

    def __init__(self, db: Connection, caller: Caller) -> None:
        self._db, self.caller = db, caller

    @property
    def partner_id(self) -> str:
        return self.caller.partner_id

    async def _with_statements(self, tx: Connection, rows: list[Any]) -> list[dict[str, Any]]:
        stated: dict[int, list[dict[str, Any]]] = {row["session_id"]: [] for row in rows}
        for line in await tx.fetch(_STATED, self.partner_id, list(stated)):
            stated[line["session_id"]].append(
                {
                    "quarter": line["quarter"],
                    "revision": line["revision"],
                    "close_state": line["state"],
                    "kind": line["kind"],
                    "delivery_quarter": line["delivery_quarter"],
                    "kwh": plain(line["kwh"]),
                }
            )
        return [_session(row, stated[row["session_id"]]) for row in rows]

    async def list_sessions(
        self, where: SessionFilter, before: int | None, limit: int
    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of sessions, newest first, and the last id if more follow."""
        query = (
            f"SELECT {_COLUMNS} {SCOPED} WHERE ($2::text IS NULL OR l.customer_id = $2) "
            "AND ($3::text IS NULL OR s.identity = $3) "
            f"AND ($4::timestamptz IS NULL OR {END} >= $4) AND ($5::timestamptz IS NULL OR {END} < $5) "
            "AND ($6::text IS NULL OR s.status = $6) AND ($7::bigint IS NULL OR s.session_id < $7) "
            "ORDER BY s.session_id DESC LIMIT $8"
        )
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            # One statement serves every combination of filters: a plan cached for the
            # connection (generic, chosen after five runs) fits some and scans the whole table
            # for others (a charger's sessions found by walking every session, newest first).
            await tx.execute("SET LOCAL plan_cache_mode = force_custom_plan")
            rows = await tx.fetch(
                query,
                self.partner_id,
                where.customer,
                where.charger,
                where.ended_from,
                where.ended_to,
                where.status,
                before,
                limit + 1,
            )
            sessions = await self._with_statements(tx, rows[:limit])
        return sessions, sessions[-1]["id"] if len(rows) > limit else None

    async def get_session(self, session_id: int) -> dict[str, Any]:
        """One of this partner's sessions; 404 for any other id."""
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            rows = await tx.fetch(
                f"SELECT {_COLUMNS} {SCOPED} WHERE s.session_id = $2", self.partner_id, session_id
            )
            sessions = await self._with_statements(tx, rows)
        if not sessions:
            raise Problem(404, "no such session")
        return sessions[0]
