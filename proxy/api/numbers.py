"""Decimals as the API shows them, sans-IO: fixed-point, never an exponent.

The database driver may hand back 10000 Wh as `1E+4`; `plain` writes any decimal without an
exponent, and `kwh` turns watt-hours into kWh with at least the Wh's three places (10000 Wh is
`10.000` kWh, 1234.5 Wh `1.2345`).
"""

from __future__ import annotations

from decimal import Decimal

__all__ = ["kwh", "plain"]

_WH = Decimal("0.001")


def plain(value: Decimal | None) -> Decimal | None:
    return None if value is None else Decimal(format(value, "f"))


def kwh(wh: Decimal | None) -> Decimal | None:
    if wh is None:
        return None
    value = wh.scaleb(-3)
    if value.as_tuple().exponent >= -3:  # type: ignore[operator]  # finite: an int
        value = value.quantize(_WH)
    return plain(value)
