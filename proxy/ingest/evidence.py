"""The meter evidence of a supplied session: its meter class, why, and its signed readings.

`weigh(signed_data, pinned_key=, meter_type=, meter_serial=)` applies the capture's rules
(`proxy.capture.evidence`) to a session another source supplied:

- with signed meter data (OCMF, in any form chargers send it): `signed-verified` when the
  signature verifies with the charger's pinned key (the first key its meter signed with over
  OCPP) or, for a charger with no key pinned, the key sent with the data; `signed-unverified`
  otherwise (no key, a failing signature, unreadable data), the reason in `detail`. A supplied
  record never pins a key: only the charger's own traffic does;
- without: `declared` or `unknown`, from the charger's boot facts (meter type on the MID meter
  list, with a serial), as a captured session starts.

The signed begin and end energy readings (OCMF `TX` B, and the last of E/L/R/A/P) are returned
in Wh: the session's energy is taken from them, as for a captured session.

Pure (the MID meter list is read once); never raises for bad data.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from proxy.capture.evidence import (
    EvidenceError,
    MeterClass,
    classify,
    parse_signed_meter_value,
)

__all__ = ["Evidence", "weigh"]

_END_EVENTS = frozenset("ELRAP")  # OCMF TX values that end a transaction


@dataclass(frozen=True, slots=True)
class Evidence:
    meter_class: MeterClass
    detail: str
    signed_start_wh: Decimal | None = None
    signed_stop_wh: Decimal | None = None


def weigh(
    signed_data: str | None,
    *,
    pinned_key: str | None,
    meter_type: str | None,
    meter_serial: str | None,
) -> Evidence:
    """The evidence of one session (see the module docstring)."""
    if signed_data is None:
        meter_class = classify(meter_type, meter_serial)
        if meter_class is MeterClass.DECLARED:
            return Evidence(meter_class, "no signed data; the charger declared a MID meter")
        return Evidence(meter_class, "no signed data, and no MID meter declared by the charger")
    try:
        data = parse_signed_meter_value(signed_data)
    except EvidenceError as error:
        return Evidence(MeterClass.SIGNED_UNVERIFIED, f"signed data unreadable: {error.reason}")
    readings = [r for r in data.record.readings if r.wh is not None]
    begin = next((r.wh for r in readings if r.event == "B"), None)
    end = next((r.wh for r in reversed(readings) if r.event in _END_EVENTS), None)
    key, whose = (
        (pinned_key, "the charger's pinned key")
        if pinned_key
        else (data.public_key, "the key sent with the data (none pinned for the charger)")
    )
    if not key:
        return Evidence(
            MeterClass.SIGNED_UNVERIFIED,
            "no key to verify the signature with (none pinned for the charger, none sent)",
            begin,
            end,
        )
    meter_class = classify(None, None, [data], known_key=key)
    verdict = "verifies" if meter_class is MeterClass.SIGNED_VERIFIED else "does not verify"
    return Evidence(meter_class, f"the signature {verdict} with {whose}", begin, end)
