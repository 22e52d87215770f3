"""`/dashboard/earnings`: one quarter's kWh, ERE, value, fee and net, month by month and per
customer, with charts.

The figures are `EnergyData.partner_quarter`'s: per customer, stated once the quarter is closed
(its statement lines: kWh, ERE, gross, fee, net) and estimated while it is open (sessions the
latest assessments call eligible; no fee or net yet). The partner's months and totals are the
sums of its customers' figures. Charts (`proxy.api.dashboard.charts`): eligible kWh and ERE by
month, and per customer the net (closed) or estimated value (open), the `TOP_CUSTOMERS` largest;
the table lists every customer.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import HTMLResponse

from proxy.api.dashboard.auth import Member, member
from proxy.api.dashboard.charts import bar_chart, series_json
from proxy.api.dashboard.layout import page
from proxy.api.dashboard.page_route import PageRoute
from proxy.api.problems import Problem
from proxy.ere.core.quarters import DUTCH_TIME, Quarter, QuarterFormatError

__all__ = ["TOP_CUSTOMERS", "router"]

TOP_CUSTOMERS = 12
_QUARTERS_OFFERED = 8
_FIGURES = ("kwh", "eligible_kwh", "unassessed_kwh", "ere", "eur")

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _sum(values: Iterable[Decimal | None]) -> Decimal | None:
    """The sum, or None if any value is unknown (a year without factors, say)."""
    total = Decimal(0)
    for value in values:
        if value is None:
            return None
        total += value
    return total


def _chart(title: str, unit: str, series: list[tuple[str, Decimal | None]]) -> dict[str, Any]:
    drawn = [(label, value or Decimal(0)) for label, value in series]
    return {
        "title": title,
        "unit": unit,
        "series": series,
        "data": series_json(series),
        "geometry": bar_chart(drawn),
    }


def _recent_quarters(now: datetime) -> list[Quarter]:
    quarter = Quarter.containing(now)
    offered = [quarter]
    for _ in range(_QUARTERS_OFFERED - 1):
        quarter = quarter.previous()
        offered.append(quarter)
    return offered


@router.get("/dashboard/earnings")
async def earnings(
    who: Annotated[Member, Depends(member)],
    quarter: Annotated[str | None, Query(max_length=16)] = None,
) -> HTMLResponse:
    who.require("sessions:read")
    now = datetime.now(DUTCH_TIME)
    try:
        chosen = Quarter.containing(now) if quarter is None else Quarter.parse(quarter)
    except QuarterFormatError:
        raise Problem(400, "write the quarter like 2026Q2") from None
    figures = await who.data.energy.partner_quarter(chosen)
    customers = figures["customers"]
    first = 3 * chosen.number - 2
    labels = [f"{chosen.year}-{month:02d}" for month in range(first, first + 3)]
    months: list[dict[str, Any]] = [
        {"period": label}
        | {name: _sum(c["months"][index][name] for c in customers) for name in _FIGURES}
        for index, label in enumerate(labels)
    ]
    closed = figures["closed"]
    rows = [
        {
            "customer_id": c["customer_id"],
            "name": c["name"],
            "kwh": c["quarter"]["kwh"],
            "eligible_kwh": c["quarter"]["eligible_kwh"],
            "ere": c["quarter"]["ere"],
            "eur": c["quarter"]["eur"],
            "fee": c["fee"],
            "net": c["net"],
        }
        for c in customers
    ]
    totals = {name: _sum(row[name] for row in rows) for name in ("kwh", "eligible_kwh", "ere")}
    totals |= {name: _sum(row[name] for row in rows) for name in ("eur", "fee", "net")}
    value_of = "net" if closed else "eur"
    ranked = sorted(rows, key=lambda row: row[value_of] or Decimal(0), reverse=True)
    charts = [
        _chart("Eligible kWh by month", "kWh", [(m["period"], m["eligible_kwh"]) for m in months]),
        _chart("ERE by month", "ERE", [(m["period"], m["ere"]) for m in months]),
        _chart(
            "Net per customer (€)" if closed else "Estimated value per customer (€)",
            "€",
            [(row["name"], row[value_of]) for row in ranked[:TOP_CUSTOMERS]],
        ),
    ]
    return await page(
        who,
        "earnings.html",
        "earnings",
        title=f"Earnings {chosen}",
        quarter=str(chosen),
        offered=[str(q) for q in _recent_quarters(now)],
        closed=closed,
        months=months,
        rows=rows,
        totals=totals,
        charts=charts,
    )
