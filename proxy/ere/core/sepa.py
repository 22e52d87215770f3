"""SEPA credit transfers: the pain.001 file that pays the transfers of a payout run.

`build_credit_transfer` turns transfers (`CreditTransfer`: an account, an amount, a remittance
text and an end-to-end id) into a pain.001 document with the `sepaxml` library and validates it
against the official ISO 20022 XSD that `sepaxml` ships; `validate_pain001` checks a document
again. Both are pure: the only files they read are those XSDs, shipped inside `sepaxml`. Which
transfers to make is `proxy.ere.core.payout_plan`; writing the document to disk (validated once
more, then atomically) is `proxy.ere.jobs.payouts.write_sepa`.

Decisions:

* Money is `Decimal` euros in whole cents; anything finer, a float, NaN or a negative transfer is
  an error, never rounded here (the accounting core rounds each figure once).
* Identifiers are deterministic, so a payout run that is built again produces the same file: the
  message id, payment information id and each end-to-end id are `ERE` plus 32 hex digits of a
  SHA-256 over the payout run id (and payee). A bank's duplicate check on the message id then
  refuses a file uploaded twice, and the end-to-end id comes back on the bank statement as an
  idempotency key per payee.
* Text is reduced to the EPC basic Latin character set (`a-z A-Z 0-9 / - ? : ( ) . , ' +` and
  space): transliterated to ASCII first (`Ærø Straße` → `AEro Strasse`, Cyrillic and CJK to
  their Latin spelling), `&` becomes `+`, every other character outside the set becomes a
  space, runs of spaces collapse. Text that is empty afterwards (emoji only, say) is rejected.
* Names are truncated to 70 characters and the remittance text to 140, the SEPA field limits;
  the bank matches on the IBAN and the end-to-end id, which are never shortened. An end-to-end
  id that breaks the rules (over 35 characters, outside the character set, `/` at either end or
  `//` inside) is rejected, never altered.
* IBANs are checked with `schwifty` (structure, length, check digits) and must be in the SEPA
  zone; BICs likewise. The debtor (us) needs a BIC; a creditor's is optional (IBAN-only).
* The default schema is pain.001.001.03, which every Dutch bank accepts; pain.001.001.09 is
  available as well.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import importlib.resources
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Literal, get_args

import xmlschema
from lxml import etree
from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException
from sepaxml import SepaTransfer
from text_unidecode import unidecode

__all__ = [
    "MAX_AMOUNT",
    "MAX_NAME_CHARS",
    "MAX_REMITTANCE_CHARS",
    "BankAccount",
    "CreditTransfer",
    "Debtor",
    "InvalidAccountError",
    "PainVersion",
    "PayeeKind",
    "SepaDocument",
    "SepaError",
    "SepaValidationError",
    "build_credit_transfer",
    "end_to_end_id",
    "require_cents",
    "sepa_text",
    "validate_pain001",
]

PainVersion = Literal["pain.001.001.03", "pain.001.001.09"]
DEFAULT_PAIN_VERSION: PainVersion = "pain.001.001.03"

MAX_NAME_CHARS = 70  # EPC limit for debtor and creditor names
MAX_REMITTANCE_CHARS = 140  # one unstructured remittance line
MAX_ID_CHARS = 35  # message, payment information and end-to-end ids
MAX_AMOUNT = Decimal("999999999.99")  # largest amount of one SEPA credit transfer
_CENT = Decimal("0.01")
_ZERO = Decimal(0)

_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_NAMESPACE_PREFIX = "urn:iso:std:iso:20022:tech:xsd:"
_OUTSIDE_SEPA_CHARSET = re.compile(r"[^A-Za-z0-9/\-?:().,'+ ]")
_SEPA_ID = re.compile(r"[A-Za-z0-9/\-?:().,'+ ]{1,35}")


class SepaError(ValueError):
    """Input that cannot become a valid SEPA credit transfer; the message says which and why."""


class InvalidAccountError(SepaError):
    """An IBAN or BIC that is malformed, fails its check digits, or is outside the SEPA zone."""


class SepaValidationError(SepaError):
    """A document that does not validate against the official pain.001 XSD."""


class PayeeKind(enum.Enum):
    """Whose account a transfer goes to."""

    CUSTOMER = "customer"
    PARTNER = "partner"


@dataclass(frozen=True, slots=True)
class BankAccount:
    """An account to pay into: holder name, IBAN, optional BIC (checked when a file is built)."""

    holder_name: str
    iban: str
    bic: str | None = None


@dataclass(frozen=True, slots=True)
class Debtor:
    """Our own account, the one the transfers are paid from."""

    name: str
    iban: str
    bic: str


@dataclass(frozen=True, slots=True)
class CreditTransfer:
    """One transfer: `amount` in euros (Decimal, whole cents, more than zero)."""

    end_to_end_id: str
    creditor: BankAccount
    amount: Decimal
    remittance: str


@dataclass(frozen=True, slots=True)
class SepaDocument:
    """A validated pain.001 document and the figures of its group header."""

    xml: bytes
    pain_version: PainVersion
    message_id: str
    transaction_count: int
    control_sum: Decimal


def end_to_end_id(payout_run_id: str, payee_kind: PayeeKind, payee_id: str) -> str:
    """The deterministic end-to-end id of the transfer to one payee in one payout run."""
    return _derived_id("end-to-end", payout_run_id, payee_kind.value, payee_id)


def build_credit_transfer(
    debtor: Debtor,
    transfers: Sequence[CreditTransfer],
    *,
    execution_date: date,
    created_at: datetime,
    payout_run_id: str,
    pain_version: PainVersion = DEFAULT_PAIN_VERSION,
) -> SepaDocument:
    """Build and validate one pain.001 Credit Transfer document paying `transfers` from `debtor`.

    All transfers go into one payment information block (batch booking) executed on
    `execution_date`. `created_at` (timezone-aware) becomes the creation time in the group
    header, so the same inputs always give the same bytes. Text is reduced to the SEPA
    character set as the module docstring describes.

    Raises `TypeError` for a non-Decimal amount, `InvalidAccountError` naming every transfer
    whose IBAN or BIC is bad (and the debtor's), `SepaError` for other bad input (no transfers,
    duplicate end-to-end ids, sub-cent or out-of-range amounts, empty names) and
    `SepaValidationError` if the result does not validate against the XSD.
    """
    if pain_version not in get_args(PainVersion):
        raise SepaError(f"unsupported pain version {pain_version!r}")
    if not transfers:
        raise SepaError("a credit transfer document needs at least one transfer")
    if created_at.utcoffset() is None:
        raise SepaError("created_at must be timezone-aware")
    if execution_date < created_at.date():
        raise SepaError(
            f"execution date {execution_date} lies before the creation date {created_at.date()}"
        )

    account_errors: list[str] = []
    debtor_iban = _checked_iban(debtor.iban, "debtor", account_errors)
    debtor_bic = _checked_bic(debtor.bic, "debtor", account_errors)
    payments: list[dict[str, object]] = []
    seen_ids: set[str] = set()
    control_sum = _ZERO
    for transfer in transfers:
        label = f"transfer {transfer.end_to_end_id!r}"
        _check_end_to_end_id(transfer.end_to_end_id)
        if transfer.end_to_end_id in seen_ids:
            raise SepaError(f"end-to-end id {transfer.end_to_end_id!r} is used twice")
        seen_ids.add(transfer.end_to_end_id)
        cents = _amount_in_cents(transfer.amount, label)
        control_sum += transfer.amount
        payment: dict[str, object] = {
            "name": sepa_text(
                transfer.creditor.holder_name, MAX_NAME_CHARS, f"{label} creditor name"
            ),
            "IBAN": _checked_iban(transfer.creditor.iban, label, account_errors),
            "amount": cents,
            "execution_date": execution_date,
            "description": sepa_text(
                transfer.remittance, MAX_REMITTANCE_CHARS, f"{label} remittance"
            ),
            "endtoend_id": transfer.end_to_end_id,
        }
        if transfer.creditor.bic is not None:
            payment["BIC"] = _checked_bic(transfer.creditor.bic, label, account_errors)
        payments.append(payment)
    if account_errors:
        raise InvalidAccountError("; ".join(account_errors))

    builder = SepaTransfer(
        {
            "name": sepa_text(debtor.name, MAX_NAME_CHARS, "debtor name"),
            "IBAN": debtor_iban,
            "BIC": debtor_bic,
            "batch": True,
            "currency": "EUR",
        },
        schema=pain_version,
        clean=False,  # text is already reduced to the SEPA character set above
    )
    for payment in payments:
        builder.add_payment(payment)
    message_id = _derived_id("message", payout_run_id)
    xml = _with_fixed_identifiers(
        builder.export(validate=False),
        message_id=message_id,
        payment_information_id=_derived_id("payment-information", payout_run_id),
        created_at=created_at,
    )
    document = SepaDocument(
        xml=xml,
        pain_version=pain_version,
        message_id=message_id,
        transaction_count=len(payments),
        control_sum=control_sum,
    )
    validate_pain001(document)
    return document


def validate_pain001(document: SepaDocument) -> None:
    """Check `document.xml` against the official XSD of its version and its header figures.

    Raises `SepaValidationError` with the first schema violation, or if the group header's
    transaction count or control sum differs from the document's own figures.
    """
    schema = _pain_schema(document.pain_version)
    try:
        root = etree.fromstring(document.xml, parser=_safe_parser())
    except etree.XMLSyntaxError as error:
        raise SepaValidationError(f"the document is not well-formed XML: {error}") from error
    expected_namespace = _NAMESPACE_PREFIX + document.pain_version
    if etree.QName(root).namespace != expected_namespace:
        raise SepaValidationError(f"the document is not in the namespace {expected_namespace}")
    violation = next(iter(schema.iter_errors(document.xml.decode("utf-8"))), None)
    if violation is not None:
        raise SepaValidationError(
            f"the document does not validate against {document.pain_version}.xsd at "
            f"{violation.path}: {violation.reason}"
        )
    namespaces = {"p": expected_namespace}
    count = root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:NbOfTxs", namespaces=namespaces)
    control_sum = root.findtext("p:CstmrCdtTrfInitn/p:GrpHdr/p:CtrlSum", namespaces=namespaces)
    if (
        count != str(document.transaction_count)
        or Decimal(control_sum or "NaN") != document.control_sum
    ):
        raise SepaValidationError(
            f"the group header says {count} transactions and {control_sum} EUR, the document "
            f"{document.transaction_count} and {document.control_sum}"
        )


def sepa_text(text: str, max_chars: int, what: str = "text") -> str:
    """`text` reduced to the EPC basic Latin character set and cut to `max_chars` characters.

    Raises `SepaError` naming `what` if no letter or digit is left (empty, or only characters
    with no Latin spelling, which the transliteration turns into "?").
    """
    latin = unidecode(text).replace("&", "+")
    cleaned = " ".join(_OUTSIDE_SEPA_CHARSET.sub(" ", latin).split())
    cleaned = cleaned[:max_chars].rstrip()
    if not any(character.isalnum() for character in cleaned):
        raise SepaError(f"{what} {text!r} has no characters SEPA can carry")
    return cleaned


def require_cents(amount: object, what: str, error: type[ValueError] = SepaError) -> Decimal:
    """Return `amount` if it is a finite Decimal in whole cents (trailing zeros are fine).

    Raises `TypeError` for anything but a Decimal (a float above all) and `error`, naming
    `what`, for NaN, infinity or a fraction of a cent; never rounds.
    """
    if not isinstance(amount, Decimal):
        raise TypeError(f"{what} must be a Decimal, got {type(amount).__name__} {amount!r}")
    if not amount.is_finite() or amount != amount.quantize(_CENT):
        raise error(f"{what} must be a finite amount in whole cents, got {amount}")
    return amount


def _derived_id(purpose: str, *parts: str) -> str:
    digest = hashlib.sha256("\x1f".join((purpose, *parts)).encode("utf-8")).hexdigest()
    return "ERE" + digest[: MAX_ID_CHARS - 3].upper()


def _amount_in_cents(amount: Decimal, what: str) -> int:
    require_cents(amount, f"{what} amount")
    if not _ZERO < amount <= MAX_AMOUNT:
        raise SepaError(f"{what} amount must be between 0.01 and {MAX_AMOUNT} EUR, got {amount}")
    return int(amount.scaleb(2))


def _check_end_to_end_id(value: str) -> None:
    if (
        not _SEPA_ID.fullmatch(value)
        or value.startswith("/")
        or value.endswith("/")
        or "//" in value
    ):
        raise SepaError(
            f"end-to-end id {value!r} must be 1-35 characters of the SEPA character set, "
            "without '/' at either end or '//' inside"
        )


def _checked_iban(value: str, owner: str, errors: list[str]) -> str:
    try:
        iban = IBAN(value)
    except SchwiftyException as error:
        errors.append(f"{owner}: IBAN {value!r} is invalid ({error})")
        return ""
    if not iban.in_sepa_zone:
        errors.append(f"{owner}: IBAN {value!r} is outside the SEPA zone")
    return str(iban.compact)


def _checked_bic(value: str, owner: str, errors: list[str]) -> str:
    try:
        return str(BIC(value).compact)
    except SchwiftyException as error:
        errors.append(f"{owner}: BIC {value!r} is invalid ({error})")
        return ""


def _with_fixed_identifiers(
    xml: bytes, *, message_id: str, payment_information_id: str, created_at: datetime
) -> bytes:
    """Replace the random ids and the wall-clock time `sepaxml` puts in with deterministic ones."""
    root = etree.fromstring(xml, parser=_safe_parser())
    namespaces = {"p": etree.QName(root).namespace}
    header = root.find("p:CstmrCdtTrfInitn/p:GrpHdr", namespaces=namespaces)
    header.find("p:MsgId", namespaces=namespaces).text = message_id
    header.find("p:CreDtTm", namespaces=namespaces).text = created_at.isoformat(timespec="seconds")
    for block in root.iterfind("p:CstmrCdtTrfInitn/p:PmtInf/p:PmtInfId", namespaces=namespaces):
        block.text = payment_information_id
    body: bytes = etree.tostring(root, encoding="UTF-8", pretty_print=True)
    return _XML_DECLARATION + body


def _safe_parser() -> etree.XMLParser:
    """An XML parser that neither expands entities nor fetches anything over the network."""
    return etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


@functools.cache
def _pain_schema(version: PainVersion) -> xmlschema.XMLSchema:
    """The official XSD shipped inside the `sepaxml` package, loaded once per version."""
    resource = importlib.resources.files("sepaxml").joinpath("schemas", f"{version}.xsd")
    with importlib.resources.as_file(resource) as schema_path:
        return xmlschema.XMLSchema(str(schema_path))
