"""Request and response bodies of `/v1/scans` (pydantic, at the edge only).

Requests are strict and bounded like `proxy.api.models`: at most `MAX_CHARGERS` chargers a
scan, every string within a hard bound; the domain rules (an OCPP identity, text without
control characters, the real lengths) apply after, in `proxy.api.scan_data`. kWh and euros are
decimal strings.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from proxy.ere.core.mid_scan import KwhBasis, ScanReason, Verdict

__all__ = [
    "MAX_CHARGERS",
    "ScanChargerIn",
    "ScanIn",
    "ScanItemOut",
    "ScanOut",
    "ScanPage",
    "ScanSummaryOut",
    "ScanTotalsOut",
    "VerdictTotalOut",
]

MAX_CHARGERS = 10_000
MAX_KWH_PER_YEAR = 1_000_000
_MAX = 1000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ScanChargerIn(_Request):
    """One charger of the portfolio: the identity of one the proxy has seen for you, or what
    you know of one not yet connected (or both). Every field is optional."""

    identity: str | None = Field(
        default=None,
        max_length=_MAX,
        description="OCPP identity of a charger you registered or linked to a customer",
    )
    vendor: str | None = Field(default=None, max_length=_MAX, description="charger vendor")
    model: str | None = Field(default=None, max_length=_MAX, description="charger model")
    meter_type: str | None = Field(
        default=None,
        max_length=_MAX,
        description="the built-in meter's model, as on its type plate",
        examples=["Iskra WM3M4C"],
    )
    meter_serial: str | None = Field(default=None, max_length=_MAX)
    firmware: str | None = Field(default=None, max_length=_MAX)
    declared_kwh_per_year: int | None = Field(
        default=None,
        ge=0,
        le=MAX_KWH_PER_YEAR,
        description="kWh charged a year, for the estimate when the proxy has not observed "
        "the charger for 30 days",
    )


class ScanIn(_Request):
    """A portfolio to scan."""

    chargers: list[ScanChargerIn] = Field(min_length=1, max_length=MAX_CHARGERS)


class ScanChargerOut(BaseModel):
    """A charger as the request gave it."""

    identity: str | None
    vendor: str | None
    model: str | None
    meter_type: str | None
    meter_serial: str | None
    firmware: str | None
    declared_kwh_per_year: int | None


class ScanItemOut(BaseModel):
    position: int = Field(description="the charger's place in the request, from 0")
    input: ScanChargerOut
    seen: bool = Field(description="the proxy has recorded this charger as yours")
    verdict: Verdict
    reason_code: ScanReason
    reason: str = Field(description="why, and what would change the verdict")
    kwh_basis: KwhBasis = Field(
        description="observed: the last 365 days the proxy saw; observed-annualised: fewer "
        "days (at least 30) scaled to a year; declared: your declared_kwh_per_year; none: no "
        "figure (estimate 0)"
    )
    observed_kwh: Decimal | None = Field(description="energy of the observed days")
    observed_days: int | None = Field(description="days observed (at most 365)")
    kwh_per_year: Decimal
    eur_per_year: Decimal = Field(
        description="kwh_per_year × price_per_kwh, to the cent; for a charger that does not "
        "qualify, what it would earn once it does"
    )


class VerdictTotalOut(BaseModel):
    chargers: int
    kwh_per_year: Decimal
    eur_per_year: Decimal


class ScanTotalsOut(BaseModel):
    chargers: int
    qualifies: VerdictTotalOut
    needs_check: VerdictTotalOut
    does_not_qualify: VerdictTotalOut


class ScanSummaryOut(BaseModel):
    id: str
    created_at: datetime
    price_per_kwh: Decimal = Field(description="euros per kWh the estimates use")
    totals: ScanTotalsOut


class ScanOut(ScanSummaryOut):
    """A scan report: totals, and per charger the verdict, the reason and the estimate."""

    items: list[ScanItemOut]


class ScanPage(BaseModel):
    data: list[ScanSummaryOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: last")
