"""A customer's energy and ERE per month or quarter of a year, sans-IO: "what you earned".

A period's figures are *stated* when its quarter is closed: a quarter's are the sums of its
statement lines (regular and later adjustments, by delivery quarter: kWh, ERE, gross euros);
a month's are the kWh the statements counted for sessions that ended in it, converted as one
figure (`ere()`, then euros at the quarter's price to the cent), so months need not add up to
their quarter's line to the cent. An open quarter's figures are *estimated* from the latest
assessments: eligible kWh counts sessions assessed eligible, `unassessed_kwh` those no close
has looked at yet; ERE and euros as for a month. `kwh` is the energy of every finished session
delivered in the period. A year without factors has no ERE, a quarter without a price no euros.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from proxy.ere.core.factors import FactorTable, MissingFactorError, ere
from proxy.ere.core.quarters import DUTCH_TIME, Quarter
from proxy.ere.core.rounding import exact, to_cents

__all__ = ["SessionEnergy", "StatedQuarter", "energy_periods"]

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class SessionEnergy:
    ended_at: datetime
    kwh: Decimal
    eligible_kwh: Decimal | None  # None: not assessed; 0: assessed ineligible


@dataclass(frozen=True, slots=True)
class StatedQuarter:
    kwh: Decimal
    ere: Decimal
    eur: Decimal


def _months(year: int) -> Iterable[tuple[str, datetime, datetime]]:
    for month in range(1, 13):
        start = datetime(year, month, 1, tzinfo=DUTCH_TIME)
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=DUTCH_TIME)
        yield f"{year}-{month:02d}", start, end


def _quarters(year: int) -> Iterable[tuple[str, datetime, datetime]]:
    for number in range(1, 5):
        quarter = Quarter(year, number)
        yield str(quarter), quarter.start, quarter.end


def _within(moment: datetime, start: datetime, end: datetime) -> bool:
    return start <= moment < end


def energy_periods(
    year: int,
    period: Literal["month", "quarter"],
    sessions: Sequence[SessionEnergy],
    closed: set[Quarter],
    stated: dict[Quarter, StatedQuarter],
    stated_sessions: Sequence[tuple[datetime, Decimal]],
    factors: FactorTable,
) -> list[dict[str, Any]]:
    """The figures of each month or quarter of `year` (see the module docstring)."""
    try:
        year_factors = factors.for_year(year)
    except MissingFactorError:
        year_factors = None
    figures = []
    for label, start, end in _months(year) if period == "month" else _quarters(year):
        quarter = Quarter.containing(start)
        mine = [s for s in sessions if _within(s.ended_at, start, end)]
        kwh = sum((s.kwh for s in mine), ZERO)
        unassessed = ZERO
        try:
            price: Decimal | None = factors.price_for(quarter).eur_per_ere
        except MissingFactorError:
            price = None
        if quarter in closed and period == "quarter":
            line = stated.get(quarter, StatedQuarter(ZERO, ZERO, ZERO))
            figures.append(
                {
                    "period": label,
                    "quarter": str(quarter),
                    "basis": "stated",
                    "kwh": kwh,
                    "eligible_kwh": line.kwh,
                    "unassessed_kwh": ZERO,
                    "ere": line.ere,
                    "eur_per_ere": price,
                    "eur": line.eur,
                }
            )
            continue
        if quarter in closed:
            eligible = sum((k for at, k in stated_sessions if _within(at, start, end)), ZERO)
        else:
            eligible = sum((s.eligible_kwh or ZERO for s in mine), ZERO)
            unassessed = sum((s.kwh for s in mine if s.eligible_kwh is None), ZERO)
        credits = None if year_factors is None else ere(eligible, year_factors)
        figures.append(
            {
                "period": label,
                "quarter": str(quarter),
                "basis": "stated" if quarter in closed else "estimated",
                "kwh": kwh,
                "eligible_kwh": eligible,
                "unassessed_kwh": unassessed,
                "ere": credits,
                "eur_per_ere": price,
                "eur": None
                if credits is None or price is None
                else to_cents(exact().multiply(credits, price)),
            }
        )
    return figures
