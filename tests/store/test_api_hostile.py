"""Hostile input to the partner API: every bad request is a 4xx problem+json naming what is
wrong, nothing is stored, and the server keeps answering."""

from __future__ import annotations

import json
import uuid

import pytest

from proxy.api.keys import SCOPES
from testkit.ere_admin import EAN_1
from testkit.partner_api import call, enrolment, partner_with_key, serving_api

PROBLEM = "application/problem+json"


def consent(**fields):
    return enrolment(EAN_1)["consent"] | fields


BAD_FIELDS = [
    ({"ean": "871687120000000005"}, "ean"),  # wrong check digit
    ({"ean": "8716871200000000"}, "ean"),
    ({"ean": 871687120000000004}, "ean"),  # a number, not a string
    ({"iban": "NL00INGB0001234567"}, "iban"),
    ({"iban": "US12345678901234567890"}, "iban"),
    ({"postcode": "0123 AB"}, "postcode"),
    ({"email": "not an address"}, "email"),
    ({"name": "x" * 5000}, "name"),
    ({"name": "Jan\x00Jansen"}, "name"),
    ({"city": "Utrecht\u202e"}, "city"),
    ({"address": "   "}, "address"),
    ({"name": None}, "name"),
    ({"name": ["J."]}, "name"),
    ({"referral_code": "!!"}, "referral_code"),
    ({"unexpected": 1}, "unexpected"),
    ({"consent": {"text_version": "v3"}}, "consent.accepted_at"),
    ({"consent": consent(accepted_at="yesterday")}, "consent.accepted_at"),
    ({"consent": consent(accepted_at="2999-01-01T00:00:00+00:00")}, "consent.accepted_at"),
    ({"consent": consent(accepted_at="2026-01-01T00:00:00")}, "consent.accepted_at"),
    ({"consent": consent(user_reference="\x1b[31m")}, "consent.user_reference"),
    ({"consent": consent(extra=True)}, "consent.extra"),
    ({"consent": "yes"}, "consent"),
]


@pytest.fixture
async def api(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", SCOPES)
        yield db, port, key


async def post(port, key, **kwargs):
    headers = {"idempotency-key": str(uuid.uuid4())} | kwargs.pop("headers", {})
    return await call(port, "POST", "/v1/customers", key=key, headers=headers, **kwargs)


def problem_of(reply, *statuses):
    assert reply.status in statuses, (reply.status, reply.body)
    assert reply.headers["content-type"] == PROBLEM
    problem = reply.json()
    assert {"type", "title", "status", "detail"} <= problem.keys()
    assert b"Traceback" not in reply.body
    return problem


async def test_bad_fields_are_named_and_nothing_is_stored(api):
    db, port, key = api
    for fields, field in BAD_FIELDS:
        problem = problem_of(await post(port, key, json_body=enrolment(EAN_1) | fields), 422)
        assert field in [error["field"] for error in problem["errors"]], (fields, problem)
    assert await db.fetchval("SELECT count(*) FROM customers") == 0
    assert await db.fetchval("SELECT count(*) FROM api_idempotency") == 0
    assert (await post(port, key, json_body=enrolment(EAN_1))).status == 201


async def test_malformed_and_odd_bodies(api):
    db, port, key = api
    json_type = {"content-type": "application/json"}
    for body in (
        b"{",
        b'{"name": "J."',
        b"\xff\xfe\x00garbage",
        b"[" * 30_000 + b"]" * 30_000,
        b"null",
        b"[]",
        b'"text"',
        b"12",
        b"",
        json.dumps(enrolment(EAN_1)).encode() + b"trailing",
    ):
        problem_of(await post(port, key, body=body, headers=json_type), 400, 422)
    problem_of(
        await post(port, key, body=b"name=J.", headers={"content-type": "text/plain"}),
        400,
        415,
        422,
    )
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    problem_of(await post(port, key, body=deep, headers=json_type), 400, 422)
    problem_of(
        await post(port, key, json_body=enrolment(EAN_1), headers={"idempotency-key": "a b"}), 400
    )
    problem_of(
        await post(port, key, json_body=enrolment(EAN_1), headers={"idempotency-key": "k" * 256}),
        400,
        422,
    )
    assert await db.fetchval("SELECT count(*) FROM customers") == 0


async def test_bodies_over_the_cap_are_refused_unread(api):
    _, port, key = api
    big = enrolment(EAN_1, name="x" * 70_000)
    assert problem_of(await post(port, key, json_body=big), 413)["status"] == 413
    # A declared length within the cap but more bytes sent in chunks is refused too.
    chunked = {"transfer-encoding": "chunked", "content-type": "application/json"}
    reply = await call(
        port,
        "POST",
        "/v1/customers",
        key=key,
        body=b" " * 100_000,
        headers=chunked | {"idempotency-key": "chunked"},
    )
    problem_of(reply, 413)
    assert (await post(port, key, json_body=enrolment(EAN_1))).status == 201


async def test_unknown_routes_methods_and_ids(api):
    _, port, key = api
    problem_of(await call(port, "GET", "/nowhere", key=key), 404)
    problem_of(await call(port, "GET", "/v1/customers/" + "x" * 300, key=key), 404, 422)
    problem_of(await call(port, "GET", "/v1/customers/%00%ff", key=key), 404)
    problem_of(await call(port, "DELETE", "/v1/customers", key=key), 405)
    problem_of(await call(port, "PUT", "/v1/customers/abc", key=key), 405)
    assert (await call(port, "GET", "/v1/customers", key=key)).status == 200
