"""The partner API's chargers over real HTTP: registration with one-time credentials, links
through the link-period rules, status, tenant isolation, scopes, idempotency, hostile input."""

from __future__ import annotations

from proxy.api.context import ApiContext
from proxy.api.keys import SCOPES
from proxy.ere.core.factors import load_factor_table
from proxy.routing.auth import verify_password
from testkit.ere_admin import EAN_1, EAN_2
from testkit.partner_api import call, enrolment, idem, partner_with_key, problem_of, serving_api

CONTEXT = ApiContext(
    "wss://proxy.example.com/ocpp", None, frozenset({"CP-FILE"}), load_factor_table()
)
UPSTREAM = "wss://csms.example.com/ocpp"


async def customer(port, key, ean) -> str:
    reply = await call(
        port, "POST", "/v1/customers", key=key, json_body=enrolment(ean), headers=idem()
    )
    assert reply.status == 201, reply.body
    return reply.json()["id"]


async def register(port, key, identity, **extra):
    body = {"identity": identity, "upstream": UPSTREAM} | extra
    return await call(port, "POST", "/v1/chargers", key=key, json_body=body, headers=idem())


async def link(port, key, identity, body, headers=None):
    path = f"/v1/chargers/{identity}/links"
    return await call(port, "POST", path, key=key, json_body=body, headers=headers or idem())


async def test_register_link_and_read_a_charger(settings):
    async with serving_api(settings, context=CONTEXT) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES)
        cus = await customer(port, key, EAN_1)
        reply = await register(port, key, "CP 1")
        assert reply.status == 201, reply.body
        shown = reply.json()
        assert shown["ocpp_url"] == "wss://proxy.example.com/ocpp/CP%201"
        assert shown["username"] == "CP 1" and len(shown["password"]) == 32
        stored = await db.fetchrow("SELECT auth, password_hash FROM chargers")
        assert stored["auth"] == "managed"
        assert verify_password(shown["password"], stored["password_hash"])
        assert shown["password"] not in (
            await db.fetchval("SELECT body::text FROM api_idempotency")
        )
        audit = await db.fetchval(
            "SELECT after::text FROM api_audit_log WHERE action = 'charger.register'"
        )
        assert shown["password"] not in audit

        linked = await link(port, key, "CP%201", {"customer_id": cus, "max_power_w": 11000})
        assert linked.status == 201, linked.body
        assert linked.json()["customer_id"] == cus and linked.json()["valid_until"] is None

        await db.execute(
            "INSERT INTO charger_boots (identity, vendor, model, firmware, meter_type, meter_serial, "
            "booted_at, meter_class) VALUES ('CP 1', 'Alfen', 'Eve', '6.1', 'DZG', 'M1', now(), 'declared')"
        )
        await db.execute(
            "INSERT INTO charger_events (event_id, identity, kind, received_at, body) VALUES "
            "(gen_random_uuid(), 'CP 1', 'boot', '2026-05-01T10:00:00Z', '{}')"
        )
        await db.execute(
            "INSERT INTO sessions (identity, transaction_id, connector_id, started_at, meter_start_wh, "
            "last_reading_wh) VALUES ('CP 1', 't1', 1, now(), 1000, 3500)"
        )
        got = await call(port, "GET", "/v1/chargers/CP%201", key=key)
        assert got.status == 200, got.body
        charger = got.json()
        assert charger["last_seen"].startswith("2026-05-01T10:00:00")
        assert charger["meter_class"] == "declared"
        assert (
            charger["last_boot"]["vendor"] == "Alfen" and charger["last_boot"]["firmware"] == "6.1"
        )
        assert charger["current_session"]["transaction_id"] == "t1"
        assert charger["current_session"]["energy_kwh"] == "2.500"
        assert charger["current_link"]["customer_id"] == cus
        assert charger["registration"]["ocpp_url"] == shown["ocpp_url"]
        listed = await call(port, "GET", "/v1/chargers", key=key)
        assert [c["identity"] for c in listed.json()["data"]] == ["CP 1"]

        # Moving to another of the partner's customers ends the open period at that instant.
        other = await customer(port, key, EAN_2)
        moved = await link(port, key, "CP%201", {"customer_id": other, "max_power_w": 7400})
        assert moved.status == 201, moved.body
        periods = await db.fetch(
            "SELECT customer_id, valid_until FROM charger_links ORDER BY valid_from"
        )
        assert [p["customer_id"] for p in periods] == [cus, other]
        assert periods[0]["valid_until"] is not None and periods[1]["valid_until"] is None
        again = await link(port, key, "CP%201", {"customer_id": other, "max_power_w": 7400})
        problem_of(again, 409)


async def test_pages_of_chargers(settings):
    async with serving_api(settings, context=CONTEXT) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES)
        for identity in ("CP-C", "CP-A", "CP-B"):
            assert (await register(port, key, identity)).status == 201
        first = (await call(port, "GET", "/v1/chargers?limit=2", key=key)).json()
        assert [c["identity"] for c in first["data"]] == ["CP-A", "CP-B"]
        second = await call(
            port, "GET", f"/v1/chargers?limit=2&cursor={first['next_cursor']}", key=key
        )
        assert [c["identity"] for c in second.json()["data"]] == ["CP-C"]
        assert second.json()["next_cursor"] is None


async def test_a_partner_never_sees_or_changes_another_partners_chargers(settings):
    async with serving_api(settings, context=CONTEXT) as (db, port):
        key_a = await partner_with_key(db, "alpha", SCOPES)
        key_b = await partner_with_key(db, "bravo", SCOPES)
        cus_a = await customer(port, key_a, EAN_1)
        cus_b = await customer(port, key_b, EAN_2)
        assert (await register(port, key_b, "CP-B")).status == 201
        assert (
            await link(port, key_b, "CP-B", {"customer_id": cus_b, "max_power_w": 11000})
        ).status == 201
        # An unregistered charger Bravo linked by hand (routed by a file or default route).
        assert (
            await link(port, key_b, "CP-B2", {"customer_id": cus_b, "max_power_w": 11000})
        ).status == 201

        assert (await call(port, "GET", "/v1/chargers", key=key_a)).json() == {
            "data": [],
            "next_cursor": None,
        }
        for identity in ("CP-B", "CP-B2", "CP-NONE"):
            problem = problem_of(
                await call(port, "GET", f"/v1/chargers/{identity}", key=key_a), 404
            )
            assert "bravo" not in str(problem) and cus_b not in str(problem)
        for identity in ("CP-B", "CP-B2", "CP-FILE"):
            taken = await register(port, key_a, identity)
            problem_of(taken, 409)
            assert b"bravo" not in taken.body and cus_b.encode() not in taken.body
        for identity in ("CP-B", "CP-B2"):
            taken = await link(port, key_a, identity, {"customer_id": cus_a, "max_power_w": 11000})
            problem_of(taken, 409)
            assert b"bravo" not in taken.body and cus_b.encode() not in taken.body
        # Alpha cannot link its charger to Bravo's customer: that customer does not exist for it.
        assert (await register(port, key_a, "CP-A")).status == 201
        wrong = await link(port, key_a, "CP-A", {"customer_id": cus_b, "max_power_w": 11000})
        assert problem_of(wrong, 422)["errors"][0]["field"] == "customer_id"
        # A charger Bravo's customer charged with before it was ever linked is not free either.
        await db.execute(
            "INSERT INTO charger_events (event_id, identity, kind, received_at, body) VALUES "
            "(gen_random_uuid(), 'CP-SEEN', 'boot', now(), '{}')"
        )
        problem_of(await register(port, key_a, "CP-SEEN"), 409)
        assert await db.fetchval("SELECT count(*) FROM chargers") == 2
        assert (
            await db.fetchval("SELECT count(*) FROM charger_links WHERE customer_id = $1", cus_a)
            == 0
        )
        mine = await call(port, "GET", "/v1/chargers", key=key_b)
        assert [c["identity"] for c in mine.json()["data"]] == ["CP-B", "CP-B2"]


async def test_scopes_idempotency_and_closed_quarters(settings):
    async with serving_api(settings, context=CONTEXT) as (db, port):
        reader = await partner_with_key(db, "acme", ("chargers:read", "customers:write"))
        denied = await register(port, reader, "CP-1")
        assert "chargers:write" in problem_of(denied, 403)["detail"]
        cus = await customer(port, reader, EAN_1)
        problem_of(await link(port, reader, "CP-1", {"customer_id": cus, "max_power_w": 1}), 403)
        writer = await partner_with_key(db, "acme2", ("chargers:write",))
        problem_of(await call(port, "GET", "/v1/chargers", key=writer), 403)
        problem_of(await call(port, "GET", "/v1/chargers/CP-1", key=writer), 403)

        key = await partner_with_key(db, "zulu", SCOPES)
        cus = await customer(port, key, EAN_2)
        body, headers = {"identity": "CP-Z", "upstream": UPSTREAM}, idem()
        first = await call(port, "POST", "/v1/chargers", key=key, json_body=body, headers=headers)
        again = await call(port, "POST", "/v1/chargers", key=key, json_body=body, headers=headers)
        assert first.status == again.status == 201
        assert again.json()["password"] is None and first.json()["password"]
        assert {k: v for k, v in first.json().items() if k != "password"} == {
            k: v for k, v in again.json().items() if k != "password"
        }
        other = body | {"upstream": "wss://other.example.com"}
        problem_of(
            await call(port, "POST", "/v1/chargers", key=key, json_body=other, headers=headers), 409
        )
        assert await db.fetchval("SELECT count(*) FROM chargers") == 1

        link_body, link_headers = (
            {"customer_id": cus, "max_power_w": 11000, "valid_from": "2026-05-01T00:00:00+02:00"},
            idem(),
        )
        one = await link(port, key, "CP-Z", link_body, link_headers)
        two = await link(port, key, "CP-Z", link_body, link_headers)
        assert one.status == two.status == 201 and one.json() == two.json()
        problem_of(
            await link(port, key, "CP-Z", link_body | {"max_power_w": 7000}, link_headers), 409
        )
        assert await db.fetchval("SELECT count(*) FROM charger_links") == 1

        # No link change inside a closed quarter, none while one is closing.
        await db.execute(
            "INSERT INTO quarter_closes (quarter, state, shards) VALUES ('2026Q2', 'closing', 1)"
        )
        closing = await link(port, key, "CP-Z", {"customer_id": cus, "max_power_w": 7000})
        assert problem_of(closing, 409)["type"].endswith("quarter-closing")
        await db.execute("UPDATE quarter_closes SET state = 'closed', closed_at = now()")
        inside = await link(
            port,
            key,
            "CP-Z",
            {"customer_id": cus, "max_power_w": 7000, "valid_from": "2026-06-01T00:00:00+02:00"},
        )
        assert problem_of(inside, 409)["type"].endswith("quarter-closed")
        assert await db.fetchval("SELECT count(*) FROM charger_links") == 1


async def test_hostile_charger_input(settings):
    async with serving_api(settings, context=CONTEXT) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES)
        cus = await customer(port, key, EAN_1)
        for fields, field in [
            ({"identity": "a:b"}, "identity"),
            ({"identity": "x" * 49}, "identity"),
            ({"identity": "CP\u202e1"}, "identity"),
            ({"identity": ""}, "identity"),
            ({"identity": 7}, "identity"),
            ({"upstream": "http://csms.example.com"}, "upstream"),
            ({"upstream": "wss://user:pw@csms.example.com"}, "upstream"),
            ({"upstream": "wss://csms.example.com:99999"}, "upstream"),
            ({"upstream": "x" * 5000}, "upstream"),
            ({"surprise": True}, "surprise"),
        ]:
            body = {"identity": "CP-1", "upstream": UPSTREAM} | fields
            reply = await call(
                port, "POST", "/v1/chargers", key=key, json_body=body, headers=idem()
            )
            problem = problem_of(reply, 422)
            assert field in [e["field"] for e in problem["errors"]], (fields, problem)
            assert b"pw@" not in reply.body
        # An upstream password needs the secret key, which this server does not have.
        problem_of(await register(port, key, "CP-1", upstream_password="secret"), 503)
        for bad in (
            {"customer_id": cus, "max_power_w": 0},
            {"customer_id": cus, "max_power_w": 10**9},
            {"customer_id": cus, "max_power_w": "11000"},
            {"customer_id": cus, "max_power_w": 11000, "valid_from": "yesterday"},
            {"customer_id": cus, "max_power_w": 11000, "valid_from": "2026-01-01T00:00:00"},
            {"customer_id": cus, "max_power_w": 11000, "valid_from": "9999-01-01T00:00:00+00:00"},
            {"customer_id": "../etc", "max_power_w": 11000},
            {"max_power_w": 11000},
        ):
            problem_of(await link(port, key, "CP-1", bad), 422)
        for identity in ("a%3Ab", "x" * 300, "%00", "%E2%80%AE"):
            problem_of(
                await link(port, key, identity, {"customer_id": cus, "max_power_w": 1}), 404, 422
            )
            problem_of(await call(port, "GET", f"/v1/chargers/{identity}", key=key), 404, 422)
        for cursor in ("garbage", "A" * 600, "WzEsIjIwMjYtMDEtMDFUMDA6MDA6MDArMDA6MDAiLCJ4Il0"):
            problem_of(await call(port, "GET", f"/v1/chargers?cursor={cursor}", key=key), 400, 422)
        problem_of(await call(port, "DELETE", "/v1/chargers/CP-1", key=key), 405)
        assert await db.fetchval("SELECT count(*) FROM chargers") == 0
        assert await db.fetchval("SELECT count(*) FROM charger_links") == 0
        assert (await call(port, "GET", "/v1/chargers", key=key)).status == 200
