"""What the energy figures of one partner's customer are made of, read in one snapshot.

For a customer of this partner and a year: its finished sessions delivered in the year (by link
period at their end, as `proxy.api.session_data` scopes them) with their latest assessment, the
year's closed quarters, the statement lines of closed closes by delivery quarter, and the kWh
those closes counted per session. `proxy.api.energy_figures` turns them into figures.

Errors: `Problem` 404 for a customer that is not this partner's; database errors pass through.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from proxy.api.energy_figures import SessionEnergy, StatedQuarter, energy_periods
from proxy.api.key_store import Caller
from proxy.api.numbers import kwh, plain
from proxy.api.problems import Problem
from proxy.api.session_data import END, SCOPED
from proxy.ere.admin.validation import AdminInputError, validate_id
from proxy.ere.core.factors import FactorTable
from proxy.ere.core.quarters import Quarter
from proxy.store.connection import Connection

__all__ = ["EnergyData"]

_SESSIONS = f"""
SELECT {END} AS ended_at, s.energy_wh, a.eligibility, a.kwh AS assessed_kwh
{SCOPED} WHERE l.customer_id = $2 AND {END} >= $3 AND {END} < $4 AND s.energy_wh IS NOT NULL
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
