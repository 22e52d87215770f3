"""`/v1/customers/{id}/energy`: a customer's kWh, eligible kWh, ERE and euros per month or
quarter of a year, stated for closed quarters and estimated for open ones
(`proxy.api.energy_figures`). Needs `sessions:read`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from proxy.api.dependencies import partner_data
from proxy.api.partner_data import PartnerData
from proxy.api.problems import PROBLEM_JSON
from proxy.api.session_models import EnergyOut

__all__ = ["router"]

_PROBLEM = {"content": {PROBLEM_JSON: {}}, "description": "problem details (RFC 9457)"}
_ERRORS: dict[int | str, dict[str, Any]] = {status: _PROBLEM for status in (401, 403, 404, 422)}

router = APIRouter(prefix="/v1/customers", tags=["customers"], responses=_ERRORS)


@router.get("/{customer_id}/energy", response_model=EnergyOut)
async def customer_energy(
    customer_id: Annotated[str, Path(max_length=64)],
    data: Annotated[PartnerData, Depends(partner_data("sessions:read"))],
    year: Annotated[int, Query(ge=2000, le=2100)],
    period: Literal["month", "quarter"] = "quarter",
) -> dict[str, Any]:
    """What the customer's charging earned: per period the energy delivered, the eligible
    energy, ERE (rounded to 0.01, half up) and euros at the quarter's price, before the fee.
    `basis` says whether a period's figures are stated (closed quarter) or estimated."""
    return await data.energy.customer_energy(customer_id, year, period)
