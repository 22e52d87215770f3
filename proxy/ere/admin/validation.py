"""`ere-proxy partners|customers|mandates|links`: the ERE domain records, managed from the shell.

Until partners enrol customers over the API, operators keep these tables with the commands below:

* `partners add|list|show`: CPOs, installers and energy suppliers, their payout model (`direct`:
  each customer is paid to their own IBAN; `partner-account`: one transfer to the partner's
  IBAN) and the branding of their white-label statements.
* `customers add|list|show`: the holder of one grid connection (EAN) and where they are paid.
* `mandates add|list`: the machtiging per EAN per calendar year, with its consent record.
* `links add|list|remove`: which customer's connection a charger charges on; `list` shows the
  meter class session capture gave the charger and the meter its last boot reported.

Every input is checked before anything is written, and every command writes in one transaction,
so bad input leaves the tables as they were. The rules, field by field:

* ids (partner, customer): 1-64 characters `A-Z a-z 0-9 . _ -`, starting with a letter or digit
  (the tables' CHECK constraints); case matters. Charger identities follow OCPP (1-48
  characters, no `:`, no control characters).
* free text (names, address, city, grid operator, consent fields, branding): Unicode NFC,
  surrounding spaces removed, within a length limit, and without control, format (bidi
  overrides, zero-width), private-use, unassigned or line/paragraph separator characters. Only
  the statement footer keeps line breaks. Otherwise text is stored as given: values reach SQL
  only as query parameters, so SQL-looking text is just text. Tables print stored control
  characters as `?` (and line breaks as `\\n`), whoever wrote them.
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

Errors: bad input, duplicates and unknown records print one line `ere-proxy: <field>: <what is
wrong>` and exit 2; a constraint violation that slips past these checks (a concurrent writer)
becomes the same kind of message and exit code. A database that cannot be reached or fails
otherwise exits 1. Exit 0 means done.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TextIO

import asyncpg
from schwifty import IBAN
from schwifty.exceptions import InvalidStructure, SchwiftyException

from proxy.config import Config
from proxy.ere.core.ean import Ean, EanError
from proxy.ere.core.quarters import DUTCH_TIME, Quarter, QuarterFormatError
from proxy.ere.core.sepa import MAX_NAME_CHARS, SepaError, sepa_text
from proxy.ere.core.statement_mail import PartnerBranding
from proxy.registry import InvalidIdentity, validate_identity
from proxy.store.connection import Connection
from proxy.store.db import DATABASE_ERRORS, open_database

__all__ = [
    "CONSENT_METHODS",
    "PARTNER_KINDS",
    "PAYOUT_MODELS",
    "AdminInputError",
    "NewCustomer",
    "NewLink",
    "NewMandate",
    "NewPartner",
    "add_ere_admin_parsers",
    "ere_admin_command",
]

EXIT_OK, EXIT_STORE, EXIT_INPUT = 0, 1, 2

PARTNER_KINDS = ("cpo", "installer", "energy-supplier")
PAYOUT_MODELS = ("direct", "partner-account")
CONSENT_METHODS = ("signed-pdf", "online-checkbox", "e-signature", "paper-form")

MIN_YEAR = 2000
MAX_POWER_W = Decimal(1_000_000)
_CLOCK_SKEW = timedelta(minutes=5)  # a consent timestamp this far ahead of our clock still counts as now

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
_PRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class AdminInputError(ValueError):
    """Input that cannot be stored; the message names the field and what is wrong (exit code 2)."""


# --- validation (pure) ---------------------------------------------------------------------------


def _shown(value: str) -> str:
    """`value` quoted on one line for a message; long input is cut and its length given."""
    if len(value) <= _SHOWN_CHARS:
        return repr(value)
    return f"{value[:_SHOWN_CHARS]!r}... ({len(value)} characters)"


def _text(
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
        raise AdminInputError(f"{field}: {_shown(value)} is too long; at most {max_chars} characters")
    for character in text:
        if multiline and character == "\n":
            continue
        if unicodedata.category(character) in _REFUSED_CATEGORIES:
            raise AdminInputError(
                f"{field}: {_shown(value)} contains the control or invisible character U+{ord(character):04X}"
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
            f"{field}: {_shown(value)} is not a valid id; use 1-64 characters A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return value


def _choice(value: str, field: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise AdminInputError(f"{field}: {_shown(value)} is not {what}; use one of {', '.join(allowed)}")
    return value


def normalise_iban(value: str, field: str = "--iban") -> str:
    """A valid IBAN in the SEPA zone, compact and upper case (schwifty checks it)."""
    if len(value) > 64:
        raise AdminInputError(f"{field}: {_shown(value)} is not an IBAN; an IBAN has at most 34 characters")
    try:
        iban = IBAN(value)
    except InvalidStructure:
        raise AdminInputError(
            f"{field}: {_shown(value)} is not an IBAN; it has characters or a layout no IBAN has"
        ) from None
    except SchwiftyException as error:
        raise AdminInputError(f"{field}: {_shown(value)} is not a valid IBAN ({str(error).lower()})") from None
    if not iban.in_sepa_zone:
        raise AdminInputError(f"{field}: IBAN {iban.compact} is outside the SEPA zone; payouts are SEPA transfers")
    return str(iban.compact)


def normalise_ean(value: str, field: str = "--ean") -> str:
    """The 18 digits of a valid EAN (`Ean.parse`: spaces between groups are ignored)."""
    if len(value) > 64:
        raise AdminInputError(f"{field}: {_shown(value)} is not an EAN; an EAN has 18 digits")
    try:
        return str(Ean.parse(value))
    except EanError as error:
        raise AdminInputError(f"{field}: {error}") from None


def normalise_postcode(value: str, field: str = "--postcode") -> str:
    """A Dutch postcode as `1234 AB`."""
    match = _POSTCODE.fullmatch(value.strip())
    if match is None:
        raise AdminInputError(f"{field}: {_shown(value)} is not a Dutch postcode; write it like 1234 AB")
    letters = match[2].upper()
    if letters in _UNISSUED_POSTCODE_LETTERS:
        raise AdminInputError(
            f"{field}: {_shown(value)} is not a Dutch postcode; the letters {letters} are never issued"
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
        raise AdminInputError(f"{field}: {_shown(value)} is not an e-mail address like name@example.nl")
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
        raise AdminInputError(f"{field}: {_shown(value)} is not a year; give four digits, like 2026")
    year = int(text)
    latest = (today or date.today()).year + 1
    if not MIN_YEAR <= year <= latest:
        raise AdminInputError(f"{field}: {year} is out of range; mandates are for {MIN_YEAR} to {latest}")
    return year


def parse_date(value: str, field: str) -> date:
    """An ISO date `YYYY-MM-DD`."""
    text = value.strip()
    try:
        if not _ISO_DATE.fullmatch(text):
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise AdminInputError(f"{field}: {_shown(value)} is not a date; write it as YYYY-MM-DD") from None


def parse_timestamp(value: str, field: str) -> datetime:
    """An ISO 8601 timestamp with a UTC offset (`2026-01-05T10:15:00+01:00` or `...Z`)."""
    text = value.strip()
    try:
        if len(text) > 40 or not _ISO_DATE.match(text) or "T" not in text.upper():
            raise ValueError
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise AdminInputError(
            f"{field}: {_shown(value)} is not an ISO 8601 timestamp like 2026-01-05T10:15:00+01:00"
        ) from None
    if moment.utcoffset() is None:
        raise AdminInputError(f"{field}: {_shown(value)} has no UTC offset; add one, like +01:00 or Z")
    return moment


def parse_watts(value: str, field: str = "--max-power-w") -> Decimal:
    """A power in watts, above 0 and at most 1 MW, with at most 3 decimals."""
    text = value.strip()
    try:
        if not _WATTS.fullmatch(text):
            raise InvalidOperation
        watts = Decimal(text)
    except InvalidOperation:
        raise AdminInputError(f"{field}: {_shown(value)} is not a number of watts, like 11000") from None
    if not 0 < watts <= MAX_POWER_W:
        raise AdminInputError(f"{field}: {text} W is out of range; give more than 0 and at most {MAX_POWER_W} W")
    return watts


def validate_charger_identity(value: str, field: str = "identity") -> str:
    """A charger identity as OCPP allows it in a URL (the registry's rule)."""
    try:
        return validate_identity(value)
    except InvalidIdentity as error:
        raise AdminInputError(f"{field}: {_shown(value)}: {error}") from None


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
        name = _req(_text(args.name, "--name", max_chars=200))
        kind = _choice(args.kind, "--kind", PARTNER_KINDS, "a partner kind")
        model = _choice(args.payout_model, "--payout-model", PAYOUT_MODELS, "a payout model")
        iban = None if args.iban is None else normalise_iban(args.iban)
        account_name = _text(args.account_name, "--account-name", max_chars=200, required=False)
        if model == "partner-account" and iban is None:
            raise AdminInputError(
                "--iban: is required for the partner-account payout model (its customers are paid to it)"
            )
        if account_name is not None and iban is None:
            raise AdminInputError("--account-name: needs --iban (it names the holder of that account)")
        if iban is not None:
            account_name = account_name or name
            try:
                latin = sepa_text(account_name, MAX_NAME_CHARS, "account name")
            except SepaError:
                latin = ""
            if not re.search("[A-Za-z]", latin):
                raise AdminInputError(
                    f"--account-name: {_shown(account_name)} has no characters a SEPA transfer can carry; "
                    "give the account holder's name in Latin letters"
                )
        display_name = _text(args.display_name, "--display-name", max_chars=100, required=False) or name[:100]
        footer = _text(args.footer, "--footer", max_chars=2000, required=False, multiline=True) or ""
        logo_url = _text(args.logo_url, "--logo-url", max_chars=2000, required=False)
        colour = {} if args.colour is None else {"colour": args.colour.strip()}
        try:
            PartnerBranding(display_name=display_name, **colour)
        except ValueError as error:
            raise AdminInputError(f"--colour: {_oneline(str(error))}") from None
        try:
            branding = PartnerBranding(display_name=display_name, logo_url=logo_url, footer_text=footer, **colour)
        except ValueError as error:
            raise AdminInputError(f"--logo-url: {_oneline(str(error))}") from None
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

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> NewCustomer:
        """Validate `customers add` arguments; AdminInputError names the first bad field."""
        return cls(
            customer_id=validate_id(args.customer_id, "customer id"),
            partner_id=validate_id(args.partner, "--partner"),
            name=_req(_text(args.name, "--name", max_chars=200)),
            address=_req(_text(args.address, "--address", max_chars=200)),
            postcode=normalise_postcode(args.postcode),
            city=_req(_text(args.city, "--city", max_chars=100)),
            ean=normalise_ean(args.ean),
            grid_operator=_req(_text(args.grid_operator, "--grid-operator", max_chars=100)),
            iban=None if args.iban is None else normalise_iban(args.iban),
            email=None if args.email is None else normalise_email(args.email),
        )


@dataclass(frozen=True, slots=True)
class Consent:
    """Who agreed to a mandate, when and how (stored as JSON)."""

    by: str
    at: datetime
    method: str
    reference: str | None = None

    def as_json(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"by": self.by, "at": self.at.isoformat(), "method": self.method}
        if self.reference is not None:
            shown["reference"] = self.reference
        return shown


@dataclass(frozen=True, slots=True)
class NewMandate:
    """A mandate row, validated (except what needs the database: the customer, a free year)."""

    ean: str
    year: int
    issued_on: date
    valid_from: date
    valid_until: date
    consent: Consent

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, now: datetime | None = None) -> NewMandate:
        """Validate `mandates add` arguments against the rules in the module docstring."""
        now = now or datetime.now(DUTCH_TIME)
        today = now.astimezone(DUTCH_TIME).date()
        ean = normalise_ean(args.ean)
        year = parse_year(args.year, today=today)
        issued_on = parse_date(args.issued_on, "--issued-on")
        first, last = date(year, 1, 1), date(year, 12, 31)
        valid_from = parse_date(args.valid_from, "--valid-from") if args.valid_from else max(first, issued_on)
        valid_until = parse_date(args.valid_until, "--valid-until") if args.valid_until else last
        for field, day in (("--valid-from", valid_from), ("--valid-until", valid_until)):
            if not first <= day <= last:
                raise AdminInputError(f"{field}: {day} is outside {year}; a mandate covers one calendar year")
        if valid_from > valid_until:
            raise AdminInputError(f"--valid-from: {valid_from} is after --valid-until {valid_until}")
        if issued_on > today:
            raise AdminInputError(f"--issued-on: {issued_on} is in the future; give the day the mandate was issued")
        if issued_on > valid_from:
            raise AdminInputError(
                f"--issued-on: {issued_on} is after the start of validity {valid_from}; a mandate is not backdated "
                "(let --valid-from start on or after the issue date)"
            )
        consent = Consent(
            by=_req(_text(args.consent_by, "--consent-by", max_chars=200)),
            at=parse_timestamp(args.consent_at, "--consent-at"),
            method=_choice(args.consent_method, "--consent-method", CONSENT_METHODS, "a consent method"),
            reference=_text(args.consent_reference, "--consent-reference", max_chars=500, required=False),
        )
        if consent.at > now + _CLOCK_SKEW:
            raise AdminInputError(f"--consent-at: {consent.at.isoformat()} is in the future")
        if consent.at.astimezone(DUTCH_TIME).date() > valid_from:
            raise AdminInputError(
                f"--consent-at: {consent.at.isoformat()} is after the start of validity {valid_from}; "
                "consent must come first"
            )
        return cls(ean, year, issued_on, valid_from, valid_until, consent)


@dataclass(frozen=True, slots=True)
class NewLink:
    """A charger link row, validated (except the customer's existence)."""

    identity: str
    customer_id: str
    max_power_w: Decimal

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> NewLink:
        return cls(
            identity=validate_charger_identity(args.identity),
            customer_id=validate_id(args.customer, "--customer"),
            max_power_w=parse_watts(args.max_power_w),
        )


def _req(value: str | None) -> str:
    assert value is not None  # _text(required=True) never returns None
    return value


def _oneline(text: str) -> str:
    return " ".join(_PRINTABLE.sub(" ", text).split())


# --- the store -----------------------------------------------------------------------------------

# Messages for constraint violations that slip past the checks above (e.g. a concurrent writer).
_CONSTRAINT_MESSAGES = {
    "partners_pkey": "partner id: that partner already exists",
    "customers_pkey": "customer id: that customer already exists",
    "customers_ean_key": "--ean: that EAN already belongs to another customer",
    "customers_partner_id_fkey": "--partner: no such partner",
    "mandates_pkey": "--ean: that EAN already has a mandate for this year; only one provider per EAN per year",
    "mandates_customer_id_fkey": "--ean: the customer holding this EAN no longer exists",
    "charger_links_pkey": "identity: that charger is already linked to a customer; remove the link first",
    "charger_links_customer_id_fkey": "--customer: no such customer",
    "partners_check": "--iban: is required for the partner-account payout model",
    "mandates_check": "--valid-from: is after --valid-until",
    "mandates_check1": "--valid-from/--valid-until: must lie inside the mandate's year",
}


def _violation_message(error: asyncpg.PostgresError) -> str:
    """A one-line message for a constraint violation or refused value the database reported."""
    constraint = getattr(error, "constraint_name", None)
    if constraint in _CONSTRAINT_MESSAGES:
        return _CONSTRAINT_MESSAGES[constraint]
    table = getattr(error, "table_name", None)
    where = f" ({table}.{constraint})" if table and constraint else f" ({constraint})" if constraint else ""
    return f"the database refused the value{where}: {_oneline(str(error))}"


async def _fetch_json(conn: Connection, query: str, *args: object) -> list[dict[str, Any]]:
    return [dict(row) for row in await conn.fetch(query, *args)]


async def add_partner(conn: Connection, partner: NewPartner) -> None:
    """Insert `partner` (AdminInputError if the id is taken)."""
    async with conn.transaction() as tx:
        if await tx.fetchval("SELECT 1 FROM partners WHERE partner_id = $1", partner.partner_id):
            raise AdminInputError(f"partner id: partner {partner.partner_id!r} already exists")
        await tx.execute(
            "INSERT INTO partners (partner_id, name, kind, payout_model, iban, account_name, branding) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
            partner.partner_id, partner.name, partner.kind, partner.payout_model, partner.iban,
            partner.account_name, json.dumps(asdict(partner.branding)),
        )  # fmt: skip


_PARTNER_COLUMNS = """
p.partner_id, p.name, p.kind, p.payout_model, p.iban, p.account_name, p.branding::text AS branding, p.created_at,
(SELECT count(*) FROM customers c WHERE c.partner_id = p.partner_id) AS customers
"""


def _partner(row: dict[str, Any]) -> dict[str, Any]:
    branding = json.loads(row["branding"])
    ordered = {field.name: branding.pop(field.name) for field in fields(PartnerBranding) if field.name in branding}
    return row | {"branding": ordered | branding}


async def list_partners(conn: Connection) -> list[dict[str, Any]]:
    rows = await _fetch_json(conn, f"SELECT {_PARTNER_COLUMNS} FROM partners p ORDER BY p.partner_id")
    return [_partner(row) for row in rows]


async def get_partner(conn: Connection, partner_id: str) -> dict[str, Any]:
    """One partner with its customer count (AdminInputError if unknown)."""
    rows = await _fetch_json(conn, f"SELECT {_PARTNER_COLUMNS} FROM partners p WHERE p.partner_id = $1", partner_id)
    if not rows:
        raise AdminInputError(f"partner id: no partner {partner_id!r}")
    return _partner(rows[0])


async def add_customer(conn: Connection, customer: NewCustomer) -> None:
    """Insert `customer`; its partner must exist, its id and EAN be free, and a `direct` partner's
    customer needs an IBAN (AdminInputError otherwise)."""
    async with conn.transaction() as tx:
        model = await tx.fetchval("SELECT payout_model FROM partners WHERE partner_id = $1", customer.partner_id)
        if model is None:
            raise AdminInputError(f"--partner: no partner {customer.partner_id!r}; add it with `partners add` first")
        if model == "direct" and customer.iban is None:
            raise AdminInputError(
                f"--iban: is required: partner {customer.partner_id!r} pays its customers directly "
                "(payout model direct)"
            )
        if await tx.fetchval("SELECT 1 FROM customers WHERE customer_id = $1", customer.customer_id):
            raise AdminInputError(f"customer id: customer {customer.customer_id!r} already exists")
        holder = await tx.fetchval("SELECT customer_id FROM customers WHERE ean = $1", customer.ean)
        if holder is not None:
            raise AdminInputError(f"--ean: EAN {customer.ean} already belongs to customer {holder!r}")
        await tx.execute(
            "INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean, grid_operator, "
            "iban, email) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            customer.customer_id, customer.partner_id, customer.name, customer.address, customer.postcode,
            customer.city, customer.ean, customer.grid_operator, customer.iban, customer.email,
        )  # fmt: skip


_CUSTOMER_COLUMNS = """
c.customer_id, c.partner_id, c.name, c.address, c.postcode, c.city, c.ean, c.grid_operator, c.iban, c.email,
c.referral_discount, c.created_at,
ARRAY(SELECT m.year FROM mandates m WHERE m.ean = c.ean AND m.customer_id = c.customer_id ORDER BY m.year)
    AS mandate_years
"""


async def list_customers(conn: Connection, partner_id: str | None = None) -> list[dict[str, Any]]:
    return await _fetch_json(
        conn,
        f"SELECT {_CUSTOMER_COLUMNS} FROM customers c WHERE ($1::text IS NULL OR c.partner_id = $1) "
        "ORDER BY c.customer_id",
        partner_id,
    )


async def get_customer(conn: Connection, customer_id: str) -> dict[str, Any]:
    """One customer with its mandates and charger links (AdminInputError if unknown)."""
    async with conn.transaction(isolation="repeatable_read", readonly=True) as tx:
        query = f"SELECT {_CUSTOMER_COLUMNS} FROM customers c WHERE c.customer_id = $1"
        rows = await _fetch_json(tx, query, customer_id)
        if not rows:
            raise AdminInputError(f"customer id: no customer {customer_id!r}")
        customer = rows[0]
        customer.pop("mandate_years")
        mandates = await _fetch_json(tx, _MANDATES + " WHERE m.customer_id = $1 ORDER BY m.year", customer_id)
        links = await _fetch_json(tx, _LINKS + " WHERE l.customer_id = $1 ORDER BY l.identity", customer_id)
    customer["mandates"] = [_mandate(row) for row in mandates]
    customer["links"] = [_link(row) for row in links]
    return customer


def _duplicate_mandate(ean: str, year: int, holder: str | None) -> AdminInputError:
    held = f" (held by customer {holder!r})" if holder is not None else ""
    return AdminInputError(
        f"--ean: EAN {ean} already has a mandate for {year}{held}; only one provider per EAN per year is allowed"
    )


async def _mandate_holder(conn: Connection, ean: str, year: int) -> str | None:
    holder: str | None = await conn.fetchval("SELECT customer_id FROM mandates WHERE ean = $1 AND year = $2", ean, year)
    return holder


async def add_mandate(conn: Connection, mandate: NewMandate) -> str:
    """Insert `mandate` for the customer holding its EAN; returns that customer's id.

    AdminInputError if no customer holds the EAN or the EAN already has a mandate that year
    (naming who holds it, also when a concurrent writer got there first).
    """
    try:
        async with conn.transaction() as tx:
            customer_id: str | None = await tx.fetchval("SELECT customer_id FROM customers WHERE ean = $1", mandate.ean)
            if customer_id is None:
                raise AdminInputError(f"--ean: EAN {mandate.ean} is not a known customer's; add the customer first")
            holder = await _mandate_holder(tx, mandate.ean, mandate.year)
            if holder is not None:
                raise _duplicate_mandate(mandate.ean, mandate.year, holder)
            await tx.execute(
                "INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until, consent) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)",
                mandate.ean, mandate.year, customer_id, mandate.issued_on, mandate.valid_from, mandate.valid_until,
                json.dumps(mandate.consent.as_json()),
            )  # fmt: skip
    except asyncpg.UniqueViolationError as error:
        if error.constraint_name != "mandates_pkey":
            raise
        holder = await conn.fetchval(
            "SELECT customer_id FROM mandates WHERE ean = $1 AND year = $2", mandate.ean, mandate.year
        )
        raise _duplicate_mandate(mandate.ean, mandate.year, holder) from None
    return customer_id


_MANDATES = """
SELECT m.ean, m.year, m.customer_id, c.partner_id, m.issued_on, m.valid_from, m.valid_until, m.consent::text AS consent,
       m.created_at
FROM mandates m JOIN customers c USING (customer_id)
"""


def _mandate(row: dict[str, Any]) -> dict[str, Any]:
    return row | {"consent": json.loads(row["consent"])}


async def list_mandates(
    conn: Connection, *, year: int | None = None, customer_id: str | None = None, ean: str | None = None
) -> list[dict[str, Any]]:
    rows = await _fetch_json(
        conn,
        _MANDATES + " WHERE ($1::integer IS NULL OR m.year = $1) AND ($2::text IS NULL OR m.customer_id = $2) "
        "AND ($3::text IS NULL OR m.ean = $3) ORDER BY m.year, m.ean",
        year, customer_id, ean,
    )  # fmt: skip
    return [_mandate(row) for row in rows]


async def add_link(conn: Connection, link: NewLink) -> str:
    """Link a charger to a customer; returns the customer's EAN.

    AdminInputError for an unknown customer or a charger that is already linked.
    """
    async with conn.transaction() as tx:
        ean: str | None = await tx.fetchval("SELECT ean FROM customers WHERE customer_id = $1", link.customer_id)
        if ean is None:
            raise AdminInputError(f"--customer: no customer {link.customer_id!r}; add it with `customers add` first")
        linked = await tx.fetchval("SELECT customer_id FROM charger_links WHERE identity = $1", link.identity)
        if linked is not None:
            raise AdminInputError(
                f"identity: charger {link.identity!r} is already linked to customer {linked!r}; remove that link first"
            )
        await tx.execute(
            "INSERT INTO charger_links (identity, customer_id, max_power_w) VALUES ($1, $2, $3)",
            link.identity, link.customer_id, link.max_power_w,
        )  # fmt: skip
    return ean


_LINKS = """
SELECT l.identity, l.customer_id, c.ean, l.max_power_w, l.linked_at, b.meter_class, b.meter_type, b.meter_serial,
       b.vendor, b.model, b.booted_at
FROM charger_links l JOIN customers c USING (customer_id) LEFT JOIN charger_boots b USING (identity)
"""


def _link(row: dict[str, Any]) -> dict[str, Any]:
    boot = None
    if row["booted_at"] is not None:
        boot = {key: row[key] for key in ("booted_at", "vendor", "model", "meter_type", "meter_serial")}
    shown = {key: row[key] for key in ("identity", "customer_id", "ean", "max_power_w", "linked_at", "meter_class")}
    return shown | {"last_boot": boot}


async def list_links(conn: Connection, customer_id: str | None = None) -> list[dict[str, Any]]:
    rows = await _fetch_json(
        conn, _LINKS + " WHERE ($1::text IS NULL OR l.customer_id = $1) ORDER BY l.identity", customer_id
    )
    return [_link(row) for row in rows]


async def remove_link(conn: Connection, identity: str) -> str:
    """Remove a charger's link; returns the customer it was linked to (AdminInputError if none)."""
    customer_id: str | None = await conn.fetchval(
        "DELETE FROM charger_links WHERE identity = $1 RETURNING customer_id", identity
    )
    if customer_id is None:
        raise AdminInputError(f"identity: charger {identity!r} is not linked to any customer")
    return customer_id


# --- the command line ----------------------------------------------------------------------------


def add_ere_admin_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `partners`, `customers`, `mandates` and `links` groups; `common` carries `--config`."""
    def choices(allowed: Sequence[str]) -> str:
        return "{" + ",".join(allowed) + "}"

    partners = sub.add_parser("partners", help="manage ERE partners (CPOs, installers, energy suppliers)")
    partners.set_defaults(ere_group="partners")
    actions = partners.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", parents=[common], help="add a partner")
    add.add_argument("partner_id")
    add.add_argument("--name", required=True)
    add.add_argument("--kind", required=True, metavar=choices(PARTNER_KINDS))
    add.add_argument("--payout-model", required=True, metavar=choices(PAYOUT_MODELS))
    add.add_argument("--iban", help="the partner's account (required for partner-account)")
    add.add_argument("--account-name", help="holder of that account (default: the partner's name)")
    add.add_argument("--display-name", help="name on statements (default: the partner's name)")
    add.add_argument("--colour", help="brand colour, #rrggbb")
    add.add_argument("--logo-url", help="https:// URL of the logo on statements")
    add.add_argument("--footer", help="footer text of statements (may span lines)")
    actions.add_parser("list", parents=[common], help="list partners").add_argument("--json", action="store_true")
    show = actions.add_parser("show", parents=[common], help="show one partner")
    show.add_argument("partner_id")
    show.add_argument("--json", action="store_true")

    customers = sub.add_parser("customers", help="manage ERE customers (connection holders)")
    customers.set_defaults(ere_group="customers")
    actions = customers.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", parents=[common], help="add a customer")
    add.add_argument("customer_id")
    add.add_argument("--partner", required=True, help="id of the partner that enrolled the customer")
    add.add_argument("--name", required=True, help="name of the connection holder")
    add.add_argument("--address", required=True, help="street and number")
    add.add_argument("--postcode", required=True, help="Dutch postcode, 1234 AB")
    add.add_argument("--city", required=True)
    add.add_argument("--ean", required=True, help="18-digit EAN of the connection")
    add.add_argument("--grid-operator", required=True)
    add.add_argument("--iban", help="account to pay (required when the partner's payout model is direct)")
    add.add_argument("--email", help="address statements are sent to")
    listing = actions.add_parser("list", parents=[common], help="list customers")
    listing.add_argument("--partner", help="only this partner's customers")
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", parents=[common], help="show one customer with mandates and chargers")
    show.add_argument("customer_id")
    show.add_argument("--json", action="store_true")

    mandates = sub.add_parser("mandates", help="manage ERE mandates (one per EAN per calendar year)")
    mandates.set_defaults(ere_group="mandates")
    actions = mandates.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", parents=[common], help="record a mandate")
    add.add_argument("--ean", required=True, help="EAN of a known customer")
    add.add_argument("--year", required=True, help="calendar year the mandate covers")
    add.add_argument("--issued-on", required=True, help="date the mandate was issued, YYYY-MM-DD")
    add.add_argument("--valid-from", help="first day covered (default: 1 January, or the issue date if later)")
    add.add_argument("--valid-until", help="last day covered (default: 31 December)")
    add.add_argument("--consent-by", required=True, help="who gave consent")
    add.add_argument("--consent-at", required=True, help="when, ISO 8601 with UTC offset")
    add.add_argument("--consent-method", required=True, metavar=choices(CONSENT_METHODS))
    add.add_argument("--consent-reference", help="document or record id of the consent")
    listing = actions.add_parser("list", parents=[common], help="list mandates")
    listing.add_argument("--year")
    listing.add_argument("--customer")
    listing.add_argument("--ean")
    listing.add_argument("--json", action="store_true")

    links = sub.add_parser("links", help="link chargers to customers' connections")
    links.set_defaults(ere_group="links")
    actions = links.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", parents=[common], help="link a charger to a customer")
    add.add_argument("identity", help="the charger's OCPP identity")
    add.add_argument("--customer", required=True)
    add.add_argument("--max-power-w", required=True, help="the charger's maximum power in watts")
    listing = actions.add_parser("list", parents=[common], help="list links with each charger's meter evidence")
    listing.add_argument("--customer", help="only this customer's chargers")
    listing.add_argument("--json", action="store_true")
    remove = actions.add_parser("remove", parents=[common], help="unlink a charger")
    remove.add_argument("identity")


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _json_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(item) for item in value]
    return value


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S%z")
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    if isinstance(value, list):
        return ",".join(str(item) for item in value) or "-"
    return _PRINTABLE.sub("?", str(value).replace("\n", "\\n"))


def _print_table(header: Sequence[str], rows: Sequence[Sequence[Any]], stdout: TextIO) -> None:
    cells = [list(header), *([_cell(value) for value in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(), file=stdout)


def _print_fields(record: dict[str, Any], stdout: TextIO, indent: str = "") -> None:
    width = max(len(key) for key in record) + 1
    for key, value in record.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:", file=stdout)
            _print_fields(value, stdout, indent + "  ")
        else:
            print(f"{indent}{key + ':':<{width}} {_cell(value)}", file=stdout)


def _consent_cell(consent: dict[str, Any]) -> str:
    return f"{consent.get('method')} by {consent.get('by')} at {consent.get('at')}"


def _link_row(link: dict[str, Any]) -> list[Any]:
    boot = link["last_boot"]
    if boot is None:
        return [link["identity"], link["customer_id"], link["ean"], link["max_power_w"], "never booted", "-", "-", "-"]
    return [link["identity"], link["customer_id"], link["ean"], link["max_power_w"], link["meter_class"],
            boot["meter_type"], boot["meter_serial"], boot["booted_at"]]  # fmt: skip


_LINK_HEADER = ("IDENTITY", "CUSTOMER", "EAN", "MAX W", "METER CLASS", "METER TYPE", "METER SERIAL", "LAST BOOT")
_MANDATE_HEADER = ("EAN", "YEAR", "CUSTOMER", "PARTNER", "ISSUED", "VALID FROM", "VALID UNTIL", "CONSENT")


def _mandate_row(mandate: dict[str, Any]) -> list[Any]:
    return [mandate["ean"], mandate["year"], mandate["customer_id"], mandate["partner_id"], mandate["issued_on"],
            mandate["valid_from"], mandate["valid_until"], _consent_cell(mandate["consent"])]  # fmt: skip


def _optional(value: str | None, check: Callable[[str, str], Any], field: str) -> Any:
    return None if value is None else check(value, field)


# What each action makes of its arguments: all checks that need no database, run before a
# connection is opened, so bad input never reaches it.
_PARSERS: dict[tuple[str, str], Callable[[argparse.Namespace], Any]] = {
    ("partners", "add"): NewPartner.from_args,
    ("partners", "list"): lambda args: None,
    ("partners", "show"): lambda args: validate_id(args.partner_id, "partner id"),
    ("customers", "add"): NewCustomer.from_args,
    ("customers", "list"): lambda args: _optional(args.partner, validate_id, "--partner"),
    ("customers", "show"): lambda args: validate_id(args.customer_id, "customer id"),
    ("mandates", "add"): NewMandate.from_args,
    ("mandates", "list"): lambda args: {
        "year": _optional(args.year, parse_year, "--year"),
        "customer_id": _optional(args.customer, validate_id, "--customer"),
        "ean": _optional(args.ean, normalise_ean, "--ean"),
    },
    ("links", "add"): NewLink.from_args,
    ("links", "list"): lambda args: _optional(args.customer, validate_id, "--customer"),
    ("links", "remove"): lambda args: validate_charger_identity(args.identity),
}


class _Output:
    """Where an action prints: a table or fields for people, or JSON with `--json`."""

    def __init__(self, stdout: TextIO, as_json: bool) -> None:
        self.stdout, self.as_json = stdout, as_json

    def line(self, text: str) -> None:
        print(text, file=self.stdout)

    def json_or(self, value: Any, human: Callable[[], None]) -> None:
        if self.as_json:
            self.line(json.dumps(_json_value(value), indent=2, ensure_ascii=False))
        else:
            human()

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        _print_table(header, rows, self.stdout)


async def _partners_add(db: Connection, partner: NewPartner, out: _Output) -> None:
    await add_partner(db, partner)
    out.line(f"added partner {partner.partner_id} ({partner.kind}, payout {partner.payout_model})")


async def _partners_list(db: Connection, _: None, out: _Output) -> None:
    partners = await list_partners(db)
    header = ("PARTNER", "KIND", "PAYOUT", "NAME", "IBAN", "CUSTOMERS")
    rows = [[p["partner_id"], p["kind"], p["payout_model"], p["name"], p["iban"], p["customers"]] for p in partners]
    out.json_or(partners, lambda: out.table(header, rows))


async def _partners_show(db: Connection, partner_id: str, out: _Output) -> None:
    partner = await get_partner(db, partner_id)
    out.json_or(partner, lambda: _print_fields(partner, out.stdout))


async def _customers_add(db: Connection, customer: NewCustomer, out: _Output) -> None:
    await add_customer(db, customer)
    out.line(f"added customer {customer.customer_id} (EAN {customer.ean}) of partner {customer.partner_id}")


async def _customers_list(db: Connection, partner_id: str | None, out: _Output) -> None:
    customers = await list_customers(db, partner_id)
    header = ("CUSTOMER", "PARTNER", "NAME", "EAN", "POSTCODE", "GRID OPERATOR", "IBAN", "MANDATES")
    rows = [
        [c["customer_id"], c["partner_id"], c["name"], c["ean"], c["postcode"], c["grid_operator"], c["iban"],
         c["mandate_years"]]
        for c in customers
    ]  # fmt: skip
    out.json_or(customers, lambda: out.table(header, rows))


async def _customers_show(db: Connection, customer_id: str, out: _Output) -> None:
    customer = await get_customer(db, customer_id)

    def human() -> None:
        _print_fields({key: value for key, value in customer.items() if key not in ("mandates", "links")}, out.stdout)
        out.line("\nmandates:")
        out.table(_MANDATE_HEADER, [_mandate_row(mandate) for mandate in customer["mandates"]])
        out.line("\nchargers:")
        out.table(_LINK_HEADER, [_link_row(link) for link in customer["links"]])

    out.json_or(customer, human)


async def _mandates_add(db: Connection, mandate: NewMandate, out: _Output) -> None:
    customer_id = await add_mandate(db, mandate)
    out.line(
        f"added mandate for EAN {mandate.ean} {mandate.year} (customer {customer_id}), "
        f"valid {mandate.valid_from} to {mandate.valid_until}"
    )


async def _mandates_list(db: Connection, filters: dict[str, Any], out: _Output) -> None:
    mandates = await list_mandates(db, **filters)
    out.json_or(mandates, lambda: out.table(_MANDATE_HEADER, [_mandate_row(mandate) for mandate in mandates]))


async def _links_add(db: Connection, link: NewLink, out: _Output) -> None:
    ean = await add_link(db, link)
    out.line(f"linked charger {link.identity} to customer {link.customer_id} (EAN {ean})")


async def _links_list(db: Connection, customer_id: str | None, out: _Output) -> None:
    links = await list_links(db, customer_id)
    out.json_or(links, lambda: out.table(_LINK_HEADER, [_link_row(link) for link in links]))


async def _links_remove(db: Connection, identity: str, out: _Output) -> None:
    customer_id = await remove_link(db, identity)
    out.line(f"unlinked charger {identity} from customer {customer_id}")


_ACTIONS: dict[tuple[str, str], Callable[[Connection, Any, _Output], Awaitable[None]]] = {
    ("partners", "add"): _partners_add,
    ("partners", "list"): _partners_list,
    ("partners", "show"): _partners_show,
    ("customers", "add"): _customers_add,
    ("customers", "list"): _customers_list,
    ("customers", "show"): _customers_show,
    ("mandates", "add"): _mandates_add,
    ("mandates", "list"): _mandates_list,
    ("links", "add"): _links_add,
    ("links", "list"): _links_list,
    ("links", "remove"): _links_remove,
}


async def ere_admin_command(
    config: Config, args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None
) -> int:
    """Run one `ere-proxy partners|customers|mandates|links` action; returns the exit code.

    0 done; 2 bad input, a duplicate, an unknown record, or a constraint the database enforced;
    1 the database could not be reached or failed otherwise. Errors are one line on `stderr`.
    """
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        key = (args.ere_group, args.action)
        parsed = _PARSERS[key](args)
        async with open_database(config.database) as db:
            await _ACTIONS[key](db, parsed, _Output(stdout, getattr(args, "json", False)))
    except AdminInputError as error:
        return _fail(str(error), EXIT_INPUT, stderr)
    except (asyncpg.IntegrityConstraintViolationError, asyncpg.DataError) as error:
        return _fail(_violation_message(error), EXIT_INPUT, stderr)
    except DATABASE_ERRORS as error:  # includes StoreError (e.g. the database is unreachable)
        return _fail(f"database error: {type(error).__name__}: {_oneline(str(error))}", EXIT_STORE, stderr)
    return EXIT_OK


def _fail(message: str, code: int, stderr: TextIO) -> int:
    print(f"ere-proxy: {_oneline(message)}", file=stderr)
    return code
