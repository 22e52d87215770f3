"""Capture at bulk rates on a real PostgreSQL: compact event rows, samples by reference, one
session upsert per batch, monthly partitions made on demand, and every event given back whole."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import msgspec

from proxy.capture.database_store import DatabaseStore, encode_event
from proxy.capture.events import AnyEvent, Event, MeterValuesReported
from proxy.capture.payloads import MAX_SAMPLED_VALUES
from proxy.capture.sessions import store_events
from proxy.capture.store_process import StoreProcess
from proxy.store.db import open_database
from proxy.store.partitions import ensure_ahead, ensure_months
from proxy.store.purge import purge
from testkit.capture_feeds import Feed, captured_16, offline_session, session_16, session_201
from testkit.retained import refused, state_in_2021q1

# Whole bodies of stored events, as the REV export's raw frames read them.
WHOLE = """
SELECT e.event_id::text,
       capture_event_body(e.body, e.event_id, e.identity, e.kind,
           (SELECT jsonb_agg(capture_sample_body(m.sampled_at, d.name, m.value, m.phase, m.location,
                                                 m.context, m.signed_data, m.detail) ORDER BY m.ordinal)
            FROM meter_samples m JOIN measurands d ON d.code = m.measurand
            WHERE m.event_id = e.event_id AND m.ordinal IS NOT NULL))::text
FROM charger_events e
"""


def as_json(event: Event) -> object:
    return json.loads(msgspec.json.encode(event))


async def whole_bodies(db) -> dict[str, object]:
    return {row[0]: json.loads(row[1]) for row in await db.fetch(WHOLE)}


def hostile_meter_values() -> list[Event]:
    """Odd but valid readings of both protocol families: every Sample field off its default."""
    feed16 = Feed("ocpp1.6", "CP-ODD16")
    feed16.charger(
        [
            2,
            "s",
            "StartTransaction",
            {"connectorId": 1, "idTag": "T", "meterStart": 5, "timestamp": "2026-02-01T00:00:00Z"},
        ]
    )
    feed16.upstream([3, "s", {"transactionId": 7, "idTagInfo": {"status": "Accepted"}}])
    values16 = [
        {"value": "12.3450", "unit": "kWh"},  # raw text kept, value scaled
        {"value": "1000"},  # no unit sent
        {"value": "1000", "unit": "Wh", "context": "Sample.Clock", "location": "Outlet"},
        {"value": "abc"},  # not a number: invalid
        {"value": "-0", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
        {"value": "0.0000000001", "measurand": "Current.Import", "unit": "A", "phase": "L1"},
        {"value": "1e3", "measurand": "Power.Active.Import", "unit": "kW"},
        {"value": "-5", "measurand": "Energy.Active.Import.Register"},  # negative register
        {"value": "OCMF|{}|{}", "format": "SignedData", "context": "Transaction.End"},
        {"value": "7", "measurand": "Current.Im\u0000port", "unit": "A"},  # NUL: kept apart
        {"value": "1" * 100, "unit": "Wh"},  # out of range
        {"value": "S" * 60_000, "format": "SignedData"},  # a big blob
    ]
    timestamps = [
        "2026-02-01T10:00:00Z",
        "2026-02-01T10:00:00.000Z",
        "2026-02-01T11:00:00+01:00",
        "not a time",
        "0999-01-01T00:00:00Z",
        "2026-02-01T10:00:00.123456Z",
    ]
    for n, stamp in enumerate(timestamps):
        feed16.charger(
            [
                2,
                f"m{n}",
                "MeterValues",
                {
                    "connectorId": 1,
                    "transactionId": 7,
                    "meterValue": [{"timestamp": stamp, "sampledValue": values16}],
                },
            ]
        )
        feed16.upstream([3, f"m{n}", {}])
    feed2 = Feed("ocpp2.0.1", "CP-ODD2")
    sampled2 = [
        {"value": 12.5, "unitOfMeasure": {"unit": "kWh", "multiplier": 1}},
        {"value": 3, "unitOfMeasure": {"multiplier": -2}},
        {"value": 7, "measurand": "Energy.Active.Import.Register"},
        {"value": 1, "unitOfMeasure": {"unit": "kWh", "multiplier": 10**20}},  # invalid multiplier
        {
            "value": 42,
            "signedMeterValue": {
                "signedMeterData": "D" * 1000,
                "signingMethod": "ECDSA",
                "encodingMethod": "OCMF",
                "publicKey": "K" * 500,
            },
        },
        {"value": 1e-7, "measurand": "Voltage", "unitOfMeasure": {"unit": "V"}},
    ]
    for seq, kind in enumerate(("Started", "Updated", "Ended")):
        feed2.charger(
            [
                2,
                f"t{seq}",
                "TransactionEvent",
                {
                    "eventType": kind,
                    "timestamp": f"2026-02-01T10:0{seq}:00Z",
                    "seqNo": seq,
                    "triggerReason": "MeterValuePeriodic",
                    "transactionInfo": {"transactionId": "odd-1"},
                    "meterValue": [
                        {"timestamp": f"2026-02-01T10:0{seq}:00.5Z", "sampledValue": sampled2}
                    ],
                },
            ]
        )
        feed2.upstream([3, f"t{seq}", {}])
    return feed16.events + feed2.events


async def test_every_event_reads_back_whole_however_odd_its_samples(settings):
    """The bodies the readers get (envelope and samples restored from the columns) are the events'
    JSON exactly, for readings off every default: units, multipliers, raw texts, times, signed data
    with its keys, invalid values, numbers PostgreSQL prints otherwise, big blobs."""
    events = hostile_meter_values() + session_16().events + session_201().events
    async with open_database(settings) as db:
        outcome = await DatabaseStore(db).store([encode_event(e)[0] for e in events])
        assert (outcome.stored, outcome.dead_letters, outcome.lost) == (len(events), [], [])
        bodies = await whole_bodies(db)
        originals = {
            row[0]: row[1]
            for row in await db.fetch(
                "SELECT event_id::text, original FROM charger_events WHERE original IS NOT NULL"
            )
        }
        by_reference = await db.fetchval(
            "SELECT count(*) FROM meter_samples WHERE ordinal IS NOT NULL"
        )
    assert len(bodies) == len(events)
    for event in events:
        if event.event_id in originals:  # NUL: the exact JSON is kept apart, the body has U+FFFD
            assert msgspec.json.decode(originals[event.event_id], type=AnyEvent) == event
            continue
        assert bodies[event.event_id] == as_json(event), type(event).__name__
    assert by_reference == sum(len(getattr(e, "samples", ())) for e in events)


async def test_an_event_row_keeps_its_samples_once_and_a_plain_sample_row_no_detail(settings):
    events = minute_readings("CP-SHAPE", 3)
    meter_values = next(e for e in events if isinstance(e, MeterValuesReported))
    async with open_database(settings) as db:
        await store_events(db, events)
        body = json.loads(
            await db.fetchval(
                "SELECT body::text FROM charger_events WHERE event_id = $1", meter_values.event_id
            )
        )
        details = await db.fetch("SELECT detail FROM meter_samples")
    # Neither the samples nor what the row's columns hold: those are not stored twice.
    assert set(body) == {"at", "connector_id", "evse_id", "transaction_id"}
    assert [row[0] for row in details] == [None] * len(details)


def minute_readings(identity: str, count: int) -> list[Event]:
    """A 1.6 session with `count` MeterValues (energy and power), as a charger sends them."""
    feed = Feed("ocpp1.6", identity)
    feed.charger(
        [
            2,
            "s",
            "StartTransaction",
            {
                "connectorId": 1,
                "idTag": "T",
                "meterStart": 100,
                "timestamp": "2026-03-01T00:00:00Z",
            },
        ]
    )
    feed.upstream([3, "s", {"transactionId": 5, "idTagInfo": {"status": "Accepted"}}])
    for n in range(count):
        stamp = f"2026-03-01T{n // 60:02d}:{n % 60:02d}:30Z"
        sampled = [
            {"value": str(200 + 10 * n), "unit": "Wh"},
            {"value": "7400", "measurand": "Power.Active.Import", "unit": "W"},
        ]
        payload = {
            "connectorId": 1,
            "transactionId": 5,
            "meterValue": [{"timestamp": stamp, "sampledValue": sampled}],
        }
        feed.charger([2, f"m{n}", "MeterValues", payload])
        feed.upstream([3, f"m{n}", {}])
    return feed.events


# Rows updated by this backend (its counts not yet reported included: take differences).
UPDATED = "SELECT pg_stat_get_xact_tuples_updated('sessions'::regclass)"
SESSION_COLUMNS = """
SELECT identity, transaction_id, connector_id, evse_id, id_tag, started_at, stopped_at, meter_start_wh,
       meter_stop_wh, first_reading_at, last_reading_at, last_reading_wh, energy_wh, energy_source,
       status, stop_reason, start_received_at, stop_received_at, meter_class
FROM sessions ORDER BY identity, transaction_id
"""


async def test_a_batch_updates_each_session_once_and_leaves_it_as_event_by_event_would(settings):
    """50 MeterValues of one session in a batch: one session row version, not two per reading;
    the sessions (and the sums of energy) are those of storing the same traffic event by event,
    in order or reversed."""
    traffic = (
        minute_readings("CP-BATCH", 50)
        + session_16().events
        + session_201().events
        + offline_session(2_000_000_031, 91).events
    )
    async with open_database(settings) as db:
        for event in traffic:
            await store_events(db, [event])
        one_by_one = [tuple(r) for r in await db.fetch(SESSION_COLUMNS)]
        await db.execute(
            "TRUNCATE sessions, charger_events, meter_samples, session_assessments CASCADE"
        )
        async with db.transaction() as conn:
            await store_events(conn, traffic[:1])  # the session exists: its readings update it
            before = await conn.fetchval(UPDATED)
            await store_events(conn, traffic[1:51])
            updates = await conn.fetchval(UPDATED) - before
            await store_events(conn, traffic[51:])
        in_batches = [tuple(r) for r in await db.fetch(SESSION_COLUMNS)]
        await db.execute(
            "TRUNCATE sessions, charger_events, meter_samples, session_assessments CASCADE"
        )
        await store_events(db, list(reversed(traffic[:51])))
        await store_events(db, traffic[51:])
        reversed_batch = [tuple(r) for r in await db.fetch(SESSION_COLUMNS)]
        energy = await db.fetchval("SELECT sum(energy_wh) FROM sessions")
        samples = await db.fetchval("SELECT count(*) FROM meter_samples")
    assert updates == 1
    assert in_batches == one_by_one
    # received times follow the order of arrival; everything else is the same reversed
    assert [r[:16] + r[18:] for r in reversed_batch] == [r[:16] + r[18:] for r in one_by_one]
    assert energy == Decimal(690 - 100) + Decimal(42370) + Decimal(12000) + Decimal(4000)
    assert samples == 100 + 4 + 1


async def test_duplicates_in_a_batch_resent_later_or_replayed_are_stored_once(settings):
    events = session_16("CP-DUP").events
    meter = next(e for e in events if isinstance(e, MeterValuesReported))
    resent = msgspec.structs.replace(meter, at=meter.at + 86_400 * 40)  # after a reconnect
    async with open_database(settings) as db:
        store = DatabaseStore(db)
        first = await store.store([encode_event(e)[0] for e in events + events[:3]])
        again = await store.store([encode_event(e)[0] for e in [resent, *events]])
        rows = await db.fetchval("SELECT count(*) FROM charger_events")
        samples = await db.fetchval("SELECT count(*) FROM meter_samples")
        energy = await db.fetchval("SELECT energy_wh FROM sessions")
    assert (first.stored, first.dead_letters, again.dead_letters) == (len(events) + 3, [], [])
    assert (rows, samples, energy) == (len(events), 1, Decimal(42370))


async def test_an_event_for_a_month_without_a_partition_is_stored_in_one_made_for_it(settings):
    """Months far off and a month whose partition was dropped under the store: the partitions are
    made in the batch's transaction, nothing is refused, nothing lost."""
    base = session_16("CP-MONTHS").events
    shifted = [
        msgspec.structs.replace(e, at=datetime(year, 7, 15, tzinfo=UTC).timestamp() + n)
        for year in (1999, 2031)
        for n, e in enumerate(base)
    ]
    async with open_database(settings) as db:
        store = DatabaseStore(db)
        outcome = await store.store([encode_event(e)[0] for e in shifted[: len(base)]])
        now = datetime.now(UTC)
        await db.execute(
            f"DROP TABLE charger_events_y{now:%Y}m{now:%m}, meter_samples_y{now:%Y}m{now:%m}"
        )
        current = [
            msgspec.structs.replace(e, at=now.timestamp()) for e in session_16("CP-NOW").events
        ]
        later = await store.store([encode_event(e)[0] for e in shifted[len(base) :] + current])
        partitions = {
            row[0]
            for row in await db.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'charger_events'::regclass"
            )
        }
        rows = await db.fetchval("SELECT count(*) FROM charger_events")
        letters = await db.fetchval("SELECT count(*) FROM capture_dead_letters")
    assert outcome.stored == len(base) and later.stored == 2 * len(base)
    assert (later.dead_letters, later.lost, letters) == ([], [], 0)
    assert {
        "charger_events_y1999m07",
        "charger_events_y2031m07",
        f"charger_events_y{now:%Y}m{now:%m}",
    } <= partitions
    assert rows == 3 * len(base)


async def test_partitions_are_made_ahead_once_and_named_after_their_month(settings):
    async with open_database(settings) as db:
        made = await ensure_ahead(db, datetime(2041, 12, 31, 23, tzinfo=UTC))
        again = await ensure_ahead(db, datetime(2041, 12, 1, tzinfo=UTC))
        names = await db.fetch(
            "SELECT relname FROM pg_class WHERE relname LIKE '%y2041m12' OR relname LIKE '%y2042m01' ORDER BY 1"
        )
    assert (made, again) == (4, 0)
    assert "charger_events_transaction_y2041m12" in {row[0] for row in names}
    assert "meter_samples_y2042m01" in {row[0] for row in names}


async def partition_names(db) -> set[str]:
    rows = await db.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent IN ('charger_events'::regclass, 'meter_samples'::regclass)"
    )
    return {row[0] for row in rows}


async def test_retention_drops_a_month_wholly_past_it_and_deletes_rows_of_a_month_still_needed(
    settings,
):
    """March 2020 holds only a purged session: both its partitions are dropped (their rows
    counted). June 2020 holds a session a later quarter stated: its month stays, nothing in it
    goes. A dry run drops nothing."""
    old = captured_16("CP-OLD", 7, "2020-03-01", datetime(2020, 3, 1, 10, tzinfo=UTC))
    stated = captured_16("CP-OLD", 8, "2020-06-01", datetime(2020, 6, 1, 10, tzinfo=UTC))
    new = captured_16("CP-NEW", 9, "2026-03-01", datetime(2026, 3, 1, 10, tzinfo=UTC))
    async with open_database(settings) as db:
        await store_events(db, old + stated + new)
        await state_in_2021q1(db, "8")
        await db.execute("UPDATE sessions SET updated_at = stop_received_at")
        months = {"charger_events_y2020m03", "meter_samples_y2020m03"}
        kept = {"charger_events_y2020m06", "meter_samples_y2020m06"}
        assert months | kept <= await partition_names(db)
        cut, today = date(2021, 1, 1), date(2026, 12, 6)
        dry = await purge(db, cut, retention_years=5, today=today, actor="test", dry_run=True)
        assert months <= await partition_names(db)
        counts = await purge(db, cut, retention_years=5, today=today, actor="test")
        left = await partition_names(db)
        events = await db.fetch("SELECT DISTINCT body->>'transaction_id' FROM charger_events")
    expected = {"session_assessments": 0, "meter_samples": 1, "sessions": 1, "charger_events": 3}
    assert dry == counts == expected
    assert not months & left and kept <= left
    assert {row[0] for row in events} == {"8", "9"}


async def test_a_row_written_for_a_month_without_a_partition_moves_into_it_when_it_is_made(
    settings,
):
    """A writer that did not make the month first (plain SQL here) is not refused: its row waits
    in the default partition and moves, whole, into the month's partition once that is made."""
    async with open_database(settings) as db:
        await db.execute(
            "INSERT INTO charger_events (event_id, identity, kind, received_at, body) VALUES "
            "('00000000-0000-0000-0000-00000000000a', 'CP-STRAY', 'charger_booted', "
            "'2033-05-02T10:00:00Z', '{\"at\": 1.5}')"
        )
        assert await db.fetchval("SELECT count(*) FROM charger_events_default") == 1
        made = await ensure_months(db, [datetime(2033, 5, 20, tzinfo=UTC)])
        moved = await db.fetch("SELECT identity, body::text FROM charger_events_y2033m05")
        left = await db.fetchval("SELECT count(*) FROM charger_events_default")
        indexes = await db.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'charger_events_y2033m05'"
        )
        await refused(db, "DELETE FROM charger_events_y2033m05")
    assert made == 2 and left == 0 and indexes == 4
    assert [tuple(r) for r in moved] == [("CP-STRAY", '{"at": 1.5}')]


async def test_the_store_process_takes_odd_samples_many_samples_and_new_months_and_runs_on(
    settings,
):
    """Through the real store process: readings off every default, a MeterValues with the most
    sampled values a payload may hold, events of a month far off, then all of it again."""
    feed = Feed("ocpp1.6", "CP-WIDE")
    feed.charger(
        [
            2,
            "s",
            "StartTransaction",
            {"connectorId": 1, "idTag": "T", "meterStart": 1, "timestamp": "2026-04-01T00:00:00Z"},
        ]
    )
    feed.upstream([3, "s", {"transactionId": 3, "idTagInfo": {"status": "Accepted"}}])
    sampled = [{"value": str(n), "measurand": f"Custom.{n % 7}"} for n in range(MAX_SAMPLED_VALUES)]
    meter = {
        "connectorId": 1,
        "transactionId": 3,
        "meterValue": [{"timestamp": "2026-04-01T00:01:00Z", "sampledValue": sampled}],
    }
    feed.charger([2, "m", "MeterValues", meter])
    feed.upstream([3, "m", {}])
    far = [
        msgspec.structs.replace(e, at=datetime(2040, 2, 29, tzinfo=UTC).timestamp() + n)
        for n, e in enumerate(session_16("CP-FAR").events)
    ]
    events = hostile_meter_values() + feed.events + far
    records = [encode_event(e)[0] for e in events]
    async with open_database(settings) as db, StoreProcess(settings, db.dsn) as store:
        first = await store.store(records)
        again = await store.store(records)
        assert await store.answers() and store.started == 1
        rows = await db.fetchval("SELECT count(*) FROM charger_events")
        samples = await db.fetchval("SELECT count(*) FROM meter_samples")
        bodies = await whole_bodies(db)
    assert (first.stored, first.dead_letters, first.lost) == (len(events), [], [])
    assert (again.dead_letters, again.lost) == ([], [])
    assert rows == len(events)
    assert samples == sum(len(getattr(e, "samples", ())) for e in events)
    wide = next(e for e in feed.events if isinstance(e, MeterValuesReported))
    assert bodies[wide.event_id] == as_json(wide)
