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

The payload schemas are in `proxy.capture.payloads`, the meter readings' normalising in
`proxy.capture.readings`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from proxy.capture.events import (
    RAW_LIMIT,
    ChargerBooted,
    Event,
    MeterValuesReported,
    StatusChanged,
    TransactionEvent,
    TransactionStarted,
    TransactionStopped,
    Unparseable,
)
from proxy.capture.payloads import (
    Boot2,
    Boot16,
    BootResult,
    MeterValues2,
    MeterValues16,
    Start16,
    StartResult16,
    Status2,
    Status16,
    Stop16,
    TransactionEvent2,
)
from proxy.capture.readings import samples2, samples16
from proxy.wire.codec import CALL, CALLERROR, CALLRESULT, Message

log = logging.getLogger("proxy.tracker")

MAX_OUTSTANDING: Final = 32  # remembered unanswered CALLs per direction
_LOG_FIRST = 10  # unparseable frames logged one by one per link; then every _LOG_EVERY-th
_LOG_EVERY = 1000

# -- event ids -----------------------------------------------------------------------------------

_TIMELESS = frozenset({"charger_booted", "status_changed", "unparseable"})
_ID_ENCODER = msgspec.json.Encoder()


def event_id(event: Event) -> str:
    """The deterministic id of `event` (its own `event_id` is ignored); rule in the module doc."""
    fields = msgspec.structs.astuple(event)  # event_id, identity, at, then the kind's own fields
    kind: str = type(event).__struct_config__.tag  # type: ignore[assignment]
    when = round(event.at * 1000) if kind in _TIMELESS else None
    return uuid8(hashlib.sha256(_ID_ENCODER.encode([kind, event.identity, when, fields[3:]])))


# The RFC 9562 variant (0b10) in the high bits of a nibble, by its hex digit.
_VARIANT = {f"{n:x}": f"{0x8 | (n & 0x3):x}" for n in range(16)}


def uuid8(digest: hashlib._Hash) -> str:
    """The version 8 (custom) UUID made of the first 16 bytes of `digest`, as text.

    Written out from the hex digest: the same text as `str(uuid.UUID(bytes=...))` with the
    version and variant bits set, at a fifth of its cost (a capturing worker makes one per event).
    """
    h = digest.hexdigest()
    return f"{h[:8]}-{h[8:12]}-8{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


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
    identity: str, call: Boot16, answer: BootResult | None, error: str | None, at: float
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
    identity: str, call: Boot2, answer: BootResult | None, error: str | None, at: float
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


def _status(answer: BootResult | None, error: str | None) -> str | None:
    return "CallError" if error is not None else answer.status if answer is not None else None


def _start16(
    identity: str, call: Start16, answer: StartResult16 | None, error: str | None, at: float
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


def _status16(identity: str, call: Status16, at: float) -> Event:
    return StatusChanged(
        "", identity, at, call.connector_id, None, call.status, call.error_code, call.timestamp
    )


def _status2(identity: str, call: Status2, at: float) -> Event:
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


def _stop16(identity: str, call: Stop16, at: float) -> Event:
    return TransactionStopped(
        "",
        identity,
        at,
        str(call.transaction_id),
        call.meter_stop,
        call.timestamp,
        call.reason,
        call.id_tag,
        samples16(call.transaction_data),
    )


def _meter_values16(identity: str, call: MeterValues16, at: float) -> Event:
    tx = str(call.transaction_id) if call.transaction_id is not None else None
    return MeterValuesReported(
        "", identity, at, call.connector_id, None, tx, samples16(call.meter_value)
    )


def _meter_values2(identity: str, call: MeterValues2, at: float) -> Event:
    return MeterValuesReported(
        "", identity, at, None, call.evse_id, None, samples2(call.meter_value)
    )


def _transaction_event2(identity: str, call: TransactionEvent2, at: float) -> Event:
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
        samples2(call.meter_value),
    )


def _decoder(kind: type) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(kind)


_BOOT_RESULT = _decoder(BootResult)
_ACTIONS_16 = {
    a.name: a
    for a in (
        _Action("BootNotification", _decoder(Boot16), response=_BOOT_RESULT, on_answer=_boot16),
        _Action("StatusNotification", _decoder(Status16), on_call=_status16),
        _Action(
            "StartTransaction",
            _decoder(Start16),
            response=_decoder(StartResult16),
            on_answer=_start16,
        ),
        _Action("StopTransaction", _decoder(Stop16), on_call=_stop16),
        _Action("MeterValues", _decoder(MeterValues16), on_call=_meter_values16),
    )
}
_ACTIONS_2 = {
    a.name: a
    for a in (
        _Action("BootNotification", _decoder(Boot2), response=_BOOT_RESULT, on_answer=_boot2),
        _Action("StatusNotification", _decoder(Status2), on_call=_status2),
        _Action("TransactionEvent", _decoder(TransactionEvent2), on_call=_transaction_event2),
        _Action("MeterValues", _decoder(MeterValues2), on_call=_meter_values2),
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
    def actions(self) -> frozenset[str]:
        """The charger CALLs this tracker reads (with their answers); it needs no other message."""
        return frozenset(self._actions)

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
