"""Checking what an operator types for the ERE domain records, before anything is stored.

`NewPartner`, `NewCustomer`, `NewMandate` and `NewLink` are rows checked field by field from the
arguments of `ere-proxy partners|customers|mandates|links add`; the `validate_*`, `normalise_*`
and `parse_*` functions check one field each and return it in its stored form. They read no
database, file or network; the clock only for what may not lie in the future (a mandate's issue
date and consent, a mandate's year), unless `now` or `today` is given. What needs the database
(a known partner or customer, a free id or EAN, one mandate per EAN per year, a charger linked
once) is checked by `proxy.ere.admin.records` in the transaction that writes.

The rules, field by field:

* ids (partner, customer): 1-64 characters `A-Z a-z 0-9 . _ -`, starting with a letter or digit
  (the tables' CHECK constraints); case matters. Charger identities follow the proxy's
  rule (`proxy.wire.ocpp.identity_problem`: 1-48 characters, no `:` or `/`, no control or
  invisible formatting characters).
* free text (names, address, city, grid operator, consent fields, branding): Unicode NFC,
  surrounding spaces removed, within a length limit, and without control, format (bidi
  overrides, zero-width), private-use, unassigned or line/paragraph separator characters. Only
  the statement footer keeps line breaks. Otherwise text is stored as given: values reach SQL
  only as query parameters, so SQL-looking text is just text.
* IBAN: checked with schwifty (structure, length, check digits), in the SEPA zone, stored
  compact and upper case. A `partner-account` partner needs one; its `--account-name` defaults
  to its name and must keep a Latin letter once reduced to the SEPA character set. A customer of
  a `direct` partner needs one too, since there is no other account to pay them into.
* EAN: `Ean.parse` (18 digits, GS1 check digit; spaces between groups are ignored), one customer
  per EAN.
* postcode: Dutch, `1234 AB` (no leading zero; SA, SD and SS are not issued), stored in that form.
* e-mail: one `@`, a plain local part, a dotted domain of letters, digits and hyphens; the domain
  is stored in lower case.
* mandate: `--year` a plain four-digit year from 2000 to next year (a quarter such as `2026Q3`
  is refused with a hint). `--valid-until` defaults to 31 December, `--valid-from` to 1 January
  or the issue date if that is later. Both lie inside the year, `valid_from <= valid_until`, and
  the issue date is neither after `valid_from` nor in the future: a mandate is given before the
  period it covers, never backdated. The consent record (`--consent-by`, `--consent-at`, an ISO
  8601 timestamp with a UTC offset, `--consent-method`, optional `--consent-reference`) is
  stored as JSON; the consent may not lie in the future or after `valid_from` (Dutch local date).
  The EAN must be a known customer's, and one mandate per EAN per year: a second one is refused
  naming the customer who holds it.
* link: the customer must exist, a charger is linked to one customer at a time (remove the link
  first to move it), and `--max-power-w` is a number of watts above 0 and at most 1 MW.
* branding: `--display-name` (default: the partner's name), `--colour #rrggbb`, `--logo-url
  https://...`, `--footer`, checked by `PartnerBranding` and stored in `partners.branding` as its
  fields (`display_name`, `colour`, `logo_url`, `footer_text`), so `PartnerBranding(**branding)`
  rebuilds it.

Errors: `AdminInputError`, a `ValueError` whose message is one line `<field>: <what is wrong>`
naming the first bad field; the commands print it and exit 2.
"""

from __future__ import annotations

import argparse
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from schwifty import IBAN
from schwifty.exceptions import InvalidStructure, SchwiftyException

from proxy.ere.core.ean import Ean, EanError
from proxy.ere.core.quarters import DUTCH_TIME, Quarter, QuarterFormatError
from proxy.ere.core.sepa import MAX_NAME_CHARS, SepaError, sepa_text
from proxy.ere.core.statement_mail import PartnerBranding
from proxy.routing.registry.errors import InvalidIdentity
from proxy.routing.registry.records import validate_identity

__all__ = [
    "CONSENT_METHODS",
    "MAX_POWER_W",
    "MIN_YEAR",
    "PARTNER_KINDS",
    "PAYOUT_MODELS",
    "REFERRAL_ALPHABET",
    "AdminInputError",
    "Consent",
    "NewCustomer",
    "NewLink",
    "NewMandate",
    "NewPartner",
    "choice",
    "clean_text",
    "normalise_ean",
    "normalise_email",
    "normalise_iban",
    "normalise_postcode",
    "normalise_referral_code",
    "one_line",
    "parse_date",
    "parse_instant",
    "parse_timestamp",
    "parse_watts",
    "parse_year",
    "required",
    "shown",
    "validate_charger_identity",
    "validate_id",
]

PARTNER_KINDS = ("cpo", "installer", "energy-supplier")
PAYOUT_MODELS = ("direct", "partner-account")
CONSENT_METHODS = ("signed-pdf", "online-checkbox", "e-signature", "paper-form")

MIN_YEAR = 2000
MAX_POWER_W = Decimal(1_000_000)
# a consent timestamp this far ahead of our clock still counts as now
_CLOCK_SKEW = timedelta(minutes=5)

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_POSTCODE = re.compile(r"([1-9][0-9]{3}) ?([A-Za-z]{2})")
_UNISSUED_POSTCODE_LETTERS = frozenset({"SA", "SD", "SS"})
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_YEAR = re.compile(r"[0-9]{4}")
_WATTS = re.compile(r"[0-9]{1,7}(?:\.[0-9]{1,3})?")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_SHOWN_CHARS = 40
REFERRAL_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base32
_REFERRAL_CODE = re.compile(f"[{REFERRAL_ALPHABET}]{{8}}")
_CROCKFORD_ALIASES = str.maketrans("ILO", "110")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class AdminInputError(ValueError):
    """Input that cannot be stored; the message names the field and what is wrong (exit code 2)."""


def shown(value: str) -> str:
    """`value` quoted on one line for a message; long input is cut and its length given."""
    if len(value) <= _SHOWN_CHARS:
        return repr(value)
    return f"{value[:_SHOWN_CHARS]!r}... ({len(value)} characters)"


def clean_text(
    value: str | None, field: str, *, max_chars: int, required: bool = True, multiline: bool = False
) -> str | None:
    """Free text: NFC, stripped, within `max_chars`, without control or invisible characters."""
    if value is None:
        if required:
            raise AdminInputError(f"{field}: is required")
        return None
    text = unicodedata.normalize("NFC", value)
    if multiline:
        text = text.replace("\r\n", "\n")
    text = text.strip()
    if len(text) > max_chars:
        raise AdminInputError(
            f"{field}: {shown(value)} is too long; at most {max_chars} characters"
        )
    for character in text:
        if multiline and character == "\n":
            continue
        if unicodedata.category(character) in _REFUSED_CATEGORIES:
            raise AdminInputError(
                f"{field}: {shown(value)} contains the control or invisible character U+{ord(character):04X}"
            )
    if not text:
        if required:
            raise AdminInputError(f"{field}: must not be empty")
        return None
    return text


def validate_id(value: str, field: str) -> str:
    """A partner or customer id, as the tables' CHECK constraints allow it."""
    if not _ID.fullmatch(value):
        raise AdminInputError(
            f"{field}: {shown(value)} is not a valid id; use 1-64 characters A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return value


def choice(value: str, field: str, allowed: Sequence[str], what: str) -> str:
    """`value` if it is one of `allowed` (`what` names the kind of value in the message)."""
    if value not in allowed:
        raise AdminInputError(
            f"{field}: {shown(value)} is not {what}; use one of {', '.join(allowed)}"
        )
    return value


def normalise_iban(value: str, field: str = "--iban") -> str:
    """A valid IBAN in the SEPA zone, compact and upper case (schwifty checks it)."""
    if len(value) > 64:
        raise AdminInputError(
            f"{field}: {shown(value)} is not an IBAN; an IBAN has at most 34 characters"
        )
    try:
        iban = IBAN(value)
    except InvalidStructure:
        raise AdminInputError(
            f"{field}: {shown(value)} is not an IBAN; it has characters or a layout no IBAN has"
        ) from None
    except SchwiftyException as error:
        raise AdminInputError(
            f"{field}: {shown(value)} is not a valid IBAN ({str(error).lower()})"
        ) from None
    if not iban.in_sepa_zone:
        raise AdminInputError(
            f"{field}: IBAN {iban.compact} is outside the SEPA zone; payouts are SEPA transfers"
        )
    return str(iban.compact)


def normalise_ean(value: str, field: str = "--ean") -> str:
    """The 18 digits of a valid EAN (`Ean.parse`: spaces between groups are ignored)."""
    if len(value) > 64:
        raise AdminInputError(f"{field}: {shown(value)} is not an EAN; an EAN has 18 digits")
    try:
        return str(Ean.parse(value))
    except EanError as error:
        raise AdminInputError(f"{field}: {error}") from None


def normalise_postcode(value: str, field: str = "--postcode") -> str:
    """A Dutch postcode as `1234 AB`."""
    match = _POSTCODE.fullmatch(value.strip())
    if match is None:
        raise AdminInputError(
            f"{field}: {shown(value)} is not a Dutch postcode; write it like 1234 AB"
        )
    letters = match[2].upper()
    if letters in _UNISSUED_POSTCODE_LETTERS:
        raise AdminInputError(
            f"{field}: {shown(value)} is not a Dutch postcode; the letters {letters} are never issued"
        )
    return f"{match[1]} {letters}"


def normalise_email(value: str, field: str = "--email") -> str:
    """A plain `local@domain.tld` address with the domain in lower case."""
    text = value.strip()
    local, at, domain = text.rpartition("@")
    labels = domain.split(".")
    if (
        not at
        or len(text) > 254
        or len(local) > 64
        or not _EMAIL_LOCAL.fullmatch(local)
        or len(labels) < 2
        or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise AdminInputError(
            f"{field}: {shown(value)} is not an e-mail address like name@example.nl"
        )
    return f"{local}@{domain.lower()}"


def parse_year(value: str, field: str = "--year", *, today: date | None = None) -> int:
    """A mandate year: four digits, from 2000 to next year; a quarter gets a hint."""
    text = value.strip()
    if not _YEAR.fullmatch(text):
        if "q" in text.lower():
            try:
                quarter = Quarter.parse(text)
            except QuarterFormatError as error:
                raise AdminInputError(
                    f"{field}: {error}; and a mandate covers a whole calendar year: give the year alone, like 2026"
                ) from None
            raise AdminInputError(
                f"{field}: {quarter} is a quarter; a mandate covers a whole calendar year: give {quarter.year}"
            )
        raise AdminInputError(f"{field}: {shown(value)} is not a year; give four digits, like 2026")
    year = int(text)
    latest = (today or date.today()).year + 1
    if not MIN_YEAR <= year <= latest:
        raise AdminInputError(
            f"{field}: {year} is out of range; mandates are for {MIN_YEAR} to {latest}"
        )
    return year


def parse_date(value: str, field: str) -> date:
    """An ISO date `YYYY-MM-DD`."""
    text = value.strip()
    try:
        if not _ISO_DATE.fullmatch(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise AdminInputError(
            f"{field}: {shown(value)} is not a date; write it as YYYY-MM-DD"
        ) from None


def parse_timestamp(value: str, field: str) -> datetime:
    """An ISO 8601 timestamp with a UTC offset (`2026-01-05T10:15:00+01:00` or `...Z`)."""
    text = value.strip()
    try:
        if len(text) > 40 or not _ISO_DATE.match(text) or "T" not in text.upper():
            raise ValueError
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise AdminInputError(
            f"{field}: {shown(value)} is not an ISO 8601 timestamp like 2026-01-05T10:15:00+01:00"
        ) from None
    if moment.utcoffset() is None:
        raise AdminInputError(
            f"{field}: {shown(value)} has no UTC offset; add one, like +01:00 or Z"
        )
    return moment


def parse_instant(value: str, field: str) -> datetime:
    """When a change takes effect: an ISO 8601 timestamp with a UTC offset, in 2000-2100."""
    moment = parse_timestamp(value, field)
    if not MIN_YEAR <= moment.year <= 2100:
        raise AdminInputError(f"{field}: {shown(value)} is out of range; give a time in 2000-2100")
    return moment


def parse_watts(value: str, field: str = "--max-power-w") -> Decimal:
    """A power in watts, above 0 and at most 1 MW, with at most 3 decimals."""
    text = value.strip()
    try:
        if not _WATTS.fullmatch(text):
            raise InvalidOperation
        watts = Decimal(text)
    except InvalidOperation:
        raise AdminInputError(
            f"{field}: {shown(value)} is not a number of watts, like 11000"
        ) from None
    if not 0 < watts <= MAX_POWER_W:
        raise AdminInputError(
            f"{field}: {text} W is out of range; give more than 0 and at most {MAX_POWER_W} W"
        )
    return watts


def validate_charger_identity(value: str, field: str = "identity") -> str:
    """A charger identity as OCPP allows it in a URL (the registry's rule)."""
    try:
        return validate_identity(value)
    except InvalidIdentity as error:
        raise AdminInputError(f"{field}: {shown(value)}: {error}") from None


def normalise_referral_code(value: str, field: str = "--code") -> str:
    """A referral code: 8 characters of Crockford's base32, stored in upper case.

    Read the way Crockford's alphabet intends: case, spaces and hyphens do not matter, and I, L
    and O are read as 1, 1 and 0."""
    text = value.strip().upper().replace("-", "").replace(" ", "")
    text = text.translate(_CROCKFORD_ALIASES)
    if len(value) > 64 or not _REFERRAL_CODE.fullmatch(text):
        raise AdminInputError(
            f"{field}: {shown(value)} is not a referral code; a code has 8 characters like 7K3M-Q9XD"
        )
    return text


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
        return cls(partner_id, name, kind, model, iban, account_name, branding)


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

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> NewCustomer:
        """Validate `customers add` arguments; AdminInputError names the first bad field."""
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
        )


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


def required(value: str | None) -> str:
    """The value of `clean_text(..., required=True)`, which is never None."""
    assert value is not None
    return value


def one_line(text: str) -> str:
    """`text` on one line: control characters and line breaks become spaces, runs of spaces one."""
    return " ".join(_UNPRINTABLE.sub(" ", text).split())
