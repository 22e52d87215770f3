"""The partner API's housekeeping on the embedded PostgreSQL: answers kept for Idempotency-Keys
past `idempotency_hours` and expired access tokens are deleted, in batches, by one process at a
time; what is still valid stays; a POST repeated after its key's answer is gone is a new one."""

from __future__ import annotations

import base64
import hashlib
import uuid
from urllib.parse import urlencode

import trio

from proxy.api.housekeeping import Purged, purge_once, run_housekeeping
from proxy.api.keys import SCOPES, parse_key
from testkit.ere_admin import EAN_1
from testkit.partner_api import call, enrolment, partner_with_key, serving_api

FORM = {"content-type": "application/x-www-form-urlencoded"}


async def token(port: int, key: str) -> str:
    key_id, secret = parse_key(key)
    basic = base64.b64encode(f"{key_id}:{secret}".encode()).decode()
    body = urlencode({"grant_type": "client_credentials"}).encode()
    reply = await call(
        port,
        "POST",
        "/v1/oauth/token",
        body=body,
        headers=FORM | {"authorization": f"Basic {basic}"},
    )
    assert reply.status == 200, reply.body
    return reply.json()["access_token"]


async def age(db, table: str, column: str, interval: str) -> None:
    """Every row of `table` as if `column` had been written `interval` earlier."""
    await db.execute(f"UPDATE {table} SET {column} = {column} - $1::text::interval", interval)


async def test_expired_answers_and_tokens_go_and_a_late_repeat_is_a_new_request(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES, payout_model="direct")
        headers = {"idempotency-key": str(uuid.uuid4())}
        body = enrolment(EAN_1, iban="NL20INGB0001234567")
        first = await call(port, "POST", "/v1/customers", key=key, json_body=body, headers=headers)
        assert first.status == 201
        old_token, new_token = await token(port, key), await token(port, key)
        await db.execute(
            "UPDATE api_access_tokens SET expires_at = now() - interval '1 second' "
            "WHERE token_sha256 = $1",
            hashlib.sha256(old_token.encode()).hexdigest(),
        )

        assert await purge_once(db, idempotency_hours=24) == Purged(0, 1)
        again = await call(port, "POST", "/v1/customers", key=key, json_body=body, headers=headers)
        assert (again.status, again.json()) == (201, first.json())  # kept: replayed
        alive = await call(port, "GET", "/v1/customers", key=new_token)
        expired = await call(port, "GET", "/v1/customers", key=old_token)
        assert (alive.status, expired.status) == (200, 401)
        assert await db.fetchval("SELECT count(*) FROM api_access_tokens") == 1

        await age(db, "api_idempotency", "created_at", "25 hours")
        assert await purge_once(db, idempotency_hours=24) == Purged(1, 0)
        assert await db.fetchval("SELECT count(*) FROM api_idempotency") == 0
        late = await call(port, "POST", "/v1/customers", key=key, json_body=body, headers=headers)
        assert late.status == 409  # processed anew: the EAN is enrolled already
        assert await db.fetchval("SELECT count(*) FROM customers") == 1


async def test_purges_in_batches_and_one_process_at_a_time(settings):
    async with serving_api(settings) as (db, _):
        await partner_with_key(db, "acme", ("customers:read",))
        await db.execute(
            "INSERT INTO api_idempotency (partner_id, idem_key, request_sha256, status, body, "
            "created_at) SELECT 'acme', 'k' || n, 'x', 201, '{}', now() - interval '2 days' "
            "FROM generate_series(1, 25) n"
        )
        await db.execute(
            "INSERT INTO api_idempotency (partner_id, idem_key, request_sha256, status, body) "
            "VALUES ('acme', 'fresh', 'x', 201, '{}')"
        )
        async with db.transaction() as tx:  # another api process in its round
            await tx.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('ere-proxy:api-housekeeping', 0))"
            )
            async with trio.open_nursery() as nursery:
                results = []

                async def other_round() -> None:
                    results.append(await purge_once(db, idempotency_hours=24, batch=10))

                nursery.start_soon(other_round)
        assert results == [None]
        assert await db.fetchval("SELECT count(*) FROM api_idempotency") == 26

        assert await purge_once(db, idempotency_hours=24, batch=10) == Purged(25, 0)
        assert await db.fetchval("SELECT idem_key FROM api_idempotency") == "fresh"


async def test_the_role_task_runs_a_round_at_once_and_stops_when_asked(settings):
    async with serving_api(settings) as (db, _):
        await partner_with_key(db, "acme", ("customers:read",))
        await db.execute(
            "INSERT INTO api_idempotency (partner_id, idem_key, request_sha256, status, body, "
            "created_at) VALUES ('acme', 'old', 'x', 201, '{}', now() - interval '8 days')"
        )
        stop = trio.Event()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_housekeeping, db, 168, stop)
                while await db.fetchval("SELECT count(*) FROM api_idempotency"):
                    await trio.sleep(0.01)  # the round runs in another task: poll its effect
                stop.set()  # and the task ends: the nursery closes
