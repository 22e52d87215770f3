"""Ending a customer: from a given last day on, none of their mandates covers their connection.

Ending is revocation (`proxy.ere.admin.records.revoke_mandate`), so its rules hold: a mandate is
revoked once, with who, why and through which channel, and never inside a closed quarter (nor
while one is closing). `revocations` plans it, sans-IO: every unrevoked mandate still covering a
day after `last_day` is revoked effective `last_day`, or, for one that starts later (next
year's, already given), effective the day before it starts, so it covers nothing. A session
ending after `last_day` (Dutch time) then has no mandate and stops counting at the next close.
Link periods are left as they are: the chargers' past and present stay known.

`end_customer` runs the plan in one transaction with the customer's row and mandates locked.

Errors: `EndRefused` (an `AdminInputError`) when the customer's state forbids it: nothing covers a
day after `last_day` (ended already), or a mandate was revoked already with a later last day (a
mandate is revoked once, so the end cannot come earlier). Other `AdminInputError`s name the field
(`--effective` for a closed or closing quarter, `customer id` for an unknown customer); the
tables are left as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from proxy.ere.admin.changes import MandateRevocation, parse_reason
from proxy.ere.admin.records import revoke_mandate
from proxy.ere.admin.validation import MIN_YEAR, AdminInputError, clean_text, parse_date
from proxy.store.connection import Connection

__all__ = ["CustomerEnd", "EndRefused", "MandateCover", "end_customer", "revocations"]

_LATEST_YEAR = 2100


class EndRefused(AdminInputError):
    """An end the customer's mandates as recorded forbid (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class CustomerEnd:
    """End `customer_id`: `last_day` is the last day still covered (Dutch date)."""

    customer_id: str
    last_day: date
    reason: str
    reference: str | None

    @classmethod
    def checked(
        cls, customer_id: str, last_day: str, reason: str, reference: str | None
    ) -> CustomerEnd:
        """Validate the end's fields (AdminInputError names `--effective`, `--reason`...)."""
        day = parse_date(last_day, "--effective")
        if not MIN_YEAR <= day.year <= _LATEST_YEAR:
            raise AdminInputError(
                f"--effective: {day} is out of range; give a day in {MIN_YEAR}-{_LATEST_YEAR}"
            )
        return cls(
            customer_id,
            day,
            parse_reason(reason),
            clean_text(reference, "--reference", max_chars=200, required=False),
        )


@dataclass(frozen=True, slots=True)
class MandateCover:
    """What a mandate covers, as recorded: [valid_from, valid_until], revoked after a day."""

    year: int
    valid_from: date
    valid_until: date
    revoked_effective: date | None


def revocations(mandates: Sequence[MandateCover], last_day: date) -> list[tuple[int, date]]:
    """(year, effective) of each revocation that ends the coverage after `last_day`."""
    plan = []
    for mandate in mandates:
        if mandate.revoked_effective is not None:
            covered_until = min(mandate.revoked_effective, mandate.valid_until)
            if covered_until > last_day and covered_until >= mandate.valid_from:
                raise EndRefused(
                    f"--effective: the mandate for {mandate.year} was revoked already and covers up "
                    f"to {covered_until}; a mandate is revoked once, so the end cannot come earlier"
                )
            continue
        if mandate.valid_until > last_day:
            plan.append((mandate.year, max(last_day, mandate.valid_from - timedelta(days=1))))
    if not plan:
        raise EndRefused(
            f"--effective: no mandate of the customer covers a day after {last_day}; "
            "the customer is ended from then already"
        )
    return plan


async def end_customer(
    conn: Connection, end: CustomerEnd, *, channel: str, actor: str
) -> list[dict[str, Any]]:
    """Revoke what `revocations` plans; returns the revoked mandates (module docstring)."""
    async with conn.transaction() as tx:
        ean: str | None = await tx.fetchval(
            "SELECT ean FROM customers WHERE customer_id = $1 FOR UPDATE", end.customer_id
        )
        if ean is None:
            raise AdminInputError(f"customer id: no customer {end.customer_id!r}")
        rows = await tx.fetch(
            "SELECT year, valid_from, valid_until, revoked_effective FROM mandates "
            "WHERE customer_id = $1 ORDER BY year FOR UPDATE",
            end.customer_id,
        )
        plan = revocations([MandateCover(*row) for row in rows], end.last_day)
        revoked = []
        for year, effective in plan:
            revocation = MandateRevocation(ean, year, end.reason, effective, end.reference, None)
            revoked.append(await revoke_mandate(tx, revocation, channel=channel, actor=actor))
    return revoked
