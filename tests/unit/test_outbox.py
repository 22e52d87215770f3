"""Outbox policy: offline answers, replay, transactionId mapping, bounds and retries, without I/O.

Messages are built the way the link sees them: real codec `Message`s read from server frames.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import ocpp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.outbox.entries import (
    Budget,
    Completed,
    DeadLetter,
    Entry,
    Full,
    OfflineAnswer,
    Retry,
    Send,
)
from proxy.outbox.frames import payload_of
from proxy.outbox.learned import AuthorizationCache, LiveObserver, start_key
from proxy.outbox.policy import IN_DOUBT, REPLAY_ID_PREFIX, UNPROVEN, WAITS_FOR_START, ChargerOutbox
from proxy.runtime.config import OutboxSettings
from proxy.wire.codec import CALL, TEXT, FrameReader, Message, encode_frame

SCHEMAS = Path(ocpp.__file__).parent
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
BASE = 1_000_000  # provisional_id_base in these tests
V16, V201, V21 = "ocpp1.6", "ocpp2.0.1", "ocpp2.1"
# The schema folder of the `ocpp` package for each version.
FOLDERS = {V16: "v16", V201: "v201", V21: "v21"}


# -- helpers -----------------------------------------------------------------------------------


def message(frame: Any) -> Message:
    """The codec's Message for one OCPP-J frame (a list, str or bytes) as a server sends it."""
    data = (
        frame
        if isinstance(frame, bytes)
        else (frame if isinstance(frame, str) else json.dumps(frame)).encode()
    )
    [msg] = FrameReader(from_client=False).feed(encode_frame(TEXT, data, mask=False))
    return msg


def result(unique_id: str, payload: Any) -> Message:
    return message([3, unique_id, payload])


def error(unique_id: str, code: str = "InternalError", description: str = "failed") -> Message:
    return message([4, unique_id, code, description, {}])


def body(payload: Any) -> bytes:
    """JSON bytes as a charger might format them (with spaces: not how orjson would write them)."""
    return json.dumps(payload).encode()


@cache
def _validator(version: str, name: str) -> Any:
    schema = json.loads((SCHEMAS / version / "schemas" / f"{name}.json").read_text())
    return jsonschema.validators.validator_for(schema)(schema)


def valid(version: str, action: str, payload: Any, *, response: bool = False) -> Any:
    """`payload`, after checking it against the schema the `ocpp` package ships for it."""
    folder = FOLDERS[version]
    name = action + ("Response" if response else "" if folder == "v16" else "Request")
    _validator(folder, name).validate(payload)
    return payload


def make_outbox(
    version: str = V16, budget: Budget | None = None, **overrides: Any
) -> ChargerOutbox:
    options: dict[str, Any] = {"provisional_id_base": BASE, "heartbeat_interval": 120, **overrides}
    return ChargerOutbox(
        "CP-1",
        version,
        OutboxSettings(**options),
        budget or Budget(1_000_000, 1 << 30),
        proof="upstream",
    )


def offline(
    box: ChargerOutbox, action: str, payload: Any, unique_id: str = "c1", now: float = T0
) -> OfflineAnswer:
    """Answer one charger CALL offline; it must be answered (not refused as Full)."""
    answer = box.offline_call(
        unique_id, action, payload if isinstance(payload, bytes) else body(payload), now
    )
    assert isinstance(answer, OfflineAnswer), answer
    return answer


def answered(
    answer: OfflineAnswer, unique_id: str = "c1", action: str | None = None, version: str = V16
) -> Any:
    """The payload of an offline CALLRESULT, checked as OCPP-J (and against the schema for `action`)."""
    frame = json.loads(answer.frame)
    assert frame[:2] == [3, unique_id] and len(frame) == 3
    assert message(answer.frame).unique_id == unique_id  # the codec reads it as the answer too
    if action is not None:
        valid(version, action, frame[2], response=True)
    return frame[2]


def start16(
    connector: int = 1, id_tag: str = "TAG-1", meter_start: int = 1000, minute: int = 0
) -> dict[str, Any]:
    return valid(
        V16,
        "StartTransaction",
        {
            "connectorId": connector,
            "idTag": id_tag,
            "meterStart": meter_start,
            "timestamp": f"2026-01-01T10:{minute:02d}:00Z",
        },
    )


def meter16(transaction_id: int, wh: int = 1500, connector: int = 1) -> dict[str, Any]:
    return valid(
        V16,
        "MeterValues",
        {
            "connectorId": connector,
            "transactionId": transaction_id,
            "meterValue": [
                {
                    "timestamp": "2026-01-01T10:15:00Z",
                    "sampledValue": [{"value": str(wh), "context": "Sample.Periodic"}],
                },
            ],
        },
    )


def stop16(
    transaction_id: int, meter_stop: int = 4000, id_tag: str | None = "TAG-1"
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "transactionId": transaction_id,
        "meterStop": meter_stop,
        "timestamp": "2026-01-01T11:00:00Z",
        "reason": "EVDisconnected",
    }
    if id_tag is not None:
        payload["idTag"] = id_tag
    return valid(V16, "StopTransaction", payload)


def event201(
    event_type: str = "Updated", seq_no: int = 1, id_token: str | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "eventType": event_type,
        "timestamp": "2026-01-01T10:00:00Z",
        "triggerReason": "Authorized",
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": "TX-abc"},
        "evse": {"id": 1, "connectorId": 1},
    }
    if id_token is not None:
        payload["idToken"] = {"idToken": id_token, "type": "ISO14443"}
    return valid(V201, "TransactionEvent", payload)


def provisional_of(answer: OfflineAnswer, unique_id: str = "c1") -> int:
    """The transactionId of an offline StartTransaction answer."""
    return answered(answer, unique_id, action="StartTransaction")["transactionId"]


def send(box: ChargerOutbox, now: float = T0) -> Send:
    step = box.next_replay(now)
    assert isinstance(step, Send), step
    return step


def sent(step: Send) -> tuple[str, str, Any]:
    """(message id, action, payload) of a replayed CALL, read by the codec as the back-office would."""
    msg = message(step.frame)
    assert msg.message_type == CALL and json.loads(step.frame)[0] == 2
    return msg.unique_id or "", msg.action or "", json.loads(payload_of(msg))


def replay_ok(box: ChargerOutbox, answer: Any = None, now: float = T0) -> tuple[Send, Any]:
    """Replay the next entry and answer it with a CALLRESULT (`{}` unless given)."""
    step = send(box, now)
    outcome = box.replay_answer(result(sent(step)[0], {} if answer is None else answer), now)
    assert isinstance(outcome, Completed) and outcome.entry is step.entry
    return step, outcome


def learn(
    observer: LiveObserver, action: str, request: Any, answer: Any, unique_id: str = "live-1"
) -> Any:
    """A CALL the link forwarded and the back-office's CALLRESULT to it."""
    observer.on_call(message([2, unique_id, action, request]))
    return observer.on_answer(result(unique_id, answer))


# -- offline answers -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V16, V201, V21])
def test_boot_notification_is_accepted_with_the_configured_interval_and_the_current_time(version):
    box = make_outbox(version)
    request = (
        {"chargePointVendor": "Alfen", "chargePointModel": "Eve"}
        if version == V16
        else {"reason": "PowerUp", "chargingStation": {"vendorName": "Alfen", "model": "Eve"}}
    )
    answer = offline(
        box, "BootNotification", valid(version, "BootNotification", request), now=T0 + 5.25
    )
    payload = answered(answer, action="BootNotification", version=version)
    assert payload == {
        "status": "Accepted",
        "interval": 120,
        "currentTime": "2026-01-01T00:00:05.250Z",
    }
    assert answer.entry is not None and answer.entry.action == "BootNotification"


@pytest.mark.parametrize("version", [V16, V201, V21])
def test_heartbeat_is_answered_with_the_current_time(version):
    box = make_outbox(version)
    payload = answered(
        offline(box, "Heartbeat", {}, now=T0 + 61), action="Heartbeat", version=version
    )
    assert payload == {"currentTime": "2026-01-01T00:01:01.000Z"}


@pytest.mark.parametrize(
    ("version", "action", "request_payload"),
    [
        (
            V16,
            "StatusNotification",
            {"connectorId": 1, "status": "Charging", "errorCode": "NoError"},
        ),
        (
            V16,
            "MeterValues",
            {
                "connectorId": 1,
                "meterValue": [
                    {"timestamp": "2026-01-01T10:00:00Z", "sampledValue": [{"value": "10"}]}
                ],
            },
        ),
        (V16, "DiagnosticsStatusNotification", {"status": "Uploaded"}),
        (V16, "FirmwareStatusNotification", {"status": "Installed"}),
        (
            V201,
            "StatusNotification",
            {
                "timestamp": "2026-01-01T10:00:00Z",
                "connectorStatus": "Occupied",
                "evseId": 1,
                "connectorId": 1,
            },
        ),
        (
            V201,
            "MeterValues",
            {
                "evseId": 1,
                "meterValue": [
                    {"timestamp": "2026-01-01T10:00:00Z", "sampledValue": [{"value": 10.0}]}
                ],
            },
        ),
        (
            V201,
            "NotifyEvent",
            {
                "generatedAt": "2026-01-01T10:00:00Z",
                "seqNo": 0,
                "eventData": [
                    {
                        "eventId": 1,
                        "timestamp": "2026-01-01T10:00:00Z",
                        "trigger": "Alerting",
                        "actualValue": "1",
                        "eventNotificationType": "HardWiredNotification",
                        "component": {"name": "Door"},
                        "variable": {"name": "Open"},
                    }
                ],
            },
        ),
        (
            V201,
            "SecurityEventNotification",
            {"type": "StartupOfTheDevice", "timestamp": "2026-01-01T10:00:00Z"},
        ),
    ],
)
def test_notifications_are_answered_with_an_empty_object_and_queued(
    version, action, request_payload
):
    box = make_outbox(version)
    answer = offline(box, action, valid(version, action, request_payload))
    assert answered(answer, action=action, version=version) == {}
    assert answer.entry is not None and list(box.entries) == [answer.entry]


CHARGER_NOTIFICATIONS = {
    V16: [
        "StatusNotification",
        "MeterValues",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "SecurityEventNotification",
        "SignedFirmwareStatusNotification",
        "LogStatusNotification",
    ],
    V201: [
        "StatusNotification",
        "MeterValues",
        "FirmwareStatusNotification",
        "SecurityEventNotification",
        "LogStatusNotification",
        "NotifyEvent",
        "NotifyReport",
        "NotifyMonitoringReport",
        "NotifyChargingLimit",
        "ReportChargingProfiles",
        "ClearedChargingLimit",
        "PublishFirmwareStatusNotification",
        "NotifyCustomerInformation",
        "NotifyDisplayMessages",
        "ReservationStatusUpdate",
    ],
}
# A 2.1 station sends the notifications of 2.0.1 and those 2.1 added.
CHARGER_NOTIFICATIONS[V21] = [
    *CHARGER_NOTIFICATIONS[V201],
    "NotifySettlement",
    "NotifyPriorityCharging",
    "NotifyDERAlarm",
    "NotifyDERStartStop",
    "ReportDERControl",
    "BatterySwap",
    "ClosePeriodicEventStream",
]
BACK_OFFICE_ONLY = {
    V16: ["DataTransfer", "SignCertificate"],
    V201: [
        "DataTransfer",
        "SignCertificate",
        "Get15118EVCertificate",
        "GetCertificateStatus",
        "NotifyEVChargingNeeds",
        "NotifyEVChargingSchedule",
    ],
}
BACK_OFFICE_ONLY[V21] = [
    *BACK_OFFICE_ONLY[V201],
    "GetCertificateChainStatus",
    "OpenPeriodicEventStream",
    "PullDynamicScheduleUpdate",
    "VatNumberValidation",
]


@pytest.mark.parametrize(
    ("version", "action"), [(v, a) for v, actions in CHARGER_NOTIFICATIONS.items() for a in actions]
)
def test_every_notification_gets_an_answer_its_schema_accepts(version, action):
    answer = offline(make_outbox(version), action, {"any": "content"})
    assert answered(answer, action=action, version=version) == {} and answer.entry is not None


@pytest.mark.parametrize(
    ("version", "action"), [(v, a) for v, actions in BACK_OFFICE_ONLY.items() for a in actions]
)
def test_every_call_whose_answer_needs_the_back_office_gets_a_callerror(version, action):
    box = make_outbox(version)
    answer = offline(box, action, {"any": "content"}, "q")
    assert json.loads(answer.frame)[:3] == [4, "q", "InternalError"] and box.empty


def test_offline_start_gets_a_provisional_id_from_the_base_and_its_sequence_number():
    box = make_outbox()
    offline(
        box, "StatusNotification", {"connectorId": 1, "status": "Preparing", "errorCode": "NoError"}
    )
    answer = offline(box, "StartTransaction", start16(), "s1")
    payload = answered(answer, "s1", action="StartTransaction")
    assert answer.entry is not None and answer.entry.seq == 2
    assert payload == {
        "transactionId": BASE + 2,
        "idTagInfo": {"status": "Invalid"},
    }  # unknown tag: default
    assert answer.transaction is not None and answer.transaction.provisional == BASE + 2
    assert answer.transaction.real is None and not answer.transaction.ended
    assert box.transactions == {BASE + 2: answer.transaction} and box.needs_rewriting


def test_two_offline_starts_get_distinct_provisional_ids():
    box = make_outbox()
    first = provisional_of(offline(box, "StartTransaction", start16(connector=1)))
    second = provisional_of(offline(box, "StartTransaction", start16(connector=2)))
    assert (first, second) == (BASE + 1, BASE + 2)


def test_offline_start_takes_the_id_tag_info_from_the_cache():
    box = make_outbox()
    info = {"status": "Blocked", "parentIdTag": "FLEET"}
    box.auth.learn("TAG-1", info)
    payload = answered(offline(box, "StartTransaction", start16()), action="StartTransaction")
    assert payload["idTagInfo"] == info


def test_offline_start_with_an_unknown_tag_gets_unknown_id_tag():
    box = make_outbox(unknown_id_tag="Invalid")
    payload = answered(
        offline(box, "StartTransaction", start16(id_tag="NEW")), action="StartTransaction"
    )
    assert payload["idTagInfo"] == {"status": "Invalid"}


def test_offline_stop_answers_from_the_cache_and_without_id_tag_with_an_empty_object():
    box = make_outbox(unknown_id_tag="Invalid")
    box.auth.learn("TAG-1", {"status": "Accepted"})
    assert answered(
        offline(box, "StopTransaction", stop16(BASE + 1)), action="StopTransaction"
    ) == {"idTagInfo": {"status": "Accepted"}}
    assert answered(
        offline(box, "StopTransaction", stop16(BASE + 1, 5000, id_tag="OTHER")),
        action="StopTransaction",
    ) == {"idTagInfo": {"status": "Invalid"}}
    assert (
        answered(
            offline(box, "StopTransaction", stop16(BASE + 1, 6000, id_tag=None)),
            action="StopTransaction",
        )
        == {}
    )
    assert [e.action for e in box.entries] == ["StopTransaction"] * 3


def test_authorize_is_answered_from_what_the_live_observer_learned():
    box = make_outbox(unknown_id_tag="Invalid")
    observer = LiveObserver(V16, box.auth, box.starts)
    info = {"status": "Accepted", "expiryDate": "2026-02-01T00:00:00Z", "parentIdTag": "FLEET"}
    assert learn(observer, "Authorize", {"idTag": "TAG-1"}, {"idTagInfo": info}) == [
        ("auth", "TAG-1", info)
    ]
    assert answered(offline(box, "Authorize", {"idTag": "TAG-1"}), action="Authorize") == {
        "idTagInfo": info
    }
    assert answered(offline(box, "Authorize", {"idTag": "TAG-2"}), action="Authorize") == {
        "idTagInfo": {"status": "Invalid"}
    }


def test_observer_learns_a_refusal_too_and_a_changed_answer_replaces_the_old_one():
    box = make_outbox()
    observer = LiveObserver(V16, box.auth, box.starts)
    learn(observer, "Authorize", {"idTag": "TAG-1"}, {"idTagInfo": {"status": "Accepted"}}, "a")
    assert learn(
        observer, "Authorize", {"idTag": "TAG-1"}, {"idTagInfo": {"status": "Blocked"}}, "b"
    ) == [("auth", "TAG-1", {"status": "Blocked"})]
    assert (
        learn(observer, "Authorize", {"idTag": "TAG-1"}, {"idTagInfo": {"status": "Blocked"}}, "c")
        == []
    )
    assert answered(offline(box, "Authorize", {"idTag": "TAG-1"}), action="Authorize") == {
        "idTagInfo": {"status": "Blocked"}
    }


def test_observer_ignores_callerrors_unmatched_answers_and_answers_without_status():
    box = make_outbox()
    observer = LiveObserver(V16, box.auth, box.starts)
    observer.on_call(message([2, "a", "Authorize", {"idTag": "TAG-1"}]))
    assert observer.on_answer(error("a")) == []
    assert (
        observer.on_answer(result("a", {"idTagInfo": {"status": "Accepted"}})) == []
    )  # already answered
    assert observer.on_answer(result("zz", {"idTagInfo": {"status": "Accepted"}})) == []
    assert (
        learn(observer, "Authorize", {"idTag": "TAG-1"}, {"idTagInfo": {"parentIdTag": "X"}}) == []
    )
    assert learn(observer, "Heartbeat", {}, {"currentTime": "2026-01-01T00:00:00Z"}) == []
    assert box.auth.known == {} and box.starts == {}


def test_observer_learns_a_started_transaction_and_its_id_tag():
    box = make_outbox()
    observer = LiveObserver(V16, box.auth, box.starts)
    answer = {"transactionId": 4711, "idTagInfo": {"status": "Accepted"}}
    learned = learn(observer, "StartTransaction", start16(), answer)
    key = start_key(start16())
    assert learned == [("auth", "TAG-1", {"status": "Accepted"}), ("start", key, 4711)]
    assert box.starts == {key: 4711}


@pytest.mark.parametrize(
    ("unknown", "expected"), [("Accepted", "Accepted"), ("Invalid", "Invalid")]
)
def test_an_expired_cache_entry_gets_the_unknown_status(unknown, expected):
    box = make_outbox(unknown_id_tag=unknown)
    box.auth.learn("TAG-1", {"status": "Blocked", "expiryDate": "2025-12-31T23:59:59Z"})
    box.auth.learn("TAG-2", {"status": "Blocked", "expiryDate": "2026-01-01T00:00:30Z"})
    assert answered(offline(box, "Authorize", {"idTag": "TAG-1"}, now=T0), action="Authorize") == {
        "idTagInfo": {"status": expected}
    }
    assert (
        answered(offline(box, "Authorize", {"idTag": "TAG-2"}, now=T0), action="Authorize")[
            "idTagInfo"
        ]["status"]
        == "Blocked"
    )  # not yet expired
    assert answered(
        offline(box, "Authorize", {"idTag": "TAG-2"}, now=T0 + 31), action="Authorize"
    ) == {"idTagInfo": {"status": expected}}


def test_expiry_dates_with_a_utc_offset_are_compared_as_instants():
    cache_ = AuthorizationCache(
        {
            "PAST": {
                "status": "Accepted",
                "expiryDate": "2026-01-01T01:00:00+02:00",
            },  # 2025-12-31T23:00Z
            "FUTURE": {
                "status": "Accepted",
                "expiryDate": "2025-12-31T23:30:00-01:00",
            },  # 2026-01-01T00:30Z
        }
    )
    assert cache_.info("PAST", T0, "Invalid") == {"status": "Invalid"}
    assert cache_.info("FUTURE", T0, "Invalid")["status"] == "Accepted"


def test_expiry_is_compared_to_the_second_and_an_unreadable_expiry_counts_as_expired():
    cache_ = AuthorizationCache(
        {
            "EDGE": {"status": "Accepted", "expiryDate": "2026-01-01T00:00:10Z"},
            "BAD": {"status": "Accepted", "expiryDate": "next tuesday"},
            "NONE": {"status": "Accepted"},
        }
    )
    assert cache_.info("EDGE", T0 + 9.5, "Invalid")["status"] == "Accepted"
    assert cache_.info("EDGE", T0 + 10.5, "Invalid") == {"status": "Invalid"}
    assert cache_.info("BAD", T0, "Invalid") == {"status": "Invalid"}
    assert cache_.info("NONE", T0 + 1e9, "Invalid")["status"] == "Accepted"


def test_authorize_without_an_id_tag_is_invalid():
    box = make_outbox()
    assert answered(offline(box, "Authorize", {}), action=None) == {
        "idTagInfo": {"status": "Invalid"}
    }


def test_201_authorize_and_transaction_event_answer_id_token_info_from_the_cache():
    box = make_outbox(V201, unknown_id_tag="Invalid")
    observer = LiveObserver(V201, box.auth, box.starts)
    info = {"status": "Accepted", "groupIdToken": {"idToken": "FLEET", "type": "Central"}}
    token = {"idToken": {"idToken": "TOKEN-1", "type": "ISO14443"}}
    assert learn(observer, "Authorize", valid(V201, "Authorize", token), {"idTokenInfo": info}) == [
        ("auth", "TOKEN-1", info)
    ]
    assert answered(offline(box, "Authorize", token), action="Authorize", version=V201) == {
        "idTokenInfo": info
    }
    event = offline(box, "TransactionEvent", event201("Started", 0, id_token="TOKEN-1"))
    assert answered(event, action="TransactionEvent", version=V201) == {"idTokenInfo": info}
    assert (
        answered(
            offline(box, "TransactionEvent", event201("Updated", 1)),
            action="TransactionEvent",
            version=V201,
        )
        == {}
    )
    unknown = {"idToken": {"idToken": "TOKEN-2", "type": "ISO14443"}}
    assert answered(offline(box, "Authorize", unknown), action="Authorize", version=V201) == {
        "idTokenInfo": {"status": "Invalid"}
    }
    assert box.transactions == {} and not box.needs_rewriting  # 2.0.1: the station chose the id


def test_201_observer_learns_from_a_transaction_event_answer():
    box = make_outbox(V201)
    observer = LiveObserver(V201, box.auth, box.starts)
    info = {"status": "Blocked"}
    learn(
        observer,
        "TransactionEvent",
        event201("Started", 0, id_token="TOKEN-9"),
        {"idTokenInfo": info},
    )
    assert answered(
        offline(box, "Authorize", {"idToken": {"idToken": "TOKEN-9", "type": "ISO14443"}}),
        action="Authorize",
        version=V201,
    ) == {"idTokenInfo": info}


def test_201_an_expired_id_token_gets_the_unknown_status():
    box = make_outbox(V201, unknown_id_tag="Invalid")
    box.auth.learn("TOKEN-1", {"status": "Accepted", "cacheExpiryDateTime": "2025-12-31T00:00:00Z"})
    token = {"idToken": {"idToken": "TOKEN-1", "type": "ISO14443"}}
    assert answered(offline(box, "Authorize", token, now=T0), action="Authorize", version=V201) == {
        "idTokenInfo": {"status": "Invalid"}
    }


@pytest.mark.parametrize(
    ("version", "action", "request_payload"),
    [
        (V16, "DataTransfer", {"vendorId": "Alfen", "messageId": "x", "data": "y"}),
        (V16, "SignCertificate", {"csr": "-----BEGIN CERTIFICATE REQUEST-----"}),
        (V201, "SignCertificate", {"csr": "-----BEGIN CERTIFICATE REQUEST-----"}),
        (V201, "DataTransfer", {"vendorId": "Alfen"}),
        (
            V201,
            "Get15118EVCertificate",
            {"iso15118SchemaVersion": "x", "action": "Install", "exiRequest": "AA=="},
        ),
    ],
)
def test_a_call_only_the_back_office_can_answer_gets_a_callerror_and_is_not_queued(
    version, action, request_payload
):
    box = make_outbox(version)
    answer = offline(box, action, request_payload, "x-9")
    frame = json.loads(answer.frame)
    assert frame[:3] == [4, "x-9", "InternalError"] and isinstance(frame[3], str) and frame[4] == {}
    msg = message(answer.frame)
    assert (msg.unique_id, msg.error_code) == ("x-9", "InternalError")
    assert answer.entry is None and answer.transaction is None
    assert box.empty and box.next_seq == 1 and box.budget.entries == 0


def test_answered_calls_are_queued_in_order_with_their_payload_bytes_unchanged():
    box = make_outbox()
    calls = [
        ("BootNotification", b'{"chargePointVendor" : "A",\n "chargePointModel":"M"}'),
        (
            "StatusNotification",
            b'{ "connectorId": 1, "status": "Charging", "errorCode": "NoError" }',
        ),
        ("DataTransfer", b'{"vendorId": "A"}'),  # not queued
        ("StartTransaction", body(start16())),
        ("MeterValues", body(meter16(BASE + 3))),
        ("Heartbeat", b"{}"),
        (
            "StopTransaction",
            b'{"transactionId":1000003,"meterStop":9,"timestamp":"2026-01-01T11:00:00.000+00:00"}',
        ),
    ]
    for n, (action, payload) in enumerate(calls):
        box.offline_call(f"c{n}", action, payload, T0 + n)
    assert [(e.seq, e.action, e.payload) for e in box.entries] == [
        (seq, action, payload)
        for seq, (action, payload) in enumerate(
            [c for c in calls if c[0] != "DataTransfer"], start=1
        )
    ]
    assert [e.received_at for e in box.entries] == [T0, T0 + 1, T0 + 3, T0 + 4, T0 + 5, T0 + 6]
    assert box.next_seq == 7
    assert box.bytes == box.budget.bytes == sum(len(p) for a, p in calls if a != "DataTransfer")
    assert box.budget.entries == 6


# -- replay ----------------------------------------------------------------------------------------


def test_replay_sends_one_call_at_a_time_under_our_own_ids_with_identical_payloads():
    box = make_outbox()
    payloads = [
        b'{"chargePointVendor" : "A", "chargePointModel":"M"}',
        b'{ "connectorId": 1, "status": "Available", "errorCode": "NoError" }',
        b"{}",
    ]
    for n, (action, payload) in enumerate(
        zip(["BootNotification", "StatusNotification", "Heartbeat"], payloads)
    ):
        offline(box, action, payload, f"c{n}")
    ids = []
    for action, payload in zip(["BootNotification", "StatusNotification", "Heartbeat"], payloads):
        step = send(box)
        assert (
            box.next_replay(T0) is None and box.next_replay(T0 + 3600) is None
        )  # one in flight at a time
        unique_id, sent_action, _ = sent(step)
        assert unique_id.startswith(REPLAY_ID_PREFIX) and len(unique_id) <= 36
        assert sent_action == action == step.entry.action
        assert payload_of(message(step.frame)) == payload  # byte for byte
        ids.append(unique_id)
        assert isinstance(box.replay_answer(result(unique_id, {}), T0), Completed)
    assert len(set(ids)) == 3
    assert box.empty and box.next_replay(T0) is None and box.rewrites == 0


def test_replay_completes_the_entries_in_the_order_they_were_queued():
    box = make_outbox()
    for n in range(5):
        offline(
            box,
            "StatusNotification",
            {"connectorId": n, "status": "Available", "errorCode": "NoError"},
        )
    done = []
    for _ in range(5):
        _, outcome = replay_ok(box)
        done.append((outcome.entry.seq, json.loads(outcome.entry.payload)["connectorId"]))
    assert done == [(n + 1, n) for n in range(5)]
    assert box.empty and box.next_replay(T0) is None
    assert (box.budget.entries, box.budget.bytes, box.bytes) == (0, 0, 0)


def test_an_answer_with_another_id_is_not_the_replay_answer():
    box = make_outbox()
    offline(box, "Heartbeat", {})
    step = send(box)
    assert box.replay_answer(result("c1", {}), T0) is None  # the charger's id, not ours
    assert box.replay_answer(error("outbox-999-0"), T0) is None
    assert box.in_flight is step.entry and len(box.entries) == 1
    assert isinstance(box.replay_answer(result(sent(step)[0], {}), T0), Completed)


def test_no_answer_is_expected_when_nothing_is_in_flight():
    box = make_outbox()
    offline(box, "Heartbeat", {})
    assert box.replay_answer(result("outbox-1-0", {}), T0) is None
    assert len(box.entries) == 1


def test_a_lost_connection_sends_the_same_entry_again():
    box = make_outbox()
    offline(box, "Heartbeat", {}, "c1")
    offline(
        box,
        "StatusNotification",
        {"connectorId": 1, "status": "Available", "errorCode": "NoError"},
        "c2",
    )
    first = send(box)
    box.connection_lost()
    again = send(box)
    assert again.entry is first.entry and again.entry.seq == 1 and again.entry.attempts == 0
    assert sent(again)[1:] == sent(first)[1:]
    assert isinstance(box.replay_answer(result(sent(again)[0], {}), T0), Completed)
    assert send(box).entry.seq == 2


def test_charger_calls_answered_during_replay_are_queued_behind():
    box = make_outbox()
    offline(box, "Heartbeat", {}, "c1")
    step = send(box)
    offline(
        box,
        "StatusNotification",
        {"connectorId": 1, "status": "Available", "errorCode": "NoError"},
        "c2",
    )
    box.replay_answer(result(sent(step)[0], {}), T0)
    assert sent(send(box))[1] == "StatusNotification"


# -- transactionId mapping (1.6) -------------------------------------------------------------------


def offline_session(box: ChargerOutbox) -> int:
    """Start, meter values and stop answered offline; returns the provisional id."""
    provisional = provisional_of(offline(box, "StartTransaction", start16(), "s"), "s")
    offline(box, "MeterValues", meter16(provisional), "m")
    offline(box, "StopTransaction", stop16(provisional), "x")
    return provisional


def test_replayed_frames_after_the_start_carry_the_real_transaction_id():
    box = make_outbox()
    provisional = offline_session(box)
    step, outcome = replay_ok(box, {"transactionId": 4711, "idTagInfo": {"status": "Accepted"}})
    assert sent(step)[2] == start16()
    assert outcome.transaction is not None and (
        outcome.transaction.provisional,
        outcome.transaction.real,
    ) == (provisional, 4711)
    assert box.starts == {start_key(start16()): 4711}

    meter = send(box)
    assert sent(meter)[2] == meter16(4711)  # only the id changed
    assert meter.entry.payload == body(
        meter16(provisional)
    )  # the stored entry is kept as the charger sent it
    assert box.needs_rewriting
    box.replay_answer(result(sent(meter)[0], {}), T0)

    stop = send(box)
    assert sent(stop)[2] == stop16(4711)
    outcome = box.replay_answer(result(sent(stop)[0], {"idTagInfo": {"status": "Accepted"}}), T0)
    assert (
        isinstance(outcome, Completed)
        and outcome.transaction is not None
        and outcome.transaction.ended
    )
    assert box.rewrites == 2 and not box.needs_rewriting and box.empty


def test_before_the_real_id_is_known_frames_go_out_with_the_provisional_id():
    box = make_outbox(retry_attempts=1)
    provisional = offline_session(box)
    start = send(box)
    assert isinstance(box.replay_answer(error(sent(start)[0]), T0), DeadLetter)
    meter = send(box)
    assert meter.entry.seq == 2 and payload_of(message(meter.frame)) == body(meter16(provisional))
    assert box.rewrites == 0


def test_live_charger_frames_are_rewritten_until_the_stop_passes():
    box = make_outbox()
    provisional = provisional_of(offline(box, "StartTransaction", start16(), "s"), "s")
    replay_ok(box, {"transactionId": 4711, "idTagInfo": {"status": "Accepted"}})
    assert box.empty and box.needs_rewriting

    rewritten, ended = box.from_charger(message([2, "m1", "MeterValues", meter16(provisional)]))
    assert rewritten is not None and json.loads(rewritten) == meter16(4711) and ended is None
    assert box.upstream_view(message([2, "m2", "MeterValues", meter16(provisional)])) == rewritten
    assert box.from_charger(message([2, "h", "Heartbeat", {}])) == (None, None)
    assert box.from_charger(message([2, "m3", "MeterValues", meter16(77)])) == (
        None,
        None,
    )  # not ours

    rewritten, ended = box.from_charger(message([2, "x1", "StopTransaction", stop16(provisional)]))
    assert rewritten is not None and json.loads(rewritten) == stop16(4711)
    assert ended is not None and ended.provisional == provisional and ended.ended
    assert not box.needs_rewriting
    assert (
        box.from_upstream(message([2, "r", "RemoteStopTransaction", {"transactionId": 4711}]))
        is None
    )


def test_back_office_calls_get_the_provisional_id_back():
    box = make_outbox()
    provisional = provisional_of(offline(box, "StartTransaction", start16(), "s"), "s")
    replay_ok(box, {"transactionId": 4711, "idTagInfo": {"status": "Accepted"}})
    before = box.rewrites

    remote_stop = box.from_upstream(
        message([2, "r1", "RemoteStopTransaction", {"transactionId": 4711}])
    )
    assert remote_stop is not None and json.loads(remote_stop) == {"transactionId": provisional}
    profile = {
        "connectorId": 1,
        "csChargingProfiles": {
            "chargingProfileId": 7,
            "transactionId": 4711,
            "stackLevel": 0,
            "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {
                "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}],
            },
        },
    }
    valid(V16, "SetChargingProfile", profile)
    rewritten = box.from_upstream(message([2, "r2", "SetChargingProfile", profile]))
    expected = json.loads(json.dumps(profile))
    expected["csChargingProfiles"]["transactionId"] = provisional
    assert rewritten is not None and json.loads(rewritten) == expected
    assert box.rewrites == before + 2

    assert (
        box.from_upstream(message([2, "r3", "RemoteStopTransaction", {"transactionId": 4712}]))
        is None
    )
    assert box.from_upstream(message([2, "r4", "GetConfiguration", {}])) is None
    assert box.from_upstream(message([2, "r5", "SetChargingProfile", {"connectorId": 1}])) is None
    assert box.from_upstream(result("r6", {"transactionId": 4711})) is None
    assert box.rewrites == before + 2


def test_no_rewriting_after_the_replayed_stop():
    box = make_outbox()
    offline_session(box)
    replay_ok(box, {"transactionId": 4711, "idTagInfo": {"status": "Accepted"}})
    replay_ok(box)
    _, outcome = replay_ok(box)
    assert (
        outcome.transaction is not None
        and outcome.transaction.ended
        and outcome.transaction.real == 4711
    )
    assert not box.needs_rewriting
    assert (
        box.from_upstream(message([2, "r", "RemoteStopTransaction", {"transactionId": 4711}]))
        is None
    )


def test_back_office_calls_are_not_rewritten_before_the_real_id_is_known():
    box = make_outbox()
    offline(box, "StartTransaction", start16(), "s")
    assert (
        box.from_upstream(message([2, "r", "RemoteStopTransaction", {"transactionId": BASE + 1}]))
        is None
    )


def test_an_outbox_rebuilt_from_the_store_keeps_mapping():
    box = make_outbox()
    provisional = offline_session(box)
    replay_ok(box, {"transactionId": 4711, "idTagInfo": {"status": "Accepted"}})
    rebuilt = ChargerOutbox(
        "CP-1",
        V16,
        box.settings,
        Budget(100, 1 << 20),
        entries=box.entries.copy(),
        transactions=box.transactions,
        next_seq=box.next_seq,
        starts=dict(box.starts),
    )
    assert sent(send(rebuilt))[2] == meter16(4711)
    assert json.loads(
        rebuilt.from_upstream(message([2, "r", "RemoteStopTransaction", {"transactionId": 4711}]))
        or b"null"
    ) == {"transactionId": provisional}


def test_a_queued_frame_with_a_malformed_transaction_id_is_replayed_as_it_is():
    box = make_outbox()
    offline(box, "StartTransaction", start16(), "s")
    malformed = b'{"connectorId": 1, "transactionId": [1], "meterValue": []}'
    offline(box, "MeterValues", malformed, "m")
    replay_ok(box, {"transactionId": 4711, "idTagInfo": {"status": "Accepted"}})
    assert payload_of(message(send(box).frame)) == malformed  # forwarded, and replay goes on


@pytest.mark.parametrize("side", ["charger", "upstream"])
def test_live_frames_with_a_malformed_transaction_id_pass_unchanged(side):
    box = make_outbox()
    offline(box, "StartTransaction", start16(), "s")
    replay_ok(box, {"transactionId": 4711, "idTagInfo": {"status": "Accepted"}})
    if side == "charger":
        assert box.from_charger(
            message(
                [2, "m", "MeterValues", {"connectorId": 1, "transactionId": {}, "meterValue": []}]
            )
        ) == (None, None)
    else:
        assert (
            box.from_upstream(message([2, "r", "RemoteStopTransaction", {"transactionId": [4711]}]))
            is None
        )


def test_201_frames_are_never_rewritten():
    box = make_outbox(V201)
    payloads = [
        body(event201("Started", 0, id_token="TOKEN-1")),
        body(event201("Updated", 1)),
        body(event201("Ended", 2)),
    ]
    for n, payload in enumerate(payloads):
        offline(box, "TransactionEvent", payload, f"e{n}")
    for payload in payloads:
        step, _ = replay_ok(box, {"totalCost": 1.5})
        assert payload_of(message(step.frame)) == payload
    live = message([2, "e9", "TransactionEvent", event201("Updated", 3)])
    assert box.from_charger(live) == (None, None) and box.upstream_view(live) is None
    assert (
        box.from_upstream(message([2, "r", "RequestStopTransaction", {"transactionId": "TX-abc"}]))
        is None
    )
    assert box.transactions == {} and box.rewrites == 0 and not box.needs_rewriting


# -- duplicates ------------------------------------------------------------------------------------


def test_a_re_sent_start_while_queued_gets_the_same_provisional_id_and_is_not_queued_again():
    box = make_outbox()
    first = offline(box, "StartTransaction", start16(), "s1")
    again = offline(box, "StartTransaction", start16(), "s2")
    assert provisional_of(first, "s1") == provisional_of(again, "s2") == BASE + 1
    assert again.entry is None and again.transaction is None
    assert len(box.entries) == 1 and box.duplicates == 1


def test_a_start_with_other_content_is_a_new_transaction():
    box = make_outbox()
    offline(box, "StartTransaction", start16(), "s1")
    other = offline(box, "StartTransaction", start16(minute=1), "s2")
    assert provisional_of(other, "s2") == BASE + 2 and len(box.entries) == 2 and box.duplicates == 0


def test_a_start_the_back_office_answered_live_gets_the_real_id_and_is_not_queued():
    box = make_outbox()
    observer = LiveObserver(V16, box.auth, box.starts)
    learn(
        observer,
        "StartTransaction",
        start16(),
        {"transactionId": 4711, "idTagInfo": {"status": "Accepted"}},
    )
    answer = offline(box, "StartTransaction", start16(), "s1")
    assert answered(answer, "s1", action="StartTransaction") == {
        "transactionId": 4711,
        "idTagInfo": {"status": "Accepted"},
    }
    assert answer.entry is None and box.empty and box.transactions == {} and box.duplicates == 1


def test_a_start_in_the_given_starts_gets_the_real_id():
    box = ChargerOutbox(
        "CP-1",
        V16,
        OutboxSettings(provisional_id_base=BASE),
        Budget(10, 1 << 20),
        starts={start_key(start16()): 99},
    )
    assert provisional_of(offline(box, "StartTransaction", start16())) == 99
    assert box.empty and box.next_seq == 1


def test_a_queued_start_the_back_office_learned_before_replay_is_completed_without_sending():
    box = make_outbox()
    provisional = offline_session(box)
    observer = LiveObserver(
        V16, box.auth, box.starts
    )  # e.g. the charger re-sent it over a live link
    learn(
        observer,
        "StartTransaction",
        start16(),
        {"transactionId": 4711, "idTagInfo": {"status": "Accepted"}},
    )
    step = box.next_replay(T0)
    assert isinstance(step, Completed) and step.entry.action == "StartTransaction"
    assert step.transaction is not None and (
        step.transaction.provisional,
        step.transaction.real,
    ) == (provisional, 4711)
    assert box.in_flight is None and len(box.entries) == 2 and box.duplicates == 1
    assert sent(send(box))[2] == meter16(4711)


@pytest.mark.parametrize(
    ("version", "action", "payload"),
    [
        (V16, "MeterValues", meter16(BASE + 1)),
        (V16, "StopTransaction", stop16(BASE + 1)),
        (V201, "TransactionEvent", event201("Updated", 4)),
    ],
)
def test_a_re_sent_transaction_message_identical_to_a_queued_one_is_not_queued_again(
    version, action, payload
):
    box = make_outbox(version)
    first = offline(box, action, payload, "m1")
    offline(box, "Heartbeat", {}, "h")
    again = offline(box, action, payload, "m2")
    assert answered(again, "m2") == answered(first, "m1")
    assert again.entry is None and [e.action for e in box.entries] == [action, "Heartbeat"]
    assert box.duplicates == 1


def test_a_transaction_message_differing_by_one_byte_is_queued():
    box = make_outbox()
    offline(box, "MeterValues", b'{"connectorId": 1, "transactionId": 5, "meterValue": []}', "m1")
    offline(box, "MeterValues", b'{"connectorId": 1, "transactionId": 5, "meterValue": [] }', "m2")
    assert len(box.entries) == 2 and box.duplicates == 0


def test_identical_notifications_are_queued_each_time():
    box = make_outbox()
    for n in range(3):
        offline(box, "Heartbeat", {}, f"h{n}")
        offline(
            box,
            "StatusNotification",
            {"connectorId": 1, "status": "Available", "errorCode": "NoError"},
            f"s{n}",
        )
    assert len(box.entries) == 6 and box.duplicates == 0


def test_a_re_sent_message_is_queued_again_once_its_first_copy_was_replayed():
    box = make_outbox()
    offline(box, "MeterValues", meter16(5), "m1")
    replay_ok(box)
    offline(box, "MeterValues", meter16(5), "m2")
    assert len(box.entries) == 1


# -- bounds ---------------------------------------------------------------------------------------


def status(connector: int) -> bytes:
    return body({"connectorId": connector, "status": "Available", "errorCode": "NoError"})


def test_a_charger_outbox_at_its_entry_bound_refuses_and_keeps_what_it_holds():
    box = make_outbox(max_entries_per_charger=3)
    for n in range(3):
        offline(box, "StatusNotification", status(n), f"c{n}")
    assert box.at_bound
    held = [(e.seq, e.payload) for e in box.entries]
    refused = box.offline_call("c9", "StartTransaction", body(start16()), T0)
    assert isinstance(refused, Full) and "entries" in refused.reason
    assert [(e.seq, e.payload) for e in box.entries] == held
    assert box.next_seq == 4 and box.transactions == {} and box.budget.entries == 3
    replay_ok(box)
    assert not box.at_bound
    assert offline(box, "StartTransaction", start16(), "c10").entry is not None


def test_a_charger_outbox_at_its_byte_bound_refuses():
    payloads = [status(1), status(2)]
    box = make_outbox(max_bytes_per_charger=sum(len(p) for p in payloads) + 5)
    for n, payload in enumerate(payloads):
        offline(box, "StatusNotification", payload, f"c{n}")
    assert not box.at_bound
    offline(box, "Heartbeat", b"{ }", "h1")  # 3 bytes still fit
    refused = box.offline_call("h2", "Heartbeat", b"{ }", T0)
    assert isinstance(refused, Full) and "bytes" in refused.reason
    assert (
        len(box.entries) == 3 and box.bytes == box.budget.bytes == sum(len(p) for p in payloads) + 3
    )


def test_outboxes_sharing_a_budget_refuse_once_it_is_spent_and_replay_frees_it():
    budget = Budget(max_entries=3, max_bytes=1 << 20)
    one, two = make_outbox(budget=budget), make_outbox(budget=budget)
    offline(one, "StatusNotification", status(1), "a1")
    offline(one, "StatusNotification", status(2), "a2")
    offline(two, "StatusNotification", status(1), "b1")
    assert one.at_bound and two.at_bound
    for box in (one, two):
        refused = box.offline_call("z", "Heartbeat", b"{}", T0)
        assert isinstance(refused, Full) and "all chargers" in refused.reason
    assert (len(one.entries), len(two.entries), budget.entries) == (2, 1, 3)
    replay_ok(one)
    assert budget.entries == 2 and not two.at_bound
    assert offline(two, "Heartbeat", {}, "b2").entry is not None
    assert budget.entries == 3 and budget.bytes == one.bytes + two.bytes


def test_the_shared_byte_budget_is_a_bound_too():
    budget = Budget(max_entries=100, max_bytes=len(status(1)) * 2)
    one, two = make_outbox(budget=budget), make_outbox(budget=budget)
    offline(one, "StatusNotification", status(1), "a1")
    offline(two, "StatusNotification", status(2), "b1")
    assert isinstance(two.offline_call("b2", "StatusNotification", status(3), T0), Full)
    assert budget.bytes == len(status(1)) * 2


def test_calls_that_add_nothing_are_answered_even_when_the_outbox_is_full():
    box = make_outbox(max_entries_per_charger=2)
    offline(box, "StartTransaction", start16(), "s1")
    offline(box, "MeterValues", meter16(BASE + 1), "m1")
    assert provisional_of(offline(box, "StartTransaction", start16(), "s2"), "s2") == BASE + 1
    assert offline(box, "MeterValues", meter16(BASE + 1), "m2").entry is None
    assert json.loads(offline(box, "DataTransfer", {"vendorId": "V"}, "d").frame)[0] == 4
    assert len(box.entries) == 2


# -- retries and dead letters ---------------------------------------------------------------------


def test_callerrors_are_retried_with_a_growing_wait_then_dead_lettered_and_replay_goes_on():
    box = make_outbox(retry_attempts=3, retry_interval=10.0)
    offline(box, "BootNotification", {"chargePointVendor": "V", "chargePointModel": "M"}, "b")
    offline(box, "Heartbeat", {}, "h")
    now = T0 + 100
    ids = []
    for attempt, wait in ((1, 10.0), (2, 20.0)):
        step = send(box, now)
        assert step.entry.seq == 1
        ids.append(sent(step)[0])
        outcome = box.replay_answer(error(ids[-1], "NotSupported", "nope"), now)
        assert (
            isinstance(outcome, Retry)
            and outcome.entry.attempts == attempt
            and outcome.at == now + wait
        )
        assert box.next_replay(now) is None and box.next_replay(outcome.at - 0.001) is None
        now = outcome.at
    step = send(box, now)
    assert step.entry.seq == 1 and sent(step)[1:] == (
        "BootNotification",
        {"chargePointVendor": "V", "chargePointModel": "M"},
    )
    ids.append(sent(step)[0])
    assert len(set(ids)) == 3  # a retried CALL goes out under a new message id
    dead = box.replay_answer(error(ids[-1], "NotSupported", "nope"), now)
    assert isinstance(dead, DeadLetter) and dead.entry.seq == 1 and dead.entry.attempts == 3
    assert dead.reason == "CALLERROR NotSupported: nope" and dead.transaction is None
    assert send(box, now).entry.seq == 2  # no waiting after a dead letter
    assert box.budget.entries == 1


def test_a_success_after_a_retry_completes_the_entry():
    box = make_outbox(retry_attempts=3, retry_interval=5.0)
    offline(box, "Heartbeat", {})
    first_id = sent(send(box))[0]
    retry = box.replay_answer(error(first_id), T0)
    assert isinstance(retry, Retry) and retry.at == T0 + 5.0
    step = send(box, retry.at)
    assert (
        box.replay_answer(error(first_id), retry.at) is None
    )  # a late answer to the failed attempt
    outcome = box.replay_answer(
        result(sent(step)[0], {"currentTime": "2026-01-01T00:00:00Z"}), retry.at
    )
    assert isinstance(outcome, Completed) and box.empty and box.retry_at is None


def test_one_attempt_dead_letters_at_the_first_callerror():
    box = make_outbox(retry_attempts=1)
    offline(box, "Heartbeat", {})
    dead = box.replay_answer(error(sent(send(box))[0], "FormationViolation", "bad"), T0)
    assert isinstance(dead, DeadLetter) and dead.reason == "CALLERROR FormationViolation: bad"
    assert box.empty and box.budget.entries == 0


def test_a_lost_connection_does_not_count_as_an_attempt():
    box = make_outbox(retry_attempts=2)
    offline(box, "Heartbeat", {})
    send(box)
    box.connection_lost()
    assert isinstance(box.replay_answer(error(sent(send(box))[0]), T0), Retry)


def test_a_dead_lettered_stop_still_ends_its_transaction():
    box = make_outbox(retry_attempts=1)
    provisional = offline_session(box)
    replay_ok(box, {"transactionId": 4711, "idTagInfo": {"status": "Accepted"}})
    replay_ok(box)
    stop = send(box)
    dead = box.replay_answer(error(sent(stop)[0], "InternalError", "db down"), T0)
    assert isinstance(dead, DeadLetter) and dead.transaction is not None
    assert (dead.transaction.provisional, dead.transaction.real, dead.transaction.ended) == (
        provisional,
        4711,
        True,
    )
    assert not box.needs_rewriting
    assert (
        box.from_upstream(message([2, "r", "RemoteStopTransaction", {"transactionId": 4711}]))
        is None
    )


# -- property: replay order and accounting ---------------------------------------------------------

ACTIONS = {
    V16: [
        "BootNotification",
        "Heartbeat",
        "StatusNotification",
        "MeterValues",
        "StartTransaction",
        "StopTransaction",
        "Authorize",
        "DataTransfer",
    ],
    V201: [
        "BootNotification",
        "Heartbeat",
        "StatusNotification",
        "MeterValues",
        "TransactionEvent",
        "Authorize",
        "NotifyEvent",
        "SignCertificate",
    ],
}


def random_payload(version: str, action: str, variant: int, provisional: list[int]) -> bytes:
    """A small payload; few variants, so that re-sent (identical) messages happen."""
    tid = provisional[variant % len(provisional)] if provisional and variant % 2 else 100 + variant
    if version == V16:
        payload: dict[str, Any] = {
            "StartTransaction": start16(connector=variant % 3 + 1, meter_start=variant),
            "StopTransaction": {
                "transactionId": tid,
                "meterStop": variant,
                "timestamp": "2026-01-01T11:00:00Z",
            },
            "MeterValues": {"connectorId": 1, "transactionId": tid, "meterValue": []},
            "Authorize": {"idTag": f"TAG-{variant}"},
        }.get(action, {"n": variant})
    elif action == "TransactionEvent":
        payload = event201("Updated", variant % 3, id_token=f"T{variant}" if variant % 2 else None)
    else:
        payload = {"n": variant}
    return json.dumps(payload, indent=variant % 2 or None).encode()


# (kind, action index, payload variant, CALLRESULT rather than CALLERROR, seconds or transactionId)
steps = st.lists(
    st.tuples(
        st.sampled_from(["call"] * 4 + ["replay"] * 2 + ["answer"] * 2 + ["lose", "tick"]),
        st.integers(0, 7),
        st.integers(0, 5),
        st.booleans(),
        st.integers(0, 40),
    ),
    min_size=15,
    max_size=150,
)


@settings(max_examples=300, deadline=None)
@given(
    version=st.sampled_from([V16, V201]),
    script=steps,
    max_entries=st.integers(1, 30),
    total_entries=st.integers(2, 60),
    attempts=st.integers(1, 3),
)
def test_replay_finishes_exactly_the_queued_entries_in_order(
    version, script, max_entries, total_entries, attempts
):
    budget = Budget(total_entries, 1 << 20)
    box = make_outbox(
        version,
        budget,
        max_entries_per_charger=max_entries,
        retry_attempts=attempts,
        retry_interval=10.0,
    )
    other = make_outbox(version, budget)  # a neighbour holding part of the shared budget
    offline(other, "Heartbeat", {})
    now = T0
    queued: list[int] = []
    finished: list[int] = []
    on_wire: set[int] = set()  # sent, and not since released by a lost connection or a retry
    starts_sent: set[int] = set()  # 1.6 StartTransactions sent (a CALLERROR releases one)
    provisional: list[int] = []
    mapped = ("MeterValues", "StopTransaction") if version == V16 else ()

    def replay_step() -> None:
        oldest = box.entries[0] if box.entries else None
        step = box.next_replay(now)
        if step is None:
            assert (
                box.empty
                or box.in_flight is not None
                or (box.retry_at is not None and now < box.retry_at)
            )
            return
        assert step.entry is oldest  # always the oldest entry
        if isinstance(step, (Completed, DeadLetter)):  # done, or parked (in doubt): never dropped
            finished.append(step.entry.seq)
            return
        assert step.entry.seq not in on_wire, "sent twice without a lost connection or a retry"
        if version == V16 and step.entry.action == "StartTransaction":
            assert step.entry.seq not in starts_sent, "a 1.6 StartTransaction sent twice"
            assert step.mark_sent
            starts_sent.add(step.entry.seq)
        on_wire.add(step.entry.seq)
        unique_id, action, payload = sent(step)
        assert unique_id.startswith(REPLAY_ID_PREFIX) and action == step.entry.action
        request = json.loads(step.entry.payload)
        transaction = (
            box.transactions.get(request.get("transactionId")) if action in mapped else None
        )
        if (
            transaction is not None and transaction.real is not None
        ):  # 1.6: the real id, nothing else changed
            assert payload == {**request, "transactionId": transaction.real}
        else:
            assert payload_of(message(step.frame)) == step.entry.payload

    def answer_step(ok: bool, real: int) -> None:
        entry, unique_id = box.in_flight, box.in_flight_id
        if entry is None or unique_id is None:
            return
        if ok:
            payload = (
                {"transactionId": real, "idTagInfo": {"status": "Accepted"}}
                if entry.action == "StartTransaction"
                else {}
            )
            outcome = box.replay_answer(result(unique_id, payload), now)
        else:
            outcome = box.replay_answer(error(unique_id), now)
        assert outcome is not None and outcome.entry is entry
        on_wire.discard(entry.seq)
        if isinstance(outcome, Retry):
            starts_sent.discard(entry.seq)  # refused by the back-office: not started, may go again
        if isinstance(outcome, (Completed, DeadLetter)):
            finished.append(entry.seq)
            assert isinstance(outcome, Completed) == ok
        else:
            assert isinstance(outcome, Retry) and not ok and outcome.at > now

    for step in script:
        kind, action_index, variant, ok, number = step
        if kind == "call":
            action = ACTIONS[version][action_index]
            before = [e.seq for e in box.entries]
            answer = box.offline_call(
                f"c{len(queued)}",
                action,
                random_payload(version, action, variant, provisional),
                now,
            )
            if isinstance(answer, Full):
                assert [e.seq for e in box.entries] == before and answer.reason
                continue
            frame = json.loads(answer.frame)
            assert frame[0] in (3, 4) and (frame[0] == 4) == (
                action in ("DataTransfer", "SignCertificate")
            )
            if answer.entry is not None:
                queued.append(answer.entry.seq)
                assert box.entries[-1] is answer.entry
            if action == "StartTransaction" and frame[0] == 3:
                provisional.append(frame[2]["transactionId"])
        elif kind == "replay":
            replay_step()
        elif kind == "answer":
            answer_step(ok, number)
        elif kind == "lose":
            box.connection_lost()
            on_wire.clear()
        else:
            now += number
        assert box.bytes == sum(len(e.payload) for e in box.entries)
        assert budget.entries == len(box.entries) + len(other.entries)

    for _ in range(4 * (len(queued) + 1) * (attempts + 1)):  # the upstream is back for good
        if box.empty:
            break
        if box.in_flight is None:
            now = max(now, box.retry_at or now)
            replay_step()
        answer_step(True, 4711)
    assert box.empty and box.in_flight is None
    assert finished == queued
    replay_ok(other)
    assert (budget.entries, budget.bytes, box.bytes, other.bytes) == (0, 0, 0, 0)


# -- proof and at-most-once ------------------------------------------------------------------------


def test_entries_record_the_proof_of_their_link_and_unproven_ones_are_parked_not_sent():
    box = make_outbox()
    box.proof = "verifier"
    assert offline(box, "Heartbeat", {}).entry.proof == "verifier"
    box.entries[0].proof = "unknown"  # as an older version queued it
    provisional = provisional_of(offline(box, "StartTransaction", start16(), "c1"))
    box.entries[1].proof = "unknown"
    offline(box, "StopTransaction", stop16(provisional), "c2")
    box.entries[2].proof = "unknown"
    for expected in ("Heartbeat", "StartTransaction", "StopTransaction"):
        step = box.next_replay(T0)
        assert (
            isinstance(step, DeadLetter)
            and step.reason == UNPROVEN
            and step.entry.action == expected
        )
    assert step.transaction is not None and step.transaction.ended  # the parked stop still ends it
    assert box.empty and not box.needs_rewriting


def test_a_replayed_16_start_is_marked_before_it_is_sent_and_a_lost_answer_parks_it_with_its_transaction():
    box = make_outbox()
    first = provisional_of(offline(box, "StartTransaction", start16(), "c1"))
    offline(box, "MeterValues", meter16(first), "c2")
    offline(box, "StopTransaction", stop16(first), "c3")
    second = provisional_of(offline(box, "StartTransaction", start16(connector=2), "c4"), "c4")
    offline(box, "MeterValues", meter16(second, connector=2), "c5")
    step = send(box)
    assert step.mark_sent and step.entry.action == "StartTransaction"
    box.connection_lost()  # sent, never answered: the back-office may have started it
    parked = [box.next_replay(T0) for _ in range(3)]
    assert [(type(p).__name__, p.reason) for p in parked] == [
        ("DeadLetter", IN_DOUBT),
        ("DeadLetter", WAITS_FOR_START),
        ("DeadLetter", WAITS_FOR_START),
    ]
    assert box.transactions[first].in_doubt and box.transactions[first].ended
    # The other transaction is not touched: its start goes out, and its meter values after it.
    step, _ = replay_ok(box, {"transactionId": 4711, "idTagInfo": {"status": "Accepted"}})
    assert step.entry.action == "StartTransaction" and sent(step)[2]["connectorId"] == 2
    assert sent(send(box))[2]["transactionId"] == 4711


def test_a_start_marked_sent_in_the_store_is_parked_and_a_callerror_clears_the_doubt():
    box = make_outbox()
    provisional_of(offline(box, "StartTransaction", start16(), "c1"))
    step = send(box)
    assert isinstance(
        box.replay_answer(error(sent(step)[0]), T0), Retry
    )  # refused: it did not start
    assert send(box, T0 + 60).mark_sent  # so it may go again
    rebuilt = make_outbox()  # as the next claim loads it after a crash with the mark stored
    rebuilt.entries.append(
        Entry(1, "StartTransaction", body(start16()), T0, proof="upstream", sent=True)
    )
    parked = rebuilt.next_replay(T0)
    assert isinstance(parked, DeadLetter) and parked.reason == IN_DOUBT


def test_201_transaction_events_are_sent_again_after_a_lost_connection():
    box = make_outbox(V201)
    offline(box, "TransactionEvent", event201("Started", 0), "c1")
    step = send(box)
    assert not step.mark_sent  # the back-office deduplicates by transactionId and seqNo
    box.connection_lost()
    assert send(box).entry is step.entry
