"""Tenant isolation and scopes, for every operation of the partner API's OpenAPI document.

Two partners: bravo makes one object through every creating operation (a POST to a collection);
alpha's key then calls every operation with bravo's ids in the path and a valid body (bravo's
values in the fields bravo's objects have). Alpha gets 404 for bravo's objects, lists without
them and conflicts that name no one: no answer carries bravo's ids, and bravo's rows (every
row of every table that mentions bravo or one of its objects) are the same afterwards. A key
without an operation's scope is 403 on it, a revoked key or none 401.

Driven by the document, so a new operation is covered as it is added; it fails until its
scope and its tenant scoping hold (and until `testkit.openapi_cases.BODIES` has a valid body
for its request schema).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest

from proxy.api.app import OPENAPI_URL
from proxy.api.key_store import create_key, revoke_key
from proxy.api.keys import SCOPES, parse_key
from testkit.openapi_cases import body_schema, operations, valid_body
from testkit.partner_api import call, partner_with_key, serving_api

PARAMETER = re.compile(r"\{([^}]+)\}")


async def b_rows(db, tokens: set[str]) -> list[str]:
    """Every row of every table that mentions one of bravo's `tokens`, as JSON, sorted."""
    tables = await db.fetch(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
    )
    rows = []
    for (table,) in tables:
        for (text,) in await db.fetch(f'SELECT to_jsonb(t)::text FROM "{table}" t'):
            if any(token in text for token in tokens):
                rows.append(f"{table}: {text}")
    return sorted(rows)


def object_param(path: str) -> str:
    """`/v1/customers` → `customer_id`: the path parameter naming an object of a collection."""
    return path.rstrip("/").rpartition("/")[2].removesuffix("s") + "_id"


@pytest.fixture
async def world(settings):
    async with serving_api(settings) as (db, port):
        document = (await call(port, "GET", OPENAPI_URL)).json()
        key_b = await partner_with_key(db, "bravo", SCOPES)
        ids: dict[str, str] = {}
        values: dict[str, Any] = {}
        n = 0
        for method, path, operation in operations(document):
            if method != "POST" or "{" in path:
                continue
            n += 1
            body = valid_body(body_schema(operation) or "", n)
            body |= {name: ids[name] for name in body if name in ids}
            headers = {"idempotency-key": str(uuid.uuid4())}
            reply = await call(port, "POST", path, key=key_b, json_body=body, headers=headers)
            assert reply.status == 201, (path, reply.body)
            made = reply.json()
            ids[object_param(path)] = made["id"]
            values |= {k: v for k, v in made.items() if isinstance(v, str)}
        tokens = {'"bravo"', parse_key(key_b)[0], *ids.values()}
        yield db, port, document, ids, values, tokens


def request_for(method: str, path: str, operation: dict[str, Any], ids, values, n: int):
    """(path with bravo's ids, body or None, headers) for one operation."""

    def fill(match: re.Match[str]) -> str:
        name = match[1]
        assert name in ids, f"{method} {path}: no object of bravo's for {{{name}}}"
        return ids[name]

    target = PARAMETER.sub(fill, path)
    schema = body_schema(operation)
    body = None
    if schema is not None:
        body = valid_body(schema, 1000 + n)
        body |= {k: (ids | values)[k] for k in body if k in ids or k in values}
    headers = {} if method == "GET" else {"idempotency-key": str(uuid.uuid4())}
    return target, body, headers


async def test_a_partner_never_reaches_another_partners_objects(world):
    db, port, document, ids, values, tokens = world
    key_a = await partner_with_key(db, "alpha", SCOPES)
    before = await b_rows(db, tokens)
    assert before, "bravo has no rows"
    for n, (method, path, operation) in enumerate(operations(document)):
        target, body, headers = request_for(method, path, operation, ids, values, n)
        reply = await call(port, method, target, key=key_a, json_body=body, headers=headers)
        label = f"{method} {path}"
        sent = json.dumps(body) if body is not None else ""
        text = reply.body.decode("utf-8", "replace")
        leaked = [t for t in tokens | set(ids.values()) if t.strip('"') in text and t not in sent]
        assert not leaked, (label, leaked, text)
        if "{" in path:
            assert reply.status == 404, (label, reply.status, text)
        else:
            assert reply.status in (200, 201, 404, 409), (label, reply.status, text)
        assert await b_rows(db, tokens) == before, f"{label} changed bravo's rows"


async def test_every_operation_needs_its_scope_and_a_valid_key(world):
    db, port, document, ids, values, _ = world
    keys = {}
    for scope in SCOPES:
        keys[scope] = (await create_key(db, "bravo", (scope,))).key
    for n, (method, path, operation) in enumerate(operations(document)):
        label = f"{method} {path}"
        statuses = {}
        for scope, key in keys.items():
            target, body, headers = request_for(method, path, operation, ids, values, n)
            reply = await call(port, method, target, key=key, json_body=body, headers=headers)
            statuses[scope] = reply.status
        granting = [scope for scope, status in statuses.items() if status != 403]
        assert len(granting) == 1, f"{label}: one scope should grant it, got {statuses}"
        others = tuple(scope for scope in SCOPES if scope not in granting)
        without = (await create_key(db, "bravo", others)).key
        target, body, headers = request_for(method, path, operation, ids, values, n)
        reply = await call(port, method, target, key=without, json_body=body, headers=headers)
        assert reply.status == 403, (label, reply.status)
        assert granting[0] in reply.json()["detail"], (label, reply.body)

    revoked = (await create_key(db, "bravo", SCOPES)).key
    await revoke_key(db, parse_key(revoked)[0])
    for n, (method, path, operation) in enumerate(operations(document)):
        target, body, headers = request_for(method, path, operation, ids, values, n)
        for key in (revoked, None):
            reply = await call(port, method, target, key=key, json_body=body, headers=headers)
            assert reply.status == 401, (method, path, key is None, reply.status)
            assert reply.headers["content-type"] == "application/problem+json"
