"""Response bodies of `/v1/sessions` and `/v1/customers/{id}/energy` (pydantic, at the edge).

Energy, ERE and euros are decimal strings, exact as the books hold them.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["EligibilityOut", "EnergyOut", "PeriodOut", "SessionOut", "SessionPage", "StatedOut"]


class EligibilityOut(BaseModel):
    """The latest assessment of the session, by the latest close that looked at it."""

    status: Literal["eligible", "ineligible"]
    reason: str
    detail: str
    kwh: Decimal = Field(description="the kWh the assessment counts")
    quarter: str = Field(description="the quarter whose close assessed it")
    assessed_at: datetime


class StatedOut(BaseModel):
    """A statement line that counted the session, and the kWh it counted for it."""

    quarter: str = Field(description="the close that stated it")
    revision: int
    close_state: Literal["closing", "closed", "reopened"]
    kind: Literal["regular", "adjustment"]
    delivery_quarter: str
    kwh: Decimal


class SessionOut(BaseModel):
    id: int
    charger: str = Field(description="the charger's identity")
    transaction_id: str | None = Field(
        description="the charger's OCPP transaction id; null for a session another source "
        "supplied (OCPI, a push, a CSV import)"
    )
    connector_id: int | None
    evse_id: int | None
    status: Literal["active", "completed", "orphaned", "rejected"]
    started_at: datetime | None
    ended_at: datetime | None = Field(description="stop time (an orphan: its last reading)")
    energy_kwh: Decimal | None
    energy_source: str | None
    meter_class: str = Field(
        description="meter evidence: signed-verified, signed-unverified, declared or unknown"
    )
    customer_id: str = Field(description="your customer the charger was linked to at the end")
    quarter: str | None = Field(
        description="delivery quarter: the one its end falls in (Dutch time)"
    )
    eligibility: EligibilityOut | None = Field(description="null: no close has assessed it yet")
    statement_lines: list[StatedOut]


class SessionPage(BaseModel):
    data: list[SessionOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: last")


class PeriodOut(BaseModel):
    period: str = Field(description="`2026-04` (month) or `2026Q2` (quarter)")
    quarter: str
    basis: Literal["stated", "estimated"] = Field(
        description="stated: the quarter is closed and the figures are its statement lines'; "
        "estimated: the quarter is open and the figures come from the latest assessments"
    )
    kwh: Decimal = Field(description="energy of every finished session delivered in the period")
    eligible_kwh: Decimal
    unassessed_kwh: Decimal = Field(description="energy no close has assessed yet (estimated)")
    ere: Decimal | None = Field(description="null: the year has no ERE factors yet")
    eur_per_ere: Decimal | None = Field(description="null: the quarter has no price yet")
    eur: Decimal | None = Field(description="gross, before the fee; null without a price")


class EnergyOut(BaseModel):
    customer_id: str
    year: int
    period: Literal["month", "quarter"]
    periods: list[PeriodOut]
