"""Tenant isolation and scopes, for every operation of the partner API's OpenAPI document.

Two partners: bravo makes one object through every creating operation (a POST to a collection,
then each POST under one of its objects, a link, with bravo's ids), and what the API cannot
make (a session, from a charger's OCPP traffic) is seeded as the proxy records it: `SEEDED`
names it by its path parameter. Alpha, with objects of its own made alike, then calls every
operation with bravo's ids in the path and a valid body: once with bravo's values in the
fields bravo's objects have, once with alpha's own ids in them; reads and PATCHes also with
preconditions (`If-None-Match`/`If-Match`: `*`, and bravo's current ETag). Alpha gets 404 for
bravo's objects whatever the headers, lists without them and conflicts that name no one (409:
a POST that would touch bravo's object, by design; 422 for one of bravo's ids in a body): no
answer carries bravo's ids, and bravo's rows (every row of every table that mentions bravo or
one of its objects) are the same afterwards. A key without an operation's scope is 403 on it,
a revoked key or none 401.

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
from proxy.api.webhook_events import queue_ping
from testkit.openapi_cases import (
    body_schema,
    item_parameter,
    required_query,
    valid_body,
    with_charger,
)
from testkit.openapi_cases import operations as all_operations
from testkit.paid_quarters import state_and_pay
from testkit.partner_api import call, partner_with_key, seed_session, serving_api

PARAMETER = re.compile(r"\{([^}]+)\}")
# The OAuth2 token request takes no bearer key (a client authenticates with its key id and
# secret) and answers RFC 6749 errors, not problems: tests/store/test_api_auth.py covers it,
# tokens reaching only their own partner's objects included.
NOT_BEARER = {("POST", "/v1/oauth/token")}
# Operations on the calling key itself, not on an object: nothing to make of them as objects.
# Called in the matrix, they rotate the caller's key with an hour's grace (BODIES), so the key
# keeps working for the calls after.
CALLING_KEY = {("POST", "/v1/keys/current/rotate")}
# Operations that supply sessions of the caller's own chargers: they make nothing readable at a
# path of their own (a partner's sessions are read at /v1/sessions). A batch's sessions are put
# on a charger (`with_charger`): bravo's own when bravo supplies, bravo's or alpha's when alpha
# calls; a charger not the caller's is a 422 naming the item, never a 404 (that would say the
# charger exists). A CSV import called with a JSON body is a 415.
SUPPLIES = {("POST", "/v1/sessions/batch"), ("POST", "/v1/sessions/imports")}
# The matrix makes hundreds of calls with one key, and dozens that fail from one address: no
# rate limit here (tests/store/test_api_auth.py tests them).
UNLIMITED = {"rate_limit_burst": 1_000_000, "failed_auth_burst": 1_000_000}


def operations(document):
    """Every operation of the document a partner calls with a bearer key."""
    for method, path, operation in all_operations(document):
        if (method, path) not in NOT_BEARER:
            yield method, path, operation


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


# A seeded session's id: distinct enough that finding it in a text means it is shown.
SESSION_ID = 7_340_017_001


async def seeded_session(db, ids: dict[str, str], partner: str) -> dict[str, str]:
    """An active session on `partner`'s charger, started after its link (as OCPP traffic would
    record it): {"session_id": its id}."""
    session_id = SESSION_ID + (0 if partner == "bravo" else 1)
    started = await db.fetchval("SELECT now() + interval '1 second'")
    transaction = f"tx-{partner}-{session_id}"
    await seed_session(db, ids["identity"], transaction, started_at=started, session_id=session_id)
    return {"session_id": str(session_id)}


async def seeded_statement(db, ids: dict[str, str], partner: str) -> dict[str, str]:
    """A statement of `partner`'s customer and the payout run that paid it, in a past quarter
    closed and paid as the workers would: {"statement_id": ..., "quarter": the run's}."""
    quarter = await state_and_pay(db, ids["identity"])
    return {"statement_id": f"{quarter}-{ids['customer_id']}", "quarter": str(quarter)}


# Objects the API cannot make, by their path parameter: how the test seeds one of a partner's
# (a statement comes with its payout run, `{quarter}`).
async def seeded_delivery(db, ids: dict[str, str], partner: str) -> dict[str, str]:
    """A delivery to `partner`'s webhook (deliveries come from events; a ping is one):
    {"delivery_id": its id}."""
    async with db.transaction() as tx:
        return {"delivery_id": await queue_ping(tx, partner, ids["webhook_id"])}


SEEDED = {
    "session_id": seeded_session,
    "statement_id": seeded_statement,
    "delivery_id": seeded_delivery,
}


async def make_objects(port, db, document, partner: str, first: int):
    """(ids by path parameter, spare ids, string values of the answers, the key): one object of
    `partner`'s through every creating operation (a POST under an object on the first ones),
    then the seeded ones; the spare ones are a second round of the collections' objects, with
    nothing under them (a charger registered and never linked)."""
    key = await partner_with_key(db, partner, SCOPES)
    ids: dict[str, str] = {}
    spare: dict[str, str] = {}
    values: dict[str, Any] = {}
    posts = [
        (path, operation)
        for method, path, operation in operations(document)
        if method == "POST" and (method, path) not in CALLING_KEY | SUPPLIES
    ]
    # Collections first, then POSTs under their objects (which take the objects' ids), then
    # the collections again.
    collections = [(path, operation) for path, operation in posts if "{" not in path]
    under = [(path, operation) for path, operation in posts if "{" in path]
    rounds = [(ids, item) for item in collections + under] + [(spare, c) for c in collections]
    for n, (made_ids, (path, operation)) in enumerate(rounds, start=first):
        for name in PARAMETER.findall(path):  # a seeded object this POST acts on: seed it first
            if name in SEEDED and name not in ids:
                ids.update(await SEEDED[name](db, ids, partner))
        schema = body_schema(operation)
        body = valid_body(schema, n) if schema is not None else {}  # {}: a POST without a body
        itself = item_parameter(document, path) if "{" not in path else None
        body |= {name: ids[name] for name in body if name in ids and name != itself}
        target = PARAMETER.sub(lambda match: ids[match[1]], path)
        headers = {"idempotency-key": str(uuid.uuid4())}
        reply = await call(port, "POST", target, key=key, json_body=body, headers=headers)
        # 201 for what a POST makes; 200 for a POST that acts on its object (an end).
        assert reply.status in ((200, 201) if "{" in path else (201,)), (partner, path, reply.body)
        made = reply.json()
        values |= {k: v for k, v in made.items() if isinstance(v, str)}
        if "{" not in path:
            assert itself is not None, f"POST {path}: no path to read what it made"
            made_ids[itself] = made[itself] if itself in made else made["id"]
    for name, seed in SEEDED.items():
        if name not in ids:
            ids |= await seed(db, ids, partner)
    for method, path, operation in operations(document):
        if (method, path) in SUPPLIES and (schema := body_schema(operation)) is not None:
            body = with_charger(valid_body(schema, first), ids["identity"])
            headers = {"idempotency-key": str(uuid.uuid4())}
            reply = await call(port, method, path, key=key, json_body=body, headers=headers)
            assert reply.status == 201, (partner, path, reply.body)
    return ids, spare, values, key


@pytest.fixture
async def world(settings):
    async with serving_api(settings, **UNLIMITED) as (db, port):
        document = (await call(port, "GET", OPENAPI_URL)).json()
        ids, spare, values, key_b = await make_objects(port, db, document, "bravo", 1)
        # Every object is bravo's to read: what alpha is refused is there. Its ETags (by
        # path) are what alpha sends in preconditions too.
        etags: dict[str, str] = {}
        for method, path, operation in operations(document):
            if method == "GET" and "{" in path:
                for some in (ids, ids | spare):
                    target, _, _ = request_for(method, path, operation, some, {}, 0)
                    reply = await call(port, method, target, key=key_b)
                    assert reply.status == 200, (target, reply.body)
                    if "etag" in reply.headers:
                        etags[target] = reply.headers["etag"]
        tokens = {'"bravo"', parse_key(key_b)[0], *ids.values(), *spare.values()}
        yield db, port, document, ids, spare, values, tokens, etags


# An operation on `/v1/<resource>...` needs `<resource>:read` (GET) or `<resource>:write`;
# the operations that show another resource's data, by the scope of that data:
SCOPE_OF = {
    ("GET", "/v1/customers/{customer_id}/energy"): "sessions:read",
    # Webhooks have one scope: reading an endpoint shows its URL and delivery log.
    ("GET", "/v1/webhooks"): "webhooks:write",
    ("GET", "/v1/webhooks/{webhook_id}"): "webhooks:write",
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): "webhooks:write",
    # The MID scan's scopes are named in the singular.
    ("POST", "/v1/scans"): "scan:write",
    ("GET", "/v1/scans"): "scan:read",
    ("GET", "/v1/scans/{scan_id}"): "scan:read",
}


# Operations that also need the read scopes of what their body asks for: an endpoint is made only
# for events whose data its key may read (those of the webhook in `testkit.openapi_cases.BODIES`).
ALSO_NEEDS = {("POST", "/v1/webhooks"): ("sessions:read", "payouts:read")}


def scope_of(method: str, path: str) -> str:
    """The scope the README gives the operation."""
    if (method, path) in SCOPE_OF:
        return SCOPE_OF[method, path]
    scope = f"{path.split('/')[2]}:{'read' if method == 'GET' else 'write'}"
    assert scope in SCOPES, f"{method} {path}: no scope {scope}; name its scope in SCOPE_OF"
    return scope


def request_for(method: str, path: str, operation: dict[str, Any], ids, values, n: int):
    """(path with bravo's ids and the required query, body or None, headers) for one operation;
    `values` fill the body's fields they name."""

    def fill(match: re.Match[str]) -> str:
        name = match[1]
        assert name in ids, f"{method} {path}: no object of bravo's for {{{name}}}"
        return ids[name]

    target = PARAMETER.sub(fill, path)
    query = required_query(operation)
    if query:
        target += "?" + "&".join(f"{k}={v}" for k, v in query.items())
    schema = body_schema(operation)
    body = None
    if schema is not None:
        body = with_charger(valid_body(schema, 1000 + n), ids["identity"])
        known = ids | values  # strings: they replace the body's strings only
        body |= {k: known[k] for k in body if k in known and isinstance(body[k], str)}
    headers = {} if method == "GET" else {"idempotency-key": str(uuid.uuid4())}
    return target, body, headers


def preconditions(method: str, target: str, etags: dict[str, str]) -> list[dict[str, str]]:
    """Headers to send besides none: bravo's current ETag and `*` as `If-None-Match` (GET) or
    `If-Match` (PATCH). Another partner's object is 404 whatever they say."""
    name = {"GET": "if-none-match", "PATCH": "if-match"}.get(method)
    if name is None:
        return [{}]
    return [{}, {name: "*"}] + ([{name: etags[target]}] if target in etags else [])


async def test_a_partner_never_reaches_another_partners_objects(world):
    db, port, document, ids, spare, values, tokens, etags = world
    own, _, _, key_a = await make_objects(port, db, document, "alpha", 500)
    before = await b_rows(db, tokens)
    assert before, "bravo has no rows"
    cases = [
        (n, item, some) for n, item in enumerate(operations(document)) for some in (ids, spare)
    ]
    for n, (method, path, operation), some in cases:
        target, body, headers = request_for(method, path, operation, ids | some, values, n)
        tries = [(body, "bravo's values")]
        if (method, path) in SUPPLIES and body is not None:
            tries.append((with_charger(body, own["identity"]), "alpha's own ids"))
        elif body is not None and any(k in own for k in body):
            mine = body | {k: own[k] for k in body if k in own}
            tries.append((mine, "alpha's own ids"))
        tries = [
            (sent_body, f"{variant}, {', '.join(condition) or 'no precondition'}", condition)
            for sent_body, variant in tries
            for condition in preconditions(method, target.partition("?")[0], etags)
        ]
        for sent_body, variant, condition in tries:
            headers = {} if method == "GET" else {"idempotency-key": str(uuid.uuid4())}
            reply = await call(
                port, method, target, key=key_a, json_body=sent_body, headers=headers | condition
            )
            label = f"{method} {path} ({variant})"
            sent = json.dumps(sent_body) if sent_body is not None else ""
            text = reply.body.decode("utf-8", "replace")
            leaked = [t for t in tokens if t.strip('"') in text and t not in sent]
            assert not leaked, (label, leaked, text)
            if method == "GET" and "{" in path:
                assert reply.status == 404, (label, reply.status, text)
            elif "{" in path:
                # A write to or under bravo's object: it does not exist for alpha (whatever the
                # preconditions), or it is a conflict naming no one; one of bravo's ids in the
                # body is not alpha's to name (422).
                allowed = (404, 409) if sent_body is not body else (404, 409, 422)
                assert reply.status in allowed, (label, reply.status, text)
            elif (method, path) in SUPPLIES:
                assert reply.status in (200, 201, 415, 422), (label, reply.status, text)
            else:
                assert reply.status in (200, 201, 404, 409), (label, reply.status, text)
            assert await b_rows(db, tokens) == before, f"{label} changed bravo's rows"


async def test_every_operation_needs_its_scope_and_a_valid_key(world):
    db, port, document, ids, _, values, _, _ = world
    keys = {}
    for scope in SCOPES:
        keys[scope] = (await create_key(db, "bravo", (scope,))).key
    for n, (method, path, operation) in enumerate(operations(document)):
        label = f"{method} {path}"
        statuses = {}
        also = ALSO_NEEDS.get((method, path), ())
        for scope, key in keys.items():
            if also:
                with_also = tuple(dict.fromkeys((scope, *also)))
                key = (await create_key(db, "bravo", with_also)).key
            target, body, headers = request_for(method, path, operation, ids, values, n)
            reply = await call(port, method, target, key=key, json_body=body, headers=headers)
            statuses[scope] = reply.status
        granting = [scope for scope, status in statuses.items() if status != 403]
        assert len(granting) == 1, f"{label}: one scope should grant it, got {statuses}"
        assert granting == [scope_of(method, path)], f"{label}: granted by {granting}"
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
