"""Who is paid this quarter: the payout plan of transfers and carry-overs.

`plan_payouts` turns the customers' net amounts for a quarter (plus what they carried in from the
previous quarter) into transfers and carry-overs. A customer of a partner on the `direct` payout
model is paid to their own account; all customers of a `partner-account` partner are paid
together, in one transfer to the partner's account. Every cent is accounted for:
`sum(net + carried_in) == sum(transfer amounts) + sum(carry-overs)`, exactly.

The planned transfers are `proxy.ere.core.sepa.CreditTransfer`s with deterministic end-to-end
ids (`sepa.end_to_end_id`), ready for `sepa.build_credit_transfer`. The plan is pure: no clock,
no database, no files.

Money is `Decimal` euros in whole cents; a float is a `TypeError`, anything finer than a cent a
`PayoutPlanError`: nothing is rounded here (the accounting core rounds each figure once).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from proxy.ere.core.sepa import BankAccount, CreditTransfer, PayeeKind, end_to_end_id, require_cents

__all__ = [
    "CarryOver",
    "CarryOverReason",
    "CustomerBalance",
    "PartnerPayout",
    "PayoutModel",
    "PayoutPlan",
    "PayoutPlanError",
    "PlannedTransfer",
    "plan_payouts",
]

_ZERO = Decimal(0)


class PayoutPlanError(ValueError):
    """Balances or partner settings that cannot be planned (unknown partner, duplicate customer)."""


class PayoutModel(enum.Enum):
    """How a partner's customers are paid: each to their own account, or pooled to the partner."""

    DIRECT = "direct"
    PARTNER_ACCOUNT = "partner-account"


class CarryOverReason(enum.Enum):
    """Why a balance was not paid this quarter and moves to the next one."""

    BELOW_MINIMUM = "below-minimum"  # positive, but less than the configured minimum
    NOT_POSITIVE = "not-positive"  # negative (a correction): offset against later quarters
    NO_ACCOUNT = "no-account"  # nowhere to pay it yet


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
    """A partner's payout model and, for `partner-account`, the account the pool goes to.

    `remittance`: the remittance information of transfers to the partner's `direct` customers
    (e.g. naming the partner, `PartnerBranding.remittance`); None: the run's.
    """

    partner_id: str
    model: PayoutModel
    account: BankAccount | None = None
    remittance: str | None = None


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
    balance carries over, with the payee's reason. `partners` is keyed by partner id. A pool
    nets negative customer balances against positive ones. Zero balances produce neither a
    transfer nor a carry-over. A transfer carries `remittance`, or, to a customer of a partner
    with a `remittance` of its own, that one. The plan is deterministic: transfers to customers
    come first, then those to partners, each sorted by id, and carry-overs are sorted by
    customer id.

    Raises `TypeError` for a non-Decimal amount and `PayoutPlanError` for sub-cent amounts, a
    negative minimum, a duplicate customer, or a partner id missing from `partners`.
    """
    require_cents(minimum, "minimum", PayoutPlanError)
    if minimum < 0:
        raise PayoutPlanError(f"minimum must not be negative, got {minimum}")
    direct: list[tuple[CustomerBalance, Decimal]] = []
    pools: dict[str, list[tuple[CustomerBalance, Decimal]]] = {}
    seen: set[str] = set()
    for balance in balances:
        if balance.customer_id in seen:
            raise PayoutPlanError(f"customer {balance.customer_id!r} appears twice in the balances")
        seen.add(balance.customer_id)
        total = require_cents(
            balance.net, f"net of customer {balance.customer_id!r}", PayoutPlanError
        )
        total += require_cents(
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
        partner = None if balance.partner_id is None else partners[balance.partner_id]
        transfers.append(
            _planned(
                PayeeKind.CUSTOMER,
                balance.customer_id,
                balance.account,
                total,
                own_share,
                payout_run_id,
                (partner.remittance if partner else None) or remittance,
            )
        )
    for partner_id in sorted(pools):
        members = sorted(pools[partner_id], key=lambda item: item[0].customer_id)
        total = sum((amount for _, amount in members), _ZERO)
        account = partners[partner_id].account
        reason = _reason_not_to_pay(total, minimum, account)
        if reason is not None:
            carry_overs.extend(
                CarryOver(balance.customer_id, amount, reason)
                for balance, amount in members
                if amount
            )
            continue
        assert account is not None
        shares = tuple((balance.customer_id, amount) for balance, amount in members if amount)
        transfers.append(
            _planned(
                PayeeKind.PARTNER, partner_id, account, total, shares, payout_run_id, remittance
            )
        )
    carry_overs.sort(key=lambda carry: carry.customer_id)
    return PayoutPlan(tuple(transfers), tuple(carry_overs))


def _reason_not_to_pay(
    total: Decimal, minimum: Decimal, account: BankAccount | None
) -> CarryOverReason | None:
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
    transfer = CreditTransfer(
        end_to_end_id(payout_run_id, kind, payee_id), account, amount, remittance
    )
    return PlannedTransfer(kind, payee_id, transfer, shares)
