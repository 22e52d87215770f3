"""`POST /v1/sessions/batch` and `POST /v1/sessions/imports` over real HTTP on a real PostgreSQL:
sessions stored all or none, every bad item or row named, idempotent, audited, scoped to the
partner's own chargers, and hostile bodies answered without a 5xx.

Books from testkit.ere_books: P1's customer A has charger CP-A, P2's customer B has CP-B.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from proxy.api.key_store import create_key
from proxy.api.keys import SCOPES
from testkit.ere_books import seed
from testkit.partner_api import call, idem, problem_of, serving_api
from testkit.session_files import evcc_export

T0 = datetime(2026, 5, 4, 18, tzinfo=UTC)


def item(n: int = 0, **fields: Any) -> dict[str, Any]:
    """The n-th of P1's sessions on CP-A, one a day: 7.5 kWh in two hours."""
    start = T0 + timedelta(days=n)
    body = {
        "id": f"p1-{n}",
        "charger": "CP-A",
        "started_at": start.isoformat(),
        "stopped_at": (start + timedelta(hours=2)).isoformat(),
        "energy_kwh": "7.5",
        "meter_start_kwh": f"{1000 + 7.5 * n}",
        "meter_stop_kwh": f"{1007.5 + 7.5 * n}",
    }
    return body | fields


async def books(db) -> tuple[str, str]:
    await seed(db)
    p1 = (await create_key(db, "P1", SCOPES)).key
    p2 = (await create_key(db, "P2", SCOPES)).key
    return p1, p2


async def push(port: int, key: str, *items: dict[str, Any], headers=None):
    return await call(
        port,
        "POST",
        "/v1/sessions/batch",
        key=key,
        json_body={"sessions": list(items)},
        headers=headers or idem(),
    )


async def test_a_batch_is_stored_once_and_shows_among_the_partners_sessions(settings):
    async with serving_api(settings) as (db, port):
        p1, _ = await books(db)
        headers = idem()
        first = await push(port, p1, item(0), item(1, transaction_id="t-1"), headers=headers)
        assert first.status == 201, first.body
        answer = first.json()
        assert (answer["inserted"], answer["duplicates"], answer["unchanged"]) == (2, 0, 0)
        assert [(r["index"], r["id"], r["outcome"]) for r in answer["results"]] == [
            (0, "p1-0", "inserted"),
            (1, "p1-1", "inserted"),
        ]
        replay = await push(port, p1, item(0), item(1, transaction_id="t-1"), headers=headers)
        assert (replay.status, replay.json()) == (201, answer)
        again = await push(port, p1, item(1, transaction_id="t-1"))
        assert again.status == 200 and again.json()["results"][0]["outcome"] == "unchanged"
        listed = (await call(port, "GET", "/v1/sessions", key=p1)).json()["data"]
        assert [(s["transaction_id"], s["energy_kwh"], s["energy_source"]) for s in listed] == [
            (None, "7.500", "reported"),
            (None, "7.500", "reported"),
        ]
        audit = await db.fetch(
            "SELECT action, object_type, after::text FROM api_audit_log WHERE partner_id = 'P1'"
        )
        assert [(r[0], r[1]) for r in audit] == [("sessions.push", "session_batch")] * 2
        assert json.loads(audit[0][2]) == {
            "inserted": 2,
            "duplicates": 0,
            "unchanged": 0,
            "sessions": 2,
        }


async def test_any_bad_item_refuses_the_batch_naming_every_one(settings):
    async with serving_api(settings) as (db, port):
        p1, _ = await books(db)
        reply = await push(
            port,
            p1,
            item(0),
            item(1, started_at="2026-05-05T18:00:00"),  # no offset
            item(2, energy_kwh="-1"),
            item(3, meter_stop_kwh="1020"),  # stop − start is not the energy
            item(4, charger="CP:4"),
            item(5, unknown="field"),
            item(6, energy_kwh="NaN"),
            item(7, stopped_at="2099-01-01T00:00:00Z", meter_start_kwh=None, meter_stop_kwh=None),
            "not an object",
        )
        problem = problem_of(reply, 422)
        fields = {e["field"] for e in problem["errors"]}
        assert {
            "sessions[1].started_at",
            "sessions[2].energy_kwh",
            "sessions[3].meter_stop_kwh",
            "sessions[4].charger",
            "sessions[5].unknown",
            "sessions[6].energy_kwh",
            "sessions[7].stopped_at",
            "sessions[8]",
        } == fields
        assert await db.fetchval("SELECT count(*) FROM sessions") == 0
        between = await push(
            port,
            p1,
            item(0),
            item(0),
            item(1, id="p1-0"),
            item(2, started_at=item(0)["started_at"]),
        )
        errors = {e["field"]: e["detail"] for e in problem_of(between, 422)["errors"]}
        assert errors == {
            "sessions[1].id": "repeats sessions[0]",
            "sessions[2].id": "has the same id as sessions[0], with other content",
            "sessions[3].started_at": "is the same charging event as sessions[0] (same charger, time and energy)",
        }
        assert await db.fetchval("SELECT count(*) FROM sessions") == 0


async def test_other_partners_chargers_and_changed_sessions_refuse_the_whole_batch(settings):
    async with serving_api(settings) as (db, port):
        p1, p2 = await books(db)
        theirs = await push(port, p1, item(0), item(1, charger="CP-B"))
        nobodys = await push(port, p1, item(0), item(1, charger="CP-NOBODY"))
        for reply in (theirs, nobodys):
            problem = problem_of(reply, 422)
            assert [e["field"] for e in problem["errors"]] == ["sessions[1].charger"]
        assert problem_of(theirs, 422)["errors"] == problem_of(nobodys, 422)["errors"]
        assert await db.fetchval("SELECT count(*) FROM sessions") == 0
        assert (await push(port, p1, item(0))).status == 201
        changed = await push(port, p1, item(1), item(0, energy_kwh="7.4", meter_stop_kwh=None))
        problem = problem_of(changed, 409)
        assert [e["field"] for e in problem["errors"]] == ["sessions[1].id"]
        assert await db.fetchval("SELECT count(*) FROM sessions") == 1
        # P2 may use the same ids for its own sessions; it never sees P1's.
        own = await push(port, p2, item(0, charger="CP-B"))
        assert own.status == 201, own.body
        listed = (await call(port, "GET", "/v1/sessions", key=p2)).json()["data"]
        assert [s["charger"] for s in listed] == ["CP-B"]


async def test_a_session_the_proxy_captured_makes_the_pushed_one_a_duplicate(settings):
    async with serving_api(settings) as (db, port):
        p1, _ = await books(db)
        ocpp = await db.fetchval(
            "INSERT INTO sessions (identity, transaction_id, connector_id, started_at, stopped_at,"
            " meter_start_wh, meter_stop_wh, status, meter_class) VALUES ('CP-A', '77', 1, $1, $2,"
            " 0, 7490, 'completed', 'declared') RETURNING session_id",
            T0,
            T0 + timedelta(hours=2),
        )
        reply = await push(port, p1, item(0))
        (result,) = reply.json()["results"]
        assert (reply.json()["duplicates"], result["outcome"], result["duplicate_of"]) == (
            1,
            "duplicate",
            ocpp,
        )


async def test_scopes_and_hostile_bodies(settings):
    async with serving_api(settings, max_body_bytes=1024 * 1024) as (db, port):
        p1, _ = await books(db)
        reader = (await create_key(db, "P1", ("sessions:read",))).key
        assert problem_of(await push(port, reader, item(0)), 403)["status"] == 403
        missing = await call(
            port, "POST", "/v1/sessions/batch", key=p1, json_body={"sessions": [item(0)]}
        )
        assert problem_of(missing, 400)["errors"][0]["field"] == "Idempotency-Key"
        for body in (
            {"sessions": []},
            {"sessions": [item(n) for n in range(1001)]},
            {"sessions": [item(0, id="a\u0000b")]},
            {"sessions": [item(0, id='=HYPERLINK("http://evil")', charger="=1+2")]},
            {"sessions": [item(0, energy_kwh="1e999999999")]},
            {"sessions": [item(0, energy_kwh=1e308)]},
            {"sessions": [item(0, started_at="0001-01-01T00:00:00+14:00")]},
            {"sessions": [item(0, signed_data="OCMF|" + "x" * 200_000)]},
            {"sessions": "all"},
            [],
        ):
            reply = await call(
                port, "POST", "/v1/sessions/batch", key=p1, json_body=body, headers=idem()
            )
            assert reply.status in (400, 413, 422), (reply.status, reply.body[:300])
        formula = await push(port, p1, item(0, id='=HYPERLINK("http://evil")'))
        assert formula.status == 201  # an id is data: stored and answered as given
        assert formula.json()["results"][0]["id"] == '=HYPERLINK("http://evil")'
        broken = await call(
            port,
            "POST",
            "/v1/sessions/batch",
            key=p1,
            body=b'{"sessions": [',
            headers=idem() | {"content-type": "application/json"},
        )
        assert problem_of(broken, 400)["title"] == "Malformed JSON"


async def csv_import(port: int, key: str, body: bytes, query: str, content_type="text/csv"):
    return await call(
        port,
        "POST",
        f"/v1/sessions/imports?{query}",
        key=key,
        body=body,
        headers=idem() | {"content-type": content_type},
    )


async def test_a_csv_file_imports_all_rows_or_reports_each_bad_one(settings):
    async with serving_api(settings, max_body_bytes=1024 * 1024) as (db, port):
        p1, _ = await books(db)
        export = evcc_export(300, loadpoints=("Garage", "Carport"))
        await db.execute(
            "INSERT INTO partner_charger_grants (identity, partner_id) VALUES ('CP-CARPORT', 'P1')"
        )
        query = "format=evcc&charger_map=Garage%3DCP-A&charger_map=Carport%3DCP-CARPORT"
        reply = await csv_import(port, p1, export, query)
        assert reply.status == 201, reply.body
        assert reply.json() == {"rows": 300, "inserted": 300, "duplicates": 0, "unchanged": 0}
        assert await db.fetchval("SELECT count(*) FROM sessions WHERE source = 'csv'") == 300
        again = await csv_import(port, p1, export, query)
        assert again.status == 200 and again.json()["unchanged"] == 300

        lines = export.decode().splitlines()
        lines[3] = lines[3].replace("7.5", "=1+2", 1)
        lines[7] = lines[7].replace("Garage", "Oprit")
        bad = await csv_import(port, p1, "\n".join(lines).encode(), query)
        errors = problem_of(bad, 422)["errors"]
        assert [e["field"] for e in errors] == [
            "line 4 'Energy (kWh)'",
            "line 8 'Charging point'",
        ], errors
        assert "'=1+2' is not a number" in errors[0]["detail"]
        assert await db.fetchval("SELECT count(*) FROM sessions WHERE source = 'csv'") == 300

        unmapped = await csv_import(port, p1, export, "format=evcc&charger_map=Garage%3DCP-A")
        assert len(problem_of(unmapped, 422)["errors"]) == 150
        theirs = await csv_import(port, p1, evcc_export(20), "format=evcc&charger=CP-B")
        refused = problem_of(theirs, 422)["errors"]
        assert [e["field"] for e in refused] == [f"line {n}" for n in range(2, 22)]
        assert refused[0]["detail"].startswith("charger: is not one of your chargers")
        assert await db.fetchval("SELECT count(*) FROM sessions WHERE identity = 'CP-B'") == 0
        for query_text, status in (
            ("format=xlsx", 422),
            ("format=evcc&timezone=Mars/Olympus", 422),
            ("format=evcc&timezone=..%2F..%2Fetc%2Fpasswd", 422),
            ("format=evcc&charger_map=Garage", 422),
            ("format=evcc&name=a%00b", 422),
            ("format=evcc&dst_fold=maybe", 422),
        ):
            assert (await csv_import(port, p1, export, query_text)).status == status, query_text
        wrong_type = await csv_import(port, p1, export, query, content_type="application/json")
        assert problem_of(wrong_type, 415)["status"] == 415
        header_only = await csv_import(port, p1, lines[0].encode(), query)
        assert problem_of(header_only, 422)["errors"][0]["field"] == "body"
        binary = await csv_import(port, p1, bytes(range(256)) * 10, query)
        assert binary.status == 422


async def test_a_file_over_the_body_cap_is_413(settings):
    async with serving_api(settings, max_body_bytes=4096) as (db, port):
        p1, _ = await books(db)
        reply = await csv_import(port, p1, evcc_export(200), "format=evcc&charger=CP-A")
        assert problem_of(reply, 413)["status"] == 413
        assert await db.fetchval("SELECT count(*) FROM sessions") == 0
