"""Enrolment over the API, sans-IO: a `CustomerIn` body becomes the customer and mandate rows.

The customer's fields follow `proxy.ere.admin.validation` under the API's field names; the
mandate is this year's (Dutch time; `build_mandate`: a given year's, for a renewal), issued on
the day the consent was given, valid from then (or 1 January) to 31 December, with the consent
of the checkbox: given by the customer, at `consent.accepted_at`, method `online-checkbox`, the
partner's user reference and text version.
The mandate rules of `NewMandate` apply (consent not in the future, not after validity starts).

Errors: `AdminInputError` whose message starts with the API's field name (`FIELDS` renames the
domain's command-line names).
"""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Mapping
from datetime import datetime

from proxy.api.models import ConsentIn, CustomerIn
from proxy.ere.admin.new_records import NewCustomer, NewMandate
from proxy.ere.admin.validation import (
    AdminInputError,
    clean_text,
    normalise_ean,
    normalise_email,
    normalise_iban,
    normalise_postcode,
    normalise_referral_code,
    parse_instant,
    required,
)
from proxy.ere.core.quarters import DUTCH_TIME

__all__ = ["FIELDS", "build_enrolment", "build_mandate", "new_customer_id"]

# The domain's field names (command-line flags) as the API names them.
FIELDS = {
    "--ean": "ean",
    "--iban": "iban",
    "--partner": "partner",
    "--referral-code": "referral_code",
    "--consent-by": "name",
    "--consent-at": "consent.accepted_at",
    "--issued-on": "consent.accepted_at",
    "--valid-from": "consent.accepted_at",
    "--year": "consent.accepted_at",
    "--consent-reference": "consent.user_reference",
    "--consent-text-version": "consent.text_version",
}

_ID_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_customer_id() -> str:
    """A fresh customer id for the API's customers: `cus_` and 20 random characters."""
    return "cus_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(20))


def build_enrolment(
    body: CustomerIn, *, partner_id: str, customer_id: str, now: datetime
) -> tuple[NewCustomer, NewMandate]:
    """The customer and mandate rows of an enrolment (AdminInputError names the bad field)."""
    customer = NewCustomer(
        customer_id=customer_id,
        partner_id=partner_id,
        name=required(clean_text(body.name, "name", max_chars=200)),
        address=required(clean_text(body.address, "address", max_chars=200)),
        postcode=normalise_postcode(body.postcode, "postcode"),
        city=required(clean_text(body.city, "city", max_chars=100)),
        ean=normalise_ean(body.ean, "ean"),
        grid_operator=required(clean_text(body.grid_operator, "grid_operator", max_chars=100)),
        iban=None if body.iban is None else normalise_iban(body.iban, "iban"),
        email=normalise_email(body.email, "email"),
        referral_code=None
        if body.referral_code is None
        else normalise_referral_code(body.referral_code, "referral_code"),
        language=body.language,
    )
    year = str(now.astimezone(DUTCH_TIME).year)
    return customer, build_mandate(
        body.consent, ean=customer.ean, name=customer.name, year=year, now=now
    )


def build_mandate(
    consent: ConsentIn,
    *,
    ean: str,
    name: str,
    year: str,
    now: datetime,
    fields: Mapping[str, str] = FIELDS,
) -> NewMandate:
    """The mandate of `year` for `ean`, given by `name` with `consent` (the module docstring's
    rules; AdminInputError names the field as `fields` renames it)."""
    consent_at = parse_instant(consent.accepted_at, "consent.accepted_at")
    args = argparse.Namespace(
        ean=ean,
        year=year,
        issued_on=consent_at.astimezone(DUTCH_TIME).date().isoformat(),
        valid_from=None,
        valid_until=None,
        consent_by=name,
        consent_at=consent.accepted_at,
        consent_method="online-checkbox",
        consent_reference=required(
            clean_text(consent.user_reference, "consent.user_reference", max_chars=500)
        ),
        consent_text_version=consent.text_version,
    )
    try:
        return NewMandate.from_args(args, now=now)
    except AdminInputError as error:
        field, _, what = str(error).partition(": ")
        raise AdminInputError(f"{fields.get(field, field)}: {what}") from None
