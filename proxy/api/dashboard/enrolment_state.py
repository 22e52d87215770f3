"""Where a customer's enrolment stands on a given day, from their mandates (pure).

A customer is enrolled for a calendar year by that year's mandate (`proxy.api.models.MandateOut`
fields). On `today`: `enrolled` while this year's mandate is in force; `starting` before it
starts; `ending` when it is revoked from a later day on; `ended` once a revocation or its last
day has passed; `none` without a mandate for this year. Next year's mandate, when recorded, is
mentioned, since a customer without one stops counting on 1 January.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

__all__ = ["EnrolmentState", "enrolment_state"]

_TONES = {"enrolled": "good", "starting": "warn", "ending": "warn", "ended": "bad", "none": "bad"}


@dataclass(frozen=True, slots=True)
class EnrolmentState:
    state: str
    text: str
    next_year: bool

    @property
    def tone(self) -> str:
        return _TONES[self.state]


def enrolment_state(mandates: Sequence[Mapping[str, Any]], today: date) -> EnrolmentState:
    """The state of a customer with `mandates` on `today` (see the module docstring)."""
    by_year = {mandate["year"]: mandate for mandate in mandates}
    next_year = today.year + 1 in by_year and by_year[today.year + 1]["revoked_at"] is None
    current = by_year.get(today.year)
    if current is None:
        return EnrolmentState("none", f"No mandate for {today.year}", next_year)
    ends = current["valid_until"]
    if current["revoked_at"] is not None and current["revoked_effective"] is not None:
        ends = min(ends, current["revoked_effective"])
    if today > ends:
        return EnrolmentState("ended", f"Ended {ends.isoformat()}", next_year)
    if today < current["valid_from"]:
        return EnrolmentState(
            "starting", f"Enrolled from {current['valid_from'].isoformat()}", next_year
        )
    if current["revoked_at"] is not None:
        return EnrolmentState("ending", f"Ending {ends.isoformat()}", next_year)
    return EnrolmentState("enrolled", f"Enrolled for {today.year}", next_year)
