"""Session events the tracker derives from OCPP traffic, as frozen msgspec structs.

`Event` is a tagged union on the field `kind`, so a consumer encodes and decodes any of them with
`msgspec.json.encode(event)` / `msgspec.json.decode(data, type=AnyEvent)`. Every event carries a
deterministic `event_id` (the rule is in `proxy/capture/tracker.py`), the charger `identity` and `at`,
the Unix time in seconds at which the proxy received the frame that completed the event.

Conventions:
- Timestamps from payloads are kept as the charger wrote them (strings); interpreting them is
  the business of whoever reads the events, and an odd timestamp never loses a session.
- Transaction ids are strings in both protocol families (OCPP 1.6's integer in decimal).
- Energy is a `Decimal` in Wh (power in W), exact for any decimal the charger sent; see `Sample`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypeAlias

import msgspec


class SignedValue(msgspec.Struct, frozen=True):
    """A signed meter reading kept as received (OCMF, Eichrecht, ...), never interpreted here.

    OCPP 1.6 (`format: SignedData`) only has the signed blob; OCPP 2.x adds how it was signed.
    """

    signed_meter_data: str
    signing_method: str | None = None
    encoding_method: str | None = None
    public_key: str | None = None


class Sample(msgspec.Struct, frozen=True):
    """One sampled value of a meter value, normalised.

    `value` is in `unit`: energy in Wh (varh, VAh for reactive and apparent energy), power in W
    (var, VA), anything else as sent with the 2.x multiplier applied. `value` is None when there
    is no number to read: a 1.6 `SignedData` sample (the blob is in `signed`), or an invalid
    reading, whose reason is in `error` (not a number, not finite, out of range, a unit that does
    not fit the measurand, a negative energy register). `raw_value`, `raw_unit` and `multiplier`
    are what the charger sent, for audit (a multiplier beyond 32 bits is kept as 0, the sample
    then being invalid with "multiplier out of range").
    """

    timestamp: str
    measurand: str
    value: Decimal | None
    unit: str | None
    raw_value: str
    raw_unit: str | None = None
    multiplier: int = 0
    phase: str | None = None
    location: str | None = None
    context: str | None = None
    signed: SignedValue | None = None
    error: str | None = None


class Event(msgspec.Struct, frozen=True, tag_field="kind"):
    event_id: str
    identity: str
    at: float


class ChargerBooted(Event, frozen=True, tag="charger_booted"):
    """A BootNotification and its answer (`status` Accepted/Pending/Rejected).

    `status` is "CallError" with `error_code` set when the back-office answered with a CALLERROR,
    and None when its answer could not be parsed. `meter_type`/`meter_serial` are 1.6 only (MID
    evidence); `reason` is 2.x only.
    """

    vendor: str
    model: str
    serial: str | None
    charge_box_serial: str | None
    firmware: str | None
    meter_type: str | None
    meter_serial: str | None
    reason: str | None
    status: str | None
    error_code: str | None = None


class StatusChanged(Event, frozen=True, tag="status_changed"):
    """A StatusNotification: 1.6 sets `error_code`, 2.x sets `evse_id`."""

    connector_id: int
    evse_id: int | None
    status: str
    error_code: str | None
    timestamp: str | None


class TransactionStarted(Event, frozen=True, tag="transaction_started"):
    """An OCPP 1.6 StartTransaction together with its answer.

    `status` is the answer's idTagInfo.status (Accepted, Blocked, Expired, Invalid, ConcurrentTx:
    rejected starts are events too), "CallError" with `error_code` when the back-office answered
    with a CALLERROR, and None (with `transaction_id` None) when its answer could not be parsed.
    """

    connector_id: int
    id_tag: str
    meter_start: Decimal  # Wh
    timestamp: str
    reservation_id: int | None
    transaction_id: str | None
    status: str | None
    error_code: str | None = None


class TransactionStopped(Event, frozen=True, tag="transaction_stopped"):
    """An OCPP 1.6 StopTransaction; `samples` flattens its transactionData."""

    transaction_id: str
    meter_stop: Decimal  # Wh
    timestamp: str
    reason: str | None  # None: not sent (OCPP 1.6 then means "Local")
    id_tag: str | None
    samples: tuple[Sample, ...]


class MeterValuesReported(Event, frozen=True, tag="meter_values"):
    """A MeterValues request: 1.6 sets `connector_id`, 2.x sets `evse_id` (0 = main meter)."""

    connector_id: int | None
    evse_id: int | None
    transaction_id: str | None
    samples: tuple[Sample, ...]


class TransactionEvent(Event, frozen=True, tag="transaction_event"):
    """An OCPP 2.0.1/2.1 TransactionEvent request (`event_type` Started, Updated or Ended)."""

    event_type: str
    timestamp: str
    trigger_reason: str
    seq_no: int
    offline: bool
    transaction_id: str
    charging_state: str | None
    stopped_reason: str | None
    remote_start_id: int | None
    evse_id: int | None
    connector_id: int | None
    id_token: str | None
    id_token_type: str | None
    samples: tuple[Sample, ...]


class TransactionIdAssigned(Event, frozen=True, tag="transaction_id_assigned"):
    """An OCPP 1.6 transaction started while the upstream was unreachable got its real id.

    Until then it was known by the provisional id the proxy gave the charger; the session store
    renames it (or merges it into a session already known by the real id).
    """

    provisional_id: str
    real_id: str


class Unparseable(Event, frozen=True, tag="unparseable"):
    """A frame of a tracked action whose payload does not have what the action needs.

    `raw` is the whole frame, cut at `RAW_LIMIT` bytes; `raw_length` and `raw_sha256` describe the
    complete frame. `direction` is "charger" or "upstream" (who sent it); `action` is the CALL's
    action, also for an answer.
    """

    direction: str
    message_type: int
    unique_id: str | None
    action: str | None
    reason: str
    raw: bytes
    raw_length: int
    raw_sha256: str


RAW_LIMIT = 64 * 1024

AnyEvent: TypeAlias = (
    ChargerBooted
    | StatusChanged
    | TransactionStarted
    | TransactionStopped
    | MeterValuesReported
    | TransactionEvent
    | TransactionIdAssigned
    | Unparseable
)
