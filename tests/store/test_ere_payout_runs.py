"""Payout runs and closes that meet each other, on a real PostgreSQL: two payout runs at once,
two first closes at once, a payout requested just after midnight, and an invoice over lines of
both signs.

The races are made to happen, not hoped for: the test holds a lock that both jobs need further
on, waits until both jobs are waiting for a lock (PostgreSQL's `pg_locks`), and only then lets
go. Figures by hand as in `testkit.ere_books` (1 kWh = 0.332694 ERE, €0.30 per ERE).
"""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, date, datetime
from decimal import Decimal
from email.message import EmailMessage

import msgspec
import pytest
import trio

from proxy.ere.jobs.close_requests import request_close
from proxy.ere.jobs.payouts import PayoutRefused, request_payout
from proxy.ere.jobs.queue import run_one
from proxy.ere.jobs.worker import handlers
from proxy.store import open_database
from testkit.ere_books import EAN_A, LATER, Q2, Q3, Q4, add_session, close, config, pay, seed
from testkit.waiting import eventually

_WAITING = """
SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
WHERE NOT l.granted AND d.datname = current_database()
"""


async def while_both_wait(db, blocker: str, jobs) -> list:
    """Hold `blocker` (a LOCK statement) until two lock waits show, then let the `jobs` run to
    the end; each job's outcome (or the exception it raised), in order."""
    outcomes: list = [None] * len(jobs)

    async def run(index: int, job) -> None:
        try:
            outcomes[index] = await job()
        except Exception as error:  # the outcome under test
            outcomes[index] = error

    async def both_waiting() -> bool:
        return await db.fetchval(_WAITING) >= 2

    async with trio.open_nursery() as nursery:
        async with db.transaction() as holder:
            await holder.execute(blocker)
            for index, job in enumerate(jobs):
                nursery.start_soon(run, index, job)
            await eventually(both_waiting, limit=30)
        # The holder's transaction has ended, so the lock is free; the nursery awaits the jobs.
    return outcomes


async def test_two_payout_runs_at_once_pay_a_carry_over_once(settings, tmp_path):
    cfg = config(settings, tmp_path)
    jobs = handlers(cfg)
    async with open_database(settings) as db:
        await seed(db)
        # Q2: 1 kWh → 0.33 ERE → €0.10; fee 0.02; net 0.08, under the €1.00 minimum: carried over.
        await add_session(db, "CP-A", "a1", datetime(2026, 5, 4, 8, tzinfo=UTC), "1")
        await close(db, cfg, Q2)
        await pay(db, cfg, Q2)
        # Q3 and Q4: 20 kWh each → 6.65 ERE → €2.00 (1.995); fee 0.40; net 1.60.
        await add_session(db, "CP-A", "a2", datetime(2026, 8, 4, 8, tzinfo=UTC), "20")
        await add_session(db, "CP-A", "a3", datetime(2026, 11, 4, 8, tzinfo=UTC), "20")
        await close(db, cfg, Q3)
        await close(db, cfg, Q4)
        for quarter in (Q3, Q4):
            async with db.transaction() as conn:
                await request_payout(conn, quarter, cfg.ere, LATER)

        def payout_job():
            return run_one(db, jobs, retry_base=1.0, max_attempts=1)

        outcomes = await while_both_wait(
            db, "LOCK TABLE invoices IN EXCLUSIVE MODE", [payout_job, payout_job]
        )
        assert sorted(o.state for o in outcomes) == ["done", "done"], outcomes
        transfers = await db.fetch(
            "SELECT run_id, amount FROM payout_transfers WHERE payee_id = 'A' ORDER BY run_id"
        )
        paid = {run: amount for run, amount in transfers}
        # Whichever run went first paid the 0.08 with its 1.60; the other paid 1.60 alone.
        assert sorted(paid.values()) == [Decimal("1.60"), Decimal("1.68")]
        settled = await db.fetch(
            "SELECT settled_by FROM payout_carry_overs WHERE run_id = '2026Q2'"
        )
        assert [row[0] for row in settled] == [
            run for run, amount in paid.items() if amount == Decimal("1.68")
        ]


async def test_two_first_closes_at_once_close_one_quarter_and_refuse_the_other(settings, tmp_path):
    cfg = config(settings, tmp_path)
    jobs = handlers(cfg)
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "a1", datetime(2026, 5, 4, 8, tzinfo=UTC), "20")
        for quarter in (Q2, Q3):  # nothing closed yet, so both requests pass
            async with db.transaction() as conn:
                await request_close(conn, quarter, cfg.ere, LATER)

        def close_job():
            return run_one(db, jobs, retry_base=1.0, max_attempts=1)

        # Both `close` jobs read the referral codes after their checks: held, they meet there.
        outcomes = await while_both_wait(
            db, "LOCK TABLE referral_codes IN ACCESS EXCLUSIVE MODE", [close_job, close_job]
        )
        states = sorted((o.state, o.error or "") for o in outcomes)
        assert [state for state, _ in states] == ["done", "failed"], states
        assert "CloseRefused" in states[1][1], states  # whichever came second
        while (await run_one(db, jobs, retry_base=1.0, max_attempts=1)).job is not None:
            pass
        closes = await db.fetch("SELECT quarter, state FROM quarter_closes")
        assert [state for _, state in closes] == ["closed"]  # one close, and it finished
        kwh = await db.fetchval("SELECT sum(kwh) FROM statement_lines")
        assert kwh == Decimal("20")  # counted once


async def test_a_payout_requested_just_after_dutch_midnight_executes_that_dutch_day(
    settings, tmp_path
):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "a1", datetime(2026, 11, 4, 8, tzinfo=UTC), "20")
        await close(db, cfg, Q4)
        new_year = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)  # 00:30 on 1 January, Dutch time
        async with db.transaction() as conn:
            await request_payout(conn, Q4, cfg.ere, new_year)
        args = await db.fetchval(
            "SELECT args->>'execution_date' FROM ere_jobs WHERE kind = 'payout'"
        )
        assert date.fromisoformat(args) == date(2027, 1, 1)


async def test_an_invoice_over_lines_of_both_signs_carries_the_vat_of_its_total(settings, tmp_path):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await db.execute(
            "INSERT INTO quarter_closes (quarter, revision, state, shards, closed_at)"
            " VALUES ('2026Q4', 1, 'closed', 1, now())"
        )
        # A regular line and two corrections: fees 0.02 + 0.02 − 0.03 = 0.01, yet the lines'
        # VAT adds up to 0.00 + 0.00 − 0.01: more VAT than fee, and of the other sign.
        for delivered, kind, gross, fee, vat in (
            ("2026Q4", "regular", "0.10", "0.02", "0.00"),
            ("2026Q3", "adjustment", "0.10", "0.02", "0.00"),
            ("2026Q2", "adjustment", "-0.15", "-0.03", "-0.01"),
        ):
            await db.execute(
                "INSERT INTO statement_lines (quarter, revision, customer_id, ean, delivery_quarter, kind,"
                " kwh, ere, eur_per_ere, gross, fee_rate, fee, fee_vat, net, sessions)"
                " VALUES ('2026Q4', 1, 'A', $1, $2, $3, 0, 0, 0.30, $4, 0.20, $5, $6, $4::numeric - $5, 0)",
                EAN_A,
                delivered,
                kind,
                Decimal(gross),
                Decimal(fee),
                Decimal(vat),
            )
        assert await pay(db, cfg, Q4) == ["payout:done", "statements:done"]
        invoice = await db.fetchrow("SELECT fee, vat, fee_excl_vat FROM invoices")
        # 0.01 × 21/121 = 0.0017 → 0.00
        assert tuple(invoice) == (Decimal("0.01"), Decimal("0.00"), Decimal("0.01"))
        raw = (tmp_path / "statements" / "2026Q4-A.eml").read_bytes()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        body = message.get_body(("plain",))
        assert body is not None
        text = " ".join(body.get_content().split())
        assert "Vergoeding (incl. € 0,00 btw): € -0,01" in text  # as the invoice says
        assert "Van: ERE Provider BV, Stationsplein 1, 3511 ED Utrecht KvK: 12345678" in text


async def test_no_payout_without_the_provider_its_invoices_are_made_out_in(settings, tmp_path):
    cfg = config(settings, tmp_path)
    anonymous = msgspec.structs.replace(cfg.ere, provider_kvk="", provider_vat_number="")
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "a1", datetime(2026, 11, 4, 8, tzinfo=UTC), "20")
        await close(db, cfg, Q4)
        async with db.transaction() as conn:
            with pytest.raises(PayoutRefused) as refused:
                await request_payout(conn, Q4, anonymous, LATER)
        assert str(refused.value) == (
            "set ere.provider_kvk, ere.provider_vat_number to pay out: every statement invoices"
            " our fee in that name"
        )
