"""The partner API's ways in, over real HTTP: key rotation (by the API and by the command) with
its grace period, OAuth2 client credentials and their access tokens, the rate limits (per key,
and failed authentications per address), and hostile token requests.

Expiry is driven by the database's clock: where an hour would pass, the test moves the stored
expiry into the past instead. The rate limits refill slowly enough that no refill happens during
a test, so nothing here waits. Tests that look at a credential's end right after it ends serve
with `auth_cache_seconds = 0` (`NO_CACHE`): nothing verified is remembered; one test shows the
end arriving within the cache's time.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any
from urllib.parse import urlencode

import trio

from proxy.api.key_store import create_key, revoke_key
from proxy.api.keys import SCOPES, parse_key
from testkit.ere_admin import EAN_1, Admin, partner_args
from testkit.partner_api import call, enrolment, partner_with_key, serving_api

PROBLEM = "application/problem+json"
ROTATE = "/v1/keys/current/rotate"
TOKEN = "/v1/oauth/token"
FORM = {"content-type": "application/x-www-form-urlencoded"}
# No refill within a test: every refusal below is the burst spent, not a race with the clock.
SLOW = 0.001
# Every request looks its credential up: a revocation or expiry shows at the next request.
NO_CACHE: dict[str, Any] = {"auth_cache_seconds": 0}


def idem() -> dict[str, str]:
    return {"idempotency-key": str(uuid.uuid4())}


def basic(key: str) -> dict[str, str]:
    key_id, secret = parse_key(key)
    return {"authorization": "Basic " + base64.b64encode(f"{key_id}:{secret}".encode()).decode()}


def assert_problem(reply, status: int) -> dict:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["content-type"] == PROBLEM
    return reply.json()


def assert_oauth_error(reply, status: int, error: str) -> None:
    assert (reply.status, reply.headers["content-type"]) == (status, "application/json"), (
        reply.status,
        reply.body,
    )
    body = reply.json()
    assert body["error"] == error, body
    assert isinstance(body["error_description"], str)
    assert reply.headers["cache-control"] == "no-store"
    if status == 401:
        assert reply.headers["www-authenticate"].startswith("Basic")


async def token_for(port: int, key: str, **form: str):
    body = urlencode({"grant_type": "client_credentials"} | form).encode()
    return await call(port, "POST", TOKEN, body=body, headers=FORM | basic(key))


async def rotate(port: int, key: str, grace_hours: int | None = 1, headers=None):
    body = {} if grace_hours is None else {"grace_hours": grace_hours}
    return await call(port, "POST", ROTATE, key=key, json_body=body, headers=headers or idem())


async def works(port: int, key: str) -> bool:
    reply = await call(port, "GET", "/v1/customers", key=key)
    assert reply.status in (200, 401), (reply.status, reply.body)
    return reply.status == 200


async def expire(db, table: str, column: str, value: str) -> None:
    """What an hour passing would do: the stored expiry is now past."""
    await db.execute(
        f"UPDATE {table} SET expires_at = now() - interval '1 second' WHERE {column} = $1", value
    )


async def test_rotation_keeps_the_old_key_for_its_grace_then_stops_it(settings):
    async with serving_api(settings, **NO_CACHE) as (db, port):
        old = await partner_with_key(db, "acme", ("customers:read", "keys:write"))
        old_id = parse_key(old)[0]
        first = await rotate(port, old, grace_hours=2)
        assert first.status == 201, first.body
        shown = first.json()
        new = shown["key"]
        assert (shown["replaces"], shown["scopes"]) == (old_id, ["customers:read", "keys:write"])
        assert shown["key_id"] == parse_key(new)[0] != old_id
        assert first.headers["cache-control"] == "no-store"
        left = await db.fetchval(
            "SELECT expires_at - now() FROM partner_api_keys WHERE key_id = $1", old_id
        )
        assert 7100 < left.total_seconds() <= 7200
        assert await works(port, old) and await works(port, new)

        # The old key is replaced once: it cannot be rotated again.
        again = assert_problem(await rotate(port, old), 409)
        assert shown["key_id"] in again["detail"]

        # The new key is kept hashed: neither the answer kept for a repeat nor the audit log
        # holds it; the audit log names the rotation.
        secret = parse_key(new)[1]
        kept = await db.fetchval("SELECT string_agg(body::text, ' ') FROM api_idempotency")
        audit = await db.fetchrow("SELECT * FROM api_audit_log WHERE action = 'key.rotate'")
        assert secret not in kept and secret not in json.dumps(dict(audit), default=str)
        assert (audit["key_id"], audit["object_id"]) == (old_id, old_id)
        assert json.loads(audit["after"])["replaced_by"] == shown["key_id"]

        # An hour and more later the old key stops; the new one goes on.
        await expire(db, "partner_api_keys", "key_id", old_id)
        assert not await works(port, old)
        assert await works(port, new)
        assert_problem(await rotate(port, old), 401)


async def test_a_lost_rotation_answer_is_shown_again_while_the_new_key_is_unused(settings):
    async with serving_api(settings) as (db, port):
        old = await partner_with_key(db, "acme", ("customers:read", "keys:write"))
        headers = idem()
        lost = (await rotate(port, old, headers=headers)).json()
        repeat = await rotate(port, old, headers=headers)
        assert repeat.status == 201, repeat.body
        shown = repeat.json()
        assert shown["key_id"] == lost["key_id"] and shown["key"] != lost["key"]
        assert {k: v for k, v in shown.items() if k != "key"} == {
            k: v for k, v in lost.items() if k != "key"
        }
        assert not await works(port, lost["key"])  # the lost secret is no one's
        assert await works(port, shown["key"])
        # Once the new key is in use, a repeat cannot show it again.
        assert_problem(await rotate(port, old, headers=headers), 409)
        # The same Idempotency-Key with another body, or from another key, is a conflict.
        assert_problem(await rotate(port, old, grace_hours=3, headers=headers), 409)
        other = (await create_key(db, "acme", ("keys:write",))).key
        assert_problem(await rotate(port, other, headers=headers), 409)
        assert await db.fetchval("SELECT count(*) FROM partner_api_keys") == 3


async def test_rotation_grace_is_bounded_and_zero_stops_the_old_key_at_once(settings):
    async with serving_api(settings, **NO_CACHE) as (db, port):
        old = await partner_with_key(db, "acme", ("customers:read", "keys:write"))
        for grace in (-1, 169, "24", 1.5, None):
            body = {"grace_hours": grace}
            reply = await call(port, "POST", ROTATE, key=old, json_body=body, headers=idem())
            assert "grace_hours" in str(assert_problem(reply, 422)["errors"]), grace
        assert_problem(await call(port, "POST", ROTATE, key=old, json_body={}), 400)
        unscoped = (await create_key(db, "acme", ("customers:read",))).key
        assert_problem(await rotate(port, unscoped), 403)

        default = await rotate(port, old, grace_hours=None)
        assert default.status == 201, default.body
        left = await db.fetchval(
            "SELECT expires_at - now() FROM partner_api_keys WHERE key_id = $1", parse_key(old)[0]
        )
        assert 86_000 < left.total_seconds() <= 86_400
        new = default.json()["key"]
        newest = await rotate(port, new, grace_hours=0)
        assert newest.status == 201, newest.body
        assert not await works(port, new)
        assert await works(port, newest.json()["key"])


async def test_the_rotate_command(settings):
    admin = Admin(settings)
    await admin.ok(*partner_args("acme"))
    code, out, _ = await admin("partners", "keys", "create", "acme", "--scopes", "customers:read")
    assert code == 0
    key = out.strip()
    old_id = parse_key(key)[0]
    code, out, err = await admin("partners", "keys", "rotate", old_id, "--grace", "0")
    assert code == 0 and "shown only this once" in err and old_id in err, err
    new = out.strip()
    new_id = parse_key(new)[0]
    listed = {k["key_id"]: k for k in await admin.json("partners", "keys", "list", "acme")}
    assert listed[old_id]["replaced_by"] == new_id and listed[old_id]["expires_at"] is not None
    assert listed[new_id]["replaces"] == old_id and listed[new_id]["expires_at"] is None
    assert listed[new_id]["scopes"] == ["customers:read"]
    table = await admin.ok("partners", "keys", "list", "acme")
    assert "EXPIRES" in table and "REPLACED BY" in table

    async with serving_api(settings) as (_, port):
        assert not await works(port, key)  # grace 0: at once
        assert await works(port, new)

    code, out, err = await admin("partners", "keys", "rotate", new_id)  # default grace
    assert code == 0, err
    third_id = parse_key(out.strip())[0]
    listed = {k["key_id"]: k for k in await admin.json("partners", "keys", "list", "acme")}
    assert listed[new_id]["expires_at"] is not None and listed[third_id]["replaces"] == new_id
    async with serving_api(settings) as (_, port):
        assert await works(port, new)  # for 24 hours more
    for argv in (
        ("rotate", old_id),  # replaced already
        ("rotate", new_id),
        ("rotate", "nosuchkey000"),
        ("rotate", third_id, "--grace", "-1"),
        ("rotate", third_id, "--grace", "169"),
        ("rotate", third_id, "--grace", "nan"),
        ("rotate", third_id, "--grace", "soon"),
    ):
        code, _, err = await admin("partners", "keys", *argv)
        assert code == 2 and err.startswith("ere-proxy: "), (argv, err)
    assert (await admin("partners", "keys", "revoke", third_id))[0] == 0
    code, _, err = await admin("partners", "keys", "rotate", third_id)
    assert code == 2 and "revoked" in err


async def test_client_credentials_give_a_token_used_like_the_key(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", ("customers:read", "customers:write"))
        reply = await token_for(port, key)
        assert reply.status == 200, reply.body
        assert (reply.headers["cache-control"], reply.headers["pragma"]) == ("no-store", "no-cache")
        issued = reply.json()
        assert issued["token_type"] == "Bearer" and issued["expires_in"] == 3600
        assert issued["scope"] == "customers:write customers:read"
        token = issued["access_token"]
        assert await works(port, token)
        created = await call(
            port, "POST", "/v1/customers", key=token, json_body=enrolment(EAN_1), headers=idem()
        )
        assert created.status == 201, created.body
        audit = await db.fetchval("SELECT key_id FROM api_audit_log")
        assert audit == parse_key(key)[0]  # the token acts for its key
        stored = await db.fetchval("SELECT string_agg(token_sha256, ' ') FROM api_access_tokens")
        assert token not in stored and token.removeprefix("ert_") not in stored

        # Form fields in place of HTTP Basic; a narrower scope is enforced.
        key_id, secret = parse_key(key)
        form = {
            "grant_type": "client_credentials",
            "client_id": key_id,
            "client_secret": secret,
            "scope": "customers:read",
        }
        narrow = await call(port, "POST", TOKEN, body=urlencode(form).encode(), headers=FORM)
        assert narrow.status == 200, narrow.body
        assert narrow.json()["scope"] == "customers:read"
        narrow_token = narrow.json()["access_token"]
        assert await works(port, narrow_token)
        refused = await call(
            port,
            "POST",
            "/v1/customers",
            key=narrow_token,
            json_body=enrolment(EAN_1),
            headers=idem(),
        )
        assert "customers:write" in assert_problem(refused, 403)["detail"]
        # A token cannot rotate its key (it would get the key's every scope).
        all_scopes = await partner_with_key(db, "bravo", SCOPES)
        bravo_token = (await token_for(port, all_scopes)).json()["access_token"]
        assert_problem(await rotate(port, bravo_token), 403)
        # A token reaches its own partner's objects only.
        customer = created.json()["id"]
        assert_problem(await call(port, "GET", f"/v1/customers/{customer}", key=bravo_token), 404)

        assert_oauth_error(await token_for(port, key, scope="keys:write"), 400, "invalid_scope")
        assert_oauth_error(await token_for(port, key, scope="everything"), 400, "invalid_scope")
        assert_oauth_error(await token_for(port, key, scope=""), 400, "invalid_scope")
        wrong = f"ere_{key_id}_{'A' * 43}"
        assert_oauth_error(await token_for(port, wrong), 401, "invalid_client")
        unknown = f"ere_{'z' * 12}_{secret}"
        assert_oauth_error(await token_for(port, unknown), 401, "invalid_client")


async def test_a_tokens_life_ends_with_its_own_expiry_or_its_keys(settings):
    async with serving_api(settings, access_token_seconds=7200, **NO_CACHE) as (db, port):
        key = await partner_with_key(db, "acme", ("customers:read", "keys:write"))
        key_id = parse_key(key)[0]
        first = (await token_for(port, key)).json()
        assert first["expires_in"] == 7200
        await expire(db, "api_access_tokens", "key_id", key_id)
        assert not await works(port, first["access_token"])

        # During a rotation's grace a token lasts no longer than its key.
        rotated = (await rotate(port, key, grace_hours=1)).json()
        during = (await token_for(port, key)).json()
        assert 3500 < during["expires_in"] <= 3600
        assert await works(port, during["access_token"])
        await expire(db, "partner_api_keys", "key_id", key_id)
        assert not await works(port, during["access_token"])
        assert_oauth_error(await token_for(port, key), 400, "invalid_grant")

        # Revoking a key ends its tokens; the revoked key gets none.
        successor = rotated["key"]
        later = (await token_for(port, successor)).json()["access_token"]
        assert await works(port, later)
        await revoke_key(db, rotated["key_id"])
        assert not await works(port, later)
        assert_oauth_error(await token_for(port, successor), 400, "invalid_grant")
        assert not await works(port, "ert_" + "A" * 43)


async def test_a_verified_key_is_trusted_for_the_cache_time_then_looked_up_again(settings):
    async with serving_api(settings, auth_cache_seconds=0.5) as (db, port):
        key = await partner_with_key(db, "acme", ("customers:read",))
        token = (await token_for(port, key)).json()["access_token"]
        assert await works(port, key) and await works(port, token)
        stamped = await db.fetchval(
            "SELECT last_used_at FROM partner_api_keys WHERE key_id = $1", parse_key(key)[0]
        )
        assert stamped is not None
        await revoke_key(db, parse_key(key)[0])
        await trio.sleep(0.6)  # the cache's time: past it both are looked up again
        assert not await works(port, key)
        assert not await works(port, token)


async def test_requests_over_a_keys_limit_are_429_and_other_keys_go_on(settings):
    limits = {"rate_limit_burst": 4, "rate_limit_per_second": SLOW}
    async with serving_api(settings, **limits) as (db, port):
        key = await partner_with_key(db, "acme", ("customers:read",))
        other = (await create_key(db, "acme", ("customers:read",))).key
        token = (await token_for(port, key)).json()["access_token"]  # 1: issued
        first = await call(port, "GET", "/v1/customers", key=key)  # 2
        assert first.status == 200
        assert (first.headers["ratelimit-limit"], first.headers["ratelimit-remaining"]) == (
            "4",
            "2",
        )
        assert await works(port, token)  # 3: a token counts against its key
        assert await works(port, key)  # 4
        for credential in (key, token):
            refused = await call(port, "GET", "/v1/customers", key=credential)
            problem = assert_problem(refused, 429)
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.headers["retry-after"] in problem["detail"]
            assert (refused.headers["ratelimit-limit"], refused.headers["ratelimit-remaining"]) == (
                "4",
                "0",
            )
        assert_problem(await token_for(port, key), 429)
        assert await works(port, other)


async def test_failed_authentications_are_limited_per_address(settings):
    limits = {"failed_auth_burst": 3, "failed_auth_per_second": SLOW}
    async with serving_api(settings, **limits) as (db, port):
        key = await partner_with_key(db, "acme", ("customers:read",))
        key_id = parse_key(key)[0]
        assert_problem(await call(port, "GET", "/v1/customers", key="guess"), 401)
        assert_problem(await call(port, "GET", "/v1/customers"), 401)
        assert_oauth_error(await token_for(port, f"ere_{key_id}_{'B' * 43}"), 401, "invalid_client")
        # The address's failures are spent: nothing from it is checked any more, not even a
        # valid key, until the allowance refills.
        for credential in ("guess", key):
            refused = await call(port, "GET", "/v1/customers", key=credential)
            assert_problem(refused, 429)
            assert int(refused.headers["retry-after"]) >= 1
        assert_problem(await token_for(port, key), 429)


async def test_behind_a_proxy_failures_count_against_the_forwarded_address(settings):
    limits = {"failed_auth_burst": 2, "failed_auth_per_second": SLOW, "forwarded_for_hops": 1}
    async with serving_api(settings, **limits) as (db, port):
        key = await partner_with_key(db, "acme", ("customers:read",))

        async def from_address(address: str, credential: str):
            # The client claims an address; the proxy appends the one it saw, which counts.
            forwarded = {"x-forwarded-for": f"198.51.100.1, {address}"}
            return await call(port, "GET", "/v1/customers", key=credential, headers=forwarded)

        for _ in range(2):
            assert_problem(await from_address("203.0.113.7", "guess"), 401)
        assert_problem(await from_address("203.0.113.7", key), 429)
        assert (await from_address("203.0.113.8", key)).status == 200
        assert (await from_address("x" * 65, key)).status == 200  # not an address: the peer's
        assert await works(port, key)  # no header: the connection's own address


async def test_failed_client_authentication_counts_against_the_key(settings):
    limits = {"rate_limit_burst": 2, "rate_limit_per_second": SLOW}
    async with serving_api(settings, **limits) as (db, port):
        key = await partner_with_key(db, "acme", ("customers:read",))
        key_id = parse_key(key)[0]
        for _ in range(2):
            wrong = await token_for(port, f"ere_{key_id}_{'C' * 43}")
            assert_oauth_error(wrong, 401, "invalid_client")
        assert_problem(await token_for(port, key), 429)


GRANT = b"grant_type=client_credentials"
JSON_TYPE = {"content-type": "application/json"}


def basic_raw(credentials: bytes) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(credentials).decode()}


async def test_hostile_token_requests_are_4xx_and_the_endpoint_goes_on(settings):
    async with serving_api(settings, failed_auth_burst=1000) as (db, port):
        key = await partner_with_key(db, "acme", ("customers:read",))
        key_id, secret = parse_key(key)
        creds = f"&client_id={key_id}&client_secret={secret}".encode()
        valid = GRANT + creds
        fields_40 = b"&".join(b"f%d=1" % n for n in range(40))
        # (body, headers in place of the form's content type, status, error)
        cases: list[tuple[bytes, dict[str, str] | None, int, str]] = [
            (valid + b"&pad=" + b"x" * 5000, None, 400, "invalid_request"),
            (valid, JSON_TYPE, 400, "invalid_request"),
            (b'{"grant_type": "client_credentials"}', JSON_TYPE, 400, "invalid_request"),
            (valid, {}, 400, "invalid_request"),
            (valid, {"content-type": "multipart/form-data; boundary=x"}, 400, "invalid_request"),
            (creds[1:], None, 400, "invalid_request"),
            (b"grant_type=password" + creds, None, 400, "unsupported_grant_type"),
            (b"grant_type=" + creds, None, 400, "unsupported_grant_type"),
            (valid + b"&grant_type=client_credentials", None, 400, "invalid_request"),
            (valid + b"&client_id=" + key_id.encode(), None, 400, "invalid_request"),
            (valid + b"&scope=customers:read&scope=customers:read", None, 400, "invalid_request"),
            (valid + "&scope=cüstomers:read".encode(), None, 400, "invalid_request"),
            (valid + b"&scope=%ff%fe", None, 400, "invalid_request"),
            (valid + b"&&&", None, 400, "invalid_request"),
            (fields_40 + b"&" + valid, None, 400, "invalid_request"),
            (b"", None, 400, "invalid_request"),
            (valid + b"&scope=customers%3Aread%20%20customers%3Aread", None, 400, "invalid_scope"),
            (valid + b"&scope=customers:read%00", None, 400, "invalid_scope"),
            (valid + b"&scope=" + b"x" * 3000, None, 400, "invalid_scope"),
            (GRANT, None, 401, "invalid_client"),
            (GRANT + b"&client_id=%C3%A9&client_secret=x", None, 401, "invalid_client"),
            (GRANT + b"&client_id=%00&client_secret=%00", None, 401, "invalid_client"),
            (GRANT + b"&client_id=" + key_id.encode(), None, 401, "invalid_client"),
            (GRANT, FORM | {"authorization": "Basic !!!"}, 401, "invalid_client"),
            (GRANT, FORM | basic_raw(b"no colon"), 401, "invalid_client"),
            (GRANT, FORM | basic_raw(b"\xff:\xfe"), 401, "invalid_client"),
            (GRANT, FORM | basic_raw(b"%zz:%zz"), 401, "invalid_client"),
            (valid, FORM | basic(key), 400, "invalid_request"),  # two ways at once
            (GRANT + b"&client_id=other", FORM | basic(key), 400, "invalid_request"),
        ]
        for body, headers, status, error in cases:
            sent = FORM if headers is None else headers
            reply = await call(port, "POST", TOKEN, body=body, headers=sent)
            assert_oauth_error(reply, status, error)
            assert b"Traceback" not in reply.body
        over_cap = valid + b"&pad=" + b"x" * 70_000
        assert_problem(await call(port, "POST", TOKEN, body=over_cap, headers=FORM), 413)
        assert_problem(await call(port, "GET", TOKEN), 405)
        # Nothing was issued, and the endpoint still issues tokens.
        assert await db.fetchval("SELECT count(*) FROM api_access_tokens") == 0
        assert (await call(port, "POST", TOKEN, body=valid, headers=FORM)).status == 200
        assert (await token_for(port, key)).status == 200
