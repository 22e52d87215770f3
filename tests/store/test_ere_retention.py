"""Retention on a real PostgreSQL: the database keeps evidence and written payouts; only the purge,
for data past [ere] retention_years, deletes, and it is logged."""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime

import msgspec
import pytest

from proxy.capture.orphans import close_orphans
from proxy.capture.sessions import store_events
from proxy.cli.db import run_purge
from proxy.cli.main import _parser
from proxy.ere.jobs.rev_export import raw_frames
from proxy.runtime.config import Config, DatabaseSettings, EreSettings
from proxy.store.db import open_database
from testkit.capture_feeds import captured_16, offline_session, session_16
from testkit.ere_books import Q2, Q3, add_session, close, config, pay, seed
from testkit.retained import refused, state_in_2021q1

TODAY = date(2026, 12, 6)


async def test_events_samples_and_sessions_are_kept_while_capture_goes_on(settings):
    async with open_database(settings) as db:
        await store_events(db, session_16().events)
        await refused(db, "UPDATE charger_events SET kind = 'x'")
        await refused(db, "DELETE FROM charger_events")
        await refused(db, "DELETE FROM meter_samples")
        await refused(db, "UPDATE meter_samples SET value = 0", "never changed")
        await refused(db, "DELETE FROM sessions")
        # What capture does stays allowed: orphaning, a replay, a provisional id merged.
        await db.execute("UPDATE sessions SET status = 'active', stopped_at = NULL")
        assert await close_orphans(db, 0.0) == 1
        await store_events(db, session_16().events[-2:])
        events = offline_session(2_000_000_005, 80).events
        await store_events(db, [events[-1]])
        await store_events(db, events[:-1])
        rows = await db.fetch("SELECT transaction_id, status FROM sessions ORDER BY 1")
        assert [tuple(r) for r in rows] == [("42", "orphaned"), ("80", "completed")]
        assert await db.fetchval("SELECT count(*) FROM charger_events") == 8


async def test_a_full_payout_still_runs_and_what_it_wrote_is_kept(settings, tmp_path):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "a1", datetime(2026, 5, 3, 8, tzinfo=UTC), "2")
        await add_session(db, "CP-B", "b1", datetime(2026, 5, 4, 8, tzinfo=UTC), "30")
        await close(db, cfg, Q2)
        assert await pay(db, cfg, Q2) == ["payout:done", "statements:done"]
        await add_session(db, "CP-A", "a2", datetime(2026, 8, 3, 8, tzinfo=UTC), "20")
        await close(db, cfg, Q3)
        assert await pay(db, cfg, Q3) == ["payout:done", "statements:done"]
        settled = await db.fetchval(
            "SELECT settled_by FROM payout_carry_overs WHERE run_id = '2026Q2'"
        )
        assert settled == "2026Q3"  # the carry-over of Q2 was settled by Q3's run

        written = "written payout run"
        await refused(db, "UPDATE payout_runs SET control_sum = 0", written)
        await refused(db, "DELETE FROM payout_runs", written)
        await refused(db, "UPDATE payout_transfers SET amount = 1", written)
        await refused(db, "DELETE FROM payout_transfers", written)
        await refused(db, "DELETE FROM payout_statements", written)
        await refused(db, "UPDATE payout_carry_overs SET amount = 0", "only ever settled")
        await refused(db, "UPDATE payout_carry_overs SET settled_by = NULL", "only ever settled")
        await refused(db, "DELETE FROM payout_carry_overs", "only ever settled")


def purge_args(*argv: str):
    return _parser().parse_args(["db", "purge", *argv])


async def run(settings: DatabaseSettings, *argv: str, years: int = 5) -> tuple[int, str, str]:
    cfg = Config(database=settings, ere=msgspec.convert({"retention_years": years}, EreSettings))
    out, err = io.StringIO(), io.StringIO()
    code = await run_purge(cfg, purge_args(*argv), stdout=out, stderr=err, today=TODAY)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("before", "years", "message"),
    [
        ("2021-12-07", 5, "inside the retention period"),
        ("2020-12-07", 6, "inside the retention period"),
        ("2021-13-01", 5, "not a date"),
        ("21-12-01", 5, "not a date"),
        ("2021-W01-1", 5, "not a date"),
        ("２０２１-01-01", 5, "not a date"),
        ("2021-01-01\n", 5, "not a date"),
        ("", 5, "not a date"),
        ("9" * 10000, 5, "not a date"),
    ],
)
async def test_a_purge_inside_the_retention_period_or_of_no_date_is_refused_in_one_line(
    settings, before, years, message
):
    code, out, err = await run(settings, "--before", before, years=years)
    assert code == 2 and out == ""
    assert err.startswith("ere-proxy: before: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err


async def test_the_purge_deletes_only_what_is_past_retention_and_logs_it(settings):
    old = captured_16("CP-OLD", 7, "2020-03-01", datetime(2020, 3, 1, 10, tzinfo=UTC))
    late = captured_16("CP-OLD", 8, "2020-12-30", datetime(2020, 12, 30, 10, tzinfo=UTC))
    new = captured_16("CP-NEW", 9, "2026-03-01", datetime(2026, 3, 1, 10, tzinfo=UTC))
    async with open_database(settings) as db:
        await store_events(db, old + late + new)
        # The late session was stated in 2021Q1, which ends after the cut-off: it stays.
        await state_in_2021q1(db, "8")
        # Stored today, as if captured then: last updated when their frames arrived.
        await db.execute("UPDATE sessions SET updated_at = stop_received_at")
        before = await db.fetchval("SELECT count(*) FROM charger_events")

    code, out, err = await run(settings, "--before", "2021-01-01", "--dry-run")
    assert code == 0, err
    expected = {"session_assessments": 0, "meter_samples": 1, "sessions": 1, "charger_events": 3}
    assert dict(line.split(": would delete ") for line in out.splitlines()) == {
        table: str(count) for table, count in expected.items()
    }
    async with open_database(settings) as db:
        assert await db.fetchval("SELECT count(*) FROM charger_events") == before
        assert await db.fetchval("SELECT count(*) FROM ere_audit_log") == 0

    code, out, err = await run(settings, "--before", "2021-01-01")
    assert code == 0, err
    assert "sessions: deleted 1" in out and "charger_events: deleted 3" in out
    async with open_database(settings) as db:
        kept = await db.fetch("SELECT identity, transaction_id FROM sessions ORDER BY 2")
        assert [tuple(r) for r in kept] == [("CP-OLD", "8"), ("CP-NEW", "9")]
        assert await db.fetchval("SELECT count(*) FROM charger_events") == before - 3
        actor, action, details = await db.fetchrow(
            "SELECT actor, action, details FROM ere_audit_log"
        )
        assert action == "purge" and actor
        assert json.loads(details) == {"before": "2021-01-01", "deleted": expected}
        await refused(db, "DELETE FROM charger_events")  # the purge's setting did not outlive it


async def test_the_purge_keeps_the_frames_of_a_kept_session_started_offline(settings):
    """A 1.6 transaction started offline: its start and readings are under the provisional id,
    then the assignment of the real id; the audit pack of the session holds all of them."""
    received = datetime(2020, 12, 30, 10, tzinfo=UTC).timestamp()

    def in_2020(feed) -> list:
        """The session's frames as received from 30 December 2020 on (ids depend on content)."""
        shift = received - feed.events[0].at
        return [msgspec.structs.replace(e, at=e.at + shift) for e in feed.events]

    kept = in_2020(offline_session(2_000_000_011, 81))
    purged = in_2020(offline_session(2_000_000_012, 82))  # same charger, nothing keeps it
    async with open_database(settings) as db:
        await store_events(db, kept + purged)
        # Stored today, as if captured then, by the charger's clock too.
        await db.execute(
            "UPDATE sessions SET started_at = started_at - interval '5 years 1 day',"
            " first_reading_at = first_reading_at - interval '5 years 1 day',"
            " last_reading_at = last_reading_at - interval '5 years 1 day',"
            " stopped_at = stopped_at - interval '5 years 1 day', updated_at = stop_received_at"
        )
        # Session 81 was stated in 2021Q1, which ends after the cut-off: it stays.
        await state_in_2021q1(db, "81")
        frames = await raw_frames(db, "CP-OFF", "81")
        assert [json.loads(f)["kind"] for f in frames] == [
            "transaction_started",
            "meter_values",
            "transaction_id_assigned",
            "transaction_stopped",
        ]

    code, out, err = await run(settings, "--before", "2021-01-01")
    assert code == 0, err
    assert "sessions: deleted 1" in out and "charger_events: deleted 4" in out, out
    async with open_database(settings) as db:
        rows = await db.fetch("SELECT identity, transaction_id FROM sessions")
        assert [tuple(r) for r in rows] == [("CP-OFF", "81")]
        assert await raw_frames(db, "CP-OFF", "81") == frames
        left = await db.fetchval(
            "SELECT array_agg(event_id::text ORDER BY received_at) FROM charger_events"
        )
        assert left == [e.event_id for e in kept]
