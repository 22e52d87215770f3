"""SEPA payouts: who gets paid this quarter, and the pain.001 Credit Transfer file that pays them.

Two steps, both pure:

* `plan_payouts` turns the customers' net amounts for a quarter (plus what they carried in from
  the previous quarter) into transfers and carry-overs. A customer of a partner on the `direct`
  payout model is paid to their own account; all customers of a `partner-account` partner are
  paid together, in one transfer to the partner's account. Every cent is accounted for:
  `sum(net + carried_in) == sum(transfer amounts) + sum(carry-overs)`, exactly.
* `build_credit_transfer` turns the transfers into a pain.001 document with the `sepaxml`
  library and validates it against the official ISO 20022 XSD that `sepaxml` ships.

`write_sepa` is the only function that touches the disk: it validates again and then writes
atomically (temporary file, fsync, rename), so an invalid document never leaves a file behind.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Literal, get_args

import xmlschema
from lxml import etree  # type: ignore[import-untyped]
from schwifty import BIC, IBAN
from schwifty.exceptions import SchwiftyException
from sepaxml import SepaTransfer  # type: ignore[import-untyped]
from text_unidecode import unidecode  # type: ignore[import-untyped]

from proxy.ere.jobs.files import write_atomically

__all__ = [
    "MAX_AMOUNT",
    "MAX_NAME_CHARS",
    "MAX_REMITTANCE_CHARS",
    "BankAccount",
    "CarryOver",
    "CarryOverReason",
    "CreditTransfer",
    "CustomerBalance",
    "Debtor",
    "InvalidAccountError",
    "PainVersion",
    "PartnerPayout",
    "PayeeKind",
    "PayoutModel",
    "PayoutPlan",
    "PayoutPlanError",
    "PlannedTransfer",
    "SepaDocument",
    "SepaError",
    "SepaValidationError",
    "build_credit_transfer",
    "end_to_end_id",
    "plan_payouts",
    "sepa_text",
    "validate_pain001",
    "write_sepa",
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


class PayoutPlanError(ValueError):
    """Balances or partner settings that cannot be planned (unknown partner, duplicate customer)."""


class PayoutModel(enum.Enum):
    """How a partner's customers are paid: each to their own account, or pooled to the partner."""

    DIRECT = "direct"
    PARTNER_ACCOUNT = "partner-account"


class PayeeKind(enum.Enum):
    """Whose account a transfer goes to."""

    CUSTOMER = "customer"
    PARTNER = "partner"


class CarryOverReason(enum.Enum):
    """Why a balance was not paid this quarter and moves to the next one."""

    BELOW_MINIMUM = "below-minimum"  # positive, but less than the configured minimum
    NOT_POSITIVE = "not-positive"  # negative (a correction): offset against later quarters
    NO_ACCOUNT = "no-account"  # nowhere to pay it yet


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
class CustomerBalance:
    """A customer's result for the quarter being paid out.

    `net` is this quarter's net amount and `carried_in` what the previous quarter carried over
    (both Decimal euros in whole cents, either may be negative). `partner_id` None means a
    customer without a partner, always paid directly. `account` is the customer's own account,
    needed only on the `direct` model. A customer with only a carry-in needs a row with net 0.
    """

    customer_id: str
    partner_id: str | None
    net: Decimal
    carried_in: Decimal = _ZERO
    account: BankAccount | None = None


@dataclass(frozen=True, slots=True)
class PartnerPayout:
    """A partner's payout model and, for `partner-account`, the account the pool goes to."""

    partner_id: str
    model: PayoutModel
    account: BankAccount | None = None


@dataclass(frozen=True, slots=True)
class PlannedTransfer:
    """A transfer to make and which customers' balances it settles (`shares`, summing to it)."""

    payee_kind: PayeeKind
    payee_id: str
    transfer: CreditTransfer
    shares: tuple[tuple[str, Decimal], ...]


@dataclass(frozen=True, slots=True)
class CarryOver:
    """A customer balance not paid this quarter; it is the next quarter's `carried_in`."""

    customer_id: str
    amount: Decimal
    reason: CarryOverReason


@dataclass(frozen=True, slots=True)
class PayoutPlan:
    """The outcome of `plan_payouts`: transfers to make and balances carried to next quarter."""

    transfers: tuple[PlannedTransfer, ...]
    carry_overs: tuple[CarryOver, ...]

    @property
    def total_transferred(self) -> Decimal:
        return sum((planned.transfer.amount for planned in self.transfers), _ZERO)

    @property
    def total_carried_over(self) -> Decimal:
        return sum((carry.amount for carry in self.carry_overs), _ZERO)


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


def plan_payouts(
    balances: Sequence[CustomerBalance],
    partners: Mapping[str, PartnerPayout],
    *,
    minimum: Decimal,
    payout_run_id: str,
    remittance: str,
) -> PayoutPlan:
    """Decide the transfers of one payout run and what carries over to the next quarter.

    A payee (a direct customer, or a partner-account partner with all its customers pooled) is
    paid when its balance is positive and at least `minimum`; otherwise every customer's own
    balance carries over, with the payee's reason. `partners` is keyed by partner id. A pool nets negative customer balances against
    positive ones. Zero balances produce neither a transfer nor a carry-over. The plan is
    deterministic: transfers to customers come first, then those to partners, each sorted by
    id, and carry-overs are sorted by customer id.

    Raises `TypeError` for a non-Decimal amount and `PayoutPlanError` for sub-cent amounts, a
    negative minimum, a duplicate customer, or a partner id missing from `partners`.
    """
    _require_cents(minimum, "minimum", PayoutPlanError)
    if minimum < 0:
        raise PayoutPlanError(f"minimum must not be negative, got {minimum}")
    direct: list[tuple[CustomerBalance, Decimal]] = []
    pools: dict[str, list[tuple[CustomerBalance, Decimal]]] = {}
    seen: set[str] = set()
    for balance in balances:
        if balance.customer_id in seen:
            raise PayoutPlanError(f"customer {balance.customer_id!r} appears twice in the balances")
        seen.add(balance.customer_id)
        total = _require_cents(balance.net, f"net of customer {balance.customer_id!r}", PayoutPlanError)
        total += _require_cents(
            balance.carried_in, f"carried_in of customer {balance.customer_id!r}", PayoutPlanError
        )
        if balance.partner_id is None:
            direct.append((balance, total))
            continue
        partner = partners.get(balance.partner_id)
        if partner is None:
            raise PayoutPlanError(
                f"customer {balance.customer_id!r} belongs to partner {balance.partner_id!r}, "
                "which has no payout settings"
            )
        if partner.model is PayoutModel.DIRECT:
            direct.append((balance, total))
        else:
            pools.setdefault(balance.partner_id, []).append((balance, total))

    transfers: list[PlannedTransfer] = []
    carry_overs: list[CarryOver] = []
    for balance, total in sorted(direct, key=lambda item: item[0].customer_id):
        reason = _reason_not_to_pay(total, minimum, balance.account)
        if reason is not None:
            if total:
                carry_overs.append(CarryOver(balance.customer_id, total, reason))
            continue
        assert balance.account is not None
        own_share: tuple[tuple[str, Decimal], ...] = ((balance.customer_id, total),)
        transfers.append(
            _planned(
                PayeeKind.CUSTOMER, balance.customer_id, balance.account, total, own_share, payout_run_id, remittance
            )
        )
    for partner_id in sorted(pools):
        members = sorted(pools[partner_id], key=lambda item: item[0].customer_id)
        total = sum((amount for _, amount in members), _ZERO)
        account = partners[partner_id].account
        reason = _reason_not_to_pay(total, minimum, account)
        if reason is not None:
            carry_overs.extend(
                CarryOver(balance.customer_id, amount, reason) for balance, amount in members if amount
            )
            continue
        assert account is not None
        shares = tuple((balance.customer_id, amount) for balance, amount in members if amount)
        transfers.append(
            _planned(PayeeKind.PARTNER, partner_id, account, total, shares, payout_run_id, remittance)
        )
    carry_overs.sort(key=lambda carry: carry.customer_id)
    return PayoutPlan(tuple(transfers), tuple(carry_overs))


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
        raise SepaError(f"execution date {execution_date} lies before the creation date {created_at.date()}")

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
            "name": sepa_text(transfer.creditor.holder_name, MAX_NAME_CHARS, f"{label} creditor name"),
            "IBAN": _checked_iban(transfer.creditor.iban, label, account_errors),
            "amount": cents,
            "execution_date": execution_date,
            "description": sepa_text(transfer.remittance, MAX_REMITTANCE_CHARS, f"{label} remittance"),
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
    if count != str(document.transaction_count) or Decimal(control_sum or "NaN") != document.control_sum:
        raise SepaValidationError(
            f"the group header says {count} transactions and {control_sum} EUR, the document "
            f"{document.transaction_count} and {document.control_sum}"
        )


def write_sepa(path: Path, document: SepaDocument) -> None:
    """Validate `document` and write it to `path` atomically, replacing any file there.

    The bytes go to a temporary file in the same directory, are fsynced, and are renamed over
    `path`; the directory is fsynced after. Raises `SepaValidationError` before anything is
    written if the document is invalid, and `OSError` if writing fails; in both cases `path`
    is untouched and no temporary file is left.
    """
    validate_pain001(document)
    write_atomically(Path(path), document.xml)


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


def _reason_not_to_pay(total: Decimal, minimum: Decimal, account: BankAccount | None) -> CarryOverReason | None:
    if total <= 0:
        return CarryOverReason.NOT_POSITIVE
    if total < minimum:
        return CarryOverReason.BELOW_MINIMUM
    if account is None:
        return CarryOverReason.NO_ACCOUNT
    return None


def _planned(
    kind: PayeeKind,
    payee_id: str,
    account: BankAccount,
    amount: Decimal,
    shares: tuple[tuple[str, Decimal], ...],
    payout_run_id: str,
    remittance: str,
) -> PlannedTransfer:
    transfer = CreditTransfer(end_to_end_id(payout_run_id, kind, payee_id), account, amount, remittance)
    return PlannedTransfer(kind, payee_id, transfer, shares)


def _derived_id(purpose: str, *parts: str) -> str:
    digest = hashlib.sha256("\x1f".join((purpose, *parts)).encode("utf-8")).hexdigest()
    return "ERE" + digest[: MAX_ID_CHARS - 3].upper()


def _require_cents(amount: object, what: str, error: type[ValueError]) -> Decimal:
    if not isinstance(amount, Decimal):
        raise TypeError(f"{what} must be a Decimal, got {type(amount).__name__} {amount!r}")
    if not amount.is_finite() or amount != amount.quantize(_CENT):
        raise error(f"{what} must be a finite amount in whole cents, got {amount}")
    return amount


def _amount_in_cents(amount: Decimal, what: str) -> int:
    _require_cents(amount, f"{what} amount", SepaError)
    if not _ZERO < amount <= MAX_AMOUNT:
        raise SepaError(f"{what} amount must be between 0.01 and {MAX_AMOUNT} EUR, got {amount}")
    return int(amount.scaleb(2))


def _check_end_to_end_id(value: str) -> None:
    if not _SEPA_ID.fullmatch(value) or value.startswith("/") or value.endswith("/") or "//" in value:
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
