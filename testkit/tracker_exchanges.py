"""Hostile OCPP exchanges for the tracker, as Hypothesis strategies, and the tracker fed with them.

The payloads are arbitrary JSON (huge and extreme numbers, NUL and every other character, long
strings, nesting, wrong types) and valid payloads of every tracked action of OCPP 1.6 and 2.0.1
with parts replaced by such values, as the charger's CALL and as the back-office's answer (or a
CALLERROR). `track` sends them through the real codec and a `Tracker` and returns its events.
"""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import strategies as st

from proxy.capture.events import Event
from proxy.capture.tracker import Tracker
from proxy.wire.codec import FrameReader, Message, encode_frame

T0 = 1_767_225_600.0
TS = "2026-01-01T10:00:00Z"
MAX_MESSAGE = 1 << 20  # [proxy] max_message_size

# -- JSON values a charger may send ------------------------------------------------------------

EXTREME_INTS = [
    0,
    -1,
    2**31 - 1,
    2**31,
    -(2**31) - 1,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**20,
    10**300,
    -(10**300),
]
ODD_TEXT = [
    "",
    "\x00",
    "a\x00b",
    "\\u0000",
    "NaN",
    "Infinity",
    "-0",
    "1E-100000",
    "1e999999",
    "0001-01-01T00:00:00+14:00",
    "9999-12-31T23:59:59-14:00",
    "2026-02-30T10:00:00Z",
    "\U0001f600",
    "\u202e",
    "\ufffd",
    " ",
    "12.3456",
    "SignedData",
    "Energy.Active.Import.Register",
    "kWh",
]


def texts() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=40),  # any code point but lone surrogates (the codec refuses those)
        st.sampled_from(ODD_TEXT),
        st.builds(lambda a, b: a + "\x00" + b, st.text(max_size=10), st.text(max_size=10)),
        st.sampled_from([100, 255, 256, 65_536, 65_537]).map(
            lambda n: "x" * n
        ),  # at the string bounds
    )


def leaves() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        texts(),
        st.sampled_from(EXTREME_INTS),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=False, allow_infinity=False),
    )


def json_values() -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves(),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(texts(), children, max_size=4)
        ),
        max_leaves=12,
    )


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# -- valid payloads of every tracked action, to mutate -------------------------------------------

SAMPLED_16 = {
    "value": "1234.5",
    "context": "Sample.Periodic",
    "format": "Raw",
    "measurand": "Energy.Active.Import.Register",
    "phase": "L1",
    "location": "Outlet",
    "unit": "kWh",
}
METER_VALUE_16 = {
    "timestamp": TS,
    "sampledValue": [SAMPLED_16, {"value": "16.2", "measurand": "Current.Import"}],
}
SAMPLED_2 = {
    "value": 12.5,
    "context": "Sample.Periodic",
    "measurand": "Energy.Active.Import.Register",
    "phase": "L1",
    "location": "Outlet",
    "unitOfMeasure": {"unit": "kWh", "multiplier": 0},
    "signedMeterValue": {
        "signedMeterData": "OCMF|{}|{}",
        "signingMethod": "ECDSA",
        "encodingMethod": "OCMF",
        "publicKey": "3059",
    },
}
METER_VALUE_2 = {"timestamp": TS, "sampledValue": [SAMPLED_2, {"value": 230}]}

ACTIONS: dict[str, dict[str, tuple[dict[str, Any], dict[str, Any] | None]]] = {
    "ocpp1.6": {
        "BootNotification": (
            {
                "chargePointVendor": "V",
                "chargePointModel": "M",
                "chargePointSerialNumber": "S",
                "chargeBoxSerialNumber": "B",
                "firmwareVersion": "1.0",
                "meterType": "EM340",
                "meterSerialNumber": "123",
            },
            {"status": "Accepted", "currentTime": TS, "interval": 300},
        ),
        "StatusNotification": (
            {"connectorId": 1, "status": "Charging", "errorCode": "NoError", "timestamp": TS},
            None,
        ),
        "StartTransaction": (
            {
                "connectorId": 1,
                "idTag": "TAG",
                "meterStart": 1000,
                "timestamp": TS,
                "reservationId": 5,
            },
            {"transactionId": 17, "idTagInfo": {"status": "Accepted"}},
        ),
        "StopTransaction": (
            {
                "transactionId": 17,
                "meterStop": 5000,
                "timestamp": TS,
                "reason": "Local",
                "idTag": "TAG",
                "transactionData": [METER_VALUE_16],
            },
            None,
        ),
        "MeterValues": (
            {"connectorId": 1, "transactionId": 17, "meterValue": [METER_VALUE_16]},
            None,
        ),
    },
    "ocpp2.0.1": {
        "BootNotification": (
            {
                "reason": "PowerUp",
                "chargingStation": {
                    "model": "M",
                    "vendorName": "V",
                    "serialNumber": "S",
                    "firmwareVersion": "1",
                },
            },
            {"status": "Accepted", "currentTime": TS, "interval": 300},
        ),
        "StatusNotification": (
            {"timestamp": TS, "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1},
            None,
        ),
        "TransactionEvent": (
            {
                "eventType": "Started",
                "timestamp": TS,
                "triggerReason": "Authorized",
                "seqNo": 0,
                "offline": False,
                "transactionInfo": {
                    "transactionId": "tx-1",
                    "chargingState": "Charging",
                    "remoteStartId": 3,
                },
                "evse": {"id": 1, "connectorId": 1},
                "idToken": {"idToken": "TOK", "type": "ISO14443"},
                "meterValue": [METER_VALUE_2],
            },
            None,
        ),
        "MeterValues": ({"evseId": 1, "meterValue": [METER_VALUE_2]}, None),
    },
}


# How often a field is dropped or replaced and a leaf made hostile, drawn per payload: a light
# touch reaches the deep fields of long payloads such as TransactionEvent. Hypothesis favours the
# edges of what it draws, so the coin is a plain `random.Random` it seeds (and replays).
RATES = st.sampled_from([0.02, 0.05, 0.15])


@st.composite
def mutated(draw: st.DrawFn, value: Any, rate: float, coin: random.Random) -> Any:
    """`value` with some parts replaced by arbitrary JSON, removed, added to, or repeated."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if coin.random() < rate / 2:
                continue  # dropped
            out[key] = (
                draw(json_values()) if coin.random() < rate / 2 else draw(mutated(item, rate, coin))
            )
        if coin.random() < rate:
            out[draw(texts())] = draw(json_values())  # an unknown field
        return out
    if isinstance(value, list):
        items = [draw(mutated(item, rate, coin)) for item in value]
        if items and len(json.dumps(items[0])) < 300 and coin.random() < rate / 2:
            items = items[:1] * draw(st.sampled_from([1000, 1001]))  # at the list bounds
        return items
    if coin.random() < rate / 3:
        return draw(json_values())
    if (
        coin.random() < rate
    ):  # a hostile value of the same JSON type: it still fits the schema's shape
        if isinstance(value, str):
            return draw(texts())
        if isinstance(value, int | float) and not isinstance(value, bool):
            return draw(
                st.one_of(
                    st.sampled_from(EXTREME_INTS), st.floats(allow_nan=False, allow_infinity=False)
                )
            )
    return value


@st.composite
def exchanges(draw: st.DrawFn, version: str) -> list[tuple[str, Any, Any]]:
    """(action, CALL payload, answer payload or None for a CALLERROR) in the order they happen."""
    out = []
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(sorted(ACTIONS[version])))
        request, response = ACTIONS[version][action]
        kind = draw(st.sampled_from(["mutated"] * 6 + ["arbitrary", "nested"]))
        coin = draw(st.randoms(use_true_random=True))
        if kind == "mutated":
            payload = draw(mutated(request, draw(RATES), coin))
        elif kind == "arbitrary":
            payload = draw(json_values())
        else:  # an unknown field nested up to past the codec's limit (64 levels: then not OCPP to it)
            payload = {**request, "x": nested(draw(st.integers(1, 80)))}
        answer = draw(
            st.one_of(st.none(), mutated(response or {}, draw(RATES), coin), json_values())
        )
        out.append((action, payload, answer))
    return out


def frame_message(text: bytes, from_charger: bool) -> Message:
    reader = FrameReader(from_client=from_charger, max_message_size=MAX_MESSAGE)
    [message] = reader.feed(encode_frame(1, text, mask=from_charger))
    return message


def track(
    version: str, script: list[tuple[str, Any, Any]], identity: str = "CP-FUZZ"
) -> list[Event]:
    """Feed the exchanges to a tracker as real frames; the events it gives.

    A frame over the proxy's default message limit (1 MiB) never reaches a tracker: the link
    closes with 1009 first. Such a frame is left out.
    """
    tracker = Tracker(identity, version)
    events: list[Event] = []
    for n, (action, payload, answer) in enumerate(script):
        at = T0 + n
        reply = [4, f"c{n}", "InternalError", "no", {}] if answer is None else [3, f"c{n}", answer]
        call, result = (
            json.dumps([2, f"c{n}", action, payload]).encode(),
            json.dumps(reply).encode(),
        )
        if len(call) <= MAX_MESSAGE:
            events += tracker.from_charger(frame_message(call, True), at)
        if len(result) <= MAX_MESSAGE:
            events += tracker.from_upstream(frame_message(result, False), at + 0.5)
    return events


VERSIONS = st.sampled_from(["ocpp1.6", "ocpp2.0.1"])
