"""Quarterly close, adjustments and payout through the job queue, on a real PostgreSQL.

Figures are computed by hand (2026: 1 kWh = 0.505 × 183 × 3.6 / 1000 = 0.332694 ERE; price
€0.30 per ERE; fee 20 % incl. VAT, VAT = fee × 21/121; rounding half up to 0.01). The closes
happen as if on 1 February 2027 (`LATER`), when every quarter of 2026 may be closed. The books
(customers A and B, chargers, sessions) are `testkit.ere_books`.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
import trio
import xmlschema

from proxy.ere.core.quarters import Quarter
from proxy.ere.jobs.close_requests import CloseRefused, reopen, request_close
from proxy.ere.jobs.payouts import PayoutRefused, request_payout
from proxy.store import open_database
from testkit.ere_books import (
    EAN_A,
    EAN_B,
    LATER,
    Q3,
    Q4,
    add_session,
    config,
    lines,
    money,
    run_jobs,
    seed,
)


async def test_a_quarter_closes_into_exact_statements_and_later_changes_become_adjustments(
    settings, tmp_path
):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "a1", datetime(2026, 7, 3, 8, tzinfo=UTC), "42.37")
        await add_session(
            db,
            "CP-A",
            "a2",
            datetime(2026, 7, 9, 8, tzinfo=UTC),
            "7.5",
            meter_class="signed-unverified",
        )
        await add_session(
            db, "CP-B", "b1", datetime(2026, 8, 1, 8, tzinfo=UTC), "12"
        )  # before B's mandate
        await add_session(db, "CP-B", "b2", datetime(2026, 8, 20, 8, tzinfo=UTC), "10")
        await add_session(db, "CP-B", "b3", datetime(2026, 9, 2, 8, tzinfo=UTC), "20")
        await add_session(
            db, "CP-X", "x1", datetime(2026, 9, 3, 8, tzinfo=UTC), "9"
        )  # a charger of nobody

        async with db.transaction() as conn:
            assert await request_close(conn, Q3, cfg.ere, LATER)
        assert await run_jobs(db, cfg) == ["close:done"] + ["close-shard:done"] * 3
        assert (
            await db.fetchval("SELECT state FROM quarter_closes WHERE quarter = '2026Q3'")
            == "closed"
        )
        assert await lines(db, "2026Q3") == [
            # 42.37 kWh → 14.0962… → 14.10 ERE; × 0.30 = 4.23; fee 20 % = 0.846 → 0.85; VAT 0.85 × 21/121 = 0.1475 → 0.15
            (
                "A",
                "2026Q3",
                "regular",
                Decimal("42.37"),
                *money("14.10", "4.23", "0.85", "0.15", "3.38"),
                1,
            ),
            # 30 kWh → 9.98082 → 9.98 ERE; × 0.30 = 2.994 → 2.99; fee 20 % = 0.598 → 0.60; VAT 0.1041 → 0.10
            (
                "B",
                "2026Q3",
                "regular",
                Decimal("30"),
                *money("9.98", "2.99", "0.60", "0.10", "2.39"),
                2,
            ),
        ]
        reasons = dict(
            await db.fetch(
                "SELECT s.transaction_id, a.reason FROM current_session_assessments a JOIN sessions s USING (session_id)"
            )
        )
        assert reasons == {
            "a1": "eligible",
            "a2": "no-mid-evidence",
            "b1": "no-valid-mandate",
            "b2": "eligible",
            "b3": "eligible",
            "x1": "not-linked",
        }

        # Closed is closed: a second close is refused, and so is a close of an earlier quarter.
        async with db.transaction() as conn:
            with pytest.raises(CloseRefused, match="already closed"):
                await request_close(conn, Q3, cfg.ere, LATER)
            with pytest.raises(CloseRefused, match="can no longer be closed"):
                await request_close(conn, Quarter.parse("2026Q2"), cfg.ere, LATER)

        # A session of July arrives late, and one of October: Q4 adjusts Q3 and never edits it.
        await add_session(db, "CP-A", "a3", datetime(2026, 9, 20, 8, tzinfo=UTC), "10")
        await add_session(db, "CP-A", "a4", datetime(2026, 10, 5, 8, tzinfo=UTC), "5")
        async with db.transaction() as conn:
            await request_close(conn, Q4, cfg.ere, LATER)
        assert await run_jobs(db, cfg) == ["close:done"] + ["close-shard:done"] * 3
        assert await lines(db, "2026Q3") == [
            (
                "A",
                "2026Q3",
                "regular",
                Decimal("42.37"),
                *money("14.10", "4.23", "0.85", "0.15", "3.38"),
                1,
            ),
            (
                "B",
                "2026Q3",
                "regular",
                Decimal("30"),
                *money("9.98", "2.99", "0.60", "0.10", "2.39"),
                2,
            ),
        ]
        assert await lines(db, "2026Q4") == [
            # Q3 now 52.37 kWh → 17.42 ERE, 5.23 EUR: the difference to what was stated (14.10, 4.23)
            (
                "A",
                "2026Q3",
                "adjustment",
                Decimal("10"),
                *money("3.32", "1.00", "0.20", "0.03", "0.80"),
                1,
            ),
            # 5 kWh → 1.66347 → 1.66 ERE; 0.498 → 0.50; fee 0.10; VAT 0.0174 → 0.02
            (
                "A",
                "2026Q4",
                "regular",
                Decimal("5"),
                *money("1.66", "0.50", "0.10", "0.02", "0.40"),
                1,
            ),
        ]


async def test_a_reopen_is_audited_and_refused_once_paid_out(settings, tmp_path):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "a1", datetime(2026, 7, 3, 8, tzinfo=UTC), "42.37")
        async with db.transaction() as conn:
            await request_close(conn, Q3, cfg.ere, LATER)
        await run_jobs(db, cfg)
        await add_session(db, "CP-A", "a2", datetime(2026, 7, 4, 8, tzinfo=UTC), "10")
        async with db.transaction() as conn:
            with pytest.raises(CloseRefused, match="needs a reason"):
                await reopen(conn, Q3, "ops", " ")
        async with db.transaction() as conn:
            assert await reopen(conn, Q3, "ops", "meter evidence arrived late") == 1
        assert await run_jobs(db, cfg) == []  # a reopen only reopens
        async with db.transaction() as conn:
            assert await request_close(conn, Q3, cfg.ere, LATER)
        await run_jobs(db, cfg)
        rows = await db.fetch("SELECT revision, state FROM quarter_closes ORDER BY revision")
        assert [tuple(r) for r in rows] == [(1, "reopened"), (2, "closed")]
        assert await db.fetchval(
            "SELECT sum(kwh) FROM statement_lines WHERE revision = 2"
        ) == Decimal("52.37")
        assert (
            await db.fetchval("SELECT count(*) FROM statement_lines WHERE revision = 1") == 1
        )  # kept as it was
        audit = await db.fetchrow("SELECT actor, action, subject, reason FROM ere_audit_log")
        assert tuple(audit) == ("ops", "reopen", "2026Q3", "meter evidence arrived late")
        for statement in ("UPDATE statement_lines SET net = 0", "DELETE FROM statement_sessions"):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="never changed"):
                await db.execute(statement)

        async with db.transaction() as conn:
            await request_payout(conn, Q3, cfg.ere, datetime(2026, 10, 2, 9, tzinfo=UTC))
        await run_jobs(db, cfg)
        async with db.transaction() as conn:
            with pytest.raises(CloseRefused, match="was paid out"):
                await reopen(conn, Q3, "ops", "again")


async def test_a_payout_run_pays_each_payee_once_with_a_valid_sepa_file_and_statements(
    settings, tmp_path
):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "a1", datetime(2026, 7, 3, 8, tzinfo=UTC), "42.37")
        await add_session(db, "CP-B", "b2", datetime(2026, 8, 20, 8, tzinfo=UTC), "10")
        await add_session(db, "CP-B", "b3", datetime(2026, 9, 2, 8, tzinfo=UTC), "20")
        async with db.transaction() as conn:
            with pytest.raises(PayoutRefused, match="not closed"):
                await request_payout(conn, Q3, cfg.ere, datetime(2026, 10, 2, 9, tzinfo=UTC))
            await request_close(conn, Q3, cfg.ere, LATER)
        await run_jobs(db, cfg)
        async with db.transaction() as conn:
            assert await request_payout(conn, Q3, cfg.ere, datetime(2026, 10, 2, 9, tzinfo=UTC))
        assert await run_jobs(db, cfg) == ["payout:done", "statements:done"]
        async with db.transaction() as conn:  # asking again changes nothing
            assert not await request_payout(conn, Q3, cfg.ere, datetime(2026, 10, 3, 9, tzinfo=UTC))
        assert await run_jobs(db, cfg) == []

        transfers = [
            tuple(r)
            for r in await db.fetch(
                "SELECT payee_kind, payee_id, amount FROM payout_transfers ORDER BY payee_kind, payee_id"
            )
        ]
        assert transfers == [("customer", "A", Decimal("3.38")), ("partner", "P2", Decimal("2.39"))]
        xml = (tmp_path / "payouts" / "payout-2026Q3.xml").read_bytes()
        schema = Path(__import__("sepaxml").__file__).parent / "schemas" / "pain.001.001.03.xsd"
        document = xmlschema.XMLSchema(str(schema)).to_dict(xml)
        header = document["CstmrCdtTrfInitn"]["GrpHdr"]
        assert (header["NbOfTxs"], Decimal(str(header["CtrlSum"]))) == ("2", Decimal("5.77"))
        mails = sorted(p.name for p in (tmp_path / "statements").iterdir())
        assert len(mails) == 2 and await db.fetchval("SELECT count(*) FROM payout_statements") == 2
        text = (tmp_path / "statements" / mails[0]).read_text()
        assert "2026Q3" in text


async def test_the_rev_export_books_each_ean_once_with_its_mandate_and_an_audit_pack(
    settings, tmp_path
):
    import io
    import json

    from proxy.cli.main import _parser
    from proxy.ere.admin.accounting_cli import accounting_command
    from proxy.ere.core.rev_booking import validate_rev_xml

    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "a1", datetime(2026, 7, 3, 8, tzinfo=UTC), "42.37")
        await add_session(db, "CP-B", "b2", datetime(2026, 8, 20, 8, tzinfo=UTC), "10")
        await add_session(db, "CP-B", "b3", datetime(2026, 9, 2, 8, tzinfo=UTC), "20")
        async with db.transaction() as conn:
            await request_close(conn, Q3, cfg.ere, LATER)
        await run_jobs(db, cfg)

    out, err = io.StringIO(), io.StringIO()
    # Q4 is still open: a draft (the final export is tested in test_ere_year_end.py)
    export = _parser().parse_args(
        ["rev", "export", "2026", "--draft", "--out", str(tmp_path / "rev")]
    )
    assert await accounting_command(cfg, export, out, err) == 0, err.getvalue()
    assert "2 EANs, 72.37 kWh" in out.getvalue()
    validate_rev_xml((tmp_path / "rev" / "rev-2026-DRAFT.xml").read_bytes())
    csv_lines = (tmp_path / "rev" / "rev-2026-DRAFT.csv").read_text().splitlines()
    assert len(csv_lines) == 4 and csv_lines[2].startswith(
        f"{EAN_A},42.37,2026-07-03,2026-07-03,Anna de Vries"
    )
    assert f"{EAN_B},30,2026-08-20,2026-09-02" in csv_lines[3]
    pack = json.loads((tmp_path / "rev" / "audit-2026-DRAFT" / f"{EAN_B}.json").read_text())
    assert pack["session_count"] == 2

    for argv, message in (
        (["rev", "export", "1999"], "out of range"),
        (["quarter", "close", "2026Q5"], "2026Q5"),
        (["payout", "run", "2026Q3x"], "2026Q3x"),
    ):
        err = io.StringIO()
        assert await accounting_command(cfg, _parser().parse_args(argv), io.StringIO(), err) == 2
        assert message in err.getvalue() and "Traceback" not in err.getvalue()


async def test_quarter_status_shows_every_quarter_or_the_one_asked_for(settings, tmp_path):
    import io
    import json

    from proxy.cli.main import _parser
    from proxy.ere.admin.accounting_cli import accounting_command

    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "a1", datetime(2026, 7, 3, 8, tzinfo=UTC), "42.37")
        await add_session(db, "CP-A", "a4", datetime(2026, 10, 5, 8, tzinfo=UTC), "5")
        for quarter in (Q3, Q4):
            async with db.transaction() as conn:
                await request_close(conn, quarter, cfg.ere, LATER)
            await run_jobs(db, cfg)

    async def status(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = await accounting_command(
            cfg, _parser().parse_args(["quarter", "status", *argv]), out, err
        )
        return code, out.getvalue(), err.getvalue()

    code, out, _ = await status("--json")
    assert code == 0
    assert [(r["quarter"], r["state"], r["lines"]) for r in json.loads(out)] == [
        ("2026Q3", "closed", 1),
        ("2026Q4", "closed", 1),
    ]
    code, out, _ = await status("2026Q4", "--json")
    assert code == 0
    assert [
        (r["quarter"], r["revision"], r["state"], Decimal(r["kwh"])) for r in json.loads(out)
    ] == [("2026Q4", 1, "closed", Decimal("5"))]
    code, out, _ = await status("2026Q3")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["quarter", "revision", "state"]
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["2026Q3"]
    assert await status("2025Q1") == (0, "(none)\n", "")  # never closed
    code, out, err = await status("2026Q5")
    assert code == 2 and "2026Q5" in err and out == ""


async def test_quarter_status_takes_a_quarter_on_the_command_line(database_dsn, tmp_path):
    """As an operator types it, in a process of its own (the quarter was once refused as an
    unrecognized argument)."""
    path = tmp_path / "proxy.toml"
    path.write_text(f'[database]\ndsn = "{database_dsn}"\n')

    async def quarter_status(*argv: str) -> subprocess.CompletedProcess[bytes]:
        command = [sys.executable, "-m", "proxy", "quarter", "status", *argv, "--config", str(path)]
        return await trio.run_process(
            command, capture_stdout=True, capture_stderr=True, check=False
        )

    result = await quarter_status("2026Q3")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"(none)\n", b"")
    result = await quarter_status("2026Q3", "--json")
    assert (result.returncode, result.stdout) == (0, b"[]\n")
    result = await quarter_status("2026Q5")
    assert (
        result.returncode == 2 and b"2026Q5" in result.stderr and b"Traceback" not in result.stderr
    )
