"""What a quarter's close may do, on a real PostgreSQL: which quarters may close, reopening that
only reopens, link periods and mandates that keep the past where it was, referrals that lower a
fee, assessments frozen per close, charger clocks that disagree with the proxy's, and charging
events recorded from two sources counted once.

Figures by hand as in test_ere_close (2026: 1 kWh = 0.332694 ERE, €0.30 per ERE, VAT = fee ×
21/121, each figure rounded half up to the cent once).
"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from proxy.capture.events import TransactionIdAssigned
from proxy.capture.sessions import store_events
from proxy.cli.main import _parser
from proxy.ere.admin.accounting_cli import accounting_command
from proxy.ere.core.quarters import Quarter
from proxy.ere.jobs.close_requests import CloseRefused, reopen, request_close
from proxy.ere.jobs.worker import WorkerMetrics
from proxy.ingest.store import record_sessions
from proxy.store import open_database
from testkit.capture_feeds import offline_session
from testkit.ere_books import (
    LATER,
    Q3,
    Q4,
    add_session,
    config,
    ean,
    lines,
    money,
    run_jobs,
    seed,
)
from testkit.session_files import external

UTC = UTC
DEC_6 = datetime(2026, 12, 6, 12, tzinfo=UTC)


async def test_only_a_quarter_that_has_ended_and_had_its_grace_period_can_close(settings, tmp_path):
    cfg = config(settings, tmp_path)  # close_grace_days: 7 (the default)
    async with open_database(settings) as db, db.transaction() as conn:
        with pytest.raises(CloseRefused, match="2062Q3 has not ended yet"):
            await request_close(conn, Quarter.parse("2062Q3"), cfg.ere, DEC_6)
        with pytest.raises(CloseRefused, match="2026Q4 has not ended yet"):
            await request_close(conn, Q4, cfg.ere, DEC_6)
        # Q3 ended on 1 October 00:00 Dutch time; late data is awaited until 8 October.
        with pytest.raises(CloseRefused, match="grace period.*2026-10-08T00:00:00\\+02:00"):
            await request_close(conn, Q3, cfg.ere, datetime(2026, 10, 7, 21, 59, tzinfo=UTC))
        assert await request_close(conn, Q3, cfg.ere, datetime(2026, 10, 7, 22, tzinfo=UTC))
    async with open_database(settings) as db:
        assert await run_jobs(db, cfg) == ["close:done"] + ["close-shard:done"] * 3
        rules = await db.fetchval("SELECT rules::text FROM quarter_closes WHERE quarter = '2026Q3'")
        assert '"referral_step": "0.02"' in rules and '"max_power_margin_wh": "100"' in rules


async def test_the_command_refuses_the_future_and_the_current_quarter(settings, tmp_path):
    cfg = config(settings, tmp_path)
    current = Quarter.containing(datetime.now(UTC))
    for quarter in ("2062Q3", str(current)):
        err = io.StringIO()
        args = _parser().parse_args(["quarter", "close", quarter])
        assert await accounting_command(cfg, args, io.StringIO(), err) == 2
        assert f"{quarter} has not ended yet" in err.getvalue()
    async with open_database(settings) as db:
        assert await db.fetchval("SELECT count(*) FROM ere_jobs") == 0


async def test_a_store_stuck_on_a_future_close_is_freed_by_a_reopen_that_closes_nothing(
    settings, tmp_path
):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        # What an earlier version let through: 2062Q3 closed, so no real quarter could close.
        await db.execute(
            "INSERT INTO quarter_closes (quarter, revision, state, shards, closed_at)"
            " VALUES ('2062Q3', 1, 'closed', 1, now())"
        )
        async with db.transaction() as conn:
            with pytest.raises(CloseRefused, match="2062Q3 is already closed"):
                await request_close(conn, Q3, cfg.ere, DEC_6)
            with pytest.raises(CloseRefused, match="2026Q3 is not closed"):
                await reopen(conn, Q3, "ops", "nothing to reopen")
            assert await reopen(conn, Quarter.parse("2062Q3"), "ops", "closed by mistake") == 1
        assert await db.fetchval("SELECT count(*) FROM ere_jobs") == 0  # nothing queued
        assert await run_jobs(db, cfg) == []
        state = await db.fetchval("SELECT state FROM quarter_closes WHERE quarter = '2062Q3'")
        assert state == "reopened"
        async with db.transaction() as conn:
            assert await request_close(conn, Q3, cfg.ere, DEC_6)
        assert await run_jobs(db, cfg) == ["close:done"] + ["close-shard:done"] * 3


async def test_a_charger_moved_mid_quarter_keeps_its_past_with_the_first_customer(
    settings, tmp_path
):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        moved = datetime.fromisoformat("2026-08-15T00:00+02:00")
        await db.execute(
            "UPDATE charger_links SET valid_until = $1, ended_at = now(), ended_by = 'ops',"
            " end_reason = 'sold the house' WHERE identity = 'CP-A'",
            moved,
        )
        await db.execute(
            "INSERT INTO charger_links (identity, customer_id, max_power_w, valid_from)"
            " VALUES ('CP-A', 'B', 11000, $1)",
            moved,
        )
        await add_session(db, "CP-A", "a1", datetime(2026, 7, 3, 8, tzinfo=UTC), "42.37")
        await add_session(db, "CP-A", "a2", datetime(2026, 8, 20, 8, tzinfo=UTC), "10")
        async with db.transaction() as conn:
            await request_close(conn, Q3, cfg.ere, LATER)
        await run_jobs(db, cfg)
        expected_q3 = [
            ("A", "2026Q3", "regular", Decimal("42.37"), *money("14.10", "4.23", "0.85", "0.15", "3.38"), 1),
            # 10 kWh → 3.32694 → 3.33 ERE; 0.999 → 1.00; fee 0.20; VAT 0.0347 → 0.03
            ("B", "2026Q3", "regular", Decimal("10"), *money("3.33", "1.00", "0.20", "0.03", "0.80"), 1),
        ]  # fmt: skip
        assert await lines(db, "2026Q3") == expected_q3

        # Moved back in October: the next close re-attributes nothing of the closed quarter.
        back = datetime.fromisoformat("2026-10-10T00:00+02:00")
        await db.execute(
            "UPDATE charger_links SET valid_until = $1, ended_at = now(), ended_by = 'ops',"
            " end_reason = 'moved back' WHERE identity = 'CP-A' AND valid_until IS NULL",
            back,
        )
        await db.execute(
            "INSERT INTO charger_links (identity, customer_id, max_power_w, valid_from)"
            " VALUES ('CP-A', 'A', 11000, $1)",
            back,
        )
        await add_session(db, "CP-A", "a3", datetime(2026, 10, 12, 8, tzinfo=UTC), "5")
        async with db.transaction() as conn:
            await request_close(conn, Q4, cfg.ere, LATER)
        await run_jobs(db, cfg)
        assert await lines(db, "2026Q3") == expected_q3
        assert await lines(db, "2026Q4") == [
            ("A", "2026Q4", "regular", Decimal("5"), *money("1.66", "0.50", "0.10", "0.02", "0.40"), 1),
        ]  # fmt: skip


async def test_active_referrals_lower_the_referrers_fee_and_are_frozen_with_the_close(
    settings, tmp_path
):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await db.execute("INSERT INTO referral_codes (code, customer_id) VALUES ('AAAA2222', 'A')")
        for n, name in ((3, "R"), (4, "S")):
            await db.execute(
                "INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean,"
                " grid_operator, iban, referred_by) VALUES ($1, 'P1', $1, 'Laan 1', '1234 AB',"
                " 'Utrecht', $2, 'Stedin', 'NL91ABNA0417164300', 'AAAA2222')",
                name,
                ean(n),
            )
            await db.execute(
                "INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until,"
                " consent) VALUES ($1, 2026, $2, '2026-01-01', '2026-01-01', '2026-12-31', '{}')",
                ean(n),
                name,
            )
            await db.execute(
                "INSERT INTO charger_links (identity, customer_id, max_power_w, valid_from)"
                " VALUES ($1, $2, 11000, '2026-01-01T00:00+01:00')",
                f"CP-{name}",
                name,
            )
        for name in ("R", "S"):  # both referred in June, before Q3
            await recorded_on(db, name, datetime(2026, 6, 1, 10, tzinfo=UTC))
        await add_session(db, "CP-A", "a1", datetime(2026, 7, 3, 8, tzinfo=UTC), "42.37")
        await add_session(db, "CP-R", "r1", datetime(2026, 7, 5, 8, tzinfo=UTC), "10")
        # S charges too, but without MID evidence: not an active referral.
        await add_session(db, "CP-S", "s1", datetime(2026, 7, 6, 8, tzinfo=UTC), "10", "unknown")
        async with db.transaction() as conn:
            await request_close(conn, Q3, cfg.ere, LATER)
        await run_jobs(db, cfg)
        referrals = await db.fetch("SELECT referrer_id, referred_id FROM close_referrals")
        assert [tuple(r) for r in referrals] == [("A", "R")]
        row = await db.fetchrow(
            "SELECT fee_rate, fee, fee_vat, net, active_referrals FROM statement_lines"
            " WHERE customer_id = 'A'"
        )
        # 4.23 gross at 20 % less one referral × 2 % = 18 %: 0.7614 → 0.76; VAT 0.1319 → 0.13
        assert tuple(row) == (*money("0.18", "0.76", "0.13", "3.47"), 1)
        with pytest.raises(asyncpg.IntegrityConstraintViolationError):
            await db.execute("DELETE FROM close_referrals")


async def recorded_on(db, customer_id: str, at: datetime) -> None:
    """Date `customer_id`'s referral as if recorded at `at`: the database stamps its own clock,
    which a test cannot set back, so the stamp is rewritten with the triggers off."""
    async with db.transaction() as conn:
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE customers SET referred_at = $2 WHERE customer_id = $1", customer_id, at
        )


async def test_a_referral_recorded_after_the_quarter_ended_counts_from_the_next_quarter(
    settings, tmp_path
):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await db.execute("INSERT INTO referral_codes (code, customer_id) VALUES ('AAAA2222', 'A')")
        await db.execute(
            "INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean,"
            " grid_operator, iban) VALUES ('R', 'P1', 'R', 'Laan 1', '1234 AB', 'Utrecht', $1,"
            " 'Stedin', 'NL91ABNA0417164300')",
            ean(3),
        )
        await db.execute(
            "INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until,"
            " consent) VALUES ($1, 2026, 'R', '2026-01-01', '2026-01-01', '2026-12-31', '{}')",
            ean(3),
        )
        await db.execute(
            "INSERT INTO charger_links (identity, customer_id, max_power_w, valid_from)"
            " VALUES ('CP-R', 'R', 11000, '2026-01-01T00:00+01:00')"
        )
        for identity, month in (("CP-A", 7), ("CP-R", 7), ("CP-A", 11), ("CP-R", 11)):
            await add_session(
                db, identity, f"{identity}-{month}", datetime(2026, month, 3, 8, tzinfo=UTC), "10"
            )
        # R was referred by A in Q3's grace period, after Q3 had ended and before it closed.
        await db.execute("UPDATE customers SET referred_by = 'AAAA2222' WHERE customer_id = 'R'")
        await recorded_on(db, "R", datetime(2026, 10, 3, 9, tzinfo=UTC))
        async with db.transaction() as conn:
            await request_close(conn, Q3, cfg.ere, datetime(2026, 10, 10, 9, tzinfo=UTC))
        await run_jobs(db, cfg)
        async with db.transaction() as conn:
            await request_close(conn, Q4, cfg.ere, LATER)
        await run_jobs(db, cfg)
        referrals = await db.fetch("SELECT quarter, referrer_id, referred_id FROM close_referrals")
        assert [tuple(r) for r in referrals] == [("2026Q4", "A", "R")]
        rates = await db.fetch(
            "SELECT quarter, fee_rate, active_referrals FROM statement_lines"
            " WHERE customer_id = 'A' ORDER BY quarter"
        )
        assert [tuple(r) for r in rates] == [
            ("2026Q3", Decimal("0.20"), 0),
            ("2026Q4", Decimal("0.18"), 1),
        ]


async def test_each_close_keeps_the_assessments_it_decided_and_never_overwrites_them(
    settings, tmp_path
):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "a1", datetime(2026, 7, 3, 8, tzinfo=UTC), "42.37")
        await add_session(
            db, "CP-A", "a2", datetime(2026, 7, 9, 8, tzinfo=UTC), "7.5", "signed-unverified"
        )
        async with db.transaction() as conn:
            await request_close(conn, Q3, cfg.ere, LATER)
        await run_jobs(db, cfg)
        # The meter's key is confirmed later: a2 now counts, as an adjustment of Q3 in Q4.
        await db.execute(
            "UPDATE sessions SET meter_class = 'signed-verified' WHERE transaction_id = 'a2'"
        )
        async with db.transaction() as conn:
            await request_close(conn, Q4, cfg.ere, LATER)
        await run_jobs(db, cfg)
        history = await db.fetch(
            "SELECT s.transaction_id, a.quarter, a.revision, a.reason, a.kwh,"
            " a.inputs->>'meter_class' FROM session_assessments a JOIN sessions s USING (session_id)"
            " ORDER BY 1, 2"
        )
        assert [tuple(r) for r in history] == [
            ("a1", "2026Q3", 1, "eligible", Decimal("42.37"), "signed-verified"),
            ("a2", "2026Q3", 1, "no-mid-evidence", Decimal(0), "signed-unverified"),
            ("a2", "2026Q4", 1, "eligible", Decimal("7.5"), "signed-verified"),
        ]  # a1 did not change, so Q4 added nothing for it
        adjustment = await db.fetchrow(
            "SELECT kind, delivery_quarter, kwh FROM statement_lines WHERE quarter = '2026Q4'"
        )
        assert tuple(adjustment) == ("adjustment", "2026Q3", Decimal("7.5"))
        for statement in (
            "UPDATE session_assessments SET reason = 'eligible'",
            "DELETE FROM session_assessments",
        ):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="never changed"):
                await db.execute(statement)


async def test_a_charger_clock_far_from_the_arrival_of_its_frames_excludes_the_session(
    settings, tmp_path
):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        start = datetime(2026, 7, 3, 8, tzinfo=UTC)
        await add_session(db, "CP-A", "a1", start, "42.37")
        await add_session(db, "CP-A", "a2", start + timedelta(days=1), "10")
        # a1's frames arrived when stamped; a2's start arrived 40 days after its stamp.
        await db.execute(
            "UPDATE sessions SET start_received_at = started_at, stop_received_at = stopped_at"
            " WHERE transaction_id = 'a1'"
        )
        await db.execute(
            "UPDATE sessions SET start_received_at = started_at + interval '40 days'"
            " WHERE transaction_id = 'a2'"
        )
        async with db.transaction() as conn:
            await request_close(conn, Q3, cfg.ere, LATER)
        await run_jobs(db, cfg)
        verdicts = dict(
            await db.fetch(
                "SELECT s.transaction_id, a.reason FROM session_assessments a"
                " JOIN sessions s USING (session_id)"
            )
        )
        assert verdicts == {"a1": "eligible", "a2": "charger-clock"}
        assert await db.fetchval("SELECT sum(kwh) FROM statement_lines") == Decimal("42.37")


async def test_a_provisional_session_a_close_assessed_still_merges_into_its_real_one(settings):
    events = offline_session(2_000_000_005, 80).events
    renames = [e for e in events if isinstance(e, TransactionIdAssigned)]
    async with open_database(settings) as db:
        await store_events(db, [e for e in events if not isinstance(e, TransactionIdAssigned)])
        provisional = await db.fetchval(
            "SELECT session_id FROM sessions WHERE transaction_id = '2000000005'"
        )
        await db.execute(
            "INSERT INTO quarter_closes (quarter, revision, state, shards) VALUES ('2026Q3', 1, 'closed', 1)"
        )
        await db.execute(
            "INSERT INTO session_assessments (session_id, quarter, revision, eligibility, reason, detail, kwh)"
            " VALUES ($1, '2026Q3', 1, 'ineligible', 'not-linked', 'charger CP-OFF has no customer', 0)",
            provisional,
        )
        await store_events(db, renames)  # the real id arrives: the provisional row merges away
        assert await db.fetchval("SELECT array_agg(transaction_id) FROM sessions") == ["80"]
        kept = await db.fetchval(
            "SELECT reason FROM session_assessments WHERE session_id = $1", provisional
        )
        assert kept == "not-linked"


async def test_the_pipeline_gauges_count_each_sessions_latest_verdict_and_energy_in_joules(
    settings, tmp_path
):
    cfg = config(settings, tmp_path)
    metrics = WorkerMetrics(CollectorRegistry(), pipeline=True)
    async with open_database(settings) as db:
        await seed(db)
        await add_session(
            db, "CP-A", "a1", datetime(2026, 7, 9, 8, tzinfo=UTC), "7.5", "signed-unverified"
        )
        async with db.transaction() as conn:
            await request_close(conn, Q3, cfg.ere, LATER)
        await run_jobs(db, cfg)
        await db.execute("UPDATE sessions SET meter_class = 'signed-verified'")
        async with db.transaction() as conn:
            await request_close(conn, Q4, cfg.ere, LATER)
        await run_jobs(db, cfg)
        await metrics.refresh(db)
        stated = await db.fetch(
            "SELECT quarter, sum(kwh) FROM statement_lines GROUP BY 1 HAVING sum(kwh) > 0"
        )
    assert stated  # eligible energy is exported in joules
    for quarter, kwh in stated:
        energy = metrics.registry.get_sample_value(
            "ere_worker_pipeline_eligible_energy_joules", {"quarter": quarter}
        )
        assert energy == float(kwh * 3_600_000)
    gauge = "ere_worker_pipeline_session_assessments"
    assert (
        metrics.registry.get_sample_value(gauge, {"eligibility": "eligible", "reason": "eligible"})
        == 1
    )
    assert (
        metrics.registry.get_sample_value(
            gauge, {"eligibility": "ineligible", "reason": "no-mid-evidence"}
        )
        is None
    )  # Q3's verdict is history, not the session's state


async def test_asking_again_for_a_close_whose_job_failed_says_so_and_how_to_retry(
    settings, tmp_path
):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        async with db.transaction() as conn:
            assert await request_close(conn, Q3, cfg.ere)
        await db.execute(
            "UPDATE ere_jobs SET state = 'failed', last_error = 'MissingFactorError: no price for 2026Q3'"
        )
        job_id = await db.fetchval("SELECT job_id FROM ere_jobs")
    out = io.StringIO()
    args = _parser().parse_args(["quarter", "close", "2026Q3"])
    assert await accounting_command(cfg, args, out, io.StringIO()) == 1
    assert out.getvalue() == (
        "the close of 2026Q3 failed: MissingFactorError: no price for 2026Q3; once the cause is"
        f" fixed, `ere-proxy jobs requeue {job_id}`\n"
    )


async def test_a_charging_event_from_two_sources_counts_once(settings, tmp_path):
    """A partner's record of a session the proxy captured is stored as its duplicate and
    assessed `duplicate`; one supplied before its OCPP session arrived is found by the close."""
    cfg = config(settings, tmp_path)
    first, second = datetime(2026, 8, 3, 8, tzinfo=UTC), datetime(2026, 8, 10, 8, tzinfo=UTC)
    reported = {"meter_start_wh": None, "meter_stop_wh": None, "source": "csv"}
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "tx-1", first, "10")  # OCPP, 6 hours
        async with db.transaction() as tx:
            marked = await record_sessions(
                tx,
                [
                    external(
                        source_ref="r1",
                        started_at=first,
                        stopped_at=first + timedelta(hours=6),
                        energy_wh=Decimal(10_000),
                        **reported,
                    ),
                    # Supplied before the charger's own record of the event reaches the proxy.
                    external(
                        source_ref="r2",
                        started_at=second + timedelta(minutes=1),
                        stopped_at=second + timedelta(hours=6),
                        energy_wh=Decimal(5_010),
                        **reported,
                    ),
                ],
            )
        assert [i.outcome for i in marked.outcomes] == ["duplicate", "inserted"]
        await add_session(db, "CP-A", "tx-2", second, "5")
        assert await run_jobs(db, cfg) == []
        async with db.transaction() as conn:
            await request_close(conn, Q3, cfg.ere, LATER)
        assert "close:done" in await run_jobs(db, cfg)
        rows = await db.fetch(
            "SELECT coalesce(s.transaction_id, s.source_ref), a.eligibility, a.reason, a.detail,"
            " a.kwh, a.inputs->>'source', a.inputs->>'duplicate_of'"
            " FROM current_session_assessments a JOIN sessions s USING (session_id) ORDER BY 1"
        )
        ids = dict(
            await db.fetch("SELECT transaction_id, session_id FROM sessions WHERE source = 'ocpp'")
        )
        found = {row[0]: tuple(row[1:]) for row in rows}
        assert found["tx-1"][:2] == ("eligible", "eligible")
        assert found["tx-2"][:2] == ("eligible", "eligible")
        for ref, kept in (("r1", ids["tx-1"]), ("r2", ids["tx-2"])):
            eligibility, reason, detail, kwh, source, duplicate_of = found[ref]
            assert (eligibility, reason, kwh, source) == ("ineligible", "duplicate", 0, "csv")
            assert f"the same charging event as session {kept}" in detail
            assert duplicate_of == str(kept)
        # The statement line counts each event once: 10 + 5 kWh.
        (line,) = await lines(db, "2026Q3")
        assert line[0] == "A" and line[3] == Decimal(15) and line[-1] == 2
        counted = await db.fetch("SELECT session_id FROM statement_sessions ORDER BY 1")
        assert [r[0] for r in counted] == sorted(ids.values())
