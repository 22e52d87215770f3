"""Statements (in the customer's language, with the partner's branding), invoices, partner
settlements, remittance texts and the execution date of payout runs, on a real PostgreSQL
through the job queue.

Figures are computed by hand (2026: 1 kWh = 0.505 × 183 × 3.6 / 1000 = 0.332694 ERE; price
€0.30 per ERE; fee 20 % incl. VAT, less referral discounts; VAT = fee × 21/121; each figure
rounded half up to 0.01 once).
"""

from __future__ import annotations

import csv
import email
import io
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import asyncpg
import msgspec
import pytest
import xmlschema

from proxy.ere.core.ean import check_digit
from proxy.ere.core.quarters import Quarter
from proxy.ere.jobs.close_requests import request_close
from proxy.ere.jobs.payouts import PayoutRefused, request_payout
from proxy.ere.jobs.queue import run_one
from proxy.ere.jobs.worker import handlers
from proxy.runtime.config import Config
from proxy.store import open_database
from testkit.ere_books import config

Q2, Q3 = Quarter.parse("2026Q2"), Quarter.parse("2026Q3")
TODAY = datetime(2026, 12, 6, 9, tzinfo=UTC)
PAID_AT = datetime(2026, 10, 20, 9, tzinfo=UTC)


def ean(n: int) -> str:
    body = f"8716871200000{n:04d}"
    return body + str(check_digit(body))


EAN_A, EAN_B, EAN_C, EAN_D = ean(1), ean(2), ean(3), ean(4)


async def seed(db) -> None:
    """A and C: direct (C without an account yet); B and D: pooled to partner P2."""
    await db.execute("""
        INSERT INTO partners (partner_id, name, kind, payout_model, iban, account_name) VALUES
            ('P1', 'Installer One', 'installer', 'direct', NULL, NULL),
            ('P2', 'Supplier Two', 'energy-supplier', 'partner-account', 'NL20INGB0001234567', 'Supplier Two BV')""")
    await db.execute(f"""
        INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean, grid_operator, iban,
                               email) VALUES
            ('A', 'P1', 'Anna de Vries', 'Kerkstraat 1', '1234 AB', 'Utrecht', '{EAN_A}', 'Stedin',
             'NL91ABNA0417164300', 'anna@example.nl'),
            ('B', 'P2', 'Bram Jansen', 'Dorpsweg 2', '5678 CD', 'Zwolle', '{EAN_B}', 'Enexis', NULL,
             'bram@example.nl'),
            ('C', 'P1', 'Cor Bakker', 'Laan 3', '1111 AA', 'Delft', '{EAN_C}', 'Stedin', NULL,
             'cor@example.nl'),
            ('D', 'P2', 'Dina Smit', 'Plein 4', '2222 BB', 'Gouda', '{EAN_D}', 'Stedin', NULL,
             'dina@example.nl')""")
    consent = '{"by": "customer", "method": "online-checkbox"}'
    for customer, code in (("A", EAN_A), ("B", EAN_B), ("C", EAN_C), ("D", EAN_D)):
        await db.execute(
            "INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until, consent)"
            " VALUES ($1, 2026, $2, '2026-01-01', '2026-01-01', '2026-12-31', $3)",
            code,
            customer,
            consent,
        )
        await db.execute(
            "INSERT INTO charger_links (identity, customer_id, max_power_w, valid_from)"
            " VALUES ($1, $2, 11000, $3)",
            f"CP-{customer}",
            customer,
            datetime(2026, 1, 1, tzinfo=UTC),
        )


async def add_session(db, identity: str, transaction: str, start: datetime, kwh: str) -> int:
    wh = Decimal(kwh) * 1000
    return await db.fetchval(
        """
        INSERT INTO sessions (identity, transaction_id, connector_id, started_at, stopped_at, meter_start_wh,
                              meter_stop_wh, status, meter_class)
        VALUES ($1, $2, 1, $3, $4, 1000000, $5, 'completed', 'signed-verified') RETURNING session_id""",
        identity,
        transaction,
        start,
        start + timedelta(hours=6),
        1000000 + wh,
    )


async def run_jobs(db, cfg: Config) -> list[str]:
    states = []
    jobs = handlers(cfg)
    while (outcome := await run_one(db, jobs, retry_base=1.0, max_attempts=1)).job is not None:
        states.append(f"{outcome.job.kind}:{outcome.state}")
    return states


async def close(db, cfg: Config, quarter: Quarter) -> None:
    """Close `quarter` as of TODAY."""
    async with db.transaction() as conn:
        await request_close(conn, quarter, cfg.ere, TODAY)
    assert set(await run_jobs(db, cfg)) == {"close:done", "close-shard:done"}


async def pay(db, cfg: Config, quarter: Quarter, **kwargs) -> list[str]:
    async with db.transaction() as conn:
        await request_payout(conn, quarter, cfg.ere, PAID_AT, **kwargs)
    return await run_jobs(db, cfg)


def message_of(tmp_path: Path, customer: str, quarter: Quarter) -> EmailMessage:
    path = tmp_path / "statements" / f"{quarter}-{customer}.eml"
    message = email.message_from_bytes(path.read_bytes(), policy=default_policy)
    assert isinstance(message, EmailMessage)
    return message


def statement_of(tmp_path: Path, customer: str, quarter: Quarter) -> str:
    body = message_of(tmp_path, customer, quarter).get_body(("plain",))
    assert body is not None
    return " ".join(body.get_content().split())  # one line: figures are checked, not layout


async def test_an_adjustment_line_shows_its_own_price_and_the_sessions_it_corrects(
    settings, tmp_path
):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "a1", datetime(2026, 5, 3, 8, tzinfo=UTC), "42.37")
        await close(db, cfg, Q2)
        late = await add_session(db, "CP-A", "a2", datetime(2026, 6, 20, 8, tzinfo=UTC), "40")
        await close(db, cfg, Q3)
        assert await pay(db, cfg, Q3) == ["payout:done", "statements:done"]
    text = statement_of(tmp_path, "A", Q3)
    # Q2 now 82.37 kWh → 27.4040… → 27.40 ERE, × 0.30 = 8.22; stated 14.10 ERE, 4.23:
    # the correction is 13.30 ERE, 3.99; fee 20 % = 0.798 → 0.80; VAT 0.80 × 21/121 = 0.1388 → 0.14.
    assert "€ 0,00 per ERE" not in text
    assert "correctie van 2026Q2" in text
    assert "40,000 kWh 13,30 ERE € 0,30 per ERE € 3,99 vergoeding 20% € -0,80 netto € 3,19" in text
    assert f"sessie {late}: +40,000 kWh" in text


@pytest.mark.parametrize(
    ("kept_rules", "shown", "not_shown"),
    [(True, "× 2%", "× 3%"), (False, "× 3%", "× 2%")],
    ids=["the-close-s-step", "a-close-that-kept-no-rules"],
)
async def test_the_fee_rate_is_explained_with_the_referral_step_its_close_applied(
    settings, tmp_path, kept_rules, shown, not_shown
):
    cfg = config(settings, tmp_path)  # referral_step 0.02 (the default)
    async with open_database(settings) as db:
        await seed(db)
        await db.execute("INSERT INTO referral_codes (code, customer_id) VALUES ('AAAA2222', 'A')")
        await db.execute("UPDATE customers SET referred_by = 'AAAA2222' WHERE customer_id = 'B'")
        # Referred in June: the database stamped today's date, which a test cannot set back.
        async with db.transaction() as conn:
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE customers SET referred_at = '2026-06-01T10:00Z' WHERE customer_id = 'B'"
            )
        await add_session(db, "CP-A", "a1", datetime(2026, 7, 3, 8, tzinfo=UTC), "42.37")
        await add_session(db, "CP-B", "b1", datetime(2026, 7, 5, 8, tzinfo=UTC), "10")
        await close(db, cfg, Q3)
        if not kept_rules:  # as closes before migration 011 were kept: the configured step it is
            await db.execute("UPDATE quarter_closes SET rules = '{}'")
        # The step is changed after the close; the close's rate and its reason stay as they were.
        changed = msgspec.structs.replace(
            cfg, ere=msgspec.structs.replace(cfg.ere, referral_step="0.03")
        )
        assert await pay(db, changed, Q3) == ["payout:done", "statements:done"]
    text = statement_of(tmp_path, "A", Q3)
    # 4.23 gross at 20 % less 1 referral × 2 % = 18 %: 0.7614 → 0.76, net 3.47
    assert (
        f"vergoeding 18% (20% min 1 actieve doorverwijzing {shown}, minimaal 10%) € -0,76 netto € 3,47"
        in text
    )
    assert not_shown not in text


async def test_customers_with_only_a_carry_over_get_a_statement(settings, tmp_path):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        # A: 2 kWh → 0.665388 → 0.67 ERE, 0.201 → 0.20; fee 0.04; net 0.16 (below the minimum)
        await add_session(db, "CP-A", "a1", datetime(2026, 5, 3, 8, tzinfo=UTC), "2")
        # C: 30 kWh → 9.98082 → 9.98 ERE, 2.994 → 2.99; fee 0.598 → 0.60; net 2.39 (no account)
        await add_session(db, "CP-C", "c1", datetime(2026, 5, 4, 8, tzinfo=UTC), "30")
        await close(db, cfg, Q2)
        await pay(db, cfg, Q2)
        await close(db, cfg, Q3)  # nothing for A or C in Q3
        await db.execute("UPDATE customers SET iban = 'NL91ABNA0417164300' WHERE customer_id = 'C'")
        assert await pay(db, cfg, Q3) == ["payout:done", "statements:done"]
        owed = await db.fetch(
            "SELECT customer_id, amount, reason FROM payout_carry_overs WHERE run_id = '2026Q3'"
        )
        assert [tuple(r) for r in owed] == [("A", Decimal("0.16"), "below-minimum")]
    a = statement_of(tmp_path, "A", Q3)
    assert "U hebt nog € 0,16 van ons tegoed" in a
    assert "minder dan het minimumbedrag voor uitbetaling" in a
    assert "Uitbetaald: € 0,00" in a
    c = statement_of(tmp_path, "C", Q3)
    assert "Overgebracht uit eerdere kwartalen: € 2,39" in c and "Uitbetaald: € 2,39" in c


async def test_a_pooled_transfer_comes_with_a_settlement_that_adds_up_to_it(settings, tmp_path):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        # B: 30 kWh → 9.98 ERE, 2.99; fee 20 % = 0.598 → 0.60; net 2.39
        await add_session(db, "CP-B", "b1", datetime(2026, 8, 3, 8, tzinfo=UTC), "30")
        # D: 10.5 kWh → 3.493287 → 3.49 ERE, 1.047 → 1.05; fee 0.21; net 0.84
        await add_session(db, "CP-D", "d1", datetime(2026, 8, 4, 8, tzinfo=UTC), "10.5")
        await close(db, cfg, Q2)
        await close(db, cfg, Q3)
        await pay(db, cfg, Q3)
        amount, end_to_end = await db.fetchrow(
            "SELECT amount, end_to_end FROM payout_transfers WHERE payee_id = 'P2'"
        )
    assert amount == Decimal("3.23")  # 2.39 + 0.84
    rows = list(
        csv.DictReader(io.StringIO((tmp_path / "payouts" / "settlement-2026Q3-P2.csv").read_text()))
    )
    assert [
        (r["customer"], r["ean"], r["kwh"], r["ere"], r["gross"], r["fee"], r["net"]) for r in rows
    ] == [
        ("B", EAN_B, "30", "9.98", "2.99", "0.60", "2.39"),
        ("D", EAN_D, "10.5", "3.49", "1.05", "0.21", "0.84"),
    ]
    assert sum(Decimal(r["paid"]) for r in rows) == amount
    assert all(r["run"] == "2026Q3" and r["end_to_end_id"] == end_to_end for r in rows)
    page = (tmp_path / "payouts" / "settlement-2026Q3-P2.html").read_text()
    assert end_to_end in page and "€3.23" in page and EAN_D in page


async def test_the_execution_date_can_be_set_and_is_checked(settings, tmp_path):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "a1", datetime(2026, 8, 3, 8, tzinfo=UTC), "42.37")
        await close(db, cfg, Q2)
        await close(db, cfg, Q3)
        async with db.transaction() as conn:
            for wrong, message in (
                (date(2026, 10, 19), "in the past"),
                (date(2027, 10, 21), "more than a year ahead"),  # a year after 2026-10-20
            ):
                with pytest.raises(PayoutRefused, match=message):
                    await request_payout(conn, Q3, cfg.ere, PAID_AT, execution_date=wrong)
        await pay(db, cfg, Q3, execution_date=date(2026, 10, 23))
        assert await db.fetchval("SELECT execution_date FROM payout_runs") == date(2026, 10, 23)
    schema = Path(__import__("sepaxml").__file__).parent / "schemas" / "pain.001.001.03.xsd"
    xml = (tmp_path / "payouts" / "payout-2026Q3.xml").read_bytes()
    info = xmlschema.XMLSchema(str(schema)).to_dict(xml)["CstmrCdtTrfInitn"]["PmtInf"]
    info = info[0] if isinstance(info, list) else info
    assert info["ReqdExctnDt"] == "2026-10-23"


@pytest.mark.parametrize(
    "value, problem",
    [
        ("2026-13-01", "not a date"),
        ("tomorrow", "not a date"),
        ("9" * 10_000, "not a date"),
        ("2000-01-01", "in the past"),
        ("2100-01-01", "more than a year ahead"),
    ],
)
async def test_payout_run_refuses_a_bad_execution_date_in_one_line(
    settings, tmp_path, value, problem
):
    from proxy.cli.main import _parser
    from proxy.ere.admin.accounting_cli import accounting_command

    cfg = config(settings, tmp_path)
    out, err = io.StringIO(), io.StringIO()
    argv = ["payout", "run", "2026Q3", "--execution-date", value]
    assert await accounting_command(cfg, _parser().parse_args(argv), out, err) == 2
    assert err.getvalue().startswith("ere-proxy: execution-date: ") and problem in err.getvalue()
    assert err.getvalue().count("\n") == 1 and len(err.getvalue()) < 300


async def test_every_fee_is_invoiced_once_from_a_gapless_series_even_when_the_run_is_retried(
    settings, tmp_path
):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        a1 = await add_session(db, "CP-A", "a1", datetime(2026, 5, 3, 8, tzinfo=UTC), "42.37")
        await add_session(db, "CP-B", "b1", datetime(2026, 8, 3, 8, tzinfo=UTC), "30")
        await close(db, cfg, Q2)
        assert await pay(db, cfg, Q2) == ["payout:done", "statements:done"]
        # a1 was read 30 kWh too high: Q2 is now 12.37 kWh → 4.1154… → 4.12 ERE, 1.236 → 1.24;
        # the correction is 4.12 − 14.10 = −9.98 ERE, 1.24 − 4.23 = −2.99; fee −0.598 → −0.60,
        # VAT −0.60 × 21/121 = −0.1041 → −0.10, net −2.39: a credit note.
        await db.execute(
            "UPDATE sessions SET meter_stop_wh = meter_stop_wh - 30000 WHERE session_id = $1", a1
        )
        await close(db, cfg, Q3)
        (tmp_path / "payouts").rename(tmp_path / "moved")
        (tmp_path / "payouts").write_text("not a directory")  # the first attempt cannot write
        assert await pay(db, cfg, Q3) == ["payout:failed"]
        assert await db.fetchval("SELECT count(*) FROM invoices WHERE run_id = '2026Q3'") == 0
        (tmp_path / "payouts").unlink()
        (tmp_path / "moved").rename(tmp_path / "payouts")
        await db.execute(
            "UPDATE ere_jobs SET state = 'queued', attempts = 0, run_after = now() WHERE state = 'failed'"
        )
        assert await run_jobs(db, cfg) == ["payout:done", "statements:done"]
        async with db.transaction() as conn:
            assert not await request_payout(conn, Q3, cfg.ere, PAID_AT)
        assert await run_jobs(db, cfg) == []
        invoices = [
            tuple(r)
            for r in await db.fetch(
                "SELECT invoice_number, run_id, customer_id, credit_note, fee_excl_vat, vat, fee"
                " FROM invoices ORDER BY invoice_number"
            )
        ]
        assert (
            await db.fetchval("SELECT count(*) FROM payout_statements WHERE run_id = '2026Q3'") == 2
        )
        for statement in (
            "UPDATE invoices SET fee = 1",
            "DELETE FROM invoices",
            "TRUNCATE invoices",
        ):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError, match="never changed"):
                await db.execute(statement)
    # Q2: A 42.37 kWh → fee 0.85, VAT 0.15. Q3: A's credit note; B 30 kWh: fee 0.60, VAT 0.10.
    assert invoices == [
        (
            "ERE-2026-000001",
            "2026Q2",
            "A",
            False,
            Decimal("0.70"),
            Decimal("0.15"),
            Decimal("0.85"),
        ),
        (
            "ERE-2026-000002",
            "2026Q3",
            "A",
            True,
            Decimal("-0.50"),
            Decimal("-0.10"),
            Decimal("-0.60"),
        ),
        (
            "ERE-2026-000003",
            "2026Q3",
            "B",
            False,
            Decimal("0.50"),
            Decimal("0.10"),
            Decimal("0.60"),
        ),
    ]
    a = statement_of(tmp_path, "A", Q3)
    assert "Creditnota ERE-2026-000002" in a and "ERE Provider BV" in a
    assert "KvK: 12345678" in a and "Btw-nummer: NL123456789B01" in a
    assert "Vergoeding excl. btw: € -0,50" in a and "Btw 21%: € -0,10" in a
    assert "Vergoeding incl. btw: € -0,60" in a
    b = statement_of(tmp_path, "B", Q3)
    assert "Factuur ERE-2026-000003" in b and "Factuurdatum: 20-10-2026" in b
    assert "Stationsplein 1, 3511 ED Utrecht" in b


async def test_statements_are_dutch_unless_the_customer_or_their_partner_chose_english(
    settings, tmp_path
):
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        # P1 is Dutch (the default), but A chose English; P2 chose English, but B chose Dutch.
        await db.execute("UPDATE customers SET language = 'en' WHERE customer_id = 'A'")
        await db.execute("UPDATE partners SET language = 'en' WHERE partner_id = 'P2'")
        await db.execute("UPDATE customers SET language = 'nl' WHERE customer_id = 'B'")
        await db.execute("UPDATE customers SET iban = 'NL44RABO0123456789' WHERE customer_id = 'C'")
        for identity, kwh in (("CP-A", "42.37"), ("CP-B", "30"), ("CP-C", "30"), ("CP-D", "10.5")):
            await add_session(db, identity, identity, datetime(2026, 8, 3, 8, tzinfo=UTC), kwh)
        await close(db, cfg, Q2)
        await close(db, cfg, Q3)
        assert await pay(db, cfg, Q3) == ["payout:done", "statements:done"]
    # A: 42.37 kWh → 14.10 ERE, 4.23; fee 20 % = 0.846 → 0.85 (VAT 0.15); net 3.38.
    a = statement_of(tmp_path, "A", Q3)
    assert "ERE payout statement, 2026Q3 (01 July 2026 – 30 September 2026)" in a
    assert "Dear Anna de Vries," in a and "2026-08-03 42.370" in a
    assert "Gross: €4.23 Fee (incl. €0.15 VAT): -€0.85 Net: €3.38" in a
    assert "Invoice ERE-2026-000001 for our fee" in a
    # the stdlib may fold an encoded subject with an extra space; compare words
    subject = " ".join(str(message_of(tmp_path, "A", Q3)["Subject"]).split())
    assert (
        subject == "Installer One: ERE payout statement 2026Q3 (01 July 2026 – 30 September 2026)"
    )
    # C, of the same Dutch partner, chose nothing: Dutch. 30 kWh → 9.98 ERE, 2.99; fee 0.60.
    c = statement_of(tmp_path, "C", Q3)
    assert "ERE-uitbetalingsoverzicht, 2026Q3 (01-07-2026 t/m 30-09-2026)" in c
    assert "Beste Cor Bakker," in c and "03-08-2026 30,000" in c
    assert "Bruto: € 2,99 Vergoeding (incl. € 0,10 btw): € -0,60 Netto: € 2,39" in c
    # B chose Dutch under an English partner; D follows the partner. D: 10.5 kWh → 1.05; 0.21.
    assert "Beste Bram Jansen," in statement_of(tmp_path, "B", Q3)
    d = statement_of(tmp_path, "D", Q3)
    assert "Dear Dina Smit," in d and "Gross: €1.05 Fee (incl. €0.04 VAT): -€0.21" in d
    html = message_of(tmp_path, "D", Q3).get_body(("html",))
    assert html is not None and '<html lang="en">' in html.get_content()


async def test_the_partner_s_branding_sends_its_statements_and_names_it_in_payouts(
    settings, tmp_path
):
    cfg = config(settings, tmp_path)
    branding = {
        "display_name": "Installer One",
        "sender_name": "Installer One Statements",
        "sender_address": "statements@installer-one.example",
        "intro_nl": "Hier is uw <overzicht>.",
        "closing_nl": "Met vriendelijke groet,\nInstaller One",
        "remittance_name": True,
    }
    async with open_database(settings) as db:
        await seed(db)
        await db.execute(
            "UPDATE partners SET branding = $1::jsonb WHERE partner_id = 'P1'",
            json.dumps(branding),
        )
        await add_session(db, "CP-A", "a1", datetime(2026, 8, 3, 8, tzinfo=UTC), "42.37")
        await add_session(db, "CP-B", "b1", datetime(2026, 8, 3, 8, tzinfo=UTC), "30")
        await close(db, cfg, Q2)
        await close(db, cfg, Q3)
        assert await pay(db, cfg, Q3) == ["payout:done", "statements:done"]
    message = message_of(tmp_path, "A", Q3)
    assert str(message["From"]) == "Installer One Statements <statements@installer-one.example>"
    assert message["Message-ID"] == "<2026Q3-A@installer-one.example>"
    a = statement_of(tmp_path, "A", Q3)
    assert "Beste Anna de Vries, Hier is uw <overzicht>. Uw laadsessies:" in a
    assert "Met vriendelijke groet, Installer One" in a
    html = message.get_body(("html",))
    assert html is not None and "Hier is uw &lt;overzicht&gt;." in html.get_content()
    # B's partner chose nothing: the provider's sender under the partner's name.
    assert str(message_of(tmp_path, "B", Q3)["From"]) == "Supplier Two <statements@localhost>"
    schema = Path(__import__("sepaxml").__file__).parent / "schemas" / "pain.001.001.03.xsd"
    xml = (tmp_path / "payouts" / "payout-2026Q3.xml").read_bytes()
    info = xmlschema.XMLSchema(str(schema)).to_dict(xml)["CstmrCdtTrfInitn"]["PmtInf"]
    info = info[0] if isinstance(info, list) else info
    remittances = {t["Cdtr"]["Nm"]: t["RmtInf"]["Ustrd"] for t in info["CdtTrfTxInf"]}
    # A is paid directly and P1 chose to be named; P2's pooled transfer is not to a customer.
    assert remittances == {
        "Anna de Vries": ["ERE payout 2026Q3 via Installer One"],
        "Supplier Two BV": ["ERE payout 2026Q3"],
    }
