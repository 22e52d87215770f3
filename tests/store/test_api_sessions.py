"""The partner API's sessions and energy figures over real HTTP, on books a real close wrote:
eligibility, statement lines, stated and estimated ERE computed by hand, tenant isolation,
scopes and hostile filters."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from proxy.api.cursors import encode_key_cursor
from proxy.api.key_store import create_key
from proxy.api.keys import SCOPES
from proxy.store import open_database
from testkit.ere_books import Q2, add_session, close, config, seed
from testkit.partner_api import call, serving_api

PROBLEM = "application/problem+json"


def amounts(figures: dict, *names: str) -> tuple[Decimal, ...]:
    return tuple(Decimal(figures[name]) for name in names)


def problem_of(reply, *statuses) -> dict:
    assert reply.status in statuses, (reply.status, reply.body)
    assert reply.headers["content-type"] == PROBLEM
    problem = reply.json()
    assert {"type", "title", "status", "detail"} <= problem.keys()
    return problem


async def books(settings, tmp_path) -> None:
    """A: 10 kWh in May and 4.5 kWh in June (Q2, closed); in Q3 (open) 7 kWh assessed
    eligible, 2 kWh not assessed, 3 kWh assessed ineligible. B: 5 kWh in Q2 (no mandate yet)."""
    cfg = config(settings, tmp_path)
    async with open_database(settings) as db:
        await seed(db)
        await add_session(db, "CP-A", "a-may", datetime(2026, 5, 10, 8, tzinfo=UTC), "10")
        await add_session(db, "CP-A", "a-jun", datetime(2026, 6, 10, 8, tzinfo=UTC), "4.5")
        await add_session(db, "CP-B", "b-may", datetime(2026, 5, 11, 8, tzinfo=UTC), "5")
        assert "close:done" in await close(db, cfg, Q2)
        await add_session(db, "CP-A", "a-aug", datetime(2026, 8, 3, 8, tzinfo=UTC), "7")
        await add_session(db, "CP-A", "a-aug2", datetime(2026, 8, 20, 8, tzinfo=UTC), "2")
        await add_session(db, "CP-A", "a-sep", datetime(2026, 9, 1, 8, tzinfo=UTC), "3")
        for transaction, verdict, kwh in (("a-aug", "eligible", 7), ("a-sep", "ineligible", 0)):
            await db.execute(
                "INSERT INTO session_assessments (session_id, quarter, revision, eligibility, reason, "
                "detail, kwh, customer_id, ean) SELECT session_id, '2026Q3', 1, $2, 'test', 'by hand', "
                "$3, 'A', 'x' FROM sessions WHERE transaction_id = $1",
                transaction,
                verdict,
                kwh,
            )


async def keys(db) -> tuple[str, str, str]:
    p1 = (await create_key(db, "P1", SCOPES)).key
    p2 = (await create_key(db, "P2", SCOPES)).key
    blind = (await create_key(db, "P1", ("customers:read", "chargers:read"))).key
    return p1, p2, blind


async def session_id(db, transaction: str) -> int:
    return await db.fetchval(
        "SELECT session_id FROM sessions WHERE transaction_id = $1", transaction
    )


async def test_sessions_with_eligibility_quarter_and_statement_lines(settings, tmp_path):
    await books(settings, tmp_path)
    async with serving_api(settings) as (db, port):
        p1, _, _ = await keys(db)
        listed = await call(port, "GET", "/v1/sessions", key=p1)
        assert listed.status == 200, listed.body
        sessions = listed.json()["data"]
        assert [s["transaction_id"] for s in sessions] == [
            "a-sep",
            "a-aug2",
            "a-aug",
            "a-jun",
            "a-may",
        ]
        may = sessions[-1]
        assert may["charger"] == "CP-A" and may["customer_id"] == "A"
        assert may["energy_kwh"] == "10.000" and may["meter_class"] == "signed-verified"
        assert may["quarter"] == "2026Q2" and may["status"] == "completed"
        assert (
            may["eligibility"]["status"] == "eligible" and may["eligibility"]["quarter"] == "2026Q2"
        )
        (line,) = may["statement_lines"]
        assert (line["quarter"], line["close_state"], line["kind"], line["delivery_quarter"]) == (
            "2026Q2",
            "closed",
            "regular",
            "2026Q2",
        )
        assert line["kwh"] == "10.000"
        assert sessions[1]["eligibility"] is None and sessions[1]["statement_lines"] == []
        assert sessions[0]["eligibility"]["status"] == "ineligible"

        one = await call(port, "GET", f"/v1/sessions/{may['id']}", key=p1)
        assert one.status == 200 and one.json() == may

        page = (await call(port, "GET", "/v1/sessions?limit=2", key=p1)).json()
        rest = (
            await call(port, "GET", f"/v1/sessions?limit=10&cursor={page['next_cursor']}", key=p1)
        ).json()
        assert [s["id"] for s in page["data"] + rest["data"]] == [s["id"] for s in sessions]
        assert rest["next_cursor"] is None

        for query, expected in (
            ("customer=A", 5),
            ("customer=B", 0),
            ("charger=CP-A", 5),
            ("charger=CP-B", 0),
            ("from=2026-07-01T00:00:00%2B02:00", 3),
            ("to=2026-07-01T00:00:00%2B02:00", 2),
            ("from=2026-08-01T00:00:00Z&to=2026-09-01T00:00:00Z", 2),
            ("status=completed", 5),
            ("status=active", 0),
        ):
            reply = await call(port, "GET", f"/v1/sessions?{query}", key=p1)
            assert reply.status == 200 and len(reply.json()["data"]) == expected, (
                query,
                reply.body,
            )


async def test_a_periods_list_is_newest_end_first_and_its_cursor_is_its_own(settings, tmp_path):
    await books(settings, tmp_path)
    async with open_database(settings) as db:
        # Captured last, ended first: by id the newest, by end the oldest of the period.
        await add_session(db, "CP-A", "a-apr", datetime(2026, 4, 20, 8, tzinfo=UTC), "1.5")
    async with serving_api(settings) as (db, port):
        p1, _, _ = await keys(db)
        by_id = (await call(port, "GET", "/v1/sessions", key=p1)).json()["data"]
        assert by_id[0]["transaction_id"] == "a-apr"
        period = "from=2026-04-01T00:00:00%2B02:00&to=2026-10-01T00:00:00%2B02:00"
        expected = ["a-sep", "a-aug2", "a-aug", "a-jun", "a-may", "a-apr"]
        whole = (await call(port, "GET", f"/v1/sessions?{period}", key=p1)).json()
        assert [s["transaction_id"] for s in whole["data"]] == expected
        assert whole["next_cursor"] is None
        seen, cursor = [], None
        while True:
            more = f"&cursor={cursor}" if cursor else ""
            reply = await call(port, "GET", f"/v1/sessions?{period}&limit=4{more}", key=p1)
            assert reply.status == 200, reply.body
            seen += [s["transaction_id"] for s in reply.json()["data"]]
            cursor = reply.json()["next_cursor"]
            if cursor is None:
                break
        assert seen == expected
        # A cursor is good for the kind of list it came from only.
        first = (await call(port, "GET", f"/v1/sessions?{period}&limit=2", key=p1)).json()
        problem_of(
            await call(port, "GET", f"/v1/sessions?limit=2&cursor={first['next_cursor']}", key=p1),
            400,
        )
        plain = (await call(port, "GET", "/v1/sessions?limit=2", key=p1)).json()
        wrong = f"/v1/sessions?{period}&cursor={plain['next_cursor']}"
        problem_of(await call(port, "GET", wrong, key=p1), 400)


async def test_energy_is_stated_for_closed_quarters_and_estimated_for_open_ones(settings, tmp_path):
    await books(settings, tmp_path)
    async with serving_api(settings) as (db, port):
        p1, _, _ = await keys(db)
        reply = await call(port, "GET", "/v1/customers/A/energy?year=2026&period=quarter", key=p1)
        assert reply.status == 200, reply.body
        figures = {p["period"]: p for p in reply.json()["periods"]}
        assert list(figures) == ["2026Q1", "2026Q2", "2026Q3", "2026Q4"]
        q2, q3 = figures["2026Q2"], figures["2026Q3"]
        # 14.5 kWh × 0.332694 = 4.824063 → 4.82 ERE; × €0.30 = 1.446 → €1.45 (the statement line).
        assert q2["basis"] == "stated"
        assert amounts(q2, "kwh", "eligible_kwh") == amounts({"a": "14.5", "b": "14.5"}, "a", "b")
        assert (q2["ere"], q2["eur_per_ere"], q2["eur"]) == ("4.82", "0.30", "1.45")
        # 7 kWh eligible × 0.332694 = 2.328858 → 2.33 ERE; × €0.30 = 0.699 → €0.70.
        assert q3["basis"] == "estimated"
        assert amounts(q3, "kwh", "eligible_kwh", "unassessed_kwh") == (12, 7, 2)
        assert (q3["ere"], q3["eur"]) == ("2.33", "0.70")
        assert figures["2026Q1"]["basis"] == "estimated" and figures["2026Q1"]["ere"] == "0.00"

        months = await call(port, "GET", "/v1/customers/A/energy?year=2026&period=month", key=p1)
        by_month = {p["period"]: p for p in months.json()["periods"]}
        assert len(by_month) == 12
        # May: 10 kWh → 3.32694 → 3.33 ERE → 0.999 → €1.00; June: 4.5 kWh → 1.497123 → 1.50 → €0.45.
        assert (
            by_month["2026-05"]["basis"],
            by_month["2026-05"]["ere"],
            by_month["2026-05"]["eur"],
        ) == (
            "stated",
            "3.33",
            "1.00",
        )
        assert (by_month["2026-06"]["ere"], by_month["2026-06"]["eur"]) == ("1.50", "0.45")
        assert (
            by_month["2026-08"]["basis"],
            by_month["2026-08"]["ere"],
            by_month["2026-08"]["eur"],
        ) == (
            "estimated",
            "2.33",
            "0.70",
        )
        # No factors for 2027 yet: energy but no ERE or euros.
        later = await call(port, "GET", "/v1/customers/A/energy?year=2027", key=p1)
        assert later.status == 200 and later.json()["periods"][0]["ere"] is None


async def test_a_partner_never_sees_another_partners_sessions_or_energy(settings, tmp_path):
    await books(settings, tmp_path)
    async with serving_api(settings) as (db, port):
        p1, p2, _ = await keys(db)
        b_may = await session_id(db, "b-may")
        a_may = await session_id(db, "a-may")
        theirs = await call(port, "GET", "/v1/sessions", key=p2)
        assert [s["id"] for s in theirs.json()["data"]] == [b_may]
        assert theirs.json()["data"][0]["eligibility"]["status"] == "ineligible"
        problem_of(await call(port, "GET", f"/v1/sessions/{b_may}", key=p1), 404)
        problem_of(await call(port, "GET", f"/v1/sessions/{a_may}", key=p2), 404)
        mine = await call(port, "GET", "/v1/sessions?customer=B&charger=CP-B", key=p1)
        assert mine.json() == {"data": [], "next_cursor": None}
        problem_of(await call(port, "GET", "/v1/customers/B/energy?year=2026", key=p1), 404)
        problem_of(await call(port, "GET", "/v1/customers/A/energy?year=2026", key=p2), 404)
        problem_of(await call(port, "GET", "/v1/chargers/CP-A", key=p2), 404)
        assert [
            c["identity"] for c in (await call(port, "GET", "/v1/chargers", key=p1)).json()["data"]
        ] == ["CP-A"]


async def test_scopes_and_hostile_filters(settings, tmp_path):
    await books(settings, tmp_path)
    async with serving_api(settings) as (db, port):
        p1, _, blind = await keys(db)
        a_may = await session_id(db, "a-may")
        for path in ("/v1/sessions", f"/v1/sessions/{a_may}", "/v1/customers/A/energy?year=2026"):
            assert (
                "sessions:read"
                in problem_of(await call(port, "GET", path, key=blind), 403)["detail"]
            )
        for query in (
            "from=yesterday",
            "from=2026-01-01T00:00:00",
            "to=9999-01-01T00:00:00%2B00:00",
            "from=" + "1" * 100,
            "customer=" + "x" * 300,
            "customer=../A",
            "charger=a:b",
            "charger=%E2%80%AE",
            "status=bogus",
            "limit=0",
            "limit=1000",
            "limit=1e9",
            "cursor=garbage",
            "cursor=" + "A" * 600,
            "cursor=" + encode_key_cursor("x"),
            "cursor=" + encode_key_cursor("-5"),
            "cursor=" + encode_key_cursor("9" * 40),
        ):
            problem_of(await call(port, "GET", f"/v1/sessions?{query}", key=p1), 400, 422)
        for path in (
            "/v1/sessions/abc",
            "/v1/sessions/0",
            "/v1/sessions/-1",
            "/v1/sessions/" + "9" * 30,
        ):
            problem_of(await call(port, "GET", path, key=p1), 404, 422)
        for query in ("", "year=1999", "year=abc", "year=2026&period=week", "year=" + "9" * 50):
            problem_of(await call(port, "GET", f"/v1/customers/A/energy?{query}", key=p1), 422)
        problem_of(await call(port, "GET", "/v1/customers/%00/energy?year=2026", key=p1), 404, 422)
        problem_of(await call(port, "POST", "/v1/sessions", key=p1), 405)
        assert (await call(port, "GET", "/v1/sessions", key=p1)).status == 200
