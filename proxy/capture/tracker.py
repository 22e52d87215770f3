"""Tracker: turns the OCPP messages of one link into session events (sans-IO).

The link feeds every message its codec reports, one call per message and direction:
`from_charger(message, at)` and `from_upstream(message, at)`, where `at` is the Unix time in
seconds at which the proxy received the bytes. Each call returns the events (`proxy.capture.events`) that
message completed, in order; the tracker has no I/O and no clock of its own.

What it tracks (anything else, including pings, binary frames, Heartbeat and unknown actions,
costs a dict insert and a dict pop per CALL and answer, and the payload is never read):

- OCPP 1.6: BootNotification, StatusNotification, StartTransaction, StopTransaction, MeterValues;
- OCPP 2.0/2.0.1/2.1: BootNotification, StatusNotification, TransactionEvent, MeterValues.

These are all CALLs of the charger. Events that need the back-office's answer (ChargerBooted for
its status, TransactionStarted for its transactionId) come out when the answer (CALLRESULT or
CALLERROR) arrives, stamped with the answer's `at`; the others come out on the CALL itself, so a
link that drops before the answer loses no meter data. CALLs are correlated with their answers
by unique id, per direction: the charger's CALLs with the back-office's answers and the other way
round. OCPP allows one outstanding CALL per direction; we remember up to `MAX_OUTSTANDING` and
drop the oldest beyond that. Answers to unknown ids are ignored (`unmatched_answers`); a CALL
reusing an outstanding id replaces it (`duplicate_ids`).

Errors: a tracked CALL or answer whose payload lacks what the action needs (wrong JSON type,
missing field, not an object, an impossible meterStart, a value out of its bound, nesting too deep
to walk) gives an `Unparseable` event with the raw frame, counted in `unparseable` and logged
(rate-limited); forwarding never depends on it. A single absurd meter reading (NaN, a non-numeric
string, out of range, a multiplier out of range, a unit that does not fit the measurand, a negative
energy register) only marks that `Sample` invalid. The feed methods never raise: an unexpected
failure becomes an `Unparseable` event too.

Bounds: every value the schemas below decode is bounded, so that every event can be encoded
(msgpack holds 64-bit integers) and stored (PostgreSQL integer columns, btree index entries of at
most 2,704 bytes): ids that go to integer columns are 0..2^31-1, other integers 64-bit; strings
that go to indexed columns (a 2.x transactionId, a measurand) at most 255 and 100 characters, other
short strings (enumerations, vendor facts, tokens, timestamps) at most 255, signed meter data and
keys at most 64 KiB; lists of meter values at most 10,000 and of sampled values per meter value at
most 1,000. The limits are far above what OCPP allows (e.g. 36 characters for a transactionId),
so only a broken or hostile charger meets them. Strings may hold any character the JSON allows,
NUL included: the session store replaces what PostgreSQL cannot hold (`proxy.capture.sessions`). Lone
surrogates cannot occur: msgspec refuses them (`\ud800` escapes), as does the codec's UTF-8 check.

Event ids (`event_id`): a UUID (RFC 9562 version 8) made from the SHA-256 of the canonical JSON
of [kind, identity, when, every other field of the event in declaration order], where `when` is
`at` in whole milliseconds for the kinds whose payload has no timestamp of its own
(charger_booted, status_changed, unparseable) and null for the others. Hence:
- a replay of the same frames (with their reception times) gives the same ids;
- a charger re-sending a queued StartTransaction, StopTransaction, MeterValues or
  TransactionEvent after a reconnect (same content, possibly a new message id) gives the same id,
  so a session's energy is never stored twice; a different transactionId in the answer, a
  different reading, timestamp or seqNo gives a different id;
- boots and status changes that repeat byte for byte are told apart by their reception time.
Ids are stable as long as the event types keep their fields; changing a type changes its ids.

Energy is a `Decimal` in Wh, not integer milli-Wh: chargers send decimal text (1.6 strings such
as "12.3456" kWh) or JSON numbers with a power-of-ten multiplier (2.x), and a Decimal holds every
such value exactly with no rounding rule to choose, maps to PostgreSQL NUMERIC, and msgspec
encodes it as an exact string. Values are range-checked before any arithmetic, so scaling is
exact and cannot overflow.
"""

from __future__ import annotations

import decimal
import hashlib
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Final

import msgspec

from proxy.capture.events import (
    RAW_LIMIT,
    ChargerBooted,
    Event,
    MeterValuesReported,
    Sample,
    SignedValue,
    StatusChanged,
    TransactionEvent,
    TransactionStarted,
    TransactionStopped,
    Unparseable,
)
from proxy.wire.codec import CALL, CALLERROR, CALLRESULT, Message

log = logging.getLogger("proxy.tracker")

MAX_OUTSTANDING: Final = 32  # remembered unanswered CALLs per direction
_LOG_FIRST = 10  # unparseable frames logged one by one per link; then every _LOG_EVERY-th
_LOG_EVERY = 1000

# -- normalising meter readings ----------------------------------------------------------------

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
    """(value, unit, error): `number` × 10^multiplier in the measurand's base unit, exactly."""
    base, power = _UNITS[unit] if unit in _UNITS else (unit, 0)
    if not number.is_finite():
        return None, base, "not a finite number"
    if len(number.as_tuple().digits) > _MAX_DIGITS or abs(number.adjusted()) > _MAX_ADJUSTED:
        return None, base, "number out of range"
    if abs(multiplier) > _MAX_MULTIPLIER:
        return None, base, "multiplier out of range"
    if _is_energy(measurand) and base not in _ENERGY_UNITS:
        return None, base, f"unit {unit!r} is not an energy unit"
    if _is_power(measurand) and base not in _POWER_UNITS:
        return None, base, f"unit {unit!r} is not a power unit"
    value = number.scaleb(power + multiplier, _EXACT)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent > 0:  # write 1.2E+4 as 12000
        value = value.quantize(_ONE, context=_EXACT)
    if abs(value) > MAX_MAGNITUDE:
        return None, base, "value out of range"
    if value < 0 and _is_energy(measurand) and not measurand.endswith(".Net"):
        return None, base, "negative energy reading"
    return value, base, None


def _check_energy(value: Decimal, name: str) -> None:
    """Raise ValueError unless `value` is a plausible meter register in Wh (range, digits, exponent)."""
    if (
        not value.is_finite()
        or len(value.as_tuple().digits) > _MAX_DIGITS
        or abs(value.adjusted()) > _MAX_ADJUSTED
        or not 0 <= value <= MAX_MAGNITUDE
    ):
        raise ValueError(f"{name} is not a meter reading in range")


# -- payload shapes: what each tracked action needs ----------------------------------------------
# Unknown fields are ignored; a missing required field or a wrong JSON type fails the decode.
# Energy registers (meterStart, meterStop) accept any JSON number or numeric string, exactly, as
# Decimal: the schema says integer, but a charger sending 1234.0 must not lose its session.

Id = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]  # connector and EVSE ids: integer columns
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]  # other integers: msgpack, jsonb
TxId16 = Int64
# enumerations, vendor facts, tokens, timestamps
Text = Annotated[str, msgspec.Meta(max_length=255)]
TxId2 = Annotated[str, msgspec.Meta(max_length=255)]  # sessions (identity, transaction_id): indexed
Measurand = Annotated[str, msgspec.Meta(max_length=100)]  # measurands.name: indexed
# signed meter data, public keys, 1.6 values
Blob = Annotated[str, msgspec.Meta(max_length=64 * 1024)]
MAX_METER_VALUES: Final = 10_000
MAX_SAMPLED_VALUES: Final = 1_000


class _Payload(msgspec.Struct, rename="camel"):
    pass


class _Boot16(_Payload):
    charge_point_vendor: Text
    charge_point_model: Text
    charge_point_serial_number: Text | None = None
    charge_box_serial_number: Text | None = None
    firmware_version: Text | None = None
    meter_type: Text | None = None
    meter_serial_number: Text | None = None


class _BootResult(_Payload):
    status: Text


class _Status16(_Payload):
    connector_id: Id
    status: Text
    error_code: Text
    timestamp: Text | None = None


class _SampledValue16(_Payload):
    value: Blob  # the signed data when format is SignedData
    context: Text | None = None
    format: Text | None = None
    measurand: Measurand | None = None
    phase: Text | None = None
    location: Text | None = None
    unit: Text | None = None


class _MeterValue16(_Payload):
    timestamp: Text
    sampled_value: Annotated[list[_SampledValue16], msgspec.Meta(max_length=MAX_SAMPLED_VALUES)]


class _MeterValues16(_Payload):
    connector_id: Id
    meter_value: Annotated[list[_MeterValue16], msgspec.Meta(max_length=MAX_METER_VALUES)]
    transaction_id: TxId16 | None = None


class _Start16(_Payload):
    connector_id: Id
    id_tag: Text
    meter_start: Decimal
    timestamp: Text
    reservation_id: Int64 | None = None

    def __post_init__(self) -> None:
        _check_energy(self.meter_start, "meterStart")


class _IdTagInfo(_Payload):
    status: Text


class _StartResult16(_Payload):
    transaction_id: TxId16
    id_tag_info: _IdTagInfo


class _Stop16(_Payload):
    transaction_id: TxId16
    meter_stop: Decimal
    timestamp: Text
    reason: Text | None = None
    id_tag: Text | None = None
    transaction_data: Annotated[list[_MeterValue16], msgspec.Meta(max_length=MAX_METER_VALUES)] = []

    def __post_init__(self) -> None:
        _check_energy(self.meter_stop, "meterStop")


class _Station(_Payload):
    model: Text
    vendor_name: Text
    serial_number: Text | None = None
    firmware_version: Text | None = None


class _Boot2(_Payload):
    charging_station: _Station
    reason: Text | None = None


class _Status2(_Payload):
    connector_status: Text
    evse_id: Id
    connector_id: Id
    timestamp: Text | None = None


class _UnitOfMeasure(_Payload):
    unit: Text | None = None
    multiplier: int = 0  # any size msgspec reads; out of range makes the sample invalid


class _SignedMeterValue(_Payload):
    signed_meter_data: Blob
    signing_method: Text | None = None
    encoding_method: Text | None = None
    public_key: Blob | None = None


class _SampledValue2(_Payload):
    value: Decimal
    context: Text | None = None
    measurand: Measurand | None = None
    phase: Text | None = None
    location: Text | None = None
    signed_meter_value: _SignedMeterValue | None = None
    unit_of_measure: _UnitOfMeasure | None = None


class _MeterValue2(_Payload):
    timestamp: Text
    sampled_value: Annotated[list[_SampledValue2], msgspec.Meta(max_length=MAX_SAMPLED_VALUES)]


class _MeterValues2(_Payload):
    evse_id: Id
    meter_value: Annotated[list[_MeterValue2], msgspec.Meta(max_length=MAX_METER_VALUES)]


class _TransactionInfo(_Payload):
    transaction_id: TxId2
    charging_state: Text | None = None
    stopped_reason: Text | None = None
    remote_start_id: Int64 | None = None


class _Evse(_Payload):
    id: Id
    connector_id: Id | None = None


class _IdToken(_Payload):
    id_token: Text
    type: Text | None = None


class _TransactionEvent2(_Payload):
    event_type: Text
    timestamp: Text
    trigger_reason: Text
    seq_no: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # int64, never negative
    transaction_info: _TransactionInfo
    offline: bool = False
    evse: _Evse | None = None
    id_token: _IdToken | None = None
    meter_value: Annotated[list[_MeterValue2], msgspec.Meta(max_length=MAX_METER_VALUES)] = []


# -- samples -------------------------------------------------------------------------------------


def _samples16(meter_values: list[_MeterValue16]) -> tuple[Sample, ...]:
    return tuple(_sample16(mv.timestamp, sv) for mv in meter_values for sv in mv.sampled_value)


def _sample16(timestamp: str, sv: _SampledValue16) -> Sample:
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


def _samples2(meter_values: list[_MeterValue2]) -> tuple[Sample, ...]:
    return tuple(_sample2(mv.timestamp, sv) for mv in meter_values for sv in mv.sampled_value)


def _sample2(timestamp: str, sv: _SampledValue2) -> Sample:
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


# -- event ids -----------------------------------------------------------------------------------

_TIMELESS = frozenset({"charger_booted", "status_changed", "unparseable"})
_ID_ENCODER = msgspec.json.Encoder()


def event_id(event: Event) -> str:
    """The deterministic id of `event` (its own `event_id` is ignored); rule in the module doc."""
    fields = msgspec.structs.astuple(event)  # event_id, identity, at, then the kind's own fields
    kind: str = type(event).__struct_config__.tag  # type: ignore[assignment]
    when = round(event.at * 1000) if kind in _TIMELESS else None
    digest = bytearray(
        hashlib.sha256(_ID_ENCODER.encode([kind, event.identity, when, fields[3:]])).digest()[:16]
    )
    digest[6] = (digest[6] & 0x0F) | 0x80  # version 8: custom (here: SHA-256 of the content)
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 9562 variant
    return str(uuid.UUID(bytes=bytes(digest)))


def _stamped(event: Event) -> Event:
    return msgspec.structs.replace(event, event_id=event_id(event))


# -- the tracker ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Action:
    """How a tracked CALL is decoded and which event it gives, on the CALL or on its answer."""

    name: str
    request: msgspec.json.Decoder[Any]
    on_call: Callable[[str, Any, float], Event] | None = None
    response: msgspec.json.Decoder[Any] | None = None
    # (identity, request, response or None, CALLERROR code or None, at) → event
    on_answer: Callable[[str, Any, Any, str | None, float], Event] | None = None


_UNTRACKED: Final = None  # outstanding CALL whose answer gives no event


def _reason(exc: Exception) -> str:
    """Why a payload could not be decoded (msgspec skips unknown fields recursively, so a payload
    nested deeper than the interpreter's recursion limit ends in RecursionError)."""
    return "JSON nested too deeply" if isinstance(exc, RecursionError) else str(exc)


def _boot16(
    identity: str, call: _Boot16, answer: _BootResult | None, error: str | None, at: float
) -> Event:
    return ChargerBooted(
        "",
        identity,
        at,
        call.charge_point_vendor,
        call.charge_point_model,
        call.charge_point_serial_number,
        call.charge_box_serial_number,
        call.firmware_version,
        call.meter_type,
        call.meter_serial_number,
        None,
        _status(answer, error),
        error,
    )


def _boot2(
    identity: str, call: _Boot2, answer: _BootResult | None, error: str | None, at: float
) -> Event:
    station = call.charging_station
    return ChargerBooted(
        "",
        identity,
        at,
        station.vendor_name,
        station.model,
        station.serial_number,
        None,
        station.firmware_version,
        None,
        None,
        call.reason,
        _status(answer, error),
        error,
    )


def _status(answer: _BootResult | None, error: str | None) -> str | None:
    return "CallError" if error is not None else answer.status if answer is not None else None


def _start16(
    identity: str, call: _Start16, answer: _StartResult16 | None, error: str | None, at: float
) -> Event:
    return TransactionStarted(
        "",
        identity,
        at,
        call.connector_id,
        call.id_tag,
        call.meter_start,
        call.timestamp,
        call.reservation_id,
        str(answer.transaction_id) if answer is not None else None,
        "CallError"
        if error is not None
        else answer.id_tag_info.status
        if answer is not None
        else None,
        error,
    )


def _status16(identity: str, call: _Status16, at: float) -> Event:
    return StatusChanged(
        "", identity, at, call.connector_id, None, call.status, call.error_code, call.timestamp
    )


def _status2(identity: str, call: _Status2, at: float) -> Event:
    return StatusChanged(
        "",
        identity,
        at,
        call.connector_id,
        call.evse_id,
        call.connector_status,
        None,
        call.timestamp,
    )


def _stop16(identity: str, call: _Stop16, at: float) -> Event:
    return TransactionStopped(
        "",
        identity,
        at,
        str(call.transaction_id),
        call.meter_stop,
        call.timestamp,
        call.reason,
        call.id_tag,
        _samples16(call.transaction_data),
    )


def _meter_values16(identity: str, call: _MeterValues16, at: float) -> Event:
    tx = str(call.transaction_id) if call.transaction_id is not None else None
    return MeterValuesReported(
        "", identity, at, call.connector_id, None, tx, _samples16(call.meter_value)
    )


def _meter_values2(identity: str, call: _MeterValues2, at: float) -> Event:
    return MeterValuesReported(
        "", identity, at, None, call.evse_id, None, _samples2(call.meter_value)
    )


def _transaction_event2(identity: str, call: _TransactionEvent2, at: float) -> Event:
    info, evse, token = call.transaction_info, call.evse, call.id_token
    return TransactionEvent(
        "",
        identity,
        at,
        call.event_type,
        call.timestamp,
        call.trigger_reason,
        call.seq_no,
        call.offline,
        info.transaction_id,
        info.charging_state,
        info.stopped_reason,
        info.remote_start_id,
        evse.id if evse else None,
        evse.connector_id if evse else None,
        token.id_token if token else None,
        token.type if token else None,
        _samples2(call.meter_value),
    )


def _decoder(kind: type) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(kind)


_BOOT_RESULT = _decoder(_BootResult)
_ACTIONS_16 = {
    a.name: a
    for a in (
        _Action("BootNotification", _decoder(_Boot16), response=_BOOT_RESULT, on_answer=_boot16),
        _Action("StatusNotification", _decoder(_Status16), on_call=_status16),
        _Action(
            "StartTransaction",
            _decoder(_Start16),
            response=_decoder(_StartResult16),
            on_answer=_start16,
        ),
        _Action("StopTransaction", _decoder(_Stop16), on_call=_stop16),
        _Action("MeterValues", _decoder(_MeterValues16), on_call=_meter_values16),
    )
}
_ACTIONS_2 = {
    a.name: a
    for a in (
        _Action("BootNotification", _decoder(_Boot2), response=_BOOT_RESULT, on_answer=_boot2),
        _Action("StatusNotification", _decoder(_Status2), on_call=_status2),
        _Action("TransactionEvent", _decoder(_TransactionEvent2), on_call=_transaction_event2),
        _Action("MeterValues", _decoder(_MeterValues2), on_call=_meter_values2),
    )
}
_NO_ACTIONS: dict[str, _Action] = {}  # the back-office's CALLs: correlated, never read

# An outstanding CALL: nothing (its answer gives no event) or the action and decoded request.
_Outstanding = tuple[_Action, Any] | None


class Tracker:
    """Session events of one link; `ocpp_version` is the negotiated subprotocol.

    "ocpp2.0", "ocpp2.0.1" and "ocpp2.1" select the 2.x actions; anything else, and None (a charger
    that offered no subprotocol), selects OCPP 1.6.

    Counters (for metrics): `unparseable`, `unmatched_answers`, `duplicate_ids`, `evicted_calls`.
    """

    def __init__(self, identity: str, ocpp_version: str | None) -> None:
        self.identity = identity
        self.ocpp_version = ocpp_version or "ocpp1.6"
        self._actions = _ACTIONS_2 if self.ocpp_version.startswith("ocpp2") else _ACTIONS_16
        self._charger_calls: dict[str, _Outstanding] = {}  # answered by the back-office
        self._upstream_calls: dict[str, _Outstanding] = {}  # answered by the charger
        self.unparseable = 0
        self.unmatched_answers = 0
        self.duplicate_ids = 0
        self.evicted_calls = 0

    def from_charger(self, message: Message, at: float) -> list[Event]:
        """Events completed by a message the charger sent."""
        try:
            kind = message.message_type
            if kind == CALL:
                return self._call(message, at, self._charger_calls, self._actions, "charger")
            if kind == CALLRESULT or kind == CALLERROR:
                return self._answer(message, at, self._upstream_calls, "charger")
            return []
        except Exception as exc:  # a bug here must never stop forwarding
            return self._internal_error(message, at, "charger", exc)

    def from_upstream(self, message: Message, at: float) -> list[Event]:
        """Events completed by a message the back-office sent."""
        try:
            kind = message.message_type
            if kind == CALL:
                return self._call(message, at, self._upstream_calls, _NO_ACTIONS, "upstream")
            if kind == CALLRESULT or kind == CALLERROR:
                return self._answer(message, at, self._charger_calls, "upstream")
            return []
        except Exception as exc:
            return self._internal_error(message, at, "upstream", exc)

    @property
    def outstanding(self) -> int:
        """CALLs remembered in both directions, waiting for their answers."""
        return len(self._charger_calls) + len(self._upstream_calls)

    def _call(
        self,
        message: Message,
        at: float,
        calls: dict[str, _Outstanding],
        actions: dict[str, _Action],
        direction: str,
    ) -> list[Event]:
        unique_id = message.unique_id or ""
        if unique_id in calls:
            del calls[unique_id]
            self.duplicate_ids += 1
        elif len(calls) >= MAX_OUTSTANDING:
            del calls[next(iter(calls))]  # dicts keep insertion order: this is the oldest
            self.evicted_calls += 1
        action = actions.get(message.action or "")
        if action is None:
            calls[unique_id] = _UNTRACKED
            return []
        try:
            request = action.request.decode(
                memoryview(message.data)[message.payload_start : message.payload_end]
            )
        except (msgspec.DecodeError, RecursionError) as exc:  # ValidationError included
            calls[unique_id] = _UNTRACKED
            return [self._unparseable(message, at, direction, action.name, _reason(exc))]
        if action.on_answer is not None:
            calls[unique_id] = (action, request)
            return []
        calls[unique_id] = _UNTRACKED
        assert action.on_call is not None
        return [_stamped(action.on_call(self.identity, request, at))]

    def _answer(
        self, message: Message, at: float, calls: dict[str, _Outstanding], direction: str
    ) -> list[Event]:
        unique_id = message.unique_id or ""
        try:
            outstanding = calls.pop(unique_id)
        except KeyError:
            self.unmatched_answers += 1
            return []
        if outstanding is None:
            return []
        action, request = outstanding
        assert action.on_answer is not None and action.response is not None
        if message.message_type == CALLERROR:
            return [
                _stamped(
                    action.on_answer(self.identity, request, None, message.error_code or "", at)
                )
            ]
        try:
            response = action.response.decode(
                memoryview(message.data)[message.payload_start : message.payload_end]
            )
        except (msgspec.DecodeError, RecursionError) as exc:
            return [
                self._unparseable(message, at, direction, action.name, _reason(exc)),
                _stamped(action.on_answer(self.identity, request, None, None, at)),
            ]
        return [_stamped(action.on_answer(self.identity, request, response, None, at))]

    def _unparseable(
        self, message: Message, at: float, direction: str, action: str | None, reason: str
    ) -> Event:
        self.unparseable += 1
        reason = reason[:300]
        if self.unparseable <= _LOG_FIRST or self.unparseable % _LOG_EVERY == 0:
            log.warning(
                "unparseable OCPP payload",
                extra={
                    "identity": self.identity,
                    "direction": direction,
                    "action": action,
                    "unique_id": message.unique_id,
                    "reason": reason,
                    "unparseable_count": self.unparseable,
                },
            )
        data = message.data
        return _stamped(
            Unparseable(
                "",
                self.identity,
                at,
                direction,
                message.message_type,
                message.unique_id,
                action,
                reason,
                data[:RAW_LIMIT],
                len(data),
                hashlib.sha256(data).hexdigest(),
            )
        )

    def _internal_error(
        self, message: Message, at: float, direction: str, exc: Exception
    ) -> list[Event]:
        if self.unparseable < _LOG_FIRST:
            log.error(
                "tracker failed on a message", exc_info=exc, extra={"identity": self.identity}
            )
        try:
            return [
                self._unparseable(
                    message, at, direction, message.action, f"internal error: {exc!r}"
                )
            ]
        except Exception:
            return []
