"""A charging session as another source supplies it, and the rules every such record must meet.

`ExternalSession` is one session of one charger, from an OCPI CDR (`ocpi`), a push through the
partner API (`api`) or a row of a CSV import (`csv`), supplied by one partner. `check(session,
now)` applies the rules and raises `RecordError(field, detail)` for the first one broken, naming
the field (the dataclass's attribute name; callers rename it for their own input):

- `source` is one of `SOURCES`; `source_ref`, `partner_id` and `transaction_id` are 1 to 255
  printable characters; `identity` follows the OCPP identity rule;
- both times carry a time zone, the session starts before it stops, not before 2000, and it
  stopped no later than `FUTURE_SKEW` after `now`;
- the energy is a finite number of Wh, not negative, and plausible for the duration: at most
  `MAX_POWER_W` (1 MW) all the time; over that, a figure a thousand times smaller that would fit
  is pointed out (kWh given as Wh);
- numbers have at most 15 digits before the point and 6 after;
- meter readings, when given, are finite and not negative; with both given, the meter did not
  go backwards and stop − start is the energy (within `METER_TOLERANCE_WH`: exports round kWh);
- signed meter data is at most `MAX_SIGNED_DATA_CHARS` of text (whether it verifies is
  evidence, weighed in `proxy.ingest.evidence`, not a rule).

Pure: no I/O, no clock (`now` is given). Errors: `RecordError` only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unicodedata import category

from proxy.capture.evidence.ocmf import MAX_ENVELOPE_CHARS
from proxy.wire.ocpp import identity_problem

__all__ = [
    "EARLIEST",
    "FUTURE_SKEW",
    "MAX_POWER_W",
    "MAX_SIGNED_DATA_CHARS",
    "MAX_TEXT_CHARS",
    "METER_TOLERANCE_WH",
    "SOURCES",
    "ExternalSession",
    "RecordError",
    "check",
    "fingerprint",
]

SOURCES = ("ocpi", "api", "csv")
MAX_TEXT_CHARS = 255
MAX_SIGNED_DATA_CHARS = MAX_ENVELOPE_CHARS
MAX_POWER_W = Decimal(1_000_000)
METER_TOLERANCE_WH = Decimal(1)
MAX_INTEGER_DIGITS, MAX_DECIMALS = 15, 6  # of a Wh figure
FUTURE_SKEW = timedelta(minutes=5)
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_SECONDS_PER_HOUR = Decimal(3600)


class RecordError(ValueError):
    """A record that breaks a rule: `field` names the attribute, `detail` says what is wrong."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field, self.detail = field, detail


@dataclass(frozen=True, slots=True)
class ExternalSession:
    """One charging session a partner supplied (see the module docstring).

    `identity` is the charger as the partner names it (one of its chargers: registered, granted
    or linked to its customers; `proxy.ingest.store` checks). Energy and meter readings are Wh.
    """

    source: str
    source_ref: str
    partner_id: str
    identity: str
    transaction_id: str | None
    started_at: datetime
    stopped_at: datetime
    energy_wh: Decimal
    meter_start_wh: Decimal | None = None
    meter_stop_wh: Decimal | None = None
    signed_data: str | None = None


def check(session: ExternalSession, now: datetime) -> None:
    """Raise `RecordError` for the first rule `session` breaks (module docstring)."""
    if session.source not in SOURCES:
        raise RecordError("source", f"must be one of {', '.join(SOURCES)}")
    _text(session.source_ref, "source_ref")
    _text(session.partner_id, "partner_id")
    if session.transaction_id is not None:
        _text(session.transaction_id, "transaction_id")
    if not isinstance(session.identity, str) or (problem := identity_problem(session.identity)):
        raise RecordError("identity", problem or "must be text")
    started, stopped = _times(session, now)
    energy = _energy(session.energy_wh, started, stopped)
    _meters(session, energy)
    if session.signed_data is not None:
        if not isinstance(session.signed_data, str):
            raise RecordError("signed_data", "must be text")
        if len(session.signed_data) > MAX_SIGNED_DATA_CHARS:
            raise RecordError("signed_data", f"is longer than {MAX_SIGNED_DATA_CHARS} characters")
        if "\x00" in session.signed_data:
            raise RecordError("signed_data", "contains a NUL character")


def fingerprint(session: ExternalSession) -> str:
    """SHA-256 of what the record says (not who supplied it, nor its id): the same record sent
    again has the same fingerprint, whatever the form of its times and numbers was."""
    parts = (
        session.identity,
        session.transaction_id or "",
        session.started_at.astimezone(UTC).isoformat(),
        session.stopped_at.astimezone(UTC).isoformat(),
        _canonical(session.energy_wh),
        _canonical(session.meter_start_wh),
        _canonical(session.meter_stop_wh),
        session.signed_data or "",
    )
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _canonical(value: Decimal | None) -> str:
    return "" if value is None else f"{value.normalize():f}"


def _text(value: object, field: str) -> None:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TEXT_CHARS:
        raise RecordError(field, f"must be 1 to {MAX_TEXT_CHARS} characters")
    if not (value.isascii() and value.isprintable()) and any(
        category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs") for ch in value
    ):
        raise RecordError(field, "must not contain control or invisible characters")


def _times(session: ExternalSession, now: datetime) -> tuple[datetime, datetime]:
    times = []
    for field in ("started_at", "stopped_at"):
        value = getattr(session, field)
        if not isinstance(value, datetime):
            raise RecordError(field, "must be a time")
        if value.utcoffset() is None:
            raise RecordError(field, "has no time zone (give an offset, e.g. +01:00, or Z)")
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            raise RecordError(field, "is out of range") from None
        if value < EARLIEST:
            raise RecordError(field, f"is before {EARLIEST.date()}")
        times.append(value)
    started, stopped = times
    if stopped <= started:
        raise RecordError("stopped_at", "must be after started_at")
    if stopped > now + FUTURE_SKEW:
        raise RecordError("stopped_at", "is in the future")
    return started, stopped


def _number(value: object, field: str) -> Decimal:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise RecordError(field, "must be a finite number")
    if value < 0:
        raise RecordError(field, "must not be negative")
    if value.adjusted() >= MAX_INTEGER_DIGITS or _decimals(value) > MAX_DECIMALS:
        raise RecordError(
            field, f"must have at most {MAX_INTEGER_DIGITS} digits and {MAX_DECIMALS} decimals"
        )
    return value


def _decimals(value: Decimal) -> int:
    """Digits after the point, trailing zeros not counted (no context: nothing overflows)."""
    _, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    if exponent >= -MAX_DECIMALS:
        return max(0, -exponent)  # within the bound, trailing zeros or not
    written = "".join(map(str, digits)).lstrip("0")
    if not written:
        return 0  # zero
    return max(0, -(exponent + len(written) - len(written.rstrip("0"))))


def _energy(value: object, started: datetime, stopped: datetime) -> Decimal:
    energy = _number(value, "energy_wh")
    hours = Decimal((stopped - started).total_seconds()) / _SECONDS_PER_HOUR
    possible = MAX_POWER_W * hours
    if energy > possible:
        hint = "; is it Wh where kWh is expected?" if energy / 1000 <= possible else ""
        raise RecordError(
            "energy_wh",
            f"{energy.normalize():f} Wh in {stopped - started} is more than"
            f" {MAX_POWER_W.normalize():f} W could deliver{hint}",
        )
    return energy


def _meters(session: ExternalSession, energy: Decimal) -> None:
    start = stop = None
    if session.meter_start_wh is not None:
        start = _number(session.meter_start_wh, "meter_start_wh")
    if session.meter_stop_wh is not None:
        stop = _number(session.meter_stop_wh, "meter_stop_wh")
    if start is None or stop is None:
        return
    if stop < start:
        raise RecordError(
            "meter_stop_wh",
            f"{stop.normalize():f} Wh is below the meter start {start.normalize():f} Wh:"
            " the meter went backwards",
        )
    if abs(stop - start - energy) > METER_TOLERANCE_WH:
        raise RecordError(
            "energy_wh",
            f"{energy.normalize():f} Wh differs from meter stop − start"
            f" ({(stop - start).normalize():f} Wh)",
        )
