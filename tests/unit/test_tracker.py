"""Tracker: OCPP messages in, session events out, fed with real codec messages and no I/O."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import ocpp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.capture.events import (
    RAW_LIMIT,
    AnyEvent,
    ChargerBooted,
    MeterValuesReported,
    Sample,
    SignedValue,
    StatusChanged,
    TransactionEvent,
    TransactionStarted,
    TransactionStopped,
    Unparseable,
)
from proxy.capture.tracker import MAX_OUTSTANDING, Tracker, event_id, uuid8
from proxy.wire.codec import BINARY, NOT_OCPP, PING, FrameReader, Message, encode_frame

SCHEMAS = Path(ocpp.__file__).parent
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


# -- helpers -----------------------------------------------------------------------------------


def message(text: str | bytes, *, from_charger: bool = True, opcode: int = 1) -> Message:
    """The codec's Message for one frame as the given side sends it (chargers mask)."""
    data = text.encode() if isinstance(text, str) else text
    reader = FrameReader(from_client=from_charger, max_message_size=4 << 20)
    [msg] = reader.feed(encode_frame(opcode, data, mask=from_charger))
    return msg


def call(unique_id: str, action: str, payload: Any) -> str:
    return json.dumps([2, unique_id, action, payload])


def result(unique_id: str, payload: Any) -> str:
    return json.dumps([3, unique_id, payload])


def error(unique_id: str, code: str = "InternalError") -> str:
    return json.dumps([4, unique_id, code, "failed", {}])


@cache
def _validator(version: str, name: str) -> Any:
    schema = json.loads((SCHEMAS / version / "schemas" / f"{name}.json").read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def valid(version: str, action: str, payload: Any, *, response: bool = False) -> Any:
    """`payload`, after checking it against the schema the `ocpp` package ships for it."""
    name = action + ("Response" if response else "" if version == "v16" else "Request")
    _validator(version, name).validate(payload)
    return payload


class Link:
    """A tracker plus a clock; `charger`/`upstream` feed one frame each and return the events."""

    def __init__(self, version: str | None = "ocpp1.6", identity: str = "CP-1") -> None:
        self.tracker = Tracker(identity, version)
        self.at = T0

    def charger(self, text: str) -> list[Any]:
        self.at += 1
        return self.tracker.from_charger(message(text), self.at)

    def upstream(self, text: str) -> list[Any]:
        self.at += 1
        return self.tracker.from_upstream(message(text, from_charger=False), self.at)


def start16(connector: int = 1, id_tag: str = "TAG-1", meter_start: int = 1000) -> dict[str, Any]:
    return valid(
        "v16",
        "StartTransaction",
        {
            "connectorId": connector,
            "idTag": id_tag,
            "meterStart": meter_start,
            "timestamp": "2026-01-01T10:00:00Z",
        },
    )


def start_result16(transaction_id: int, status: str = "Accepted") -> dict[str, Any]:
    payload = {"transactionId": transaction_id, "idTagInfo": {"status": status}}
    return valid("v16", "StartTransaction", payload, response=True)


def energy(value: str, unit: str | None = None, **extra: str) -> dict[str, str]:
    return {"value": value, **({"unit": unit} if unit else {}), **extra}


# -- OCPP 1.6 ----------------------------------------------------------------------------------


def test_full_16_session():
    link = Link()
    boot = valid(
        "v16",
        "BootNotification",
        {
            "chargePointVendor": "Alfen",
            "chargePointModel": "Eve Single",
            "chargePointSerialNumber": "ACE0001",
            "firmwareVersion": "6.1.0",
            "meterType": "Eastron SDM630",
            "meterSerialNumber": "M-123",
        },
    )
    assert link.charger(call("b1", "BootNotification", boot)) == []
    answer = {"status": "Accepted", "currentTime": "2026-01-01T10:00:00Z", "interval": 300}
    [booted] = link.upstream(result("b1", valid("v16", "BootNotification", answer, response=True)))
    assert isinstance(booted, ChargerBooted) and booted.at == link.at
    assert (booted.vendor, booted.model, booted.serial, booted.firmware) == (
        "Alfen",
        "Eve Single",
        "ACE0001",
        "6.1.0",
    )
    assert (booted.meter_type, booted.meter_serial, booted.status) == (
        "Eastron SDM630",
        "M-123",
        "Accepted",
    )

    status = valid(
        "v16",
        "StatusNotification",
        {"connectorId": 1, "status": "Preparing", "errorCode": "NoError"},
    )
    [changed] = link.charger(call("s1", "StatusNotification", status))
    assert changed == StatusChanged(
        changed.event_id, "CP-1", link.at, 1, None, "Preparing", "NoError", None
    )
    assert link.upstream(result("s1", {})) == []

    assert link.charger(call("t1", "StartTransaction", start16(meter_start=1000))) == []
    [started] = link.upstream(result("t1", start_result16(42)))
    assert isinstance(started, TransactionStarted)
    assert (started.connector_id, started.id_tag, started.meter_start) == (
        1,
        "TAG-1",
        Decimal(1000),
    )
    assert (started.timestamp, started.transaction_id, started.status) == (
        "2026-01-01T10:00:00Z",
        "42",
        "Accepted",
    )

    meter_values = valid(
        "v16",
        "MeterValues",
        {
            "connectorId": 1,
            "transactionId": 42,
            "meterValue": [
                {
                    "timestamp": "2026-01-01T10:15:00Z",
                    "sampledValue": [
                        energy("1500"),
                        energy("2.5", "kWh", context="Sample.Periodic", location="Outlet"),
                        energy("7.4", "kW", measurand="Power.Active.Import", phase="L1"),
                        energy("16.0", "A", measurand="Current.Import", phase="L1"),
                    ],
                },
            ],
        },
    )
    [reported] = link.charger(call("m1", "MeterValues", meter_values))
    assert isinstance(reported, MeterValuesReported)
    assert (reported.connector_id, reported.evse_id, reported.transaction_id) == (1, None, "42")
    wh, kwh, kw, amps = reported.samples
    assert (wh.measurand, wh.value, wh.unit) == (
        "Energy.Active.Import.Register",
        Decimal(1500),
        "Wh",
    )
    assert (wh.raw_value, wh.raw_unit, wh.signed, wh.error) == ("1500", None, None, None)
    assert (kwh.value, kwh.unit, kwh.raw_value, kwh.raw_unit) == (Decimal(2500), "Wh", "2.5", "kWh")
    assert (kwh.context, kwh.location, kwh.timestamp) == (
        "Sample.Periodic",
        "Outlet",
        "2026-01-01T10:15:00Z",
    )
    assert (kw.value, kw.unit, kw.phase) == (Decimal(7400), "W", "L1")
    assert (amps.value, amps.unit, amps.error) == (Decimal("16.0"), "A", None)
    assert link.upstream(result("m1", {})) == []

    stop = valid(
        "v16",
        "StopTransaction",
        {
            "transactionId": 42,
            "meterStop": 43370,
            "timestamp": "2026-01-01T12:00:00Z",
            "reason": "EVDisconnected",
            "idTag": "TAG-1",
            "transactionData": [
                {
                    "timestamp": "2026-01-01T10:00:00Z",
                    "sampledValue": [energy("1.000", "kWh", context="Transaction.Begin")],
                },
                {
                    "timestamp": "2026-01-01T12:00:00Z",
                    "sampledValue": [energy("43370", context="Transaction.End")],
                },
            ],
        },
    )
    [stopped] = link.charger(call("x1", "StopTransaction", stop))
    assert isinstance(stopped, TransactionStopped)
    assert (stopped.transaction_id, stopped.meter_stop, stopped.reason, stopped.id_tag) == (
        "42",
        Decimal(43370),
        "EVDisconnected",
        "TAG-1",
    )
    assert [(s.context, s.value) for s in stopped.samples] == [
        ("Transaction.Begin", Decimal(1000)),
        ("Transaction.End", Decimal(43370)),
    ]
    assert link.upstream(result("x1", {"idTagInfo": {"status": "Accepted"}})) == []
    t = link.tracker
    assert (
        t.unparseable,
        t.unmatched_answers,
        t.duplicate_ids,
        t.evicted_calls,
        t.outstanding,
    ) == (0, 0, 0, 0, 0)


@pytest.mark.parametrize("status", ["Blocked", "Expired", "Invalid", "ConcurrentTx"])
def test_rejected_start_is_an_event_with_its_transaction_id(status):
    link = Link()
    link.charger(call("1", "StartTransaction", start16()))
    [started] = link.upstream(result("1", start_result16(7, status)))
    assert (started.status, started.transaction_id, started.error_code) == (status, "7", None)


def test_callerror_for_a_start_gives_a_start_with_status_callerror():
    link = Link()
    link.charger(call("1", "StartTransaction", start16(connector=2)))
    [started] = link.upstream(error("1", "InternalError"))
    assert isinstance(started, TransactionStarted) and started.connector_id == 2
    assert (started.status, started.error_code, started.transaction_id) == (
        "CallError",
        "InternalError",
        None,
    )


def test_callerror_for_a_boot_keeps_the_charger_facts():
    link = Link()
    link.charger(call("1", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}))
    [booted] = link.upstream(error("1", "NotImplemented"))
    assert (booted.vendor, booted.status, booted.error_code) == ("V", "CallError", "NotImplemented")


def test_unparseable_answer_still_gives_the_start_without_transaction_id():
    link = Link()
    link.charger(call("1", "StartTransaction", start16()))
    bad, started = link.upstream(
        result("1", {"transactionId": "forty-two", "idTagInfo": {"status": "Accepted"}})
    )
    assert (
        isinstance(bad, Unparseable)
        and bad.direction == "upstream"
        and bad.action == "StartTransaction"
    )
    assert "$.transactionId" in bad.reason and bad.message_type == 3
    assert isinstance(started, TransactionStarted) and (started.status, started.transaction_id) == (
        None,
        None,
    )
    assert link.tracker.unparseable == 1


def test_signed_data_16_is_kept_raw_without_a_number():
    link = Link()
    blob = 'OCMF|{"FV":"1.0","RD":[{"RV":1.234,"RU":"kWh"}]}|{"SD":"3045"}'
    payload = {
        "connectorId": 1,
        "meterValue": [
            {
                "timestamp": "2026-01-01T10:00:00Z",
                "sampledValue": [
                    {"value": blob, "format": "SignedData", "context": "Transaction.End"}
                ],
            }
        ],
    }
    [reported] = link.charger(call("1", "MeterValues", valid("v16", "MeterValues", payload)))
    [sample] = reported.samples
    assert (sample.value, sample.signed, sample.error, sample.raw_value) == (
        None,
        SignedValue(blob),
        None,
        blob,
    )
    assert reported.transaction_id is None


# -- OCPP 2.0.1 / 2.1 --------------------------------------------------------------------------


def tx_event(version: str, event_type: str, seq_no: int, **extra: Any) -> dict[str, Any]:
    payload = {
        "eventType": event_type,
        "timestamp": f"2026-01-01T10:{seq_no:02d}:00Z",
        "triggerReason": "Authorized" if event_type == "Started" else "MeterValuePeriodic",
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": "tx-abc"},
        **extra,
    }
    return valid(version, "TransactionEvent", payload)


@pytest.mark.parametrize(
    ("subprotocol", "schemas"), [("ocpp2.0.1", "v201"), ("ocpp2.1", "v21"), ("ocpp2.0", "v201")]
)
def test_2x_session(subprotocol, schemas):
    link = Link(subprotocol)
    boot = valid(
        schemas,
        "BootNotification",
        {
            "reason": "PowerUp",
            "chargingStation": {
                "model": "Pulsar",
                "vendorName": "Wallbox",
                "serialNumber": "WB-9",
                "firmwareVersion": "5.0",
            },
        },
    )
    link.charger(call("b", "BootNotification", boot))
    [booted] = link.upstream(
        result("b", {"status": "Pending", "currentTime": "2026-01-01T10:00:00Z", "interval": 60})
    )
    assert (booted.vendor, booted.model, booted.serial, booted.firmware) == (
        "Wallbox",
        "Pulsar",
        "WB-9",
        "5.0",
    )
    assert (booted.reason, booted.status, booted.meter_type) == ("PowerUp", "Pending", None)

    status = valid(
        schemas,
        "StatusNotification",
        {
            "timestamp": "2026-01-01T10:00:00Z",
            "connectorStatus": "Occupied",
            "evseId": 1,
            "connectorId": 1,
        },
    )
    [changed] = link.charger(call("s", "StatusNotification", status))
    assert (changed.evse_id, changed.connector_id, changed.status, changed.error_code) == (
        1,
        1,
        "Occupied",
        None,
    )

    signed = {
        "signedMeterData": "T0NNRnx7fQ==",
        "signingMethod": "ECDSA-secp256r1-SHA256",
        "encodingMethod": "OCMF",
        "publicKey": "MFkwEwYH",
    }
    started_payload = tx_event(
        schemas,
        "Started",
        0,
        evse={"id": 1, "connectorId": 1},
        idToken={"idToken": "04A1B2C3", "type": "ISO14443"},
        meterValue=[
            {
                "timestamp": "2026-01-01T10:00:00Z",
                "sampledValue": [
                    {
                        "value": 12.5,
                        "unitOfMeasure": {"unit": "kWh"},
                        "context": "Transaction.Begin",
                        "signedMeterValue": signed,
                    }
                ],
            }
        ],
    )
    [started] = link.charger(call("e0", "TransactionEvent", started_payload))
    assert link.upstream(result("e0", {"idTokenInfo": {"status": "Accepted"}})) == []
    updated_payload = tx_event(
        schemas,
        "Updated",
        1,
        offline=True,
        transactionInfo={"transactionId": "tx-abc", "chargingState": "Charging"},
        meterValue=[
            {
                "timestamp": "2026-01-01T10:01:00Z",
                "sampledValue": [
                    {"value": 13, "unitOfMeasure": {"unit": "Wh", "multiplier": 3}},
                    {"value": 11000},
                    {
                        "value": 11,
                        "measurand": "Power.Active.Import",
                        "unitOfMeasure": {"unit": "kW"},
                    },
                ],
            }
        ],
    )
    [updated] = link.charger(call("e1", "TransactionEvent", updated_payload))
    ended_payload = tx_event(
        schemas,
        "Ended",
        2,
        transactionInfo={"transactionId": "tx-abc", "stoppedReason": "EVDisconnected"},
    )
    [ended] = link.charger(call("e2", "TransactionEvent", ended_payload))

    assert all(isinstance(e, TransactionEvent) for e in (started, updated, ended))
    assert [(e.event_type, e.seq_no, e.offline) for e in (started, updated, ended)] == [
        ("Started", 0, False),
        ("Updated", 1, True),
        ("Ended", 2, False),
    ]
    assert {e.transaction_id for e in (started, updated, ended)} == {"tx-abc"}
    assert (started.evse_id, started.connector_id, started.id_token, started.id_token_type) == (
        1,
        1,
        "04A1B2C3",
        "ISO14443",
    )
    assert (started.trigger_reason, updated.charging_state, ended.stopped_reason) == (
        "Authorized",
        "Charging",
        "EVDisconnected",
    )
    [begin] = started.samples
    assert (begin.value, begin.unit, begin.raw_value, begin.raw_unit) == (
        Decimal(12500),
        "Wh",
        "12.5",
        "kWh",
    )
    assert begin.signed == SignedValue("T0NNRnx7fQ==", "ECDSA-secp256r1-SHA256", "OCMF", "MFkwEwYH")
    assert [(s.value, s.unit, s.multiplier) for s in updated.samples] == [
        (Decimal(13000), "Wh", 3),
        (Decimal(11000), "Wh", 0),
        (Decimal(11000), "W", 0),
    ]
    assert ended.samples == ()

    meter_values = valid(
        schemas,
        "MeterValues",
        {
            "evseId": 0,
            "meterValue": [
                {"timestamp": "2026-01-01T11:00:00Z", "sampledValue": [{"value": 1234.5}]}
            ],
        },
    )
    [reported] = link.charger(call("mv", "MeterValues", meter_values))
    assert (reported.evse_id, reported.connector_id, reported.samples[0].value) == (
        0,
        None,
        Decimal("1234.5"),
    )
    assert link.tracker.unparseable == 0


def test_versions_track_their_own_actions():
    v16 = Link(None)  # no subprotocol negotiated: OCPP 1.6
    assert v16.charger(call("1", "TransactionEvent", {"eventType": "Started"})) == []
    v2 = Link("ocpp2.0.1")
    assert v2.charger(call("1", "StartTransaction", {"connectorId": "nonsense"})) == []
    assert v2.upstream(result("1", {"transactionId": 1})) == []
    assert v16.tracker.unparseable == v2.tracker.unparseable == 0


# -- units and absurd readings -----------------------------------------------------------------

SAMPLES_16 = [
    # (sampledValue, value, unit, error)
    (energy("12345"), Decimal(12345), "Wh", None),
    (energy("12.3456789", "kWh"), Decimal("12345.6789"), "Wh", None),
    (energy("0.001", "kWh"), Decimal("1.000"), "Wh", None),
    (
        energy("2", "kvarh", measurand="Energy.Reactive.Import.Register"),
        Decimal(2000),
        "varh",
        None,
    ),
    (energy("3", measurand="Energy.Reactive.Import.Register"), Decimal(3), "varh", None),
    (energy("-5", "kWh", measurand="Energy.Active.Net"), Decimal(-5000), "Wh", None),
    (energy("1.5e3"), Decimal(1500), "Wh", None),
    (energy("230.1", "V", measurand="Voltage"), Decimal("230.1"), "V", None),
    (energy("80", "Percent", measurand="SoC"), Decimal(80), "Percent", None),
    (energy("0.98", measurand="Power.Factor"), Decimal("0.98"), None, None),
    (energy("3.6", measurand="Power.Active.Import"), Decimal("3.6"), "W", None),
    (energy("NaN"), None, "Wh", "not a number"),
    (energy("Infinity", "kWh"), None, "Wh", "not a number"),
    (energy("12,5", "kWh"), None, "Wh", "not a number"),
    (energy(""), None, "Wh", "not a number"),
    (energy("1_000"), None, "Wh", "not a number"),
    (energy("9" * 200), None, "Wh", "not a number"),
    (energy("1e9999"), None, "Wh", "number out of range"),
    (energy("1e-40"), None, "Wh", "number out of range"),
    (energy("2000000000", "kWh"), None, "Wh", "value out of range"),
    (energy("-1"), None, "Wh", "negative energy reading"),
    (energy("5", "kW"), None, "W", "unit 'kW' is not an energy unit"),
    (
        energy("5", "kWh", measurand="Power.Active.Import"),
        None,
        "Wh",
        "unit 'kWh' is not a power unit",
    ),
]


@pytest.mark.parametrize(("sampled", "value", "unit", "error_text"), SAMPLES_16)
def test_16_sampled_values_are_normalised_or_marked_invalid(sampled, value, unit, error_text):
    link = Link()
    payload = {
        "connectorId": 1,
        "meterValue": [{"timestamp": "2026-01-01T10:00:00Z", "sampledValue": [sampled]}],
    }
    [reported] = link.charger(call("1", "MeterValues", payload))
    [sample] = reported.samples
    assert (sample.value, sample.unit, sample.error) == (value, unit, error_text)
    assert sample.raw_value == sampled["value"]


SAMPLES_2 = [
    # (sampledValue, value, unit, error)
    ({"value": 7.5, "unitOfMeasure": {"unit": "kWh"}}, Decimal(7500), "Wh", None),
    ({"value": 7.5, "unitOfMeasure": {"multiplier": 3}}, Decimal(7500), "Wh", None),
    (
        {"value": 123456, "unitOfMeasure": {"unit": "Wh", "multiplier": -3}},
        Decimal("123.456"),
        "Wh",
        None,
    ),
    ({"value": 0.1, "unitOfMeasure": {"unit": "kWh", "multiplier": 1}}, Decimal(1000), "Wh", None),
    (
        {
            "value": 3,
            "measurand": "Power.Active.Import",
            "unitOfMeasure": {"unit": "kW", "multiplier": 1},
        },
        Decimal(30000),
        "W",
        None,
    ),
    (
        {
            "value": 16,
            "measurand": "Current.Import",
            "unitOfMeasure": {"unit": "A", "multiplier": -1},
        },
        Decimal("1.6"),
        "A",
        None,
    ),
    ({"value": 1e300}, None, "Wh", "number out of range"),
    ({"value": 5, "unitOfMeasure": {"multiplier": 99}}, None, "Wh", "multiplier out of range"),
    ({"value": -2}, None, "Wh", "negative energy reading"),
    ({"value": "NaN"}, None, "Wh", "not a finite number"),
]


@pytest.mark.parametrize(("sampled", "value", "unit", "error_text"), SAMPLES_2)
def test_2x_sampled_values_apply_unit_and_multiplier(sampled, value, unit, error_text):
    link = Link("ocpp2.0.1")
    payload = {
        "evseId": 1,
        "meterValue": [{"timestamp": "2026-01-01T10:00:00Z", "sampledValue": [sampled]}],
    }
    [reported] = link.charger(call("1", "MeterValues", payload))
    [sample] = reported.samples
    assert (sample.value, sample.unit, sample.error) == (value, unit, error_text)


def test_json_number_with_exponent_stays_exact():
    link = Link("ocpp2.1")
    text = (
        '[2,"1","MeterValues",{"evseId":1,"meterValue":[{"timestamp":"t","sampledValue":'
        '[{"value":1.0000000000000000000001e3,"unitOfMeasure":{"unit":"kWh"}}]}]}]'
    )
    [reported] = link.tracker.from_charger(message(text), T0)
    assert reported.samples[0].value == Decimal("1000000.0000000000000001")


# -- what is left alone ------------------------------------------------------------------------


def test_untracked_traffic_gives_no_events_and_is_never_parsed():
    link = Link()
    assert link.charger(call("h", "Heartbeat", {})) == []
    assert link.upstream(result("h", {"currentTime": "2026-01-01T10:00:00Z"})) == []
    assert (
        link.charger(call("h2", "Heartbeat", [1, 2, "not an object"])) == []
    )  # payload never read
    assert link.upstream(result("h2", [])) == []
    assert link.upstream(call("r", "RemoteStartTransaction", {"idTag": "X"})) == []
    assert link.charger(result("r", {"status": "Accepted"})) == []
    assert link.charger(call("d", "DataTransfer", {"vendorId": "x", "data": "y"})) == []
    assert link.upstream(error("d", "NotSupported")) == []
    assert link.charger(call("v", "VendorSpecificThing", {"a": 1})) == []
    assert link.upstream(error("v", "NotImplemented")) == []
    # A StartTransaction sent by the back-office is not the charger's: ignored.
    assert link.upstream(call("st", "StartTransaction", start16())) == []
    assert link.charger(result("st", start_result16(1))) == []
    tracker = link.tracker
    assert tracker.from_charger(message(b"\x00\x01", opcode=BINARY), T0) == []
    assert tracker.from_charger(message(b"ping", opcode=PING), T0) == []
    assert tracker.from_upstream(message("not ocpp at all", from_charger=False), T0) == []
    assert (
        tracker.from_charger(message('[2,"x","StartTransaction"]'), T0) == []
    )  # wrong arity: NOT_OCPP
    assert (tracker.unparseable, tracker.unmatched_answers, tracker.outstanding) == (0, 0, 0)


def test_two_megabyte_data_transfer_passes_untouched():
    link = Link()
    big = call("d", "DataTransfer", {"vendorId": "acme", "data": "x" * (2 << 20)})
    assert link.charger(big) == []
    assert link.upstream(result("d", {"status": "Accepted"})) == []
    assert link.tracker.unparseable == 0


# -- malformed payloads ------------------------------------------------------------------------

MALFORMED = [
    (
        "ocpp1.6",
        "StartTransaction",
        {"connectorId": "1", "idTag": "A", "meterStart": 0, "timestamp": "t"},
    ),
    ("ocpp1.6", "StartTransaction", {"connectorId": 1, "idTag": "A", "timestamp": "t"}),
    (
        "ocpp1.6",
        "StartTransaction",
        {"connectorId": 1, "idTag": "A", "meterStart": -5, "timestamp": "t"},
    ),
    (
        "ocpp1.6",
        "StartTransaction",
        {"connectorId": 1, "idTag": "A", "meterStart": 1e30, "timestamp": "t"},
    ),
    (
        "ocpp1.6",
        "StartTransaction",
        {"connectorId": 1, "idTag": "A", "meterStart": "NaN", "timestamp": "t"},
    ),
    (
        "ocpp1.6",
        "StartTransaction",
        {"connectorId": 1e30, "idTag": "A", "meterStart": 0, "timestamp": "t"},
    ),
    (
        "ocpp1.6",
        "StartTransaction",
        {"connectorId": 2**40, "idTag": "A", "meterStart": 0, "timestamp": "t"},
    ),
    (
        "ocpp1.6",
        "StartTransaction",
        {"connectorId": True, "idTag": "A", "meterStart": 0, "timestamp": "t"},
    ),
    ("ocpp1.6", "StartTransaction", [1, "A", 0]),
    (
        "ocpp1.6",
        "StopTransaction",
        {"transactionId": 1, "meterStop": 10, "timestamp": "t", "transactionData": {}},
    ),
    ("ocpp1.6", "StopTransaction", {"transactionId": 2**70, "meterStop": 10, "timestamp": "t"}),
    (
        "ocpp1.6",
        "MeterValues",
        {"connectorId": 1, "meterValue": [{"timestamp": "t", "sampledValue": [{"value": 5}]}]},
    ),
    ("ocpp1.6", "MeterValues", {"connectorId": -1, "meterValue": []}),
    ("ocpp1.6", "MeterValues", "a string"),
    ("ocpp1.6", "MeterValues", None),
    ("ocpp1.6", "MeterValues", 42),
    ("ocpp1.6", "StatusNotification", {"connectorId": 1, "status": None, "errorCode": "NoError"}),
    ("ocpp1.6", "BootNotification", {"chargePointModel": "M"}),
    (
        "ocpp2.0.1",
        "TransactionEvent",
        {
            "eventType": "Started",
            "timestamp": "t",
            "triggerReason": "Authorized",
            "seqNo": -1,
            "transactionInfo": {"transactionId": "x"},
        },
    ),
    (
        "ocpp2.0.1",
        "TransactionEvent",
        {
            "eventType": "Started",
            "timestamp": "t",
            "triggerReason": "Authorized",
            "seqNo": 0,
            "transactionInfo": {"transactionId": 5},
        },
    ),
    (
        "ocpp2.0.1",
        "TransactionEvent",
        {
            "eventType": "Updated",
            "timestamp": "t",
            "triggerReason": "Trigger",
            "seqNo": 1,
            "offline": "yes",
            "transactionInfo": {"transactionId": "x"},
        },
    ),
    (
        "ocpp2.0.1",
        "MeterValues",
        {
            "evseId": 1,
            "meterValue": [
                {
                    "timestamp": "t",
                    "sampledValue": [{"value": 1, "signedMeterValue": {"signingMethod": "x"}}],
                }
            ],
        },
    ),
    ("ocpp2.0.1", "BootNotification", {"reason": "PowerUp", "chargingStation": "Wallbox"}),
    (
        "ocpp2.1",
        "StatusNotification",
        {"connectorStatus": "Available", "evseId": "1", "connectorId": 1},
    ),
]


@pytest.mark.parametrize(("version", "action", "payload"), MALFORMED)
def test_malformed_payload_becomes_one_unparseable_event(version, action, payload, caplog):
    link = Link(version)
    text = call("bad", action, payload)
    with caplog.at_level(logging.WARNING, logger="proxy.tracker"):
        [bad] = link.charger(text)
    assert isinstance(bad, Unparseable)
    assert (bad.direction, bad.action, bad.unique_id, bad.message_type) == (
        "charger",
        action,
        "bad",
        2,
    )
    assert bad.raw == text.encode() and bad.raw_length == len(text.encode()) and bad.reason
    assert link.tracker.unparseable == 1
    assert (
        link.upstream(result("bad", {"status": "Accepted"})) == []
    )  # its answer gives nothing more
    assert [r.reason for r in caplog.records] == [bad.reason]


START_2X = {"eventType": "Started", "timestamp": "t", "triggerReason": "Authorized", "seqNo": 0}
OUT_OF_BOUNDS = [
    (
        "ocpp1.6",
        "StartTransaction",
        {"connectorId": 1, "idTag": "A", "meterStart": 0, "timestamp": "t", "reservationId": 2**64},
    ),
    (
        "ocpp1.6",
        "StartTransaction",
        {"connectorId": 1, "idTag": "A", "meterStart": "1E-100000", "timestamp": "t"},
    ),
    (
        "ocpp1.6",
        "StartTransaction",
        {"connectorId": 1, "idTag": "A" * 256, "meterStart": 0, "timestamp": "t"},
    ),
    (
        "ocpp1.6",
        "StopTransaction",
        {"transactionId": 1, "meterStop": "0E-100000", "timestamp": "t"},
    ),
    (
        "ocpp1.6",
        "MeterValues",
        {
            "connectorId": 1,
            "meterValue": [
                {"timestamp": "t", "sampledValue": [{"value": "1", "measurand": "E" * 101}]}
            ],
        },
    ),
    (
        "ocpp1.6",
        "MeterValues",
        {
            "connectorId": 1,
            "meterValue": [{"timestamp": "t", "sampledValue": [{"value": "1"}] * 1001}],
        },
    ),
    (
        "ocpp1.6",
        "StatusNotification",
        {"connectorId": 1, "status": "Available", "errorCode": "E" * 300},
    ),
    (
        "ocpp2.0.1",
        "TransactionEvent",
        {**START_2X, "transactionInfo": {"transactionId": "x", "remoteStartId": -(2**70)}},
    ),
    (
        "ocpp2.0.1",
        "TransactionEvent",
        {**START_2X, "transactionInfo": {"transactionId": "x" * 256}},
    ),
    (
        "ocpp2.0.1",
        "TransactionEvent",
        {**START_2X, "seqNo": 2**63, "transactionInfo": {"transactionId": "x"}},
    ),
    (
        "ocpp2.0.1",
        "MeterValues",
        {
            "evseId": 1,
            "meterValue": [
                {
                    "timestamp": "t",
                    "sampledValue": [
                        {"value": 1, "signedMeterValue": {"signedMeterData": "x" * (64 * 1024 + 1)}}
                    ],
                }
            ],
        },
    ),
    (
        "ocpp2.0.1",
        "BootNotification",
        {"reason": "PowerUp", "chargingStation": {"model": "M" * 256, "vendorName": "V"}},
    ),
]


@pytest.mark.parametrize(("version", "action", "payload"), OUT_OF_BOUNDS)
def test_a_value_beyond_its_bound_makes_the_payload_unparseable_and_every_event_encodes(
    version, action, payload
):
    """Every value the tracker reads is bounded so that its events can be encoded and stored."""
    link = Link(version)
    events = link.charger(call("big", action, payload)) + link.upstream(
        result(
            "big", {"status": "Accepted", "transactionId": 1, "idTagInfo": {"status": "Accepted"}}
        )
    )
    assert [type(e) for e in events] in ([Unparseable], [Unparseable, TransactionStarted])
    for event in events:
        msgspec.msgpack.encode(event)


def test_a_huge_multiplier_makes_only_its_sample_invalid_and_the_event_encodes():
    """The MeterValues that ended a worker: a multiplier beyond 64 bits could not be encoded."""
    link = Link("ocpp2.0.1")
    samples = [
        {"value": 12, "unitOfMeasure": {"unit": "kWh", "multiplier": 100000000000000000000}},
        {"value": 34, "unitOfMeasure": {"unit": "kWh", "multiplier": -40}},
        {"value": 56, "unitOfMeasure": {"unit": "kWh", "multiplier": 0}},
    ]
    payload = valid(
        "v201",
        "MeterValues",
        {
            "evseId": 1,
            "meterValue": [{"timestamp": "2026-01-01T10:00:00Z", "sampledValue": samples}],
        },
    )
    [event] = link.charger(call("1", "MeterValues", payload))
    assert [(s.value, s.multiplier, s.error) for s in event.samples] == [
        (None, 0, "multiplier out of range"),
        (None, -40, "multiplier out of range"),
        (Decimal(56000), 0, None),
    ]
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(event), type=AnyEvent) == event
    beyond = '{"evseId":1,"meterValue":[{"timestamp":"t","sampledValue":[{"value":1,"unitOfMeasure":{"multiplier":%s}}]}]}'
    [bad] = link.charger(
        f'[2,"2","MeterValues",{beyond % ("9" * 5000)}]'
    )  # more digits than msgspec reads
    assert isinstance(bad, Unparseable)


def test_nul_and_every_character_json_allows_are_kept_as_sent():
    """The tracker keeps strings exactly; the session store deals with what PostgreSQL refuses."""
    link = Link()
    status = {"connectorId": 1, "status": "Avail\u0000able\ud83d\ude00", "errorCode": "\u0001"}
    [event] = link.charger(json.dumps([2, "1", "StatusNotification", status]).replace("\\\\", "\\"))
    assert (event.status, event.error_code) == ("Avail\x00able\U0001f600", "\x01")
    msgspec.msgpack.encode(event)
    lone = message(
        '[2,"2","StatusNotification",{"connectorId":1,"status":"\\ud800","errorCode":"x"}]'
    )
    assert (
        lone.message_type == NOT_OCPP
    )  # the codec refuses a lone surrogate escape as JSON: never tracked
    assert link.tracker.from_charger(lone, T0) == []
    with pytest.raises(msgspec.DecodeError):  # and msgspec would refuse it too
        msgspec.json.decode(b'"\\ud800"')


def test_huge_malformed_frame_is_kept_capped():
    link = Link()
    text = call(
        "1",
        "StopTransaction",
        {"transactionId": "no", "meterStop": 1, "timestamp": "t", "idTag": "x" * (2 << 20)},
    )
    [bad] = link.charger(text)
    assert len(bad.raw) == RAW_LIMIT and bad.raw == text.encode()[:RAW_LIMIT]
    assert bad.raw_length == len(text.encode()) > 2 << 20 and len(bad.raw_sha256) == 64


def test_unparseable_logging_is_rate_limited(caplog):
    link = Link()
    with caplog.at_level(logging.WARNING, logger="proxy.tracker"):
        for i in range(50):
            link.charger(call(str(i), "MeterValues", {}))
    assert link.tracker.unparseable == 50
    assert 1 <= len(caplog.records) <= 10


def test_a_bug_in_the_tracker_never_escapes(monkeypatch):
    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr("proxy.capture.tracker.samples16", broken)
    link = Link()
    [bad] = link.charger(call("1", "MeterValues", {"connectorId": 1, "meterValue": []}))
    assert isinstance(bad, Unparseable) and "internal error" in bad.reason
    assert link.tracker.from_charger(None, T0) == []  # type: ignore[arg-type]


# -- correlation -------------------------------------------------------------------------------


def test_answers_for_unknown_ids_are_ignored_and_counted():
    link = Link()
    assert link.upstream(result("nobody", start_result16(1))) == []
    assert link.charger(error("nobody-either")) == []
    link.charger(call("1", "StartTransaction", start16()))
    assert len(link.upstream(result("1", start_result16(5)))) == 1
    assert link.upstream(result("1", start_result16(6))) == []  # answered already
    assert link.tracker.unmatched_answers == 3


def test_answers_are_matched_per_direction():
    link = Link()
    link.charger(call("same", "StartTransaction", start16()))
    link.upstream(call("same", "GetConfiguration", {}))
    assert link.charger(result("same", {"configurationKey": []})) == []  # answers the back-office
    [started] = link.upstream(result("same", start_result16(9)))
    assert started.transaction_id == "9" and link.tracker.unmatched_answers == 0


def test_duplicate_call_id_replaces_the_outstanding_call():
    link = Link()
    link.charger(call("dup", "StartTransaction", start16(connector=1)))
    link.charger(call("dup", "StartTransaction", start16(connector=2)))
    [started] = link.upstream(result("dup", start_result16(3)))
    assert started.connector_id == 2 and link.tracker.duplicate_ids == 1
    assert link.upstream(result("dup", start_result16(3))) == []


def test_outstanding_calls_are_bounded_dropping_the_oldest():
    link = Link()
    for i in range(MAX_OUTSTANDING + 10):
        link.charger(call(f"s{i}", "StartTransaction", start16(connector=i)))
    assert link.tracker.outstanding == MAX_OUTSTANDING and link.tracker.evicted_calls == 10
    assert link.upstream(result("s0", start_result16(1))) == []
    [started] = link.upstream(result(f"s{MAX_OUTSTANDING + 9}", start_result16(2)))
    assert started.connector_id == MAX_OUTSTANDING + 9


# -- event ids ---------------------------------------------------------------------------------

SESSION = [
    ("charger", call("b", "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"})),
    (
        "upstream",
        result("b", {"status": "Accepted", "currentTime": "2026-01-01T10:00:00Z", "interval": 300}),
    ),
    (
        "charger",
        call(
            "s",
            "StatusNotification",
            {"connectorId": 1, "status": "Charging", "errorCode": "NoError"},
        ),
    ),
    ("charger", call("t", "StartTransaction", start16())),
    ("upstream", result("t", start_result16(42))),
    (
        "charger",
        call(
            "m",
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": 42,
                "meterValue": [
                    {"timestamp": "2026-01-01T10:15:00Z", "sampledValue": [energy("2.5", "kWh")]}
                ],
            },
        ),
    ),
    (
        "charger",
        call("x", "StopTransaction", {"transactionId": 42, "meterStop": 5000, "timestamp": "t"}),
    ),
    (
        "charger",
        call("y", "StopTransaction", {"transactionId": "bad", "meterStop": 5000, "timestamp": "t"}),
    ),
]


def replay(frames: list[tuple[str, str]], identity: str = "CP-1", start: float = T0) -> list[Any]:
    link = Link(identity=identity)
    link.at = start
    events: list[Any] = []
    for side, text in frames:
        events += link.charger(text) if side == "charger" else link.upstream(text)
    return events


def test_replaying_the_same_frames_gives_the_same_events_and_ids():
    first, second = replay(SESSION), replay(SESSION)
    assert len(first) == 6 and first == second
    ids = [e.event_id for e in first]
    assert len(set(ids)) == len(ids)
    assert all(
        uuid.UUID(i).version == 8 and event_id(e) == i for i, e in zip(ids, first, strict=True)
    )


def test_ids_are_the_same_in_every_version():
    # Stored events keep their ids; a charger re-sending after an upgrade must meet them.
    assert [e.event_id for e in replay(SESSION)] == [
        "2ba62986-70ac-86ec-841a-b864824952ad",
        "8130451b-34fa-87f0-9fb8-241ee5524448",
        "32def9a5-5c02-8fa5-8c5c-d2e29ba80b82",
        "65721486-5ecd-84ac-b18a-eeb536fba8b0",
        "8c40e504-dddf-813b-bc74-deae5f4ac38a",
        "7a6e911f-61c9-890c-8f11-70855a1ce6bd",
    ]


@given(st.binary())
def test_uuid8_is_the_uuid_of_the_digest_with_version_8_and_the_rfc_variant(content: bytes):
    digest = hashlib.sha256(content)
    reference = bytearray(digest.digest()[:16])
    reference[6] = (reference[6] & 0x0F) | 0x80
    reference[8] = (reference[8] & 0x3F) | 0x80
    assert uuid8(digest) == str(uuid.UUID(bytes=bytes(reference)))


def test_ids_tell_different_events_apart():
    base = {e.event_id for e in replay(SESSION)}
    assert not base & {e.event_id for e in replay(SESSION, identity="CP-2")}
    changed = [(side, text.replace('"2.5"', '"2.6"')) for side, text in SESSION]
    assert len(base - {e.event_id for e in replay(changed)}) == 1  # only the meter values differ


def test_ids_of_timestamped_events_ignore_reception_time_and_message_id():
    later = replay(SESSION, start=T0 + 3600)
    by_kind = {type(e).__name__: e.event_id for e in later}
    original = {type(e).__name__: e.event_id for e in replay(SESSION)}
    # A re-sent transaction message is the same fact; a boot or status an hour later is not.
    for kind in ("TransactionStarted", "MeterValuesReported", "TransactionStopped"):
        assert by_kind[kind] == original[kind]
    for kind in ("ChargerBooted", "StatusChanged", "Unparseable"):
        assert by_kind[kind] != original[kind]
    renumbered = [(side, text.replace('"m"', '"m-resent"')) for side, text in SESSION]
    assert [e.event_id for e in replay(renumbered)] == [e.event_id for e in replay(SESSION)]


def test_events_round_trip_through_msgspec():
    events = replay(SESSION)
    decoded = msgspec.json.decode(msgspec.json.encode(events), type=list[AnyEvent])
    assert decoded == events
    assert msgspec.json.decode(msgspec.json.encode(events[0]))["kind"] == "charger_booted"
    assert isinstance(events[3].samples[0], Sample)


# -- interleavings (property) ------------------------------------------------------------------

ID_POOL = ["1", "2", "3", "a", "b"]
CHARGER_ACTIONS = [
    "StartTransaction",
    "StartTransaction",
    "Heartbeat",
    "StatusNotification",
    "MeterValues",
]


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[Any, ...]]:
    """Frames of both sides in any order: CALLs, answers (matching, stray or repeated), noise."""
    out: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(
            st.sampled_from(
                [
                    "charger_call",
                    "charger_call",
                    "upstream_call",
                    "upstream_answer",
                    "upstream_answer",
                    "charger_answer",
                    "noise",
                ]
            )
        )
        unique_id = draw(st.sampled_from(ID_POOL))
        if kind == "charger_call":
            out.append(
                (
                    kind,
                    unique_id,
                    draw(st.sampled_from(CHARGER_ACTIONS)),
                    draw(st.integers(0, 3)),
                    draw(st.booleans()),
                )
            )
        elif kind == "upstream_answer":
            out.append(
                (kind, unique_id, draw(st.booleans()), draw(st.integers(-(2**31), 2**31 - 1)))
            )
        else:
            out.append((kind, unique_id))
    return out


def charger_call_text(unique_id: str, action: str, connector: int, well_formed: bool) -> str:
    if action == "StartTransaction":
        payload: Any = start16(connector=connector, id_tag=f"T{connector}")
    elif action == "StatusNotification":
        payload = {"connectorId": connector, "status": "Available", "errorCode": "NoError"}
    elif action == "MeterValues":
        payload = {
            "connectorId": connector,
            "meterValue": [{"timestamp": "t", "sampledValue": [energy("1")]}],
        }
    else:
        payload = {}
    if not well_formed:
        payload = {"connectorId": "x"} if action != "Heartbeat" else []
    return call(unique_id, action, payload)


@settings(max_examples=300, deadline=None)
@given(steps())
def test_interleavings_keep_the_invariants(script):
    tracker, twin = Tracker("CP-9", "ocpp1.6"), Tracker("CP-9", "ocpp1.6")
    pending: dict[
        str, tuple[str, int, bool]
    ] = {}  # the charger's outstanding CALLs, as OCPP defines them
    expected_starts: list[tuple[int, str | None, str]] = []
    expected_unmatched = 0
    produced: list[tuple[float, Any]] = []
    upstream_pending: set[str] = set()
    for step_no, step in enumerate(script):
        at = T0 + step_no
        kind, unique_id = step[0], step[1]
        if kind == "charger_call":
            _, _, action, connector, ok = step
            pending.pop(unique_id, None)
            pending[unique_id] = (action, connector, ok)
            msg, side = message(charger_call_text(unique_id, action, connector, ok)), "charger"
        elif kind == "upstream_answer":
            _, _, is_error, tx = step
            outstanding = pending.pop(unique_id, None)
            if outstanding is None:
                expected_unmatched += 1
            elif outstanding[0] == "StartTransaction" and outstanding[2]:
                expected_starts.append(
                    (
                        outstanding[1],
                        None if is_error else str(tx),
                        "CallError" if is_error else "Accepted",
                    )
                )
            text = error(unique_id) if is_error else result(unique_id, start_result16(tx))
            msg, side = message(text, from_charger=False), "upstream"
        elif kind == "upstream_call":
            upstream_pending.add(unique_id)
            msg, side = (
                message(call(unique_id, "GetConfiguration", {}), from_charger=False),
                "upstream",
            )
        elif kind == "charger_answer":
            if unique_id in upstream_pending:
                upstream_pending.discard(unique_id)
            else:
                expected_unmatched += 1
            msg, side = message(result(unique_id, {"configurationKey": []})), "charger"
        else:
            msg, side = message(b"hb", opcode=PING), "charger"
        for t in (tracker, twin):
            events = t.from_charger(msg, at) if side == "charger" else t.from_upstream(msg, at)
            if t is tracker:
                produced += [(at, e) for e in events]
                twin_events = events
            else:
                assert events == twin_events  # same frames, same events, same ids

    assert all(e.at == at for at, e in produced)
    assert [at for at, _ in produced] == sorted(at for at, _ in produced)
    starts = [e for _, e in produced if isinstance(e, TransactionStarted)]
    assert [(e.connector_id, e.transaction_id, e.status) for e in starts] == expected_starts
    assert tracker.unmatched_answers == expected_unmatched
    assert tracker.unparseable == sum(isinstance(e, Unparseable) for _, e in produced)
    assert tracker.outstanding <= 2 * MAX_OUTSTANDING
