"""Checking what an operator types for the ERE domain records, before anything is stored.

The `validate_*`, `normalise_*` and `parse_*` functions check one field each and return it in its
stored form; `proxy.ere.admin.new_records` builds the rows of `ere-proxy
partners|customers|mandates|links add` from them, by the rules below. They read no
database, file or network; the clock only for what may not lie in the future (a mandate's issue
date and consent, a mandate's year), unless `now` or `today` is given. What needs the database
(a known partner or customer, a free id or EAN, one mandate per EAN per year, a charger's open
period, a known referral code) is checked in the transaction that writes. `clean_text`,
`required`, `choice` and `shown` are the building blocks `proxy.ere.admin.changes` shares.

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
  is refused with a hint), and not before this year: a mandate is never recorded for a past
  year. `--valid-until` defaults to 31 December, `--valid-from` to 1 January or the issue date if
  that is later. Both lie inside the year, `valid_from <= valid_until`, and the issue date is
  neither after `valid_from` nor in the future: a mandate is given before the period it covers.
  It may be recorded later, within its year (the database marks it `backdated`). The consent
  record (`--consent-by`, `--consent-at`, an ISO 8601 timestamp with a UTC offset,
  `--consent-method`, optional `--consent-reference`) is stored as JSON; the consent may not lie
  in the future or after `valid_from` (Dutch local date). `--consent-text-version` (1-100
  characters of plain text) names the text agreed to. The EAN must be a known customer's, and
  one mandate per EAN per year: a second one is refused naming the customer who holds it.
* link: the customer must exist, `--max-power-w` is a number of watts above 0 and at most 1 MW,
  `--from` an ISO 8601 timestamp with a UTC offset in 2000-2100 (`parse_instant`). Periods and
  their overlap are checked by `proxy.ere.admin.link_periods`.
* referral code: 8 characters of Crockford's base32 (`REFERRAL_ALPHABET`); case, hyphens and
  spaces are ignored and I, L, O read as 1, 1, 0.
* branding: `--display-name` (default: the partner's name), `--colour #rrggbb`, `--logo-url
  https://...`, `--footer`, checked by `PartnerBranding` and stored in `partners.branding` as its
  fields (`display_name`, `colour`, `logo_url`, `footer_text`, and the sender, statement texts
  and remittance choice `partners brand` sets: `proxy.ere.admin.partner_branding`), so
  `PartnerBranding(**branding)` rebuilds it. `--language` is `nl` or `en`.

Errors: `AdminInputError`, a `ValueError` whose message is one line `<field>: <what is wrong>`
naming the first bad field; the commands print it and exit 2.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

from schwifty import IBAN
from schwifty.exceptions import InvalidStructure, SchwiftyException

from proxy.ere.core.ean import Ean, EanError
from proxy.ere.core.email_address import is_plain_address
from proxy.ere.core.quarters import Quarter, QuarterFormatError
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

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_POSTCODE = re.compile(r"([1-9][0-9]{3}) ?([A-Za-z]{2})")
_UNISSUED_POSTCODE_LETTERS = frozenset({"SA", "SD", "SS"})
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
    if not is_plain_address(text):
        raise AdminInputError(
            f"{field}: {shown(value)} is not an e-mail address like name@example.nl"
        )
    local, _, domain = text.rpartition("@")
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


def required(value: str | None) -> str:
    """The value of `clean_text(..., required=True)`, which is never None."""
    assert value is not None
    return value


def one_line(text: str) -> str:
    """`text` on one line: control characters and line breaks become spaces, runs of spaces one."""
    return " ".join(_UNPRINTABLE.sub(" ", text).split())
