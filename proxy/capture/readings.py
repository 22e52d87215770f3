"""Meter readings made exact and comparable: units normalised, multipliers applied, bounds checked.

Energy is a `Decimal` in Wh, not integer milli-Wh: chargers send decimal text (1.6 strings such
as "12.3456" kWh) or JSON numbers with a power-of-ten multiplier (2.x), and a Decimal holds every
such value exactly with no rounding rule to choose, maps to PostgreSQL NUMERIC, and msgspec
encodes it as an exact string. Values are range-checked before any arithmetic, so scaling is
exact and cannot overflow.

`samples16` and `samples2` turn the decoded sampled values of OCPP 1.6 and 2.x
(`proxy.capture.payloads`) into `Sample`s; a reading that makes no sense marks its sample
invalid (with the reason in `error`), never the whole message. Pure functions.
"""

from __future__ import annotations

import decimal
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from proxy.capture.events import Sample, SignedValue

if TYPE_CHECKING:
    from proxy.capture.payloads import MeterValue2, MeterValue16, SampledValue2, SampledValue16

MAX_MAGNITUDE: Final = Decimal(10) ** 12  # 1 TWh (or TW, ...): beyond any real meter
_MAX_DIGITS = 40
_MAX_ADJUSTED = 30  # decimal exponent of the leading digit, either way
_MAX_MULTIPLIER = 30
_EXACT = decimal.Context(
    prec=2 * _MAX_DIGITS + 2 * _MAX_MULTIPLIER, traps=[decimal.InvalidOperation, decimal.Overflow]
)
_ONE = Decimal(1)
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")

# unit → (normalised unit, power of ten to apply)
_UNITS = {
    "Wh": ("Wh", 0),
    "kWh": ("Wh", 3),
    "MWh": ("Wh", 6),
    "varh": ("varh", 0),
    "kvarh": ("varh", 3),
    "VAh": ("VAh", 0),
    "kVAh": ("VAh", 3),
    "W": ("W", 0),
    "kW": ("W", 3),
    "MW": ("W", 6),
    "var": ("var", 0),
    "kvar": ("var", 3),
    "VA": ("VA", 0),
    "kVA": ("VA", 3),
}
_ENERGY_UNITS = frozenset({"Wh", "varh", "VAh"})
_POWER_UNITS = frozenset({"W", "var", "VA"})
DEFAULT_MEASURAND: Final = "Energy.Active.Import.Register"


def _is_energy(measurand: str) -> bool:
    return measurand.startswith("Energy.")


def _is_power(measurand: str) -> bool:
    return measurand.startswith("Power.") and measurand != "Power.Factor"


def _base_unit(unit: str | None) -> str | None:
    return _UNITS[unit][0] if unit in _UNITS else unit


def _default_unit(measurand: str) -> str | None:
    """The unit of a reading that names none (OCPP says Wh; we read it per measurand family)."""
    if _is_energy(measurand):
        return "varh" if ".Reactive." in measurand else "VAh" if ".Apparent." in measurand else "Wh"
    if _is_power(measurand):
        return "var" if ".Reactive." in measurand else "W"
    return None


def _normalise(
    measurand: str, number: Decimal, unit: str | None, multiplier: int
) -> tuple[Decimal | None, str | None, str | None]:
    """(value, unit, error): `number` × 10^multiplier in the measurand's base unit, exactly.

    Every MeterValues sample passes here, so the number is taken apart once: scaling by 10^n
    within the context's precision only moves the exponent (`tests/unit/test_readings.py` holds
    this to the plain definition).
    """
    base, power = _UNITS.get(unit, (unit, 0))  # type: ignore[arg-type]
    if not number.is_finite():
        return None, base, "not a finite number"
    _, digits, exponent = number.as_tuple()
    if len(digits) > _MAX_DIGITS or abs(number.adjusted()) > _MAX_ADJUSTED:
        return None, base, "number out of range"
    if abs(multiplier) > _MAX_MULTIPLIER:
        return None, base, "multiplier out of range"
    energy = _is_energy(measurand)
    if energy and base not in _ENERGY_UNITS:
        return None, base, f"unit {unit!r} is not an energy unit"
    if _is_power(measurand) and base not in _POWER_UNITS:
        return None, base, f"unit {unit!r} is not a power unit"
    shift = power + multiplier
    value = number.scaleb(shift, _EXACT) if shift else number
    if int(exponent) + shift > 0:  # write 1.2E+4 as 12000
        value = value.quantize(_ONE, context=_EXACT)
    if abs(value) > MAX_MAGNITUDE:
        return None, base, "value out of range"
    if energy and value < 0 and not measurand.endswith(".Net"):
        return None, base, "negative energy reading"
    return value, base, None


def check_energy(value: Decimal, name: str) -> None:
    """Raise ValueError unless `value` is a plausible meter register in Wh (range, digits, exponent)."""
    if (
        not value.is_finite()
        or len(value.as_tuple().digits) > _MAX_DIGITS
        or abs(value.adjusted()) > _MAX_ADJUSTED
        or not 0 <= value <= MAX_MAGNITUDE
    ):
        raise ValueError(f"{name} is not a meter reading in range")


def samples16(meter_values: list[MeterValue16]) -> tuple[Sample, ...]:
    return tuple(_sample16(mv.timestamp, sv) for mv in meter_values for sv in mv.sampled_value)


def _sample16(timestamp: str, sv: SampledValue16) -> Sample:
    measurand = sv.measurand or DEFAULT_MEASURAND
    unit = sv.unit or _default_unit(measurand)
    value: Decimal | None = None
    signed = None
    error = None
    if sv.format == "SignedData":
        signed, unit = SignedValue(sv.value), _base_unit(unit)
    elif len(sv.value) > 100 or not _NUMBER_TEXT.fullmatch(sv.value):
        error, unit = "not a number", _base_unit(unit)
    else:
        value, unit, error = _normalise(measurand, Decimal(sv.value), unit, 0)
    return Sample(
        timestamp,
        measurand,
        value,
        unit,
        sv.value,
        sv.unit,
        0,
        sv.phase,
        sv.location,
        sv.context,
        signed,
        error,
    )


def samples2(meter_values: list[MeterValue2]) -> tuple[Sample, ...]:
    return tuple(_sample2(mv.timestamp, sv) for mv in meter_values for sv in mv.sampled_value)


def _sample2(timestamp: str, sv: SampledValue2) -> Sample:
    measurand = sv.measurand or DEFAULT_MEASURAND
    raw_unit, multiplier = (
        (sv.unit_of_measure.unit, sv.unit_of_measure.multiplier)
        if sv.unit_of_measure
        else (None, 0)
    )
    value, unit, error = _normalise(
        measurand, sv.value, raw_unit or _default_unit(measurand), multiplier
    )
    smv = sv.signed_meter_value
    signed = None
    if smv is not None:
        signed = SignedValue(
            smv.signed_meter_data, smv.signing_method, smv.encoding_method, smv.public_key
        )
    # the sample is invalid already ("multiplier out of range")
    if not -(2**31) <= multiplier < 2**31:
        multiplier = 0  # kept small enough to encode and store; the error says what happened
    return Sample(
        timestamp,
        measurand,
        value,
        unit,
        str(sv.value),
        raw_unit,
        multiplier,
        sv.phase,
        sv.location,
        sv.context,
        signed,
        error,
    )
