"""What the energy figures of one partner's customer are made of, read in one snapshot.

For a customer of this partner and a year: its finished sessions delivered in the year (by link
period at their end, as `proxy.api.session_data` scopes them) with their latest assessment, the
year's closed quarters, the statement lines of closed closes by delivery quarter, and the kWh
those closes counted per session. `proxy.api.energy_figures` turns them into figures.
`partner_quarter` gives the same figures for every customer of the partner with energy in one
quarter, by month and for the quarter (with the fee and net of its statement lines once it is
closed), from sums the database makes per customer and month, so a large portfolio costs no
more than its number of customers.

Errors: `Problem` 404 for a customer that is not this partner's; database errors pass through.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from proxy.api.energy_figures import SessionEnergy, StatedQuarter, energy_periods
from proxy.api.key_store import Caller
from proxy.api.numbers import kwh, plain
from proxy.api.problems import Problem
from proxy.api.session_data import END, SCOPED
from proxy.ere.admin.validation import AdminInputError, validate_id
from proxy.ere.core.factors import FactorTable
from proxy.ere.core.quarters import DUTCH_TIME, Quarter
from proxy.store.connection import Connection

__all__ = ["EnergyData"]

_SESSIONS = f"""
SELECT {END} AS ended_at, s.energy_wh, a.eligibility, a.kwh AS assessed_kwh
{SCOPED} WHERE l.customer_id = $2 AND {END} >= $3 AND {END} < $4 AND s.energy_wh IS NOT NULL
  AND s.duplicate_of IS NULL
"""
_CLOSED = "SELECT quarter FROM quarter_closes WHERE state = 'closed' AND quarter LIKE $1 || 'Q_'"
_LINES = """
SELECT t.delivery_quarter, sum(t.kwh) AS kwh, sum(t.ere) AS ere, sum(t.gross) AS gross
FROM statement_lines t JOIN quarter_closes q USING (quarter, revision)
JOIN customers c ON c.customer_id = t.customer_id AND c.partner_id = $1
WHERE q.state = 'closed' AND t.customer_id = $2 AND t.delivery_quarter LIKE $3 || 'Q_'
GROUP BY t.delivery_quarter
"""
_STATED_SESSIONS = f"""
SELECT {END} AS ended_at, t.kwh
FROM statement_sessions t JOIN quarter_closes q USING (quarter, revision)
JOIN customers c ON c.customer_id = t.customer_id AND c.partner_id = $1
JOIN sessions s ON s.session_id = t.session_id
WHERE q.state = 'closed' AND t.customer_id = $2 AND t.delivery_quarter LIKE $3 || 'Q_'
"""

# Per customer, month (Dutch time) and assessed or not: the energy of the partner's finished
# sessions that ended in [$2, $3), and the eligible kWh of the assessed ones.
_QUARTER_SESSIONS = f"""
SELECT l.customer_id, min(c.name) AS name,
       extract(month FROM {END} AT TIME ZONE 'Europe/Amsterdam')::int AS month,
       a.eligibility IS NULL AS unassessed, sum(s.energy_wh) AS energy_wh,
       sum(a.kwh) FILTER (WHERE a.eligibility = 'eligible') AS eligible_kwh
{SCOPED} WHERE {END} >= $2 AND {END} < $3 AND s.energy_wh IS NOT NULL
  AND s.duplicate_of IS NULL
GROUP BY l.customer_id, 3, 4
"""
_QUARTER_LINES = """
SELECT t.customer_id, min(c.name) AS name, sum(t.kwh) AS kwh, sum(t.ere) AS ere,
       sum(t.gross) AS gross, sum(t.fee) AS fee, sum(t.net) AS net
FROM statement_lines t JOIN quarter_closes q USING (quarter, revision)
JOIN customers c ON c.customer_id = t.customer_id AND c.partner_id = $1
WHERE q.state = 'closed' AND t.delivery_quarter = $2
GROUP BY t.customer_id
"""
_QUARTER_STATED_SESSIONS = f"""
SELECT t.customer_id, extract(month FROM {END} AT TIME ZONE 'Europe/Amsterdam')::int AS month,
       sum(t.kwh) AS kwh
FROM statement_sessions t JOIN quarter_closes q USING (quarter, revision)
JOIN customers c ON c.customer_id = t.customer_id AND c.partner_id = $1
JOIN sessions s ON s.session_id = t.session_id
WHERE q.state = 'closed' AND t.delivery_quarter = $2 AND {END} IS NOT NULL
GROUP BY 1, 2
"""


class EnergyData:
    """The energy figures of one partner's customers (see the module docstring)."""

    def __init__(self, db: Connection, caller: Caller, factors: FactorTable) -> None:
        self._db, self.caller, self._factors = db, caller, factors

    async def customer_energy(self, customer_id: str, year: int, period: Any) -> dict[str, Any]:
        try:
            validate_id(customer_id, "id")
        except AdminInputError:
            raise Problem(404, "no such customer") from None
        partner = self.caller.partner_id
        first, last = Quarter(year, 1), Quarter(year, 4)
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            if not await tx.fetchval(
                "SELECT 1 FROM customers WHERE customer_id = $1 AND partner_id = $2",
                customer_id,
                partner,
            ):
                raise Problem(404, "no such customer")
            rows = await tx.fetch(_SESSIONS, partner, customer_id, first.start, last.end)
            closed = {Quarter.parse(row["quarter"]) for row in await tx.fetch(_CLOSED, str(year))}
            lines = await tx.fetch(_LINES, partner, customer_id, str(year))
            counted = await tx.fetch(_STATED_SESSIONS, partner, customer_id, str(year))
        sessions = [
            SessionEnergy(
                row["ended_at"],
                kwh(row["energy_wh"]) or Decimal(0),
                None
                if row["eligibility"] is None
                else (
                    plain(row["assessed_kwh"]) or Decimal(0)
                    if row["eligibility"] == "eligible"
                    else Decimal(0)
                ),
            )
            for row in rows
        ]
        stated = {
            Quarter.parse(row["delivery_quarter"]): StatedQuarter(
                row["kwh"], row["ere"], row["gross"]
            )
            for row in lines
        }
        figures = energy_periods(
            year,
            period,
            sessions,
            closed,
            stated,
            [
                (row["ended_at"], plain(row["kwh"]) or Decimal(0))
                for row in counted
                if row["ended_at"] is not None
            ],
            self._factors,
        )
        return {"customer_id": customer_id, "year": year, "period": period, "periods": figures}

    async def partner_quarter(self, quarter: Quarter) -> dict[str, Any]:
        """The figures of `quarter` for each of the partner's customers with energy or
        statement lines in it: `customers` (id, name, `months`: its three months, `quarter`:
        the quarter's figures, `fee` and `net`: of its statement lines, None while open),
        ordered by customer id; and `closed`."""
        partner, year = self.caller.partner_id, quarter.year
        async with self._db.transaction(isolation="repeatable_read", readonly=True) as tx:
            rows = await tx.fetch(_QUARTER_SESSIONS, partner, quarter.start, quarter.end)
            closed = bool(
                await tx.fetchval(
                    "SELECT 1 FROM quarter_closes WHERE state = 'closed' AND quarter = $1",
                    str(quarter),
                )
            )
            lines = await tx.fetch(_QUARTER_LINES, partner, str(quarter)) if closed else []
            counted = (
                await tx.fetch(_QUARTER_STATED_SESSIONS, partner, str(quarter)) if closed else []
            )
        names: dict[str, str] = {}
        sessions: dict[str, list[SessionEnergy]] = {}
        for row in rows:
            names[row["customer_id"]] = row["name"]
            eligible = None if row["unassessed"] else plain(row["eligible_kwh"]) or Decimal(0)
            sessions.setdefault(row["customer_id"], []).append(
                SessionEnergy(
                    _month(year, row["month"]), kwh(row["energy_wh"]) or Decimal(0), eligible
                )
            )
        stated = {row["customer_id"]: row for row in lines}
        names.update({row["customer_id"]: row["name"] for row in lines})
        stated_sessions: dict[str, list[tuple[datetime, Decimal]]] = {}
        for row in counted:
            stated_sessions.setdefault(row["customer_id"], []).append(
                (_month(year, row["month"]), plain(row["kwh"]) or Decimal(0))
            )
        shut = {quarter} if closed else set()
        customers = []
        for customer_id in sorted(names):
            line = stated.get(customer_id)
            quarter_lines = (
                {quarter: StatedQuarter(line["kwh"], line["ere"], line["gross"])} if line else {}
            )
            figures = [
                energy_periods(
                    year,
                    period,
                    sessions.get(customer_id, []),
                    shut,
                    quarter_lines,
                    stated_sessions.get(customer_id, []),
                    self._factors,
                )
                for period in ("month", "quarter")
            ]
            months, quarters = (
                [f for f in periods if f["quarter"] == str(quarter)] for periods in figures
            )
            customers.append(
                {
                    "customer_id": customer_id,
                    "name": names[customer_id],
                    "months": months,
                    "quarter": quarters[0],
                    "fee": None if line is None else line["fee"],
                    "net": None if line is None else line["net"],
                }
            )
        return {"quarter": str(quarter), "closed": closed, "customers": customers}


def _month(year: int, month: int) -> datetime:
    """The first instant of a month, Dutch time (where a month's sums are placed)."""
    return datetime(year, month, 1, tzinfo=DUTCH_TIME)
