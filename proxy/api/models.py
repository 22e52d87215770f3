"""The partner API's request and response bodies (pydantic, at the edge only).

Requests are strict (a number is not a string), refuse unknown fields and bound every string,
so hostile input is refused cheaply; the domain rules (`proxy.ere.admin.validation`: EAN check
digit, IBAN, postcode, control characters...) are applied after, by `proxy.api.enrolment`.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ConsentIn", "CustomerIn", "CustomerOut", "CustomerPage", "MandateOut"]

# A hard bound on any string a request carries; the domain rules set the real limits.
_MAX = 1000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ConsentIn(_Request):
    """The customer's consent as the partner's sign-up form recorded it (an online checkbox)."""

    text_version: str = Field(max_length=_MAX, description="version of the consent text agreed to")
    accepted_at: str = Field(
        max_length=_MAX,
        description="when the box was ticked, ISO 8601 with a UTC offset",
        examples=["2026-01-05T10:15:00+01:00"],
    )
    user_reference: str = Field(
        max_length=_MAX, description="the partner's reference of the user who ticked it"
    )


class CustomerIn(_Request):
    """Enrolment of one grid connection: the customer and this year's mandate, in one call."""

    name: str = Field(max_length=_MAX)
    email: str = Field(max_length=_MAX)
    address: str = Field(max_length=_MAX)
    postcode: str = Field(max_length=_MAX, examples=["1234 AB"])
    city: str = Field(max_length=_MAX)
    ean: str = Field(max_length=_MAX, description="18 digits with a GS1 check digit")
    grid_operator: str = Field(max_length=_MAX)
    iban: str | None = Field(
        default=None,
        max_length=_MAX,
        description="required when the partner pays customers directly",
    )
    referral_code: str | None = Field(default=None, max_length=_MAX)
    language: Literal["nl", "en"] | None = Field(
        default=None,
        description="of the customer's statements and e-mails; null: your partner account's",
    )
    consent: ConsentIn


class MandateOut(BaseModel):
    year: int
    valid_from: date
    valid_until: date
    channel: str
    consent_text_version: str
    recorded_at: datetime
    revoked_at: datetime | None
    revoked_effective: date | None


class CustomerOut(BaseModel):
    id: str
    name: str
    email: str | None
    address: str
    postcode: str
    city: str
    ean: str
    grid_operator: str
    iban: str | None
    referral_code: str | None = Field(description="the customer's own code, to refer others")
    referred_by: str | None = Field(description="the code the customer was referred with")
    language: Literal["nl", "en"] | None = Field(
        description="of the customer's statements and e-mails; null: your partner account's"
    )
    created_at: datetime
    mandates: list[MandateOut]


class CustomerPage(BaseModel):
    data: list[CustomerOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: last")
