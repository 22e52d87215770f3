"""Exactly-once check of transaction messages: what chargers sent against what the back-office got.

`sent` is the fleet simulator's sent log (`bench.load.simulator --sent-log`): per identity, the
transaction CALLs the charger sent and got answered, in order, as dicts with "action", "payload"
and, for 1.6 StartTransaction, "transaction_id" (the id in the answer the charger got).
`received` is `testkit.fake_csms.FakeCsms.received`: per identity, the CALLs the back-office
answered, in order, as (action, payload, unique_id, answer) (a `ReceivedCall`, or a list once
read back from JSON).

Only StartTransaction, MeterValues, StopTransaction (1.6) and TransactionEvent (2.0.1) count.
Each must reach the back-office exactly once, in the charger's order, with the same payload,
except that 1.6 transactionIds may differ: the charger's ids (from the answers it got, possibly
provisional ones a proxy handed out) must map one-to-one onto the back-office's ids (from its
answers to the same StartTransactions), and MeterValues and StopTransaction must carry the mapped
id.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

TRANSACTION_ACTIONS = ("StartTransaction", "MeterValues", "StopTransaction", "TransactionEvent")
_MAPPED = ("MeterValues", "StopTransaction")  # 1.6 messages whose transactionId is mapped

SentLog = Mapping[str, Sequence[Mapping[str, Any]]]
ReceivedLog = Mapping[str, Sequence[Sequence[Any]]]


def exactly_once(sent: SentLog, received: ReceivedLog) -> list[str]:
    """Human-readable problems, one a line (empty: every charger's messages arrived exactly once).

    Indexes count transaction CALLs only: sent[i] is the charger's i-th, received[j] the
    back-office's j-th for that charger.
    """
    problems: list[str] = []
    for identity in sorted(set(sent) | set(received)):
        got = [entry for entry in received.get(identity, ()) if entry[0] in TRANSACTION_ACTIONS]
        if identity not in sent:
            if got:
                problems.append(
                    f"{identity}: unknown charger, yet the back-office received {len(got)} transaction CALLs"
                )
            continue
        mine = [entry for entry in sent[identity] if entry["action"] in TRANSACTION_ACTIONS]
        problems += [f"{identity}: {problem}" for problem in _check_charger(mine, got)]
    return problems


def _key(action: str, payload: Any) -> bytes:
    """What must match between sent and received: action and payload, 1.6 transactionId aside."""
    if action in _MAPPED and isinstance(payload, dict):
        payload = {k: v for k, v in payload.items() if k != "transactionId"}
    return orjson.dumps([action, payload], option=orjson.OPT_SORT_KEYS)


def _check_charger(sent: list[Mapping[str, Any]], received: list[Sequence[Any]]) -> list[str]:
    problems: list[str] = []
    # Pair each received CALL with the sent one it repeats: the k-th arrival of a content with
    # the k-th sending of it.
    sent_at: dict[bytes, list[int]] = defaultdict(list)
    for i, entry in enumerate(sent):
        sent_at[_key(entry["action"], entry["payload"])].append(i)
    arrivals: Counter[bytes] = Counter()
    pairs: list[tuple[int, int]] = []  # (sent index, received index)
    for j, (action, payload, unique_id, _answer) in enumerate(received):
        key = _key(action, payload)
        arrivals[key] += 1
        indexes = sent_at.get(key, [])
        if arrivals[key] <= len(indexes):
            pairs.append((indexes[arrivals[key] - 1], j))
        elif indexes:
            problems.append(
                f"received[{j}] {action} (id {unique_id}) is a duplicate of sent[{indexes[-1]}]"
            )
        else:
            problems.append(
                f"received[{j}] {action} (id {unique_id}) matches nothing the charger sent"
            )
    paired = {i for i, _ in pairs}
    problems += [
        f"sent[{i}] {entry['action']} never arrived"
        for i, entry in enumerate(sent)
        if i not in paired
    ]
    latest = -1
    for i, j in pairs:
        if i < latest:
            problems.append(
                f"received[{j}] is sent[{i}] {sent[i]['action']}, out of order after sent[{latest}]"
            )
        latest = max(latest, i)
    problems += _check_transaction_ids(sent, received, pairs)
    return problems


def _check_transaction_ids(
    sent: list[Mapping[str, Any]], received: list[Sequence[Any]], pairs: list[tuple[int, int]]
) -> list[str]:
    """The charger-side → back-office-side transactionId mapping must be consistent and one-to-one."""
    problems: list[str] = []
    mapping: dict[Any, Any] = {}
    owner: dict[Any, Any] = {}  # back-office id -> charger id
    for i, j in pairs:
        if sent[i]["action"] != "StartTransaction":
            continue
        mine, theirs = sent[i].get("transaction_id"), (received[j][3] or {}).get("transactionId")
        if mine in mapping and mapping[mine] != theirs:
            problems.append(
                f"sent[{i}] StartTransaction: charger id {mine} already maps to {mapping[mine]}, now {theirs}"
            )
        elif theirs in owner and owner[theirs] != mine:
            problems.append(
                f"sent[{i}] StartTransaction: back-office id {theirs} maps from both {owner[theirs]} and {mine}"
            )
        else:
            mapping[mine], owner[theirs] = theirs, mine
    started = {
        entry.get("transaction_id") for entry in sent if entry["action"] == "StartTransaction"
    }
    for i, j in pairs:
        action = sent[i]["action"]
        if action not in _MAPPED:
            continue
        mine, theirs = sent[i]["payload"].get("transactionId"), received[j][1].get("transactionId")
        if mine is None and theirs is None:
            continue
        if mine in mapping:
            if mapping[mine] != theirs:
                problems.append(
                    f"received[{j}] {action}: transactionId {theirs}, expected {mapping[mine]} (charger's {mine})"
                )
        elif mine not in started:
            problems.append(
                f"sent[{i}] {action}: transactionId {mine} comes from no StartTransaction of this charger"
            )
    return problems


def counts(log: Mapping[str, Sequence[Any]]) -> dict[str, int]:
    """Chargers and transaction CALLs by kind, for reports; works on a sent or a received log."""
    actions: Counter[str] = Counter()
    for entries in log.values():
        actions.update(
            entry["action"] if isinstance(entry, Mapping) else entry[0] for entry in entries
        )
    return {
        "chargers": len(log),
        "starts": actions["StartTransaction"],
        "meter_values": actions["MeterValues"],
        "stops": actions["StopTransaction"],
        "transaction_events": actions["TransactionEvent"],
    }
