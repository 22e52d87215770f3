"""The payload shapes the tracker decodes: what each tracked OCPP action needs (msgspec schemas).

Unknown fields are ignored; a missing required field or a wrong JSON type fails the decode.
Energy registers (meterStart, meterStop) accept any JSON number or numeric string, exactly, as
Decimal: the schema says integer, but a charger sending 1234.0 must not lose its session.

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
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final

import msgspec

from proxy.capture.readings import check_energy

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


class Payload(msgspec.Struct, rename="camel"):
    pass


class Boot16(Payload):
    charge_point_vendor: Text
    charge_point_model: Text
    charge_point_serial_number: Text | None = None
    charge_box_serial_number: Text | None = None
    firmware_version: Text | None = None
    meter_type: Text | None = None
    meter_serial_number: Text | None = None


class BootResult(Payload):
    status: Text


class Status16(Payload):
    connector_id: Id
    status: Text
    error_code: Text
    timestamp: Text | None = None


class SampledValue16(Payload):
    value: Blob  # the signed data when format is SignedData
    context: Text | None = None
    format: Text | None = None
    measurand: Measurand | None = None
    phase: Text | None = None
    location: Text | None = None
    unit: Text | None = None


class MeterValue16(Payload):
    timestamp: Text
    sampled_value: Annotated[list[SampledValue16], msgspec.Meta(max_length=MAX_SAMPLED_VALUES)]


class MeterValues16(Payload):
    connector_id: Id
    meter_value: Annotated[list[MeterValue16], msgspec.Meta(max_length=MAX_METER_VALUES)]
    transaction_id: TxId16 | None = None


class Start16(Payload):
    connector_id: Id
    id_tag: Text
    meter_start: Decimal
    timestamp: Text
    reservation_id: Int64 | None = None

    def __post_init__(self) -> None:
        check_energy(self.meter_start, "meterStart")


class IdTagInfo(Payload):
    status: Text


class StartResult16(Payload):
    transaction_id: TxId16
    id_tag_info: IdTagInfo


class Stop16(Payload):
    transaction_id: TxId16
    meter_stop: Decimal
    timestamp: Text
    reason: Text | None = None
    id_tag: Text | None = None
    transaction_data: Annotated[list[MeterValue16], msgspec.Meta(max_length=MAX_METER_VALUES)] = []

    def __post_init__(self) -> None:
        check_energy(self.meter_stop, "meterStop")


class Station(Payload):
    model: Text
    vendor_name: Text
    serial_number: Text | None = None
    firmware_version: Text | None = None


class Boot2(Payload):
    charging_station: Station
    reason: Text | None = None


class Status2(Payload):
    connector_status: Text
    evse_id: Id
    connector_id: Id
    timestamp: Text | None = None


class UnitOfMeasure(Payload):
    unit: Text | None = None
    multiplier: int = 0  # any size msgspec reads; out of range makes the sample invalid


class SignedMeterValue(Payload):
    signed_meter_data: Blob
    signing_method: Text | None = None
    encoding_method: Text | None = None
    public_key: Blob | None = None


class SampledValue2(Payload):
    value: Decimal
    context: Text | None = None
    measurand: Measurand | None = None
    phase: Text | None = None
    location: Text | None = None
    signed_meter_value: SignedMeterValue | None = None
    unit_of_measure: UnitOfMeasure | None = None


class MeterValue2(Payload):
    timestamp: Text
    sampled_value: Annotated[list[SampledValue2], msgspec.Meta(max_length=MAX_SAMPLED_VALUES)]


class MeterValues2(Payload):
    evse_id: Id
    meter_value: Annotated[list[MeterValue2], msgspec.Meta(max_length=MAX_METER_VALUES)]


class TransactionInfo(Payload):
    transaction_id: TxId2
    charging_state: Text | None = None
    stopped_reason: Text | None = None
    remote_start_id: Int64 | None = None


class Evse(Payload):
    id: Id
    connector_id: Id | None = None


class IdToken(Payload):
    id_token: Text
    type: Text | None = None


class TransactionEvent2(Payload):
    event_type: Text
    timestamp: Text
    trigger_reason: Text
    seq_no: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]  # int64, never negative
    transaction_info: TransactionInfo
    offline: bool = False
    evse: Evse | None = None
    id_token: IdToken | None = None
    meter_value: Annotated[list[MeterValue2], msgspec.Meta(max_length=MAX_METER_VALUES)] = []
