"""Our fee: a share of the gross ERE proceeds, VAT included, never below the floor.

The default plan takes 20 % of gross. Referrals lower it: each referral discount is subtracted
from the base rate, and the result stops at the 10 % floor, however many referrals stack up.
`referral_plan` is the plan of a customer with n active referrals in a quarter (each worth
`[ere] referral_step`, 2 points by default, so 5 active referrals reach the floor).
A plan whose own base rate is below the floor (or above 100 %) is an error, `FeePlanError`.

The fee includes 21 % Dutch VAT; statements show the VAT inside it: VAT = fee × 21/121.
Rounding (see `proxy.ere.core.rounding`): fee = gross × rate and VAT = fee × 21/121 are each
rounded to the cent, half up; net = gross − fee and fee without VAT = fee − VAT are exact
differences. So gross = fee + net to the cent, and the VAT is never more than the fee.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, localcontext

from proxy.ere.core.rounding import exact, require_decimal, to_cents, wide

__all__ = [
    "DEFAULT_FEE_RATE",
    "FEE_FLOOR_RATE",
    "VAT_RATE",
    "FeePlan",
    "FeePlanError",
    "FeeSplit",
    "referral_plan",
    "split_gross",
    "vat_included_in",
]

DEFAULT_FEE_RATE = Decimal("0.20")
FEE_FLOOR_RATE = Decimal("0.10")
VAT_RATE = Decimal("0.21")  # Dutch standard rate, charged on our fee


class FeePlanError(ValueError):
    """A fee plan outside the allowed range; the message gives the rate and the limit."""


@dataclass(frozen=True, slots=True)
class FeePlan:
    """A customer's fee plan: a base rate (VAT included) lowered by referral discounts.

    Rates are fractions of gross (Decimal("0.20") is 20 %). Raises FeePlanError if the base rate
    is below FEE_FLOOR_RATE or above 1, or if a discount is negative; TypeError for floats.
    """

    base_rate: Decimal = DEFAULT_FEE_RATE
    referral_discounts: tuple[Decimal, ...] = ()

    def __post_init__(self) -> None:
        base = require_decimal(self.base_rate, "base_rate")
        if base < FEE_FLOOR_RATE:
            raise FeePlanError(
                f"fee rate {_percent(base)} is below the {_percent(FEE_FLOOR_RATE)} floor"
            )
        if base > 1:
            raise FeePlanError(f"fee rate {_percent(base)} is more than the whole gross amount")
        if not isinstance(self.referral_discounts, tuple):
            raise TypeError("referral_discounts must be a tuple of Decimal")
        for discount in self.referral_discounts:
            if require_decimal(discount, "referral discount") < 0:
                raise FeePlanError(
                    f"a referral discount cannot be negative, got {_percent(discount)}"
                )

    @property
    def rate(self) -> Decimal:
        """The rate charged: base minus all referral discounts, but never below the floor."""
        with localcontext(exact()):
            return max(FEE_FLOOR_RATE, self.base_rate - sum(self.referral_discounts, Decimal(0)))

    def with_referral(self, discount: Decimal) -> FeePlan:
        """This plan with one more referral discount (FeePlanError if it is negative)."""
        return FeePlan(self.base_rate, (*self.referral_discounts, discount))


@dataclass(frozen=True, slots=True)
class FeeSplit:
    """A gross amount divided into our fee (VAT included) and the owner's net payout."""

    gross: Decimal
    fee_rate: Decimal
    fee: Decimal
    fee_vat: Decimal
    net: Decimal

    @property
    def fee_excl_vat(self) -> Decimal:
        """Our fee without the VAT in it."""
        return exact().subtract(self.fee, self.fee_vat)


def vat_included_in(amount: Decimal) -> Decimal:
    """The VAT contained in an amount that includes 21 % VAT: amount × 21/121, to the cent."""
    context = wide()
    return to_cents(context.divide(exact().multiply(amount, VAT_RATE), 1 + VAT_RATE))


def split_gross(gross: Decimal, plan: FeePlan) -> FeeSplit:
    """Split a gross amount in whole cents by `plan`: fee and VAT rounded, net the remainder.

    Negative gross (a correction downwards) splits symmetrically: every figure is the exact
    negative of the split of the positive amount. ValueError if gross is not in whole cents.
    """
    amount = require_decimal(gross, "gross")
    if to_cents(amount) != amount:
        raise ValueError(f"gross must be a whole number of cents, got {amount}")
    amount = to_cents(amount)
    rate = plan.rate
    fee = to_cents(exact().multiply(amount, rate))
    net = exact().subtract(amount, fee)
    return FeeSplit(gross=amount, fee_rate=rate, fee=fee, fee_vat=vat_included_in(fee), net=net)


def referral_plan(active_referrals: int, step: Decimal) -> FeePlan:
    """The default plan less `step` per active referral (FeePlanError for a negative step)."""
    if active_referrals < 0:
        raise FeePlanError(f"active referrals cannot be negative, got {active_referrals}")
    return FeePlan(referral_discounts=(require_decimal(step, "step"),) * active_referrals)


def _percent(rate: Decimal) -> str:
    return f"{(rate * 100).normalize():f} %"
