"""The compact shape events and samples are stored in, and the rules that give them back whole.

An event row of `charger_events` holds the event's JSON without what its columns hold already
(`event_id`, `identity`, `kind`) and, when its samples are rows of `meter_samples`, without
`samples` (`compact_body`). A sample row holds the sample's readable columns (time, measurand
code, value, phase, location, context, signed data) and, in `detail`, only what those cannot give
back (`sample_detail`): in the common case nothing. The SQL functions `capture_event_body` and
`capture_sample_body` (migration 030) apply the same defaults the other way, so a reader gets the
body the event had, as jsonb (whose text reads as before). The defaults, kept in step here and in
SQL (a test stores varied and hostile samples and compares):

- timestamp: `YYYY-MM-DDTHH:MM:SSZ` of the sample's time in UTC;
- value: the numeric column (in `detail` when PostgreSQL would print it otherwise: an exponent,
  a negative zero);
- raw_value: the value as PostgreSQL prints it; unit: by measurand (`default_unit`); raw_unit:
  the unit; multiplier: 0;
- signed: `signed_data` alone (the other fields null); error: null.

Pure functions; nothing here raises for a value the tracker can produce.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec

from proxy.capture.events import (
    Event,
    MeterValuesReported,
    Sample,
    TransactionEvent,
    TransactionStopped,
)

_json = msgspec.json.Encoder()
_ENVELOPE = ("identity", "kind")


def samples_by_reference(event: Event) -> bool:
    """Whether `event`'s samples are stored as `meter_samples` rows (it has a session)."""
    if isinstance(event, MeterValuesReported):
        return event.transaction_id is not None
    return isinstance(event, (TransactionStopped, TransactionEvent))


def compact_body(event: Event) -> bytes:
    """The JSON `charger_events.body` keeps of `event` (see the module docstring)."""
    fields: dict[str, Any] = msgspec.to_builtins(event)
    for key in _ENVELOPE:
        del fields[key]
    if _canonical_uuid(event.event_id):
        del fields["event_id"]  # the uuid column prints it the same way
    if samples_by_reference(event):
        del fields["samples"]
    return _json.encode(fields)


# What `str(uuid.UUID(text))` prints: lowercase, hyphenated (a regex costs a fifth of parsing it).
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _canonical_uuid(text: str) -> bool:
    """Whether the uuid column prints `text` back as it is."""
    return _CANONICAL_UUID.fullmatch(text) is not None


def default_unit(measurand: str) -> str | None:
    """The unit a sample of `measurand` is stored without (SQL: `capture_default_unit`)."""
    if measurand.startswith("Energy."):
        if ".Reactive." in measurand:
            return "varh"
        return "VAh" if ".Apparent." in measurand else "Wh"
    if measurand.startswith("Power.") and measurand != "Power.Factor":
        return "var" if ".Reactive." in measurand else "W"
    if measurand.startswith("Current."):
        return "A"
    return "V" if measurand == "Voltage" else None


def numeric_text(value: Decimal) -> str | None:
    """How PostgreSQL prints `value` stored as numeric, when that is `str(value)`; else None."""
    text = str(value)
    if "E" in text or (value.is_zero() and value.is_signed()):
        return None
    return text


def canonical_time(at: datetime) -> str | None:
    """The default timestamp text of a sample taken at `at` (UTC), or None if it has none."""
    if at.microsecond or not 1000 <= at.year <= 9999:
        return None
    return f"{at.replace(tzinfo=None).isoformat()}Z"  # strftime costs 3-4 times as much


def sample_detail(sample: Sample, sampled_at: datetime) -> str | None:
    """The JSON of what `sample`'s columns cannot give back (its `detail`), None when nothing."""
    detail: dict[str, Any] = {}
    if sample.timestamp != canonical_time(sampled_at):
        detail["timestamp"] = sample.timestamp
    text = None if sample.value is None else numeric_text(sample.value)
    if sample.value is not None and text is None:
        detail["value"] = str(sample.value)
    if text is None or sample.raw_value != text:
        detail["raw_value"] = sample.raw_value
    if sample.unit != default_unit(sample.measurand):
        detail["unit"] = sample.unit
    if sample.raw_unit != sample.unit:
        detail["raw_unit"] = sample.raw_unit
    if sample.multiplier:
        detail["multiplier"] = sample.multiplier
    signed = sample.signed
    if signed is not None and (
        signed.signing_method is not None
        or signed.encoding_method is not None
        or signed.public_key is not None
    ):
        detail["signed"] = msgspec.to_builtins(signed)
    if sample.error is not None:
        detail["error"] = sample.error
    return _json.encode(detail).decode() if detail else None
