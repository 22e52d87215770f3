"""`proxy.capture.readings._normalise` against its plain definition, on any input."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import example, given
from hypothesis import strategies as st

from proxy.capture.readings import (
    _ENERGY_UNITS,
    _EXACT,
    _MAX_ADJUSTED,
    _MAX_DIGITS,
    _MAX_MULTIPLIER,
    _ONE,
    _POWER_UNITS,
    _UNITS,
    MAX_MAGNITUDE,
    _normalise,
)


def reference(
    measurand: str, number: Decimal, unit: str | None, multiplier: int
) -> tuple[Decimal | None, str | None, str | None]:
    """The definition: scale by 10^(unit's power + multiplier) with Decimal arithmetic, then check."""
    base, power = _UNITS[unit] if unit in _UNITS else (unit, 0)
    if not number.is_finite():
        return None, base, "not a finite number"
    if len(number.as_tuple().digits) > _MAX_DIGITS or abs(number.adjusted()) > _MAX_ADJUSTED:
        return None, base, "number out of range"
    if abs(multiplier) > _MAX_MULTIPLIER:
        return None, base, "multiplier out of range"
    if measurand.startswith("Energy.") and base not in _ENERGY_UNITS:
        return None, base, f"unit {unit!r} is not an energy unit"
    if measurand.startswith("Power.") and measurand != "Power.Factor" and base not in _POWER_UNITS:
        return None, base, f"unit {unit!r} is not a power unit"
    value = number.scaleb(power + multiplier, _EXACT)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:
        value = value.quantize(_ONE, context=_EXACT)
    if abs(value) > MAX_MAGNITUDE:
        return None, base, "value out of range"
    if value < 0 and measurand.startswith("Energy.") and not measurand.endswith(".Net"):
        return None, base, "negative energy reading"
    return value, base, None


MEASURANDS = st.sampled_from(
    [
        "Energy.Active.Import.Register",
        "Energy.Active.Net",
        "Energy.Reactive.Export.Interval",
        "Power.Active.Import",
        "Power.Factor",
        "Voltage",
        "SoC",
    ]
)
UNITS = st.sampled_from([*_UNITS, None, "Celsius", "Percent", "wh"])
NUMBERS = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.decimals(places=3, min_value=-(10**13), max_value=10**13),
    st.builds(
        lambda c, e: Decimal(c).scaleb(e), st.integers(-(10**45), 10**45), st.integers(-40, 40)
    ),
)


@given(MEASURANDS, NUMBERS, UNITS, st.integers(-40, 40))
@example("Energy.Active.Import.Register", Decimal("1.2E+4"), "Wh", 0)
@example("Energy.Active.Import.Register", Decimal("-0"), "kWh", 0)
@example("Energy.Active.Import.Register", Decimal("12.3456"), "kWh", -3)
@example("Power.Active.Import", Decimal("1E+9"), "kW", 1)
def test_normalise_is_the_plain_definition(
    measurand: str, number: Decimal, unit: str | None, multiplier: int
) -> None:
    got, expected = (
        _normalise(measurand, number, unit, multiplier),
        reference(measurand, number, unit, multiplier),
    )
    assert got == expected
    # Equal Decimals may still be written differently (1.20 and 1.2): stored text must match too.
    assert str(got[0]) == str(expected[0])
