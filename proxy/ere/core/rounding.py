"""The rounding rules of the accounting core, one per figure, and the guard against floats.

Every figure is rounded exactly once, where it is produced, with `ROUND_HALF_UP` (a half goes
away from zero, so a reversed amount rounds to the exact negative of the original):

* energy (kWh) is never rounded: Wh readings divided by 1000 are exact in `Decimal`;
* ERE are rounded to 0.01 ERE (`to_ere`);
* euro amounts (gross, fee, VAT in the fee) are rounded to the cent (`to_cents`);
* net is gross − fee and the fee without VAT is fee − VAT: differences of rounded figures,
  never rounded again, so gross = fee + net holds to the cent by construction.

Arithmetic that must be exact (sums of kWh, products before rounding) runs in `exact()`, a
context of 60 significant digits that raises `decimal.Inexact` rather than round silently; the
one quotient that cannot be exact (VAT = fee × 21/121) is taken in `wide()` and then rounded to
the cent, so the only rounding that ever happens is the one named above.
"""

from __future__ import annotations

import decimal
from decimal import ROUND_HALF_UP, Decimal

__all__ = ["CENT", "ERE_STEP", "ROUNDING", "exact", "require_decimal", "to_cents", "to_ere", "wide"]

ROUNDING = ROUND_HALF_UP
CENT = Decimal("0.01")
ERE_STEP = Decimal("0.01")

_WIDE = decimal.Context(prec=60, rounding=ROUND_HALF_UP, traps=[decimal.InvalidOperation])
_EXACT = decimal.Context(
    prec=60, rounding=ROUND_HALF_UP, traps=[decimal.InvalidOperation, decimal.Inexact]
)


def exact() -> decimal.Context:
    """A context for arithmetic that must be exact: 60 digits, `decimal.Inexact` if not."""
    return _EXACT.copy()


def wide() -> decimal.Context:
    """A 60-digit context for a quotient that is rounded to its unit right afterwards."""
    return _WIDE.copy()


def require_decimal(value: object, name: str) -> Decimal:
    """Return `value` if it is a finite Decimal.

    Raises TypeError for anything else (a float above all: binary fractions cannot hold cents)
    and ValueError for NaN or infinity, naming the figure in both messages.
    """
    if not isinstance(value, Decimal):
        raise TypeError(f"{name} must be a Decimal, got {type(value).__name__} {value!r}")
    if not value.is_finite():
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value


def to_cents(amount: Decimal) -> Decimal:
    """Round a euro amount to the cent, half away from zero (a zero result is never -0.00)."""
    return _rounded(require_decimal(amount, "amount"), CENT)


def to_ere(credits: Decimal) -> Decimal:
    """Round a number of ERE to 0.01 ERE, half away from zero (a zero result is never -0.00)."""
    return _rounded(require_decimal(credits, "ERE"), ERE_STEP)


def _rounded(value: Decimal, step: Decimal) -> Decimal:
    result = value.quantize(step, rounding=ROUNDING, context=_WIDE)
    return result if result else result.copy_abs()
