"""Session tables from tracker events, on a real PostgreSQL: exact energy, idempotent storing."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.capture.orphans import close_orphans
from proxy.capture.sessions import store_events
from proxy.store.db import open_database
from testkit.capture_feeds import Feed, offline_session, session_16, session_201


async def test_sessions_get_exactly_the_reported_energy_and_storing_twice_changes_nothing(settings):
    events = session_16().events + session_201().events
    async with open_database(settings) as db:
        async with db.transaction() as conn:
            assert await store_events(conn, events) == len(events)
        async with db.transaction() as conn:
            assert await store_events(conn, events) == 0  # a replay
        rows = await db.fetch(
            "SELECT identity, transaction_id, status, meter_start_wh, meter_stop_wh, energy_wh, energy_source, "
            "stop_reason FROM sessions ORDER BY identity"
        )
        samples = await db.fetchval("SELECT count(*) FROM meter_samples")
        boot = await db.fetchrow("SELECT vendor, meter_type, meter_serial FROM charger_boots")
        stored = await db.fetchval("SELECT count(*) FROM charger_events")
    assert [tuple(r) for r in rows] == [
        (
            "CP-16",
            "42",
            "completed",
            Decimal(1000),
            Decimal(43370),
            Decimal(42370),
            "stop_minus_start",
            "EVDisconnected",
        ),
        (
            "CP-201",
            "tx-9",
            "completed",
            Decimal(500),
            Decimal(12500),
            Decimal(12000),
            "stop_minus_start",
            None,
        ),
    ]
    assert samples == 4 and stored == len(events)
    assert tuple(boot) == ("Alfen", "Carlo Gavazzi EM340-PF", "M-1")


async def test_a_running_session_counts_up_to_its_last_reading(settings):
    events = [e for e in session_16("CP-run").events if type(e).__name__ != "TransactionStopped"]
    async with open_database(settings) as db:
        async with db.transaction() as conn:
            await store_events(conn, events)
        row = await db.fetchrow("SELECT status, energy_wh, energy_source FROM sessions")
    assert tuple(row) == ("active", Decimal(19500), "last_sample")


async def test_events_out_of_order_give_the_same_session(settings):
    events = session_16("CP-late").events
    async with open_database(settings) as db:
        async with db.transaction() as conn:
            await store_events(conn, list(reversed(events)))
        row = await db.fetchrow("SELECT status, meter_start_wh, energy_wh FROM sessions")
    assert tuple(row) == ("completed", Decimal(1000), Decimal(42370))


async def test_silent_sessions_are_orphaned_and_a_late_stop_still_completes_them(settings):
    events = session_16("CP-quiet").events
    stop = [e for e in events if type(e).__name__ == "TransactionStopped"]
    async with open_database(settings) as db:
        async with db.transaction() as conn:
            await store_events(conn, [e for e in events if e not in stop])
        async with db.transaction() as conn:
            assert await close_orphans(conn, after=3600) == 0  # not silent for long enough
        async with db.transaction() as conn:
            assert await close_orphans(conn, after=1e-6) == 1
        orphaned = await db.fetchrow("SELECT status, energy_wh, energy_source FROM sessions")
        async with db.transaction() as conn:
            await store_events(conn, stop)
        completed = await db.fetchrow("SELECT status, energy_wh FROM sessions")
    assert tuple(orphaned) == ("orphaned", Decimal(19500), "last_sample")
    assert tuple(completed) == ("completed", Decimal(42370))


def signed_ocmf(key, readings: list[tuple[str, str]]) -> str:
    """An OCMF record signed with `key`: readings as (TX event, kWh)."""
    payload = json.dumps(
        {
            "FV": "1.0",
            "GI": "Wallbox",
            "GS": "G-1",
            "PG": "T1",
            "MV": "Iskra",
            "MM": "WM3M4C",
            "MS": "4711",
            "IS": False,
            "IT": "NONE",
            "RD": [
                {
                    "TM": "2026-01-01T10:00:00,000+0000 S",
                    "TX": tx,
                    "RV": float(kwh),
                    "RI": "1-b:1.8.0",
                    "RU": "kWh",
                    "RT": "AC",
                    "EF": "",
                    "ST": "G",
                }
                for tx, kwh in readings
            ],
        },
        separators=(",", ":"),
    )
    signature = key.sign(payload.encode(), ec.ECDSA(hashes.SHA256())).hex().upper()
    return f'OCMF|{payload}|{{"SD":"{signature}"}}'


def public_key(key) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def signed_session_201(identity: str, transaction_id: str, key, sent_key) -> Feed:
    """A 2.0.1 session whose Started and Ended events carry signed readings (plain readings disagree)."""
    feed = Feed("ocpp2.0.1", identity)
    for seq, (kind, tx, kwh, plain) in enumerate(
        (("Started", "B", "100.0", 0.0), ("Ended", "E", "142.37", 99.0))
    ):
        signed = {
            "signedMeterData": base64.b64encode(signed_ocmf(key, [(tx, kwh)]).encode()).decode(),
            "signingMethod": "",
            "encodingMethod": "OCMF",
            "publicKey": public_key(sent_key),
        }
        feed.charger(
            [
                2,
                f"t{seq}",
                "TransactionEvent",
                {
                    "eventType": kind,
                    "timestamp": f"2026-01-01T1{seq}:00:00Z",
                    "seqNo": seq,
                    "triggerReason": "Authorized",
                    "transactionInfo": {"transactionId": transaction_id},
                    "meterValue": [
                        {
                            "timestamp": f"2026-01-01T1{seq}:00:00Z",
                            "sampledValue": [
                                {
                                    "value": plain,
                                    "measurand": "Energy.Active.Import.Register",
                                    "unitOfMeasure": {"unit": "kWh"},
                                    "signedMeterValue": signed,
                                }
                            ],
                        }
                    ],
                },
            ]
        )
        feed.upstream([3, f"t{seq}", {}])
    return feed


async def test_signed_readings_give_the_energy_and_the_meter_class(settings):
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    first = signed_session_201("CP-sig", "tx-1", key, key).events  # pins the key
    second = signed_session_201(
        "CP-sig", "tx-2", other, other
    ).events  # a different key: not trusted
    declared = session_16("CP-mid").events
    async with open_database(settings) as db:
        async with db.transaction() as conn:
            await store_events(conn, first + second + declared)
        rows = await db.fetch(
            "SELECT transaction_id, meter_class, energy_wh, energy_source FROM sessions ORDER BY transaction_id"
        )
        classes = dict(await db.fetch("SELECT identity, meter_class FROM charger_boots"))
    assert [tuple(r) for r in rows] == [
        ("42", "declared", Decimal(42370), "stop_minus_start"),
        ("tx-1", "signed-verified", Decimal("42370.000"), "signed"),
        ("tx-2", "signed-unverified", Decimal("42370.000"), "signed"),
    ]
    assert classes == {"CP-mid": "declared"}


async def test_known_measurands_use_up_no_identity_values(settings):
    """Storing samples must not advance the measurand code sequence (it would run out)."""
    async with open_database(settings) as db:
        for number in range(5):
            async with db.transaction() as conn:
                await store_events(conn, session_16(f"CP-seq{number}").events)
        sequence = await db.fetchval("SELECT pg_get_serial_sequence('measurands', 'code')")
        used = await db.fetchval(f"SELECT last_value FROM {sequence}")
        measurands = await db.fetchval("SELECT count(*) FROM measurands")
    assert (used, measurands) == (1, 1)


async def test_a_provisional_transaction_id_becomes_the_real_one_in_one_batch_or_many(settings):
    events = offline_session(2_000_000_001, 77).events
    async with open_database(settings) as db:
        await store_events(db, events)  # one batch: the rename is a barrier inside it
        rows = await db.fetch("SELECT transaction_id, status, energy_wh FROM sessions")
        samples = await db.fetchval("SELECT count(*) FROM meter_samples")
        assert [(r[0], r[1], int(r[2])) for r in rows] == [("77", "completed", 4000)]
        assert samples == 1
        # CASCADE: the tables that reference sessions (what other sources supplied) go too.
        await db.execute(
            "TRUNCATE sessions, charger_events, meter_samples, session_assessments CASCADE"
        )
        for event in events:  # one event a batch
            await store_events(db, [event])
        rows = await db.fetch("SELECT transaction_id, status, energy_wh FROM sessions")
        assert [(r[0], r[1], int(r[2])) for r in rows] == [("77", "completed", 4000)]


async def test_a_provisional_session_merges_into_one_already_known_by_the_real_id(settings):
    events = offline_session(2_000_000_002, 78).events
    stop = events[-1]
    async with open_database(settings) as db:
        await store_events(db, [stop])  # the real id's session exists first (its stop came early)
        await store_events(db, events[:-1])
        rows = await db.fetch(
            "SELECT transaction_id, status, meter_start_wh, meter_stop_wh FROM sessions"
        )
        assert [(r[0], r[1], int(r[2]), int(r[3])) for r in rows] == [
            ("78", "completed", 1000, 5000)
        ]
        assert await db.fetchval("SELECT count(*) FROM meter_samples") == 1
