"""Fee plans: 20 % default, referral discounts down to the 10 % floor, VAT inside the fee."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.ere.core.fees import (
    DEFAULT_FEE_RATE,
    FEE_FLOOR_RATE,
    FeePlan,
    FeePlanError,
    referral_plan,
    split_gross,
    vat_included_in,
)
from proxy.ere.core.rounding import to_cents

D = Decimal


def test_default_plan_is_twenty_percent() -> None:
    assert FeePlan().rate == D("0.20") == DEFAULT_FEE_RATE


def test_golden_split_of_the_default_plan() -> None:
    # gross €4.23 × 20 % = €0.846 → fee €0.85 (cent, half up)
    # VAT in the fee: €0.85 × 21/121 = €0.14752… → €0.15; fee without VAT €0.70
    # net = €4.23 − €0.85 = €3.38
    split = split_gross(D("4.23"), FeePlan())
    assert (split.fee, split.fee_vat, split.fee_excl_vat, split.net) == (
        D("0.85"),
        D("0.15"),
        D("0.70"),
        D("3.38"),
    )


def test_golden_split_with_a_referral() -> None:
    # 20 % − 5 % referral = 15 %; gross €9.98 × 15 % = €1.497 → €1.50
    # VAT €1.50 × 21/121 = €0.26033… → €0.26; net €9.98 − €1.50 = €8.48
    split = split_gross(D("9.98"), FeePlan().with_referral(D("0.05")))
    assert (split.fee_rate, split.fee, split.fee_vat, split.net) == (
        D("0.15"),
        D("1.50"),
        D("0.26"),
        D("8.48"),
    )


def test_fee_rounds_half_up_to_the_cent() -> None:
    # €0.05 × 10 % = €0.005 → €0.01 (banker's rounding would give €0.00)
    assert split_gross(D("0.05"), FeePlan(D("0.10"))).fee == D("0.01")
    # A correction downwards splits as the exact negative: −€0.005 → −€0.01
    negative = split_gross(D("-0.05"), FeePlan(D("0.10")))
    assert (negative.fee, negative.net) == (D("-0.01"), D("-0.04"))


def test_referrals_stop_at_the_floor() -> None:
    plan = FeePlan()
    for _ in range(6):
        plan = plan.with_referral(D("0.025"))
    # 20 % − 6 × 2.5 % = 5 %, held at the 10 % floor
    assert plan.rate == D("0.10") == FEE_FLOOR_RATE
    assert FeePlan(D("0.20"), (D("0.04"), D("0.03"))).rate == D("0.13")


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: FeePlan(D("0.09")), FeePlanError, r"fee rate 9 % is below the 10 % floor"),
        (lambda: FeePlan(D("0.0999")), FeePlanError, r"9.99 % is below the 10 % floor"),
        (lambda: FeePlan(D("1.01")), FeePlanError, "more than the whole gross amount"),
        (lambda: FeePlan().with_referral(D("-0.01")), FeePlanError, "cannot be negative"),
        (lambda: FeePlan(0.2), TypeError, "base_rate must be a Decimal, got float"),  # type: ignore[arg-type]
        (lambda: FeePlan(D("NaN")), ValueError, "must be a finite number"),
        (lambda: split_gross(D("4.235"), FeePlan()), ValueError, "whole number of cents"),
        (lambda: split_gross(4.23, FeePlan()), TypeError, "gross must be a Decimal"),  # type: ignore[arg-type]
    ],
)
def test_bad_plans_and_amounts_are_errors(
    build: object, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        build()  # type: ignore[operator]


def test_vat_is_twenty_one_over_one_twenty_one() -> None:
    # €121.00 incl. 21 % VAT holds €21.00 VAT; €1.00 holds €0.17355… → €0.17
    assert vat_included_in(D("121.00")) == D("21.00")
    assert vat_included_in(D("1.00")) == D("0.17")


cents = st.integers(-10_000_000, 10_000_000).map(lambda n: D(n).scaleb(-2))
rates = st.integers(10, 100).map(lambda n: D(n).scaleb(-2))
discounts = st.lists(st.integers(0, 20).map(lambda n: D(n).scaleb(-3)), max_size=8)


@given(rates, discounts, cents)
def test_property_no_fee_below_the_floor(
    base: Decimal, referral: list[Decimal], gross: Decimal
) -> None:
    plan = FeePlan(base, tuple(referral))
    assert FEE_FLOOR_RATE <= plan.rate <= base
    split = split_gross(abs(gross), plan)
    assert split.fee >= to_cents(abs(gross) * FEE_FLOOR_RATE)


@given(rates, discounts, cents)
def test_property_every_cent_is_accounted_for(
    base: Decimal, referral: list[Decimal], gross: Decimal
) -> None:
    split = split_gross(gross, FeePlan(base, tuple(referral)))
    assert split.fee + split.net == split.gross == gross
    assert split.fee_vat + split.fee_excl_vat == split.fee
    for figure in (split.fee, split.fee_vat, split.net):
        assert figure == to_cents(figure)
    assert abs(split.fee_vat) <= abs(split.fee)
    assert split_gross(-gross, FeePlan(base, tuple(referral))).fee == -split.fee


def test_active_referrals_step_the_fee_down_to_the_floor() -> None:
    step = Decimal("0.02")
    assert referral_plan(0, step).rate == Decimal("0.20")
    assert referral_plan(2, step).rate == Decimal("0.16")
    assert referral_plan(5, step).rate == Decimal("0.10")  # exactly at the floor
    assert referral_plan(7, step).rate == Decimal("0.10")  # more referrals: still the floor
    with pytest.raises(FeePlanError):
        referral_plan(-1, step)
    with pytest.raises(FeePlanError):
        referral_plan(1, Decimal("-0.01"))
