"""Nothing a charger sends ends a worker, and every event it causes is stored or kept aside.

Real parts throughout: the proxy on 127.0.0.1, a trio-websocket back-office, the journal with
its store process, PostgreSQL. A healthy charger works beside the hostile ones all along.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio

from proxy.capture.events import AnyEvent, ChargerBooted, Event
from proxy.capture.journal import DatabaseStore, Journal
from proxy.capture.spill import SpillLog
from proxy.capture.store_process import StoreProcess
from proxy.store.db import Database, open_database
from testkit.capture_proxy import WAIT, capture_proxy, healthy_charger, hostile_charger

# Forwarded by both engines (see testkit.engines).
pytestmark = pytest.mark.usefixtures("each_engine")

T = '"timestamp":"2026-01-01T10:00:00Z"'
HOSTILE_201 = [  # OCPP 2.0.1: a multiplier beyond 64 bits, NUL in strings, values beyond their bounds
    (
        b'[2,"m1","MeterValues",{"evseId":1,"meterValue":[{'
        + T.encode()
        + b',"sampledValue":[{"value":12.5,'
        b'"unitOfMeasure":{"unit":"kWh","multiplier":100000000000000000000}},{"value":7,"unitOfMeasure":{"unit":"kWh"}}]}]}]'
    ),
    (
        b'[2,"b1","BootNotification",{"reason":"PowerUp","chargingStation":{"model":"M","vendorName":"Ven\\u0000dor"}}]'
    ),
    (
        b'[2,"s1","StatusNotification",{'
        + T.encode()
        + b',"connectorStatus":"Occ\\u0000upied","evseId":1,'
        b'"connectorId":1}]'
    ),
    (
        b'[2,"t1","TransactionEvent",{"eventType":"Started",'
        + T.encode()
        + b',"triggerReason":"Authorized","seqNo":0,'
        b'"transactionInfo":{"transactionId":"tx\\u00001"},"idToken":{"idToken":"TOK\\u0000","type":"ISO14443"},'
        b'"evse":{"id":1,"connectorId":1},"meterValue":[{'
        + T.encode()
        + b',"sampledValue":[{"value":1000,'
        b'"measurand":"Energy.Active.Import.Register","context":"Transaction.Begin\\u0000"}]}]}]'
    ),
    (
        b'[2,"t2","TransactionEvent",{"eventType":"Ended","timestamp":"2026-01-01T11:00:00Z","triggerReason":"StopAuthorized",'
        b'"seqNo":1,"transactionInfo":{"transactionId":"tx\\u00001","stoppedReason":"Local\\u0000"},"meterValue":[{'
        b'"timestamp":"2026-01-01T11:00:00Z","sampledValue":[{"value":21000,"measurand":"Energy.Active.Import.Register"}]}]}]'
    ),
    (
        b'[2,"t3","TransactionEvent",{"eventType":"Updated",'
        + T.encode()
        + b',"triggerReason":"Trigger","seqNo":2,'
        b'"transactionInfo":{"transactionId":"x","remoteStartId":18446744073709551616}}]'
    ),
    (
        b'[2,"t4","TransactionEvent",{"eventType":"Updated",'
        + T.encode()
        + b',"triggerReason":"Trigger","seqNo":3,'
        b'"transactionInfo":{"transactionId":"' + b"x" * 300 + b'"}}]'
    ),
    (
        b'[2,"t5","TransactionEvent",{"eventType":"Updated","timestamp":"0001-01-01T00:00:00+14:00","triggerReason":"Trigger",'
        b'"seqNo":4,"transactionInfo":{"transactionId":"tx\\u00001"},"meterValue":[{"timestamp":"9999-12-31T23:59:59-14:00",'
        b'"sampledValue":[{"value":1e-30,"measurand":"Voltage"}]}]}]'
    ),
]
HOSTILE_16 = [  # OCPP 1.6
    (
        b'[2,"a1","StartTransaction",{"connectorId":1,"idTag":"A",'
        + T.encode()
        + b',"meterStart":0,'
        b'"reservationId":18446744073709551616}]'
    ),
    (
        b'[2,"a2","StartTransaction",{"connectorId":1,"idTag":"T\\u0000G",'
        + T.encode()
        + b',"meterStart":"1E-100000"}]'
    ),
    (
        b'[2,"a3","MeterValues",{"connectorId":1,"transactionId":1,"meterValue":[{'
        + T.encode()
        + b',"sampledValue":[{'
        b'"value":"1\\u0000","phase":"L1\\u0000","measurand":"Current.Import\\u0000"},{"value":"5","context":"\\u0000"}]}]}]'
    ),
    (
        b'[2,"a4","StopTransaction",{"transactionId":1,"meterStop":500,'
        + T.encode()
        + b',"reason":"Local\\u0000",'
        b'"idTag":"\\u0000","transactionData":[{'
        + T.encode()
        + b',"sampledValue":[{"value":"500"}]}]}]'
    ),
    (
        b'[2,"a5","StatusNotification",{"connectorId":1,"status":"Available","errorCode":"\\u0000\\\\u0000"}]'
    ),
]


def strings(value: Any) -> list[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in strings(item)]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in [key, *strings(item)]]
    return []


async def rows(db: Database, query: str, *args: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in await db.fetch(query, *args)]


async def test_hostile_frames_are_forwarded_and_every_event_is_stored_while_a_healthy_charger_works(
    settings, tmp_path
):
    """The MeterValues that ended a worker (a multiplier of 10^20), NUL in strings of every kind of
    event, numbers and strings beyond their bounds, timestamps beyond UTC: all forwarded byte for
    byte and answered, every event stored (NUL replaced, the original kept), nothing lost."""
    async with (
        capture_proxy(settings, tmp_path / "spill", linger=0) as proxy,
        healthy_charger(proxy) as healthy,
    ):
        for identity, subprotocol, frames in (
            ("HOSTILE-201", "ocpp2.0.1", HOSTILE_201),
            ("HOSTILE-16", "ocpp1.6", HOSTILE_16),
        ):
            async with hostile_charger(proxy, identity, subprotocol) as hostile:
                for text in frames:
                    answer = await hostile.call(text)
                    assert answer[:2] == [3, json.loads(text)[1]]
                    await healthy.check()
            peer = next(p for p in proxy.upstream.peers if p.path == f"/ocpp/{identity}")
            assert peer.received == [text.decode() for text in frames]  # byte for byte
        await proxy.settled()
        stats = proxy.journal.stats
        assert (stats.lost, stats.dead_letters, stats.database_errors) == (0, 0, 0)
        assert set(stats.failures.values()) == {0}
        db = proxy.db
        assert await db.fetchval("SELECT count(*) FROM charger_events") == stats.submitted
        assert await db.fetchval("SELECT count(*) FROM capture_dead_letters") == 0
        # NUL became U+FFFD in the columns, and the exact original JSON is kept.
        sessions = await rows(
            db,
            "SELECT identity, transaction_id, status, id_tag, stop_reason FROM sessions "
            "ORDER BY identity",
        )
        assert sessions == [
            ("HOSTILE-16", "1", "completed", "\ufffd", "Local\ufffd"),
            ("HOSTILE-201", "tx\ufffd1", "completed", "TOK\ufffd", "Local\ufffd"),
        ]
        assert await rows(
            db, "SELECT vendor FROM charger_boots WHERE identity = 'HOSTILE-201'"
        ) == [("Ven\ufffddor",)]
        names = {row[0] for row in await rows(db, "SELECT name FROM measurands")}
        assert "Current.Import\ufffd" in names
        changed = await rows(
            db, "SELECT kind, body::text, original FROM charger_events WHERE original IS NOT NULL"
        )
        assert (
            len(changed) == 8
        )  # boot, status, three TransactionEvents; MeterValues, Stop, status (1.6)
        for kind, body, original in changed:
            assert (
                not any("\x00" in text for text in strings(json.loads(body)))
                and b"\\u0000" in original
            )
            event: Event = msgspec.json.decode(original, type=AnyEvent)
            assert (
                event.identity.startswith("HOSTILE-") and kind == type(event).__struct_config__.tag
            )
        assert await rows(
            db,
            "SELECT body->>'error_code' FROM charger_events WHERE identity = 'HOSTILE-16' "
            "AND kind = 'status_changed'",
        ) == [("\ufffd\\u0000",)]  # an escaped backslash stays
        [(samples,)] = await rows(
            db,
            "SELECT body->'samples' FROM charger_events WHERE identity = 'HOSTILE-201' "
            "AND kind = 'meter_values'",
        )
        assert [(s["value"], s["error"]) for s in json.loads(samples)] == [
            (None, "multiplier out of range"),
            ("7000", None),
        ]


# -- a batch the database refuses in part -----------------------------------------------------

REFUSE_POISON = """
CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.identity LIKE 'POISON-%' THEN
        RAISE EXCEPTION 'refused by policy: %', NEW.identity;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER refuse_poison BEFORE INSERT ON charger_events FOR EACH ROW EXECUTE FUNCTION refuse_poison();
"""


def boot(n: int) -> Event:
    identity = f"POISON-{n}" if n % 100 == 37 else f"CP-{n}"
    return ChargerBooted(
        f"00000000-0000-0000-0003-{n:012d}",
        identity,
        1_767_225_600.0 + n,
        "Vendor",
        "Model",
        None,
        None,
        None,
        None,
        None,
        None,
        "Accepted",
    )


async def test_events_the_database_refuses_are_bisected_out_of_their_batch_and_kept_whole(
    settings, tmp_path
):
    """1 % of 1,000 events refused by the database: the store process bisects the writer's batch,
    the 990 others are stored directly (nothing goes through the spill log) and the 10 refused
    ones are kept whole in the dead-letter table with the database's error."""
    events = [boot(n) for n in range(1000)]
    async with open_database(settings) as db, StoreProcess(settings, db.dsn) as store:
        await db.execute(REFUSE_POISON)
        journal = Journal(SpillLog(tmp_path / "spill"), batch_size=1000)
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run, store)
            journal.submit(events)
            stats = journal.stats
            with trio.fail_after(WAIT):
                while stats.stored + stats.replayed + getattr(stats, "dead_letters", 0) < 1000:
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
        assert (
            stats.stored,
            getattr(stats, "dead_letters", None),
            stats.lost,
            stats.spilled,
            stats.database_errors,
        ) == (990, 10, 0, 0, 0)
        assert await db.fetchval("SELECT count(*) FROM charger_boots") == 990
        letters = await rows(
            db,
            "SELECT event_id, identity, kind, stage, error, format, payload "
            "FROM capture_dead_letters ORDER BY event_id",
        )
    poison = [e for e in events if e.identity.startswith("POISON-")]
    assert [(r[0], r[1], r[2], r[3], r[5]) for r in letters] == [
        (e.event_id, e.identity, "charger_booted", "store", "json") for e in poison
    ]
    assert all("refused by policy" in r[4] for r in letters)
    assert [msgspec.json.decode(r[6], type=AnyEvent) for r in letters] == poison


class CountingDatabase:
    """The database, counting the transactions the store opens."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.transactions = 0

    @asynccontextmanager
    async def transaction(self):  # type: ignore[no-untyped-def]
        self.transactions += 1
        async with self.db.transaction() as conn:
            yield conn


async def test_bisection_costs_a_few_transactions_per_refused_event_not_one_per_event(settings):
    events = [boot(n) for n in range(1000)]
    async with open_database(settings) as db:
        await db.execute(REFUSE_POISON)
        counting = CountingDatabase(db)
        outcome = await DatabaseStore(counting).store(records(events))
        assert (outcome.stored, len(outcome.dead_letters), outcome.lost) == (990, 10, [])
        # Each refused event: about 2·log2(1000) halves on its way down, plus its retry, its dead
        # letter and the probes; storing one event at a time would take 1,000 transactions.
        assert counting.transactions < 500
        assert await db.fetchval("SELECT count(*) FROM charger_events") == 990


def records(events: Sequence[Event]) -> list[bytes]:
    # Imported here: the rest of this module also runs against older versions (to show their failures).
    from proxy.capture.database_store import encode_event

    return [encode_event(event)[0] for event in events]
