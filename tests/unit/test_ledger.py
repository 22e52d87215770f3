"""The exactly-once checker on hand-made sent and received logs."""

from __future__ import annotations

import json

from testkit.fake_csms import ReceivedCall
from testkit.ledger import counts, exactly_once

PROVISIONAL = 2_000_000_001


def start(meter: int, charger_id: int) -> dict:
    return {
        "action": "StartTransaction",
        "payload": {"connectorId": 1, "idTag": "T", "meterStart": meter},
        "transaction_id": charger_id,
    }


def meter(value: int, transaction_id: int) -> dict:
    return {
        "action": "MeterValues",
        "payload": {
            "connectorId": 1,
            "transactionId": transaction_id,
            "meterValue": [{"sampledValue": [{"value": str(value)}]}],
        },
    }


def stop(value: int, transaction_id: int) -> dict:
    return {
        "action": "StopTransaction",
        "payload": {"transactionId": transaction_id, "meterStop": value},
    }


def upstream(
    entries: list[dict], upstream_ids: list[int], rewrite: dict[int, int] | None = None
) -> list[ReceivedCall]:
    """What a back-office receives for `entries`: StartTransactions answered with `upstream_ids`,
    transactionIds rewritten through `rewrite`."""
    ids = iter(upstream_ids)
    rewrite = rewrite or {}
    received = []
    for n, entry in enumerate(entries):
        payload = dict(entry["payload"])
        answer: dict = {}
        if entry["action"] == "StartTransaction":
            answer = {"idTagInfo": {"status": "Accepted"}, "transactionId": next(ids)}
        elif "transactionId" in payload:
            payload["transactionId"] = rewrite.get(
                payload["transactionId"], payload["transactionId"]
            )
        received.append(ReceivedCall(entry["action"], payload, f"u{n}", answer))
    return received


SESSION = [start(100, 7), meter(110, 7), meter(120, 7), stop(130, 7)]
BOOT = ReceivedCall(
    "BootNotification",
    {"chargePointVendor": "V", "chargePointModel": "M"},
    "b",
    {"status": "Accepted"},
)


def test_everything_once_in_order_passes():
    received = {"CP1": [BOOT, *upstream(SESSION, [7])], "CP2": [BOOT]}
    assert exactly_once({"CP1": SESSION, "CP2": [], "CP3": []}, received) == []


def test_a_missing_message_is_reported_with_its_index():
    received = upstream(SESSION, [7])
    del received[2]
    assert exactly_once({"CP1": SESSION}, {"CP1": received}) == [
        "CP1: sent[2] MeterValues never arrived"
    ]


def test_a_duplicate_is_reported():
    received = upstream(SESSION, [7])
    received.insert(2, received[1])
    assert exactly_once({"CP1": SESSION}, {"CP1": received}) == [
        "CP1: received[2] MeterValues (id u1) is a duplicate of sent[1]"
    ]


def test_a_reordered_message_is_reported():
    received = upstream(SESSION, [7])
    received[1], received[2] = received[2], received[1]
    assert exactly_once({"CP1": SESSION}, {"CP1": received}) == [
        "CP1: received[2] is sent[1] MeterValues, out of order after sent[2]"
    ]


def test_a_changed_payload_is_reported_as_missing_and_unexpected():
    received = upstream(SESSION, [7])
    received[3] = received[3]._replace(payload={"transactionId": 7, "meterStop": 131})
    assert exactly_once({"CP1": SESSION}, {"CP1": received}) == [
        "CP1: received[3] StopTransaction (id u3) matches nothing the charger sent",
        "CP1: sent[3] StopTransaction never arrived",
    ]


def test_provisional_ids_mapped_to_the_upstream_ones_pass():
    sent = [
        start(100, PROVISIONAL),
        meter(110, PROVISIONAL),
        stop(120, PROVISIONAL),
        start(120, PROVISIONAL + 1),
        stop(130, PROVISIONAL + 1),
    ]
    received = upstream(sent, [41, 42], rewrite={PROVISIONAL: 41, PROVISIONAL + 1: 42})
    assert exactly_once({"CP1": sent}, {"CP1": received}) == []


def test_a_provisional_id_leaking_upstream_is_inconsistent():
    sent = [start(100, PROVISIONAL), meter(110, PROVISIONAL), stop(120, PROVISIONAL)]
    received = upstream(sent, [41], rewrite={})
    assert exactly_once({"CP1": sent}, {"CP1": received}) == [
        f"CP1: received[1] MeterValues: transactionId {PROVISIONAL}, expected 41 (charger's {PROVISIONAL})",
        f"CP1: received[2] StopTransaction: transactionId {PROVISIONAL}, expected 41 (charger's {PROVISIONAL})",
    ]


def test_a_message_carrying_another_transactions_id_is_inconsistent():
    sent = [start(100, 1), stop(110, 1), start(110, 2), stop(120, 2)]
    received = upstream(sent, [51, 52], rewrite={1: 51, 2: 51})
    assert exactly_once({"CP1": sent}, {"CP1": received}) == [
        "CP1: received[3] StopTransaction: transactionId 51, expected 52 (charger's 2)"
    ]


def test_two_charger_ids_mapped_to_one_upstream_id_are_not_one_to_one():
    sent = [start(100, 1), stop(110, 1), start(110, 2), stop(120, 2)]
    received = upstream(sent, [51, 51], rewrite={1: 51, 2: 51})
    assert exactly_once({"CP1": sent}, {"CP1": received}) == [
        "CP1: sent[2] StartTransaction: back-office id 51 maps from both 1 and 2"
    ]


def test_one_charger_id_mapped_to_two_upstream_ids_is_inconsistent():
    sent = [start(100, 1), stop(110, 1), start(110, 1), stop(120, 1)]
    received = upstream(sent, [51, 52], rewrite={1: 51})
    assert exactly_once({"CP1": sent}, {"CP1": received}) == [
        "CP1: sent[2] StartTransaction: charger id 1 already maps to 51, now 52"
    ]


def test_transaction_events_must_match_exactly():
    def event(kind: str, seq: int) -> dict:
        return {
            "action": "TransactionEvent",
            "payload": {
                "eventType": kind,
                "seqNo": seq,
                "transactionInfo": {"transactionId": "CP9-1"},
            },
        }

    sent = [event("Started", 0), event("Updated", 1), event("Ended", 2)]
    assert exactly_once({"CP9": sent}, {"CP9": upstream(sent, [])}) == []
    received = upstream(sent, [])
    received[1] = received[1]._replace(
        payload={**received[1].payload, "transactionInfo": {"transactionId": "other"}}
    )
    assert exactly_once({"CP9": sent}, {"CP9": received}) == [
        "CP9: received[1] TransactionEvent (id u1) matches nothing the charger sent",
        "CP9: sent[1] TransactionEvent never arrived",
    ]


def test_received_for_an_unknown_charger_is_a_problem_but_a_silent_one_is_not():
    received = {"CPX": upstream(SESSION, [7]), "CPY": [BOOT]}
    assert exactly_once({}, received) == [
        "CPX: unknown charger, yet the back-office received 4 transaction CALLs"
    ]


def test_logs_read_back_from_json_are_checked_the_same():
    sent = {"CP1": [start(100, PROVISIONAL), stop(110, PROVISIONAL)]}
    received = {"CP1": upstream(sent["CP1"], [3], rewrite={PROVISIONAL: 3})}
    assert exactly_once(json.loads(json.dumps(sent)), json.loads(json.dumps(received))) == []


def test_counts():
    sent = {"CP1": SESSION, "CP2": [], "CP3": [{"action": "TransactionEvent", "payload": {}}]}
    expected = {"chargers": 3, "starts": 1, "meter_values": 2, "stops": 1, "transaction_events": 1}
    assert counts(sent) == expected
    assert counts({"CP1": [BOOT, *upstream(SESSION, [7])], "CP3": upstream(sent["CP3"], [])}) == {
        **expected,
        "chargers": 2,
    }
