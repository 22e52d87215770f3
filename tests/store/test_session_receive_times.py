"""When the start and stop frames of a session reached the proxy, kept by capture for clock checks."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from proxy.capture.events import TransactionEvent, TransactionStarted, TransactionStopped
from proxy.capture.sessions import store_events
from proxy.capture.tracker import event_id
from proxy.store.db import open_database
from testkit.capture_feeds import offline_session, session_16, session_201


def received(event) -> datetime:
    return datetime.fromtimestamp(event.at, UTC)


def one(events, kind, **fields):
    [found] = [
        e
        for e in events
        if isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items())
    ]
    return found


async def receive_times(db) -> list[tuple]:
    rows = await db.fetch(
        "SELECT transaction_id, start_received_at, stop_received_at FROM sessions ORDER BY 1"
    )
    return [tuple(row) for row in rows]


async def test_start_and_stop_frames_keep_their_receive_times_and_a_replay_moves_neither(
    settings,
):
    ocpp16, ocpp201 = session_16().events, session_201().events
    start, stop = one(ocpp16, TransactionStarted), one(ocpp16, TransactionStopped)
    began = one(ocpp201, TransactionEvent, event_type="Started")
    ended = one(ocpp201, TransactionEvent, event_type="Ended")
    expected = [
        ("42", received(start), received(stop)),
        ("tx-9", received(began), received(ended)),
    ]
    async with open_database(settings) as db:
        await store_events(db, ocpp16 + ocpp201)
        assert await receive_times(db) == expected
        # The same frames again, a day later (a replayed spill log, a charger resending its queue).
        later = [msgspec.structs.replace(e, at=e.at + 86400) for e in ocpp16 + ocpp201]
        await store_events(db, later)
        await store_events(db, list(reversed(later)))
        assert await receive_times(db) == expected


async def test_a_session_started_offline_keeps_the_receive_times_through_its_merge(settings):
    events = offline_session(2_000_000_003, 79).events
    start, stop = one(events, TransactionStarted), one(events, TransactionStopped)
    async with open_database(settings) as db:
        await store_events(db, [events[-1]])  # the real id's session exists first (its stop)
        await store_events(db, events[:-1])  # then the provisional one, merged into it
        assert await receive_times(db) == [("79", received(start), received(stop))]


async def test_a_stop_resent_as_a_new_frame_keeps_the_first_receive_time(settings):
    events = session_16().events
    stop = one(events, TransactionStopped)
    start = one(events, TransactionStarted)
    # The charger sends its StopTransaction again an hour later, as a frame of its own (its
    # event differs, so it is stored as new), with the same stop time.
    resent = msgspec.structs.replace(stop, at=stop.at + 3600, reason="Other")
    resent = msgspec.structs.replace(resent, event_id=event_id(resent))
    assert resent.event_id != stop.event_id
    # A charger that corrects its stop time: the receive time is that of the corrected stop.
    corrected = msgspec.structs.replace(stop, at=stop.at + 7200, timestamp="2026-01-01T11:05:00Z")
    corrected = msgspec.structs.replace(corrected, event_id=event_id(corrected))
    async with open_database(settings) as db:
        await store_events(db, events)
        await store_events(db, [resent])
        assert await receive_times(db) == [("42", received(start), received(stop))]
        await store_events(db, [corrected])
        assert await receive_times(db) == [("42", received(start), received(corrected))]
        assert await db.fetchval("SELECT stopped_at FROM sessions") == datetime(
            2026, 1, 1, 11, 5, tzinfo=UTC
        )


async def test_a_start_resent_as_a_new_frame_keeps_the_first_receive_time(settings):
    events = session_201().events
    began = one(events, TransactionEvent, event_type="Started")
    ended = one(events, TransactionEvent, event_type="Ended")
    resent = msgspec.structs.replace(began, at=ended.at + 3600, trigger_reason="Authorized")
    resent = msgspec.structs.replace(resent, event_id=event_id(resent))
    assert resent.event_id != began.event_id
    async with open_database(settings) as db:
        await store_events(db, events)
        await store_events(db, [resent])
        assert await receive_times(db) == [("tx-9", received(began), received(ended))]
