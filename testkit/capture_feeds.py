"""Captured traffic for store tests: frames of one link fed through a real tracker.

`Feed` turns frames (as the charger and the back-office send them) into the tracker's events,
at receive times it advances by a second per frame; `session_16`, `session_201`,
`offline_session` and `captured_16` are the sessions the store tests keep reusing.
"""

from __future__ import annotations

import json
from datetime import datetime

import msgspec

from proxy.capture.events import TransactionIdAssigned
from proxy.capture.tracker import Tracker, event_id
from proxy.wire.codec import FrameReader, encode_frame

T0 = 1_790_000_000.0


class Feed:
    """Frames of one link through a real tracker; collects the events."""

    def __init__(self, version: str, identity: str = "CP-1") -> None:
        self.tracker = Tracker(identity, version)
        self.events: list = []
        self.at = T0

    def charger(self, frame: list) -> None:
        self.at += 1
        [message] = FrameReader(from_client=True).feed(
            encode_frame(1, json.dumps(frame).encode(), mask=True)
        )
        self.events += self.tracker.from_charger(message, self.at)

    def upstream(self, frame: list) -> None:
        self.at += 1
        [message] = FrameReader(from_client=False).feed(
            encode_frame(1, json.dumps(frame).encode(), mask=False)
        )
        self.events += self.tracker.from_upstream(message, self.at)


def session_16(identity: str = "CP-16") -> Feed:
    feed = Feed("ocpp1.6", identity)
    feed.charger(
        [
            2,
            "b",
            "BootNotification",
            {
                "chargePointVendor": "Alfen",
                "chargePointModel": "Eve",
                "meterType": "Carlo Gavazzi EM340-PF",
                "meterSerialNumber": "M-1",
            },
        ]
    )
    feed.upstream(
        [3, "b", {"status": "Accepted", "currentTime": "2026-01-01T10:00:00Z", "interval": 300}]
    )
    feed.charger(
        [
            2,
            "s",
            "StartTransaction",
            {
                "connectorId": 1,
                "idTag": "TAG",
                "meterStart": 1000,
                "timestamp": "2026-01-01T10:00:00Z",
            },
        ]
    )
    feed.upstream([3, "s", {"transactionId": 42, "idTagInfo": {"status": "Accepted"}}])
    feed.charger(
        [
            2,
            "m",
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": 42,
                "meterValue": [
                    {
                        "timestamp": "2026-01-01T10:30:00Z",
                        "sampledValue": [{"value": "20.5", "unit": "kWh"}],
                    }
                ],
            },
        ]
    )
    feed.upstream([3, "m", {}])
    feed.charger(
        [
            2,
            "e",
            "StopTransaction",
            {
                "transactionId": 42,
                "meterStop": 43370,
                "timestamp": "2026-01-01T11:00:00Z",
                "reason": "EVDisconnected",
            },
        ]
    )
    feed.upstream([3, "e", {}])
    return feed


def session_201(identity: str = "CP-201") -> Feed:
    feed = Feed("ocpp2.0.1", identity)

    def event(kind: str, seq: int, kwh: str) -> list:
        return [
            2,
            f"t{seq}",
            "TransactionEvent",
            {
                "eventType": kind,
                "timestamp": f"2026-01-01T10:{seq:02d}:00Z",
                "seqNo": seq,
                "triggerReason": "MeterValuePeriodic",
                "transactionInfo": {"transactionId": "tx-9"},
                "evse": {"id": 1, "connectorId": 1},
                "meterValue": [
                    {
                        "timestamp": f"2026-01-01T10:{seq:02d}:00Z",
                        "sampledValue": [
                            {
                                "value": float(kwh),
                                "measurand": "Energy.Active.Import.Register",
                                "unitOfMeasure": {"unit": "kWh"},
                            }
                        ],
                    }
                ],
            },
        ]

    for kind, seq, kwh in (("Started", 0, "0.5"), ("Updated", 10, "6.25"), ("Ended", 20, "12.5")):
        feed.charger(event(kind, seq, kwh))
        feed.upstream([3, f"t{seq}", {}])
    return feed


def offline_session(provisional: int, real: int) -> Feed:
    """A 1.6 session started offline (provisional id), renamed mid-way, finished under the real id."""
    feed = Feed("ocpp1.6", "CP-OFF")
    feed.charger(
        [
            2,
            "s",
            "StartTransaction",
            {
                "connectorId": 1,
                "idTag": "TAG",
                "meterStart": 1000,
                "timestamp": "2026-01-01T10:00:00Z",
            },
        ]
    )
    feed.upstream([3, "s", {"transactionId": provisional, "idTagInfo": {"status": "Accepted"}}])
    feed.charger(
        [
            2,
            "m",
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": provisional,
                "meterValue": [
                    {"timestamp": "2026-01-01T10:30:00Z", "sampledValue": [{"value": "2000"}]}
                ],
            },
        ]
    )
    feed.upstream([3, "m", {}])
    assigned = TransactionIdAssigned("", "CP-OFF", feed.at, str(provisional), str(real))
    feed.events.append(msgspec.structs.replace(assigned, event_id=event_id(assigned)))
    feed.charger(
        [
            2,
            "e",
            "StopTransaction",
            {"transactionId": real, "meterStop": 5000, "timestamp": "2026-01-01T11:00:00Z"},
        ]
    )
    return feed


def captured_16(identity: str, transaction: int, charger_day: str, received: datetime) -> list:
    """A 1.6 session as captured: start (and answer), meter values, stop, 10 minutes apart by
    the charger's clock; the proxy receives the frames from `received` on, a second apart."""
    feed = Feed("ocpp1.6", identity)
    feed.at = received.timestamp()
    start = {"connectorId": 1, "idTag": "TAG", "meterStart": 1000}
    feed.charger([2, "s", "StartTransaction", {**start, "timestamp": f"{charger_day}T10:00:00Z"}])
    feed.upstream([3, "s", {"transactionId": transaction, "idTagInfo": {"status": "Accepted"}}])
    reading = {"timestamp": f"{charger_day}T10:10:00Z", "sampledValue": [{"value": "3000"}]}
    meter = {"connectorId": 1, "transactionId": transaction, "meterValue": [reading]}
    feed.charger([2, "m", "MeterValues", meter])
    feed.upstream([3, "m", {}])
    stop = {"transactionId": transaction, "meterStop": 11000}
    feed.charger([2, "e", "StopTransaction", {**stop, "timestamp": f"{charger_day}T10:20:00Z"}])
    feed.upstream([3, "e", {}])
    return feed.events
