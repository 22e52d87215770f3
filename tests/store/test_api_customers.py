"""The partner API's customers over real HTTP: enrolment, reading back, tenant isolation,
scopes, authentication, idempotency and the audit log."""

from __future__ import annotations

import uuid

from proxy.api.app import OPENAPI_URL
from proxy.api.key_store import revoke_key
from proxy.api.keys import SCOPES, parse_key
from testkit.ere_admin import EAN_1, EAN_2, EAN_3, THIS_YEAR
from testkit.partner_api import call, enrolment, partner_with_key, serving_api

ALL = SCOPES
PROBLEM = "application/problem+json"


def idem() -> dict[str, str]:
    return {"idempotency-key": str(uuid.uuid4())}


def assert_problem(reply, status: int) -> dict:
    assert reply.status == status, reply.body
    assert reply.headers["content-type"] == PROBLEM
    problem = reply.json()
    assert problem["status"] == status
    assert {"type", "title", "status", "detail"} <= problem.keys()
    return problem


async def test_enrolment_records_customer_mandate_referral_code_and_audit(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        reply = await call(
            port, "POST", "/v1/customers", key=key, json_body=enrolment(EAN_1), headers=idem()
        )
        assert reply.status == 201, reply.body
        customer = reply.json()
        assert reply.headers["location"] == f"/v1/customers/{customer['id']}"
        assert customer["ean"] == EAN_1 and customer["postcode"] == "1234 AB"
        assert len(customer["referral_code"]) == 8
        (mandate,) = customer["mandates"]
        assert mandate["year"] == THIS_YEAR and mandate["channel"] == "api"

        key_id = parse_key(key)[0]
        stored = await db.fetchrow(
            "SELECT channel, actor, consent::text AS consent, consent_text_version FROM mandates "
            "WHERE customer_id = $1",
            customer["id"],
        )
        assert (stored["channel"], stored["actor"], stored["consent_text_version"]) == (
            "api",
            key_id,
            "v3",
        )
        assert '"online-checkbox"' in stored["consent"] and '"user-42"' in stored["consent"]
        audit = await db.fetchrow("SELECT * FROM api_audit_log")
        assert (audit["key_id"], audit["action"], audit["object_id"]) == (
            key_id,
            "customer.enrol",
            customer["id"],
        )
        assert audit["before"] is None and audit["after"] is not None

        got = await call(port, "GET", f"/v1/customers/{customer['id']}", key=key)
        assert got.status == 200 and got.json() == customer
        last_used = await db.fetchval(
            "SELECT last_used_at FROM partner_api_keys WHERE key_id = $1", key_id
        )
        assert last_used is not None


async def test_a_partner_never_sees_or_touches_another_partners_customers(settings):
    async with serving_api(settings) as (db, port):
        key_a = await partner_with_key(db, "alpha", ALL)
        key_b = await partner_with_key(db, "bravo", ALL)
        b = await call(
            port, "POST", "/v1/customers", key=key_b, json_body=enrolment(EAN_2), headers=idem()
        )
        assert b.status == 201
        b_id = b.json()["id"]

        listed = await call(port, "GET", "/v1/customers", key=key_a)
        assert listed.status == 200 and listed.json() == {"data": [], "next_cursor": None}
        problem = assert_problem(await call(port, "GET", f"/v1/customers/{b_id}", key=key_a), 404)
        assert b_id not in problem["detail"]

        taken = await call(
            port, "POST", "/v1/customers", key=key_a, json_body=enrolment(EAN_2), headers=idem()
        )
        problem = assert_problem(taken, 409)
        assert b_id not in taken.body.decode() and "bravo" not in taken.body.decode()
        assert problem["errors"][0]["field"] == "ean"
        # Bravo's customer is unchanged and still Bravo's alone.
        assert await db.fetchval("SELECT count(*) FROM customers") == 1
        assert await db.fetchval("SELECT partner_id FROM customers") == "bravo"
        mine = await call(port, "GET", "/v1/customers", key=key_b)
        assert [c["id"] for c in mine.json()["data"]] == [b_id]


async def test_pages_follow_the_cursor_in_enrolment_order(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        ids = []
        for ean in (EAN_1, EAN_2, EAN_3):
            reply = await call(
                port, "POST", "/v1/customers", key=key, json_body=enrolment(ean), headers=idem()
            )
            ids.append(reply.json()["id"])
        first = (await call(port, "GET", "/v1/customers?limit=2", key=key)).json()
        assert [c["id"] for c in first["data"]] == ids[:2]
        path = f"/v1/customers?limit=2&cursor={first['next_cursor']}"
        second = (await call(port, "GET", path, key=key)).json()
        assert [c["id"] for c in second["data"]] == ids[2:] and second["next_cursor"] is None
        for bad in ("limit=0", "limit=101", "limit=x", "cursor=garbage", "cursor=" + "A" * 600):
            reply = await call(port, "GET", f"/v1/customers?{bad}", key=key)
            assert reply.status in (400, 422) and reply.headers["content-type"] == PROBLEM


async def test_keys_are_checked_and_scoped(settings):
    # Nothing verified is remembered (see test_api_auth): the revocation shows at once.
    async with serving_api(settings, auth_cache_seconds=0) as (db, port):
        reader = await partner_with_key(db, "acme", ("customers:read",))
        for authorization in (
            None,
            "Bearer",
            "Basic abc",
            "Bearer ere_nonsense",
            "Bearer " + "x" * 5000,
        ):
            headers = {} if authorization is None else {"authorization": authorization}
            reply = await call(port, "GET", "/v1/customers", headers=headers)
            assert_problem(reply, 401)
            assert reply.headers["www-authenticate"].startswith("Bearer")
        key_id, secret = parse_key(reader)
        forged = f"ere_{key_id}_{'A' * len(secret)}"
        assert_problem(await call(port, "GET", "/v1/customers", key=forged), 401)

        assert (await call(port, "GET", "/v1/customers", key=reader)).status == 200
        denied = await call(
            port, "POST", "/v1/customers", key=reader, json_body=enrolment(EAN_1), headers=idem()
        )
        assert "customers:write" in assert_problem(denied, 403)["detail"]
        assert await db.fetchval("SELECT count(*) FROM customers") == 0

        await revoke_key(db, key_id)
        assert_problem(await call(port, "GET", "/v1/customers", key=reader), 401)


async def test_idempotency_key_replays_and_refuses_reuse(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        missing = await call(port, "POST", "/v1/customers", key=key, json_body=enrolment(EAN_1))
        assert assert_problem(missing, 400)["errors"][0]["field"] == "Idempotency-Key"
        body, headers = enrolment(EAN_1), idem()
        first = await call(port, "POST", "/v1/customers", key=key, json_body=body, headers=headers)
        again = await call(port, "POST", "/v1/customers", key=key, json_body=body, headers=headers)
        assert first.status == again.status == 201
        assert first.json() == again.json()
        assert first.headers["location"] == again.headers["location"]
        assert await db.fetchval("SELECT count(*) FROM customers") == 1
        assert await db.fetchval("SELECT count(*) FROM api_audit_log") == 1

        other = enrolment(EAN_2)
        reused = await call(
            port, "POST", "/v1/customers", key=key, json_body=other, headers=headers
        )
        assert_problem(reused, 409)
        assert await db.fetchval("SELECT count(*) FROM customers") == 1
        # A key belongs to its partner: another partner may use the same value for its own request.
        key_b = await partner_with_key(db, "bravo", ALL)
        theirs = await call(
            port, "POST", "/v1/customers", key=key_b, json_body=other, headers=headers
        )
        assert theirs.status == 201


async def test_a_direct_partners_customer_needs_an_iban_and_a_referral_code_must_exist(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", ALL, payout_model="direct")
        no_iban = await call(
            port, "POST", "/v1/customers", key=key, json_body=enrolment(EAN_1), headers=idem()
        )
        assert assert_problem(no_iban, 422)["errors"][0]["field"] == "iban"
        body = enrolment(EAN_1, iban="NL20 INGB 0001 2345 67", referral_code="7K3M-Q9XD")
        unknown = await call(port, "POST", "/v1/customers", key=key, json_body=body, headers=idem())
        assert assert_problem(unknown, 422)["errors"][0]["field"] == "referral_code"
        code = await db.fetchval("SELECT code FROM referral_codes WHERE partner_id = 'acme'")
        body = enrolment(EAN_1, iban="NL20 INGB 0001 2345 67", referral_code=code)
        ok = await call(port, "POST", "/v1/customers", key=key, json_body=body, headers=idem())
        assert ok.status == 201, ok.body
        assert ok.json()["iban"] == "NL20INGB0001234567" and ok.json()["referred_by"] == code
        assert await db.fetchval("SELECT count(*) FROM mandates") == 1


async def test_openapi_names_every_route_and_the_docs_page_loads(settings):
    async with serving_api(settings) as (_, port):
        reply = await call(port, "GET", OPENAPI_URL)
        assert reply.status == 200
        document = reply.json()
        assert document["openapi"].startswith("3.1")
        assert set(document["paths"]) == {
            "/v1/customers",
            "/v1/customers/{customer_id}",
            "/v1/customers/{customer_id}/energy",
            "/v1/customers/{customer_id}/end",
            "/v1/customers/{customer_id}/mandates",
            "/v1/chargers",
            "/v1/chargers/{identity}",
            "/v1/chargers/{identity}/links",
            "/v1/sessions",
            "/v1/sessions/{session_id}",
            "/v1/sessions/batch",
            "/v1/sessions/imports",
            "/v1/keys/current/rotate",
            "/v1/oauth/token",
            "/v1/webhooks",
            "/v1/webhooks/{webhook_id}",
            "/v1/webhooks/{webhook_id}/deliveries",
            "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
            "/v1/webhooks/{webhook_id}/ping",
            "/v1/statements",
            "/v1/statements/{statement_id}",
            "/v1/payouts",
            "/v1/payouts/{quarter}",
            "/v1/scans",
            "/v1/scans/{scan_id}",
        }
        assert set(document["paths"]["/v1/customers"]) == {"get", "post"}
        assert "bearer" in str(document["components"]["securitySchemes"]).lower()
        docs = await call(port, "GET", "/v1/docs")
        assert docs.status == 200 and b"openapi.json" in docs.body
