"""Request bodies that change a customer: new details, an end, next year's mandate (pydantic,
at the edge only).

Strict and bounded like `proxy.api.models`; the domain's rules (`proxy.ere.admin.customer_details`,
`proxy.ere.admin.customer_end`, the mandate rules of enrolment) apply after. The EAN is named in
`CustomerPatch` only to refuse it with a reason: a new grid connection is a new enrolment.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from proxy.api.models import ConsentIn

__all__ = ["CustomerEndIn", "CustomerPatch", "MandateIn"]

_MAX = 1000
_NEW_ENROLMENT = (
    "cannot change: a new grid connection is a new enrolment (POST /v1/customers); "
    "end this customer from the day the connection changes hands"
)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class CustomerPatch(_Request):
    """The details to change; a field left out stays as it is. Only `iban` (and only for a
    customer your partner account is paid for) and `language` can be removed (null)."""

    name: str | None = Field(default=None, max_length=_MAX)
    email: str | None = Field(default=None, max_length=_MAX)
    address: str | None = Field(default=None, max_length=_MAX)
    postcode: str | None = Field(default=None, max_length=_MAX, examples=["1234 AB"])
    city: str | None = Field(default=None, max_length=_MAX)
    iban: str | None = Field(
        default=None,
        max_length=_MAX,
        description="the account payouts go to from the next payout run on",
    )
    language: Literal["nl", "en"] | None = Field(
        default=None,
        description="of the customer's statements and e-mails; null: your partner account's",
    )
    ean: str | None = Field(
        default=None, max_length=_MAX, description=f"never accepted: it {_NEW_ENROLMENT}"
    )

    @field_validator("ean", mode="before")
    @classmethod
    def _ean_is_fixed(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(_NEW_ENROLMENT)

    def details(self) -> dict[str, str | None]:
        """The fields the request names (EAN aside), with their values."""
        return {name: getattr(self, name) for name in sorted(self.model_fields_set - {"ean"})}


class CustomerEndIn(_Request):
    """End the customer: their mandates cover no day after `effective`."""

    effective: str = Field(
        max_length=_MAX,
        description="the last day still covered, YYYY-MM-DD (Dutch date): sessions ending after "
        "it no longer count. Never inside a closed quarter.",
        examples=["2026-09-30"],
    )
    reason: str = Field(max_length=_MAX, description="why, as the customer said it (≤ 500)")
    reference: str | None = Field(
        default=None, max_length=_MAX, description="your reference of the cancellation (≤ 200)"
    )


class MandateIn(_Request):
    """A mandate for another calendar year (a renewal), with the consent your form collected."""

    year: int = Field(ge=2000, le=2100, description="this year or next", examples=[2027])
    consent: ConsentIn
