"""The partner API's statements and payouts over real HTTP, on books real closes and payout runs
wrote: figures computed by hand, the statement as JSON, HTML and PDF, a partner account's
settlement adding up to its transfer, direct transfers and carry-overs, pending quarters,
tenant isolation, scopes and hostile ids.

2026: 1 kWh = 0.505 × 183 × 3.6 / 1000 = 0.332694 ERE at €0.30; fee 20 % incl. VAT; VAT =
fee × 21/121; each figure rounded half up to 0.01 once.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from decimal import Decimal

from proxy.api.context import ApiContext
from proxy.api.cursors import encode_key_cursor
from proxy.api.key_store import create_key
from proxy.ere.core.quarters import Quarter
from proxy.store import open_database
from testkit.ere_books import Q2, Q3, add_session, close, config, ean, pay, seed
from testkit.partner_api import call, problem_of, serving_api
from testkit.pdf_text import pdf_text

Q4 = Quarter.parse("2026Q4")
EAN_C, EAN_D = ean(3), ean(4)
READ = ("statements:read", "payouts:read")


def figures(body: dict, *names: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(body[name]) for name in names)


async def books(settings, tmp_path):
    """P1 (direct): A paid in Q2 and Q3 (a correction of Q2 and a Q3 session), C (no account)
    carried over in Q3, A pending in Q4 (closed, not paid). P2 (partner account, English): B
    and D pooled in Q3. Returns the `[ere]` settings the workers used."""
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await db.execute(f"""
            INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean,
                                   grid_operator, iban, email) VALUES
                ('C', 'P1', 'Cor Bakker', 'Laan 3', '1111 AA', 'Delft', '{EAN_C}', 'Stedin', NULL,
                 'cor@example.nl'),
                ('D', 'P2', 'Dina Smit', 'Plein 4', '2222 BB', 'Gouda', '{EAN_D}', 'Stedin', NULL,
                 'dina@example.nl')""")
        for customer, code in (("C", EAN_C), ("D", EAN_D)):
            await db.execute(
                "INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until,"
                " consent) VALUES ($1, 2026, $2, '2026-01-01', '2026-01-01', '2026-12-31',"
                ' \'{"by": "customer", "method": "online-checkbox"}\')',
                code,
                customer,
            )
            await db.execute(
                "INSERT INTO charger_links (identity, customer_id, max_power_w, valid_from)"
                " VALUES ($1, $2, 11000, '2026-01-01T00:00+01:00')",
                f"CP-{customer}",
                customer,
            )
        await db.execute("UPDATE partners SET language = 'en' WHERE partner_id = 'P2'")
        await add_session(db, "CP-A", "a-may", datetime(2026, 5, 3, 8, tzinfo=UTC), "42.37")
        assert "close:done" in await close(db, cfg, Q2)
        assert "payout:done" in await pay(db, cfg, Q2)
        await add_session(db, "CP-A", "a-late", datetime(2026, 6, 20, 8, tzinfo=UTC), "40")
        await add_session(db, "CP-A", "a-aug", datetime(2026, 8, 5, 8, tzinfo=UTC), "2")
        await add_session(db, "CP-B", "b-aug", datetime(2026, 8, 20, 8, tzinfo=UTC), "30")
        await add_session(db, "CP-C", "c-aug", datetime(2026, 8, 6, 8, tzinfo=UTC), "30")
        await add_session(db, "CP-D", "d-aug", datetime(2026, 8, 4, 8, tzinfo=UTC), "10.5")
        assert "close:done" in await close(db, cfg, Q3)
        assert "statements:done" in await pay(db, cfg, Q3)
        await add_session(db, "CP-A", "a-oct", datetime(2026, 10, 5, 8, tzinfo=UTC), "10")
        assert "close:done" in await close(db, cfg, Q4)
    return cfg.ere


def context(ere) -> ApiContext:
    return dataclasses.replace(ApiContext.bare(), ere=ere)


async def keys(db) -> tuple[str, str, str]:
    p1 = (await create_key(db, "P1", READ)).key
    p2 = (await create_key(db, "P2", READ)).key
    blind = (await create_key(db, "P1", ("sessions:read", "customers:read"))).key
    return p1, p2, blind


async def session_id(db, transaction: str) -> int:
    return await db.fetchval(
        "SELECT session_id FROM sessions WHERE transaction_id = $1", transaction
    )


async def test_statements_list_their_figures_and_payout_status(settings, tmp_path):
    ere = await books(settings, tmp_path)
    async with serving_api(settings, context=context(ere)) as (db, port):
        p1, _, _ = await keys(db)
        reply = await call(port, "GET", "/v1/statements", key=p1)
        assert reply.status == 200, reply.body
        listed = reply.json()["data"]
        assert [s["id"] for s in listed] == ["2026Q4-A", "2026Q3-A", "2026Q3-C", "2026Q2-A"]
        q4, q3a, q3c, q2 = listed
        # Q2: 42.37 kWh → 14.0962… → 14.10 ERE; 4.23; fee 0.846 → 0.85; net 3.38.
        assert figures(q2, "kwh", "ere", "gross", "fee", "net") == (
            Decimal("42.37"),
            Decimal("14.10"),
            Decimal("4.23"),
            Decimal("0.85"),
            Decimal("3.38"),
        )
        assert q2["payout"]["status"] == "paid" and q2["payout"]["amount"] == "3.38"
        # Q3, A: the correction of Q2 (40 kWh: 13.30 ERE, 3.99, fee 0.80, net 3.19) and 2 kWh
        # of Q3 (0.67 ERE, 0.20, fee 0.04, net 0.16).
        assert figures(q3a, "kwh", "ere", "gross", "fee", "net") == (
            Decimal(42),
            Decimal("13.97"),
            Decimal("4.19"),
            Decimal("0.84"),
            Decimal("3.35"),
        )
        assert q3a["payout"]["status"] == "paid" and q3a["invoice_number"] is not None
        # C: 30 kWh → 9.98 ERE, 2.99, fee 0.60, net 2.39, no account: carried over.
        assert figures(q3c, "gross", "fee", "net") == (
            Decimal("2.99"),
            Decimal("0.60"),
            Decimal("2.39"),
        )
        carried = q3c["payout"]
        assert carried["status"] == "carried-over" and carried["amount"] == "0.00"
        assert carried["carried_over"]["amount"] == "2.39"
        assert carried["carried_over"]["reason"] == "no-account"
        assert carried["carried_over"]["settled_by"] is None and carried["transfer"] is None
        # Q4 is closed, not paid: 10 kWh → 3.33 ERE, 1.00, fee 0.20, net 0.80, pending.
        assert figures(q4, "ere", "gross", "net") == (
            Decimal("3.33"),
            Decimal("1.00"),
            Decimal("0.80"),
        )
        assert q4["payout"] == {
            "status": "pending",
            "run": None,
            "execution_date": None,
            "carried_in": None,
            "carried_over": None,
            "amount": None,
            "transfer": None,
        }
        assert q4["invoice_number"] is None

        seen, cursor = [], None
        while True:
            query = "/v1/statements?limit=1" + (f"&cursor={cursor}" if cursor else "")
            page = (await call(port, "GET", query, key=p1)).json()
            seen += [s["id"] for s in page["data"]]
            if (cursor := page["next_cursor"]) is None:
                break
        assert seen == [s["id"] for s in listed]
        for query, expected in (
            ("quarter=2026Q3", ["2026Q3-A", "2026Q3-C"]),
            ("customer_id=C", ["2026Q3-C"]),
            ("quarter=2026Q1", []),
            ("customer_id=B", []),
        ):
            page = (await call(port, "GET", f"/v1/statements?{query}", key=p1)).json()
            assert [s["id"] for s in page["data"]] == expected, query


async def test_a_statement_shows_every_line_its_invoice_and_its_transfer(settings, tmp_path):
    ere = await books(settings, tmp_path)
    async with serving_api(settings, context=context(ere)) as (db, port):
        p1, _, _ = await keys(db)
        late = await session_id(db, "a-late")
        reply = await call(port, "GET", "/v1/statements/2026Q3-A", key=p1)
        assert reply.status == 200, reply.body
        assert reply.headers["content-type"] == "application/json"
        statement = reply.json()
        assert statement["customer_name"] == "Anna de Vries" and statement["ean"] == ean(1)
        correction, regular = statement["lines"]
        assert (correction["kind"], correction["corrects"]) == ("adjustment", "2026Q2")
        assert figures(correction, "kwh", "ere", "eur_per_ere", "gross", "fee", "net") == (
            Decimal(40),
            Decimal("13.30"),
            Decimal("0.30"),
            Decimal("3.99"),
            Decimal("0.80"),
            Decimal("3.19"),
        )
        assert correction["corrected_sessions"] == [{"session_id": late, "kwh": "40.000"}]
        assert (regular["kind"], regular["corrects"], regular["delivery_quarter"]) == (
            "regular",
            None,
            "2026Q3",
        )
        assert Decimal(regular["fee_rate"]) == Decimal("0.20")
        assert regular["fee_rate_reason"] == "20 %" and regular["corrected_sessions"] == []
        assert [s["kwh"] for s in statement["sessions"]] == ["2.000"]
        # Invoice of the fee 0.84: VAT 0.84 × 21/121 = 0.1457… → 0.15, 0.69 without.
        totals, invoice = statement["totals"], statement["invoice"]
        assert figures(totals, "gross", "fee", "fee_vat", "net") == (
            Decimal("4.19"),
            Decimal("0.84"),
            Decimal("0.15"),
            Decimal("3.35"),
        )
        assert figures(invoice, "fee_excl_vat", "vat", "fee") == (
            Decimal("0.69"),
            Decimal("0.15"),
            Decimal("0.84"),
        )
        assert invoice["number"] == await db.fetchval(
            "SELECT invoice_number FROM invoices WHERE run_id = '2026Q3' AND customer_id = 'A'"
        )
        assert invoice["credit_note"] is False and invoice["provider"]["kvk"] == "12345678"
        payout = statement["payout"]
        assert (payout["status"], payout["run"], payout["amount"]) == ("paid", "2026Q3", "3.35")
        assert payout["carried_in"] == "0.00" and payout["carried_over"] is None
        transfer = payout["transfer"]
        assert (transfer["payee"], transfer["amount"]) == ("customer", "3.35")
        assert transfer["end_to_end_id"] == await db.fetchval(
            "SELECT end_to_end FROM payout_transfers WHERE run_id = '2026Q3' AND payee_id = 'A'"
        )
        assert transfer["remittance"] == "ERE payout 2026Q3"
        assert statement["documents"] == {
            "html": "/v1/statements/2026Q3-A?format=html",
            "pdf": "/v1/statements/2026Q3-A?format=pdf",
        }
        pending = (await call(port, "GET", "/v1/statements/2026Q4-A", key=p1)).json()
        assert pending["payout"]["status"] == "pending" and pending["documents"] is None
        assert pending["invoice"] is None and len(pending["lines"]) == 1


async def test_a_statement_downloads_as_the_e_mails_html_and_as_a_pdf(settings, tmp_path):
    ere = await books(settings, tmp_path)
    async with serving_api(settings, context=context(ere)) as (db, port):
        p1, p2, _ = await keys(db)
        html = await call(port, "GET", "/v1/statements/2026Q3-A?format=html", key=p1)
        assert html.status == 200, html.body
        assert html.headers["content-type"].startswith("text/html")
        assert 'filename="statement-2026Q3-A.html"' in html.headers["content-disposition"]
        page = html.body.decode()
        assert "Installer One" in page and "Anna de Vries" in page  # Dutch: the partner's
        assert "€ 3,35" in page and "€ 4,19" in page and "2026Q2" in page
        negotiated = await call(
            port, "GET", "/v1/statements/2026Q3-A", key=p1, headers={"accept": "text/html"}
        )
        assert negotiated.status == 200 and negotiated.body == html.body

        english = await call(port, "GET", "/v1/statements/2026Q3-B?format=html", key=p2)
        assert english.status == 200 and "Supplier Two" in english.body.decode()
        assert "€2.39" in english.body.decode()

        pdf = await call(
            port,
            "GET",
            "/v1/statements/2026Q3-A",
            key=p1,
            headers={"accept": "text/html;q=0.5, application/pdf"},
        )
        assert pdf.status == 200, pdf.body
        assert pdf.headers["content-type"] == "application/pdf"
        assert pdf.headers["content-disposition"] == 'attachment; filename="statement-2026Q3-A.pdf"'
        assert pdf.body.startswith(b"%PDF-") and pdf.body.rstrip().endswith(b"%%EOF")
        text = pdf_text(pdf.body)
        assert "Anna de Vries" in text and "€ 3,35" in text and "Installer One" in text
        again = await call(port, "GET", "/v1/statements/2026Q3-A?format=pdf", key=p1)
        assert again.body == pdf.body  # deterministic: dated by its payout run

        # `format` wins over Accept; an Accept it cannot meet gets JSON.
        wins = await call(
            port,
            "GET",
            "/v1/statements/2026Q3-A?format=json",
            key=p1,
            headers={"accept": "application/pdf"},
        )
        assert wins.headers["content-type"] == "application/json"
        odd = await call(
            port, "GET", "/v1/statements/2026Q3-A", key=p1, headers={"accept": "image/png;q=x"}
        )
        assert odd.status == 200 and odd.json()["id"] == "2026Q3-A"
        for fmt in ("html", "pdf"):
            problem = problem_of(
                await call(port, "GET", f"/v1/statements/2026Q4-A?format={fmt}", key=p1), 409
            )
            assert "payout run" in problem["detail"]


async def test_a_partner_account_settlement_adds_up_to_its_transfer(settings, tmp_path):
    ere = await books(settings, tmp_path)
    async with serving_api(settings, context=context(ere)) as (db, port):
        _, p2, _ = await keys(db)
        reply = await call(port, "GET", "/v1/payouts/2026Q3", key=p2)
        assert reply.status == 200, reply.body
        run = reply.json()
        assert run["payout_model"] == "partner-account" and run["transfers"] == []
        settlement = run["settlement"]
        amount, end_to_end = await db.fetchrow(
            "SELECT amount, end_to_end FROM payout_transfers WHERE payee_id = 'P2'"
        )
        # B: 30 kWh → net 2.39; D: 10.5 kWh → 3.493287 → 3.49 ERE, 1.05, fee 0.21, net 0.84.
        assert Decimal(settlement["amount"]) == amount == Decimal("3.23")
        assert settlement["end_to_end_id"] == end_to_end
        assert settlement["iban"] == "…4567" and settlement["remittance"] == "ERE payout 2026Q3"
        rows = {row["customer_id"]: row for row in settlement["customers"]}
        assert sorted(rows) == ["B", "D"]
        assert sum(Decimal(row["paid"]) for row in rows.values()) == amount
        assert figures(rows["D"], "kwh", "ere", "gross", "fee", "net", "paid") == (
            Decimal("10.5"),
            Decimal("3.49"),
            Decimal("1.05"),
            Decimal("0.21"),
            Decimal("0.84"),
            Decimal("0.84"),
        )
        # D's fee 0.21: VAT 0.21 × 21/121 = 0.0364… → 0.04.
        assert figures(rows["D"]["invoice"], "fee", "vat") == (Decimal("0.21"), Decimal("0.04"))
        assert rows["B"]["ean"] == ean(2) and rows["B"]["statement_id"] == "2026Q3-B"
        assert run["total_paid"] == "3.23" and run["carry_overs"] == []

        items = (await call(port, "GET", "/v1/payouts?quarter=2026Q3", key=p2)).json()["data"]
        assert [(i["customer_id"], i["status"], i["amount"]) for i in items] == [
            ("B", "paid", "2.39"),
            ("D", "paid", "0.84"),
        ]
        assert {i["transfer"]["end_to_end_id"] for i in items} == {end_to_end}
        assert all(i["transfer"]["payee"] == "partner" for i in items)


async def test_direct_payouts_list_each_transfer_and_carry_over(settings, tmp_path):
    ere = await books(settings, tmp_path)
    async with serving_api(settings, context=context(ere)) as (db, port):
        p1, p2, _ = await keys(db)
        reply = await call(port, "GET", "/v1/payouts/2026Q3", key=p1)
        assert reply.status == 200, reply.body
        run = reply.json()
        assert run["payout_model"] == "direct" and run["settlement"] is None
        (transfer,) = run["transfers"]
        assert (transfer["customer_id"], transfer["amount"], transfer["net"]) == (
            "A",
            "3.35",
            "3.35",
        )
        assert transfer["invoice"]["fee"] == "0.84"
        (carried,) = run["carry_overs"]
        assert (carried["customer_id"], carried["amount"], carried["reason"]) == (
            "C",
            "2.39",
            "no-account",
        )
        assert "bank account" in carried["detail"]
        assert (run["total_paid"], run["total_carried_over"]) == ("3.35", "2.39")
        assert run["execution_date"] == "2027-02-01"

        items = (await call(port, "GET", "/v1/payouts", key=p1)).json()["data"]
        assert [(i["statement_id"], i["status"]) for i in items] == [
            ("2026Q4-A", "pending"),
            ("2026Q3-A", "paid"),
            ("2026Q3-C", "carried-over"),
            ("2026Q2-A", "paid"),
        ]
        assert items[0]["net"] == "0.80" and items[0]["amount"] is None
        # Not paid yet, or no customer of theirs in it: no run for them.
        problem_of(await call(port, "GET", "/v1/payouts/2026Q4", key=p1), 404)
        problem_of(await call(port, "GET", "/v1/payouts/2026Q2", key=p2), 404)
        problem_of(await call(port, "GET", "/v1/payouts/2026Q1", key=p1), 404)


async def test_another_partners_statements_and_payouts_do_not_exist(settings, tmp_path):
    ere = await books(settings, tmp_path)
    async with serving_api(settings, context=context(ere)) as (db, port):
        p1, p2, blind = await keys(db)
        for path in ("/v1/statements/2026Q3-B", "/v1/statements/2026Q3-B?format=pdf"):
            problem_of(await call(port, "GET", path, key=p1), 404)
        for path in ("/v1/statements/2026Q3-A", "/v1/statements/2026Q3-C?format=html"):
            problem_of(await call(port, "GET", path, key=p2), 404)
        theirs = (await call(port, "GET", "/v1/statements?customer_id=B", key=p1)).json()
        assert theirs == {"data": [], "next_cursor": None}
        mine = (await call(port, "GET", "/v1/payouts", key=p2)).json()["data"]
        assert {i["customer_id"] for i in mine} == {"B", "D"}
        body = (await call(port, "GET", "/v1/payouts/2026Q3", key=p2)).body.decode()
        assert "Anna" not in body and "Cor Bakker" not in body

        paths = ("/v1/statements", "/v1/statements/2026Q3-A", "/v1/payouts", "/v1/payouts/2026Q3")
        for path in paths:
            scope = "statements:read" if "statements" in path else "payouts:read"
            assert scope in problem_of(await call(port, "GET", path, key=blind), 403)["detail"]
            problem_of(await call(port, "GET", path), 401)
        only_statements = (await create_key(db, "P1", ("statements:read",))).key
        problem_of(await call(port, "GET", "/v1/payouts", key=only_statements), 403)


async def test_malformed_and_oversized_ids_and_filters_are_the_callers_error(settings, tmp_path):
    ere = await books(settings, tmp_path)
    async with serving_api(settings, context=context(ere)) as (db, port):
        p1, _, _ = await keys(db)
        for statement in (
            "2026Q3",
            "2026Q3-",
            "2026Q5-A",
            "0999Q1-A",
            "2026q3-A",
            "2026Q3-A-",
            "2026Q3--A",
            "2026Q3-" + "A" * 65,
            "2026Q3-" + "A" * 200,
            "2026Q3-%00",
            "2026Q3-A%00",
            "2026Q3-%E2%80%AE",
            "..%2F2026Q3-A",
            "9" * 5000,
        ):
            problem_of(await call(port, "GET", f"/v1/statements/{statement}", key=p1), 404, 422)
        for quarter in ("2026Q5", "2026q3", "26Q3", "Q3", "2026Q3-A", "%00", "9" * 100):
            problem_of(await call(port, "GET", f"/v1/payouts/{quarter}", key=p1), 404, 422)
        for query in (
            "quarter=2026Q5",
            "quarter=" + "9" * 100,
            "quarter=%00",
            "customer_id=../A",
            "customer_id=" + "x" * 300,
            "customer_id=%00",
            "cursor=garbage",
            "cursor=" + "A" * 600,
            "cursor=" + encode_key_cursor("not-a-statement"),
            "cursor=" + encode_key_cursor("2026Q9-A"),
            "limit=0",
            "limit=101",
            "limit=1e9",
        ):
            for collection in ("/v1/statements", "/v1/payouts"):
                reply = await call(port, "GET", f"{collection}?{query}", key=p1)
                problem_of(reply, 400, 422)
        for fmt in ("docx", "", "PDF", "%00"):
            reply = await call(port, "GET", f"/v1/statements/2026Q3-A?format={fmt}", key=p1)
            problem_of(reply, 422)
        problem_of(await call(port, "POST", "/v1/statements", key=p1), 405)
        problem_of(await call(port, "DELETE", "/v1/payouts/2026Q3", key=p1), 405)
        # A long Accept is no error: at most the first ranges are weighed.
        accept = ", ".join(["image/png"] * 100 + ["application/pdf"])
        reply = await call(
            port, "GET", "/v1/statements/2026Q3-A", key=p1, headers={"accept": accept}
        )
        assert reply.status == 200 and reply.headers["content-type"] == "application/json"
