"""One partner's sessions: those of chargers whose link period at the session's end belongs to
one of the partner's customers (an active session: at its start), as the close assigns them.

A session's end is its stop time, or an orphan's last reading (`SessionRecord.ended_at`); its
delivery quarter is the one that end falls in, Dutch time. Each session comes with its latest
assessment (`current_session_assessments`) and the statement lines that counted it, all in one
statement, one round trip: the answer's values as the API shows them (energy and the quarter
written by the database, the lines as JSON it makes: an `orjson.Fragment`). Lists are newest
first: by id, or, filtered by a period of ends, by end then id (an index on the end serves the
period without walking every newer session). Each combination of filters is a statement of its
own, with only its conditions. The best plan depends on the values (a partner with few sessions
is best found from its chargers, a big one by walking the newest sessions), so the api role's
pool plans every statement for its values (`proxy.api.role.open_api_database`).

Errors: `Problem` 404 for a session that is not this partner's; database errors pass through.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Any

import orjson

from proxy.api.key_store import Caller
from proxy.api.problems import Problem
from proxy.store.connection import Connection

__all__ = ["END", "SCOPED", "SessionData", "SessionFilter"]

END = "coalesce(s.stopped_at, CASE WHEN s.status = 'orphaned' THEN s.last_reading_at END)"
# Sessions with their link period's customer, of the partner `{partner}` only.
_LINKED = f"""
FROM sessions s
JOIN charger_links l ON l.identity = s.identity
     AND l.valid_from <= coalesce({END}, s.started_at)
     AND (l.valid_until IS NULL OR coalesce({END}, s.started_at) < l.valid_until)
JOIN customers c ON c.customer_id = l.customer_id AND c.partner_id = {{partner}}
"""
# The latest assessment of the session `{id}` names. Its LIMIT 1 (the view has one row per
# session anyway) keeps the planner from flattening the lateral subquery into a join with the
# whole view, which would compute every session's current assessment for each page; this way it
# is one index probe per row.
_ASSESSED = """
LEFT JOIN LATERAL (
    SELECT v.eligibility, v.reason, v.detail, v.kwh, v.quarter, v.assessed_at
    FROM current_session_assessments v WHERE v.session_id = {id} LIMIT 1
) a ON true
"""
# Sessions with their link period's customer and latest assessment, of this partner ($1) only.
SCOPED = _LINKED.format(partner="$1") + _ASSESSED.format(id="s.session_id")
# The statement lines of the partner's customers that counted the session `p`, as one JSON
# array written as the API shows them (kWh as a decimal string).
_STATED = """
SELECT coalesce(json_agg(json_build_object(
           'quarter', t.quarter, 'revision', t.revision, 'close_state', q.state,
           'kind', t.kind, 'delivery_quarter', t.delivery_quarter, 'kwh', t.kwh::text)
         ORDER BY t.quarter, t.revision, t.kind DESC, t.delivery_quarter), '[]')
FROM statement_sessions t JOIN quarter_closes q USING (quarter, revision)
JOIN customers c ON c.customer_id = t.customer_id AND c.partner_id = {partner}
WHERE t.session_id = p.session_id
"""
# The sessions `{where}` picks, ordered by `{order}` and limited (the subquery `p`), each with
# its assessment and statement lines: looked up for the rows of the page only, never for the
# rows passed over. Energy is written as the API shows it (`proxy.api.numbers`: kWh with at
# least three places), and so is the delivery quarter (`Quarter.containing`: by Dutch time).
_PAGE = f"""
SELECT p.*, a.eligibility, a.reason, a.detail, a.kwh::text AS assessed_kwh,
       a.quarter AS assessed_quarter, a.assessed_at, ({_STATED}) AS statement_lines
FROM (
    SELECT s.session_id, s.identity, s.transaction_id, s.connector_id, s.evse_id, s.status,
           s.started_at, {END} AS ended_at,
           round(s.energy_wh / 1000, greatest(scale(s.energy_wh) + 3, 3))::text AS energy_kwh,
           s.energy_source, s.meter_class, l.customer_id,
           to_char({END} AT TIME ZONE 'Europe/Amsterdam', 'YYYY"Q"Q') AS quarter
    {_LINKED}
    WHERE {{where}} ORDER BY {{order}} LIMIT {{limit}}
) p
{_ASSESSED.format(id="p.session_id")}
ORDER BY {{outer}}
"""
# Each filter's condition ({} is its parameter's number).
_FILTERS = {
    "customer": "l.customer_id = ${}",
    "charger": "s.identity = ${}",
    "ended_from": f"{END} >= ${{}}::timestamptz",
    "ended_to": f"{END} < ${{}}::timestamptz",
}
_STATUSES = ("active", "completed", "orphaned", "rejected")
# What a partner id may be (the tables' CHECK): safe to write into a statement.
_PARTNER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ONE = _PAGE.format(
    partner="$1", where="s.session_id = $2", order="s.session_id", limit=1, outer="p.session_id"
)


@functools.lru_cache(maxsize=1024)
def _page_query(
    partner_id: str,
    filters: tuple[str, ...],
    status: str | None,
    by_end: bool,
    after: bool,
    limit: int,
) -> str:
    """The statement of `limit` rows of `partner_id`'s sessions with `filters` (names of
    `_FILTERS`, their values $1, $2, ... in that order), after a cursor (the next parameters:
    the end, then the id of a period's list; the id of any other) or from the newest.

    What decides the plan is written into the statement: the partner (how many sessions it has:
    a small partner's are found from its chargers, a big one's by walking the newest sessions),
    the status (the few active sessions have an index of their own) and the number of rows.
    So the plan PostgreSQL keeps for the statement (after five runs) fits every run of it, and
    a run is not planned again; values that do not change the plan are parameters.
    """
    if not _PARTNER_ID.fullmatch(partner_id) or status not in (None, *_STATUSES):
        raise ValueError("a partner id or status that cannot be written into a statement")
    conditions = [_FILTERS[name].format(n) for n, name in enumerate(filters, 1)]
    if status is not None:
        conditions.append(f"s.status = '{status}'")
    n = len(filters) + 1
    if by_end:
        order, outer = f"{END} DESC, s.session_id DESC", "p.ended_at DESC, p.session_id DESC"
        if after:
            conditions.append(f"({END}, s.session_id) < (${n}::timestamptz, ${n + 1}::bigint)")
    else:
        order, outer = "s.session_id DESC", "p.session_id DESC"
        if after:
            conditions.append(f"s.session_id < ${n}::bigint")
    return _PAGE.format(
        partner=f"'{partner_id}'",
        where=" AND ".join(conditions) or "true",
        order=order,
        limit=int(limit),
        outer=outer,
    )


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

    @property
    def by_end(self) -> bool:
        """Whether the list is of a period of ends, so ordered by end, then id."""
        return self.ended_from is not None or self.ended_to is not None


def _session(row: Any) -> dict[str, Any]:
    eligibility = None
    if row["eligibility"] is not None:
        eligibility = {
            "status": row["eligibility"],
            "reason": row["reason"],
            "detail": row["detail"],
            "kwh": row["assessed_kwh"],
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
        "ended_at": row["ended_at"],
        "energy_kwh": row["energy_kwh"],
        "energy_source": row["energy_source"],
        "meter_class": row["meter_class"],
        "customer_id": row["customer_id"],
        "quarter": row["quarter"],
        "eligibility": eligibility,
        "statement_lines": orjson.Fragment(row["statement_lines"]),
    }


class SessionData:
    """The sessions of one partner (see the module docstring)."""

    def __init__(self, db: Connection, caller: Caller) -> None:
        self._db, self.caller = db, caller

    @property
    def partner_id(self) -> str:
        return self.caller.partner_id

    async def list_sessions(
        self,
        where: SessionFilter,
        before: int | None,
        limit: int,
        before_end: datetime | None = None,
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """A page of sessions, newest first, after the session `before` (a period's list: the
        session `before` that ended at `before_end`); and its last session if more follow.
        The sessions are answer bodies: plain values, their statement lines a Fragment."""
        given = {name: getattr(where, name) for name in _FILTERS}
        filters = tuple(name for name, value in given.items() if value is not None)
        after: tuple[object, ...] = ()
        if before is not None:
            after = (before_end, before) if where.by_end else (before,)
        query = _page_query(
            self.partner_id, filters, where.status, where.by_end, before is not None, limit + 1
        )
        rows = await self._db.fetch(query, *(given[name] for name in filters), *after)
        sessions = [_session(row) for row in rows[:limit]]
        return sessions, sessions[-1] if len(rows) > limit else None

    async def get_session(self, session_id: int) -> dict[str, Any]:
        """One of this partner's sessions; 404 for any other id."""
        row = await self._db.fetchrow(_ONE, self.partner_id, session_id)
        if row is None:
            raise Problem(404, "no such session")
        return _session(row)
