"""Migration 030 on a database whose capture rows the schema before it wrote: every row kept,
every event read back as it was, the evidence rules still enforced, capture going on after it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec

from proxy.capture.events import Event, TransactionIdAssigned
from proxy.capture.sessions import parse_timestamp, store_events
from proxy.ere.jobs.rev_export import raw_frames
from proxy.runtime.config import DatabaseSettings
from proxy.store.db import open_database
from proxy.store.migrate import load_migrations
from testkit.capture_feeds import offline_session, session_16, session_201
from testkit.retained import refused

BEFORE_030 = [migration for migration in load_migrations() if migration.version < 30]

# The rows as the writer before 030 made them: the whole event as the body, a sample row per
# sample of an event with a session.
_EVENT = """
INSERT INTO charger_events (event_id, identity, kind, received_at, body)
VALUES ($1, $2, $3, $4, $5::jsonb)
"""
_SESSION = """
INSERT INTO sessions (identity, transaction_id) VALUES ($1, $2)
ON CONFLICT (identity, transaction_id) DO UPDATE SET updated_at = now() RETURNING session_id
"""
_SAMPLE = """
INSERT INTO meter_samples (session_id, sampled_at, measurand, phase, location, context, value, signed_data, event_id)
VALUES ($1, $2, (SELECT code FROM measurands WHERE name = $3), $4, $5, $6, $7, $8, $9)
"""
_SAMPLES = """
SELECT s.identity, s.transaction_id, m.sampled_at, d.name, m.phase, m.location, m.context, m.value,
       m.signed_data, m.event_id::text
FROM meter_samples m JOIN sessions s USING (session_id) JOIN measurands d ON d.code = m.measurand
ORDER BY 1, 2, 3, 10, 8
"""


def old_traffic() -> list[Event]:
    renamed = [
        e
        for e in offline_session(2_000_000_041, 95).events
        if not isinstance(e, TransactionIdAssigned)
    ]
    return session_16("CP-OLD16").events + session_201("CP-OLD201").events + renamed


async def seed_029(settings: DatabaseSettings, events: list[Event]) -> dict[str, Any]:
    """Store `events` the way the schema before 030 held them; their bodies as that schema read them."""
    async with open_database(settings, migrations=BEFORE_030) as db:
        await db.execute("INSERT INTO measurands (name) VALUES ('Energy.Active.Import.Register')")
        for event in events:
            await db.execute(
                _EVENT,
                event.event_id,
                event.identity,
                type(event).__struct_config__.tag,
                datetime.fromtimestamp(event.at, UTC),
                msgspec.json.encode(event).decode(),
            )
            transaction = getattr(event, "transaction_id", None)
            samples = getattr(event, "samples", ())
            if transaction is None or not samples:
                continue
            session_id = await db.fetchval(_SESSION, event.identity, transaction)
            for sample in samples:
                await db.execute(
                    _SAMPLE,
                    session_id,
                    parse_timestamp(sample.timestamp, event.at),
                    sample.measurand,
                    sample.phase,
                    sample.location,
                    sample.context,
                    sample.value,
                    sample.signed.signed_meter_data if sample.signed else None,
                    event.event_id,
                )
        # A sample whose event is not kept (written by hand, or its event lost): kept too.
        await db.execute(
            "INSERT INTO meter_samples (session_id, sampled_at, measurand, value, event_id) "
            "SELECT min(session_id), '2025-12-31T23:00:00Z', 1, 7, gen_random_uuid() FROM sessions"
        )
        bodies = {
            r[0]: r[1]
            for r in await db.fetch("SELECT event_id::text, body::text FROM charger_events")
        }
        samples = [tuple(r) for r in await db.fetch(_SAMPLES)]
        frames = await db.fetch(
            "SELECT body::text FROM charger_events WHERE identity = 'CP-OLD16' AND body->>'transaction_id' = '42' "
            "ORDER BY received_at, event_id"
        )
    return {"bodies": bodies, "samples": samples, "frames": tuple(r[0] for r in frames)}


async def test_migration_keeps_every_event_and_sample_and_gives_events_back_as_they_were(
    settings,
):
    events = old_traffic()
    before = await seed_029(settings, events)
    async with open_database(settings) as db:
        bodies = {
            r[0]: r[1]
            for r in await db.fetch(
                "SELECT event_id::text, capture_event_body(body, event_id, identity, kind, NULL)::text "
                "FROM charger_events"
            )
        }
        compact = await db.fetchval(
            "SELECT count(*) FROM charger_events WHERE NOT body ? 'identity' AND NOT body ? 'event_id'"
        )
        samples = [tuple(r) for r in await db.fetch(_SAMPLES)]
        orphan = await db.fetchval(
            "SELECT received_at FROM meter_samples WHERE event_id NOT IN (SELECT event_id FROM charger_events)"
        )
        frames = await raw_frames(db, "CP-OLD16", "42")
        partitions = await db.fetchval(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'charger_events'::regclass"
        )
        await refused(db, "DELETE FROM charger_events")
        await refused(db, "DELETE FROM meter_samples")
        await refused(db, "UPDATE meter_samples SET value = 0", "never changed")
        # Capture goes on: the same events again change nothing, new ones are stored compact.
        assert await store_events(db, events) == 0
        later = session_16("CP-NEW16").events
        assert await store_events(db, later) == len(later)
        new_frames = await raw_frames(db, "CP-NEW16", "42")
        rows = await db.fetchval("SELECT count(*) FROM charger_events")
    assert bodies == before["bodies"]  # the same text, whole
    assert compact == len(events)
    assert samples == before["samples"] and len(samples) == 6
    assert orphan == datetime(2025, 12, 31, 23, tzinfo=UTC)
    assert frames == before["frames"]
    assert partitions >= 3  # the months of the rows, this month and the next, the default
    assert rows == len(events) + len(later)
    assert [json.loads(f) for f in new_frames] == [
        json.loads(msgspec.json.encode(e))
        for e in later
        if getattr(e, "transaction_id", None) == "42"
    ]
