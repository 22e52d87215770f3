"""The rows `ere-proxy partners|customers|mandates|links add` write, checked field by field.

`NewPartner`, `NewCustomer`, `NewMandate` and `NewLink` are built from a command's arguments by
`from_args`, with the field rules of `proxy.ere.admin.validation` (see its docstring) and the
rules that tie fields together: a partner-account partner's IBAN and account name, a mandate's
dates inside its year and after its consent, the branding of statements. They read no database
or file; the clock only for what may not lie in the future, unless `now` is given. What needs
the database is checked where the row is written. `--language` (`nl` or `en`,
`statement_language`) sets the language of a partner's or customer's statements; without it a
partner's is Dutch and a customer's their partner's.

Errors: `AdminInputError` naming the first bad field.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from proxy.ere.admin.validation import (
    CONSENT_METHODS,
    PARTNER_KINDS,
    PAYOUT_MODELS,
    AdminInputError,
    choice,
    clean_text,
    normalise_ean,
    normalise_email,
    normalise_iban,
    normalise_postcode,
    normalise_referral_code,
    one_line,
    parse_date,
    parse_instant,
    parse_timestamp,
    parse_watts,
    parse_year,
    required,
    shown,
    validate_charger_identity,
    validate_id,
)
from proxy.ere.core.quarters import DUTCH_TIME
from proxy.ere.core.sepa import MAX_NAME_CHARS, SepaError, sepa_text
from proxy.ere.core.statement_mail import PartnerBranding
from proxy.ere.core.statement_texts import LANGUAGES

__all__ = ["Consent", "NewCustomer", "NewLink", "NewMandate", "NewPartner", "statement_language"]

# a consent timestamp this far ahead of our clock still counts as now
_CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class NewPartner:
    """A partner row, validated."""

    partner_id: str
    name: str
    kind: str
    payout_model: str
    iban: str | None
    account_name: str | None
    branding: PartnerBranding
    language: str = "nl"  # of its customers' statements, unless a customer chose their own

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> NewPartner:
        """Validate `partners add` arguments; AdminInputError names the first bad field."""
        partner_id = validate_id(args.partner_id, "partner id")
        name = required(clean_text(args.name, "--name", max_chars=200))
        kind = choice(args.kind, "--kind", PARTNER_KINDS, "a partner kind")
        model = choice(args.payout_model, "--payout-model", PAYOUT_MODELS, "a payout model")
        iban = None if args.iban is None else normalise_iban(args.iban)
        account_name = clean_text(
            args.account_name, "--account-name", max_chars=200, required=False
        )
        if model == "partner-account" and iban is None:
            raise AdminInputError(
                "--iban: is required for the partner-account payout model (its customers are paid to it)"
            )
        if account_name is not None and iban is None:
            raise AdminInputError(
                "--account-name: needs --iban (it names the holder of that account)"
            )
        if iban is not None:
            account_name = account_name or name
            try:
                latin = sepa_text(account_name, MAX_NAME_CHARS, "account name")
            except SepaError:
                latin = ""
            if not re.search("[A-Za-z]", latin):
                raise AdminInputError(
                    f"--account-name: {shown(account_name)} has no characters a SEPA transfer can carry; "
                    "give the account holder's name in Latin letters"
                )
        display_name = (
            clean_text(args.display_name, "--display-name", max_chars=100, required=False)
            or name[:100]
        )
        footer = (
            clean_text(args.footer, "--footer", max_chars=2000, required=False, multiline=True)
            or ""
        )
        logo_url = clean_text(args.logo_url, "--logo-url", max_chars=2000, required=False)
        colour = {} if args.colour is None else {"colour": args.colour.strip()}
        try:
            PartnerBranding(display_name=display_name, **colour)
        except ValueError as error:
            raise AdminInputError(f"--colour: {one_line(str(error))}") from None
        try:
            branding = PartnerBranding(
                display_name=display_name, logo_url=logo_url, footer_text=footer, **colour
            )
        except ValueError as error:
            raise AdminInputError(f"--logo-url: {one_line(str(error))}") from None
        language = getattr(args, "language", None)
        return cls(
            partner_id,
            name,
            kind,
            model,
            iban,
            account_name,
            branding,
            "nl" if language is None else statement_language(language),
        )


@dataclass(frozen=True, slots=True)
class NewCustomer:
    """A customer row, validated (except what needs the database: the partner, a free EAN)."""

    customer_id: str
    partner_id: str
    name: str
    address: str
    postcode: str
    city: str
    ean: str
    grid_operator: str
    iban: str | None
    email: str | None
    referral_code: str | None = None
    language: str | None = None  # of their statements; None: their partner's

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> NewCustomer:
        """Validate `customers add` arguments; AdminInputError names the first bad field."""
        language = getattr(args, "language", None)
        return cls(
            customer_id=validate_id(args.customer_id, "customer id"),
            partner_id=validate_id(args.partner, "--partner"),
            name=required(clean_text(args.name, "--name", max_chars=200)),
            address=required(clean_text(args.address, "--address", max_chars=200)),
            postcode=normalise_postcode(args.postcode),
            city=required(clean_text(args.city, "--city", max_chars=100)),
            ean=normalise_ean(args.ean),
            grid_operator=required(
                clean_text(args.grid_operator, "--grid-operator", max_chars=100)
            ),
            iban=None if args.iban is None else normalise_iban(args.iban),
            email=None if args.email is None else normalise_email(args.email),
            referral_code=None
            if args.referral_code is None
            else normalise_referral_code(args.referral_code, "--referral-code"),
            language=None if language is None else statement_language(language),
        )


def statement_language(value: str, field: str = "--language") -> str:
    """`nl` or `en`: the language of statements, their e-mails and invoices."""
    return choice(value.strip().lower(), field, LANGUAGES, "a statement language")


@dataclass(frozen=True, slots=True)
class Consent:
    """Who agreed to a mandate, when and how (stored as JSON)."""

    by: str
    at: datetime
    method: str
    reference: str | None = None

    def as_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"by": self.by, "at": self.at.isoformat(), "method": self.method}
        if self.reference is not None:
            record["reference"] = self.reference
        return record


@dataclass(frozen=True, slots=True)
class NewMandate:
    """A mandate row, validated (except what needs the database: the customer, a free year)."""

    ean: str
    year: int
    issued_on: date
    valid_from: date
    valid_until: date
    consent: Consent
    consent_text_version: str
    document_sha256: str | None = None

    @classmethod
    def from_args(
        cls,
        args: argparse.Namespace,
        *,
        now: datetime | None = None,
        document_sha256: str | None = None,
    ) -> NewMandate:
        """Validate `mandates add` arguments against the rules in the module docstring;
        `document_sha256` is the hash of the `--document` the caller read."""
        now = now or datetime.now(DUTCH_TIME)
        today = now.astimezone(DUTCH_TIME).date()
        ean = normalise_ean(args.ean)
        year = parse_year(args.year, today=today)
        if year < today.year:
            raise AdminInputError(
                f"--year: {year} is a past year; a mandate is recorded in or before its own year "
                "(backdating is allowed only within that year)"
            )
        issued_on = parse_date(args.issued_on, "--issued-on")
        first, last = date(year, 1, 1), date(year, 12, 31)
        valid_from = (
            parse_date(args.valid_from, "--valid-from")
            if args.valid_from
            else max(first, issued_on)
        )
        valid_until = parse_date(args.valid_until, "--valid-until") if args.valid_until else last
        for field, day in (("--valid-from", valid_from), ("--valid-until", valid_until)):
            if not first <= day <= last:
                raise AdminInputError(
                    f"{field}: {day} is outside {year}; a mandate covers one calendar year"
                )
        if valid_from > valid_until:
            raise AdminInputError(
                f"--valid-from: {valid_from} is after --valid-until {valid_until}"
            )
        if issued_on > today:
            raise AdminInputError(
                f"--issued-on: {issued_on} is in the future; give the day the mandate was issued"
            )
        if issued_on > valid_from:
            raise AdminInputError(
                f"--issued-on: {issued_on} is after the start of validity {valid_from}; a mandate is not backdated "
                "(let --valid-from start on or after the issue date)"
            )
        consent = Consent(
            by=required(clean_text(args.consent_by, "--consent-by", max_chars=200)),
            at=parse_timestamp(args.consent_at, "--consent-at"),
            method=choice(
                args.consent_method, "--consent-method", CONSENT_METHODS, "a consent method"
            ),
            reference=clean_text(
                args.consent_reference, "--consent-reference", max_chars=500, required=False
            ),
        )
        if consent.at > now + _CLOCK_SKEW:
            raise AdminInputError(f"--consent-at: {consent.at.isoformat()} is in the future")
        if consent.at.astimezone(DUTCH_TIME).date() > valid_from:
            raise AdminInputError(
                f"--consent-at: {consent.at.isoformat()} is after the start of validity {valid_from}; "
                "consent must come first"
            )
        version = clean_text(args.consent_text_version, "--consent-text-version", max_chars=100)
        return cls(
            ean,
            year,
            issued_on,
            valid_from,
            valid_until,
            consent,
            required(version),
            document_sha256,
        )


@dataclass(frozen=True, slots=True)
class NewLink:
    """A charger link row, validated (except the customer's existence)."""

    identity: str
    customer_id: str
    max_power_w: Decimal
    valid_from: datetime | None = None  # None: now

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> NewLink:
        return cls(
            identity=validate_charger_identity(args.identity),
            customer_id=validate_id(args.customer, "--customer"),
            max_power_w=parse_watts(args.max_power_w),
            valid_from=None
            if args.valid_from is None
            else parse_instant(args.valid_from, "--from"),
        )
