"""Webhooks over real HTTP: endpoints made through the API, events from enrolments and from what
other roles write (scanned), signed deliveries to a real receiver on 127.0.0.1 (plain and TLS),
retries on the back-off schedule driven by the deliverer's clock argument, give-up and replay,
the delivery log and health, the URL guard at creation and at delivery, tenant isolation,
scopes, and hostile input."""

from __future__ import annotations

import dataclasses
import json
import ssl
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import trio
import trustme

from proxy.api.context import ApiContext
from proxy.api.key_store import create_key, revoke_key
from proxy.api.keys import SCOPES, parse_key
from proxy.api.webhook_delivery import Deliverer
from proxy.api.webhook_scans import run_scans, scan_once
from proxy.api.webhook_schedule import Backoff
from proxy.api.webhook_signing import verify
from proxy.ere.core.quarters import DUTCH_TIME
from proxy.routing.registry.sealing import KeyRing, generate_key
from proxy.store import open_database
from testkit.ere_admin import EAN_1, EAN_2, EAN_3
from testkit.ere_books import Q2, add_session, close, config, pay, seed
from testkit.partner_api import (
    call,
    enrolment,
    idem,
    partner_with_key,
    problem_of,
    seed_session,
    serving_api,
)
from testkit.webhook_receiver import HANG, receiving

ALL = SCOPES
SCANNED = ["session.completed", "statement.issued", "payout.sent", "mandate.expiring"]


async def make_webhook(port, key, url, events=("customer.enrolled",), **fields) -> dict:
    body = {"url": url, "events": list(events)} | fields
    reply = await call(port, "POST", "/v1/webhooks", key=key, json_body=body, headers=idem())
    assert reply.status == 201, reply.body
    return reply.json()


async def enrol(port, key, ean) -> dict:
    reply = await call(
        port, "POST", "/v1/customers", key=key, json_body=enrolment(ean), headers=idem()
    )
    assert reply.status == 201, reply.body
    return reply.json()


async def log_of(port, key, webhook_id, query="") -> list[dict]:
    reply = await call(port, "GET", f"/v1/webhooks/{webhook_id}/deliveries{query}", key=key)
    assert reply.status == 200, reply.body
    return reply.json()["data"]


async def health(port, key, webhook_id) -> dict:
    reply = await call(port, "GET", f"/v1/webhooks/{webhook_id}", key=key)
    assert reply.status == 200, reply.body
    return reply.json()["health"]


def signed(received, secret: str, now: datetime) -> dict:
    """The event a request carried, once its signature checked out."""
    assert verify(received.headers["ere-signature"], received.body, secret, now.timestamp())
    event = json.loads(received.body)
    assert received.headers["ere-event-id"] == event["id"]
    assert received.headers["ere-event-type"] == event["type"]
    assert received.headers["content-type"] == "application/json"
    return event


def now() -> datetime:
    return datetime.now(UTC)


async def test_an_enrolment_arrives_signed_and_the_log_and_health_show_it(settings):
    async with serving_api(settings, webhooks_allow_private=True) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        async with receiving() as receiver:
            body = {"url": receiver.url(), "events": ["customer.enrolled"], "description": "ERP"}
            headers = idem()
            reply = await call(
                port, "POST", "/v1/webhooks", key=key, json_body=body, headers=headers
            )
            assert reply.status == 201, reply.body
            webhook = reply.json()
            secret = webhook["secret"]
            assert secret.startswith("whsec_")
            assert reply.headers["location"] == f"/v1/webhooks/{webhook['id']}"
            assert webhook["health"] == {
                "state": "healthy",
                "last_success_at": None,
                "last_failure_at": None,
                "consecutive_failures": 0,
                "last_error": None,
                "pending_deliveries": 0,
            }
            # The secret is in the first answer only: not in a replay, a read, the audit log.
            again = await call(
                port, "POST", "/v1/webhooks", key=key, json_body=body, headers=headers
            )
            assert again.status == 201 and again.json()["secret"] is None
            assert again.json()["id"] == webhook["id"]
            got = await call(port, "GET", f"/v1/webhooks/{webhook['id']}", key=key)
            assert "secret" not in got.json() and got.json()["description"] == "ERP"
            for table in ("api_audit_log", "api_idempotency"):
                rows = await db.fetch(f"SELECT to_jsonb(t)::text AS row FROM {table} t")
                assert rows and not any(secret in row["row"] for row in rows), table
            audit = await db.fetchrow(
                "SELECT action, object_id FROM api_audit_log WHERE action = 'webhook.create'"
            )
            assert audit["object_id"] == webhook["id"]

            customer = await enrol(port, key, EAN_1)
            async with Deliverer(db, keys=None, allow_private=True) as sender:
                at = now()
                assert await sender.run_once(at) == 1
                assert await sender.run_once(at + timedelta(hours=1)) == 0
            (request,) = receiver.received
            assert (request.method, request.path) == ("POST", "/hook")
            event = signed(request, secret, at)
            assert event["type"] == "customer.enrolled"
            assert event["data"] == {"customer_id": customer["id"], "ean": EAN_1, "year": at.year}
            assert not verify(
                request.headers["ere-signature"], request.body, "whsec_x", at.timestamp()
            )

        (delivery,) = await log_of(port, key, webhook["id"])
        assert delivery["id"] == request.headers["ere-delivery-id"]
        assert delivery["event_id"] == event["id"] and delivery["event_type"] == "customer.enrolled"
        assert (delivery["state"], delivery["attempts"], delivery["next_attempt_at"]) == (
            "delivered",
            1,
            None,
        )
        assert delivery["body"].encode() == request.body
        (attempt,) = delivery["attempt_log"]
        assert (attempt["ok"], attempt["status"], attempt["error"], attempt["response"]) == (
            True,
            200,
            None,
            "thanks",
        )
        state = await health(port, key, webhook["id"])
        assert state["state"] == "healthy" and state["last_success_at"] is not None
        assert state["consecutive_failures"] == 0 and state["pending_deliveries"] == 0


async def test_a_failed_attempt_is_retried_on_the_back_off_schedule(settings):
    async with serving_api(settings, webhooks_allow_private=True) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        async with receiving([500]) as receiver:
            webhook = await make_webhook(port, key, receiver.url())
            await enrol(port, key, EAN_1)
            async with Deliverer(db, keys=None, allow_private=True, draw=lambda: 0.0) as sender:
                t0 = now()
                assert await sender.run_once(t0) == 1
                (pending,) = await log_of(port, key, webhook["id"])
                assert (pending["state"], pending["attempts"]) == ("pending", 1)
                assert datetime.fromisoformat(pending["next_attempt_at"]) == t0 + timedelta(
                    seconds=30
                )
                assert pending["attempt_log"][0]["status"] == 500
                assert pending["attempt_log"][0]["error"] == "HTTP 500"
                failing = await health(port, key, webhook["id"])
                assert (failing["state"], failing["consecutive_failures"]) == ("failing", 1)
                assert failing["last_error"] == "HTTP 500" and failing["pending_deliveries"] == 1

                assert await sender.run_once(t0 + timedelta(seconds=29)) == 0
                assert await sender.run_once(t0 + timedelta(seconds=30)) == 1
            first, second = receiver.received
            assert first.body == second.body
            assert first.headers["ere-event-id"] == second.headers["ere-event-id"]
            signed(second, webhook["secret"], t0 + timedelta(seconds=30))
        (delivered,) = await log_of(port, key, webhook["id"])
        assert (delivered["state"], delivered["attempts"]) == ("delivered", 2)
        assert [a["status"] for a in delivered["attempt_log"]] == [500, 200]
        healed = await health(port, key, webhook["id"])
        assert (healed["state"], healed["consecutive_failures"]) == ("healthy", 0)
        assert healed["last_failure_at"] is not None and healed["pending_deliveries"] == 0


async def test_a_delivery_given_up_is_failed_and_a_replay_sends_its_event_again(settings):
    async with serving_api(settings, webhooks_allow_private=True) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        async with receiving([500, 302, 404]) as receiver:
            webhook = await make_webhook(port, key, receiver.url())
            await enrol(port, key, EAN_1)
            schedule = Backoff(attempts=3)
            async with Deliverer(
                db, keys=None, allow_private=True, backoff=schedule, draw=lambda: 0.0
            ) as sender:
                t0 = now()
                for offset in (0, 30, 90):
                    assert await sender.run_once(t0 + timedelta(seconds=offset)) == 1
                assert await sender.run_once(t0 + timedelta(days=2)) == 0
                (failed,) = await log_of(port, key, webhook["id"])
                assert (failed["state"], failed["attempts"], failed["next_attempt_at"]) == (
                    "failed",
                    3,
                    None,
                )
                errors = [a["error"] for a in failed["attempt_log"]]
                assert errors == ["HTTP 500", "HTTP 302", "HTTP 404"]
                assert (await health(port, key, webhook["id"]))["consecutive_failures"] == 3
                assert await log_of(port, key, webhook["id"], "?state=failed") == [failed]
                assert await log_of(port, key, webhook["id"], "?state=delivered") == []

                path = f"/v1/webhooks/{webhook['id']}/deliveries/{failed['id']}/replay"
                headers = idem()
                replay = await call(port, "POST", path, key=key, headers=headers)
                assert replay.status == 201, replay.body
                replayed = replay.json()
                assert (replayed["replay_of"], replayed["event_id"], replayed["state"]) == (
                    failed["id"],
                    failed["event_id"],
                    "pending",
                )
                repeated = await call(port, "POST", path, key=key, headers=headers)
                assert repeated.status == 201 and repeated.json() == replayed
                at = now()
                assert await sender.run_once(at) == 1
            # The redirect was not followed: every request went to /hook.
            assert [r.path for r in receiver.received] == ["/hook"] * 4
            last = receiver.received[-1]
            assert last.body == receiver.received[0].body
            assert last.headers["ere-delivery-id"] == replayed["id"]
            signed(last, webhook["secret"], at)
        newest, oldest = await log_of(port, key, webhook["id"])
        assert (newest["id"], newest["state"], oldest["id"]) == (
            replayed["id"],
            "delivered",
            failed["id"],
        )
        audit = await db.fetch(
            "SELECT action FROM api_audit_log WHERE action LIKE 'webhook.%' ORDER BY audit_id"
        )
        assert [row["action"] for row in audit] == ["webhook.create", "webhook.replay"]


async def test_a_ping_a_timeout_and_a_large_answer(settings):
    async with serving_api(settings, webhooks_allow_private=True) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        async with receiving([HANG], answer_body=b"x" * 100_000) as receiver:
            webhook = await make_webhook(port, key, receiver.url(), events=SCANNED)
            ping = await call(
                port, "POST", f"/v1/webhooks/{webhook['id']}/ping", key=key, headers=idem()
            )
            assert ping.status == 201, ping.body
            assert (ping.json()["event_type"], ping.json()["state"]) == ("webhook.ping", "pending")
            # Long enough for the hanging receiver to have read the request on a busy machine.
            async with Deliverer(db, keys=None, allow_private=True, timeout=2.0) as sender:
                t0 = now()
                assert await sender.run_once(t0) == 1  # the receiver never answers
                assert await sender.run_once(t0 + timedelta(minutes=1)) == 1
            hung, second = receiver.received
            assert hung.body == second.body
            event = signed(second, webhook["secret"], t0 + timedelta(minutes=1))
            assert event["type"] == "webhook.ping" and event["data"] == {
                "webhook_id": webhook["id"]
            }
        (delivery,) = await log_of(port, key, webhook["id"])
        timed_out, answered = delivery["attempt_log"]
        assert (timed_out["error"], timed_out["status"]) == ("timed out", None)
        assert answered["ok"] and answered["response"] == "x" * 300  # a prefix, never all of it


async def test_the_url_guard_refuses_at_creation_and_again_at_delivery(settings):
    async with serving_api(settings) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        refused = [
            "http://127.0.0.1:8080/hook",
            "https://127.0.0.1/hook",
            "https://10.1.2.3/hook",
            "https://192.168.0.10/hook",
            "https://169.254.169.254/latest/meta-data/",
            "https://[::1]/hook",
            "https://[::ffff:10.0.0.1]/hook",
            "https://localhost/hook",
            "https://2130706433/hook",
            "http://hooks.example.com/ere",
            "https://user:secret@hooks.example.com/ere",
            "https://hooks.example.com/ere#top",
            "javascript:alert(1)",
            "https://hooks.example.com\\@127.0.0.1/",
        ]
        for url in refused:
            body = {"url": url, "events": ["payout.sent"]}
            reply = await call(
                port, "POST", "/v1/webhooks", key=key, json_body=body, headers=idem()
            )
            problem = problem_of(reply, 422)
            assert problem["errors"][0]["field"] == "url", (url, problem)
            assert "secret" not in problem["detail"]
        assert await db.fetchval("SELECT count(*) FROM webhook_endpoints") == 0
        # A name that does not resolve now is taken: every delivery resolves and checks again.
        made = await make_webhook(port, key, "https://hooks.example.invalid/ere")
        assert made["url"] == "https://hooks.example.invalid/ere"

    # Made where private addresses were allowed, sent by a deliverer that refuses them.
    async with serving_api(settings, webhooks_allow_private=True) as (db, port):
        async with receiving() as receiver:
            webhook = await make_webhook(port, key, receiver.url("/private"))
            await enrol(port, key, EAN_1)
            async with Deliverer(db, keys=None, allow_private=False) as sender:
                assert await sender.run_once(now()) == 2  # and the unresolvable one
            assert receiver.received == []
        (delivery,) = await log_of(port, key, webhook["id"])
        assert delivery["state"] == "pending"
        assert delivery["attempt_log"][0]["error"].startswith("refused: ")
        (elsewhere,) = await log_of(port, key, made["id"])
        assert "does not resolve" in elsewhere["attempt_log"][0]["error"]


async def test_a_tls_endpoint_is_reached_by_name_at_the_address_checked(settings):
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with serving_api(settings, webhooks_allow_private=True) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        async with receiving(ssl_context=server_context) as receiver:
            url = receiver.url("/tls", host="localhost")
            webhook = await make_webhook(port, key, url)
            await enrol(port, key, EAN_1)
            async with Deliverer(db, keys=None, allow_private=True) as untrusting:
                at = now()
                assert await untrusting.run_once(at) == 1  # the CA is not trusted: refused
            async with Deliverer(
                db, keys=None, allow_private=True, verify=client_context
            ) as sender:
                assert await sender.run_once(at + timedelta(minutes=1)) == 1
            (request,) = receiver.received
            assert request.headers["host"] == f"localhost:{receiver.port}"
            signed(request, webhook["secret"], at)
        (delivery,) = await log_of(port, key, webhook["id"])
        refused, accepted = delivery["attempt_log"]
        assert refused["status"] is None and "CERTIFICATE" in refused["error"].upper()
        assert accepted["ok"]


async def test_the_secret_is_sealed_when_the_registry_has_a_key(settings):
    keys = KeyRing.parse(generate_key())
    context = dataclasses.replace(ApiContext.bare(), keys=keys)
    async with serving_api(settings, context=context, webhooks_allow_private=True) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        async with receiving() as receiver:
            webhook = await make_webhook(port, key, receiver.url())
            row = await db.fetchrow(
                "SELECT secret, secret_sealed, sealed_with FROM webhook_endpoints"
            )
            assert row["secret"] is None and row["sealed_with"] == keys.primary_id
            assert webhook["secret"].encode() not in row["secret_sealed"]
            await enrol(port, key, EAN_1)
            async with Deliverer(db, keys=None, allow_private=True) as keyless:
                at = now()
                assert await keyless.run_once(at) == 1
            async with Deliverer(db, keys=keys, allow_private=True) as sender:
                assert await sender.run_once(at + timedelta(minutes=1)) == 1
            (request,) = receiver.received
            signed(request, webhook["secret"], at)
        (delivery,) = await log_of(port, key, webhook["id"])
        assert "secret cannot be opened" in delivery["attempt_log"][0]["error"]


async def test_partners_never_see_touch_or_receive_each_others_webhooks(settings):
    async with serving_api(settings, webhooks_allow_private=True) as (db, port):
        key_a = await partner_with_key(db, "alpha", ALL)
        key_b = await partner_with_key(db, "bravo", ALL)
        async with receiving() as receiver:
            mine = await make_webhook(port, key_a, receiver.url("/alpha"))
            theirs = await make_webhook(port, key_b, receiver.url("/bravo"))
            await enrol(port, key_a, EAN_1)
            async with Deliverer(db, keys=None, allow_private=True) as sender:
                assert await sender.run_once(now()) == 1
            assert [r.path for r in receiver.received] == ["/alpha"]
        (delivery,) = await log_of(port, key_a, mine["id"])
        assert await log_of(port, key_b, theirs["id"]) == []

        listed = await call(port, "GET", "/v1/webhooks", key=key_b)
        assert [w["id"] for w in listed.json()["data"]] == [theirs["id"]]
        a, d = mine["id"], delivery["id"]
        for method, path in (
            ("GET", f"/v1/webhooks/{a}"),
            ("GET", f"/v1/webhooks/{a}/deliveries"),
            ("DELETE", f"/v1/webhooks/{a}"),
            ("POST", f"/v1/webhooks/{a}/ping"),
            ("POST", f"/v1/webhooks/{a}/deliveries/{d}/replay"),
            ("POST", f"/v1/webhooks/{theirs['id']}/deliveries/{d}/replay"),
        ):
            reply = await call(port, method, path, key=key_b, headers=idem())
            problem = problem_of(reply, 404)
            assert a not in reply.body.decode() and "alpha" not in reply.body.decode(), path
            assert problem["detail"] in ("no such webhook", "no such delivery")
        assert (await health(port, key_a, a))["state"] == "healthy"
        assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 1

        # The database itself refuses a delivery of alpha's event to bravo's endpoint.
        event_id = delivery["event_id"]
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await db.execute(
                "INSERT INTO webhook_deliveries (delivery_id, partner_id, webhook_id, event_id, "
                "next_attempt_at) VALUES ($1, 'bravo', $2, $3, now())",
                "dlv_" + "0" * 32,
                theirs["id"],
                event_id,
            )


async def test_disabling_cancels_what_is_pending_and_stops_deliveries(settings):
    async with serving_api(settings, webhooks_allow_private=True) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        webhook = await make_webhook(port, key, "http://127.0.0.1:9/hook")
        await enrol(port, key, EAN_1)
        (pending,) = await log_of(port, key, webhook["id"])
        assert pending["state"] == "pending"

        disabled = await call(port, "DELETE", f"/v1/webhooks/{webhook['id']}", key=key)
        assert disabled.status == 200, disabled.body
        assert disabled.json()["health"]["state"] == "disabled"
        assert disabled.json()["disabled_at"] is not None
        again = await call(port, "DELETE", f"/v1/webhooks/{webhook['id']}", key=key)
        assert again.status == 200 and again.json()["disabled_at"] == disabled.json()["disabled_at"]
        (cancelled,) = await log_of(port, key, webhook["id"])
        assert cancelled["state"] == "cancelled" and cancelled["next_attempt_at"] is None

        async with Deliverer(db, keys=None, allow_private=True) as sender:
            assert await sender.run_once(now() + timedelta(days=1)) == 0
        for path in (
            f"/v1/webhooks/{webhook['id']}/ping",
            f"/v1/webhooks/{webhook['id']}/deliveries/{cancelled['id']}/replay",
        ):
            problem = problem_of(await call(port, "POST", path, key=key, headers=idem()), 409)
            assert problem["type"] == "urn:ere-proxy:problem:webhook-disabled"
        await enrol(port, key, EAN_2)  # no active endpoint: no event, no delivery
        assert await db.fetchval("SELECT count(*) FROM webhook_deliveries") == 1
        listed = (await call(port, "GET", "/v1/webhooks", key=key)).json()["data"]
        assert [w["health"]["state"] for w in listed] == ["disabled"]
        audit = await db.fetchrow(
            "SELECT before, after FROM api_audit_log WHERE action = 'webhook.disable'"
        )
        assert audit["before"] is not None and audit["after"] is not None
        # The tables keep the log: an endpoint or event is never deleted.
        for table in ("webhook_endpoints", "webhook_events", "webhook_deliveries"):
            with pytest.raises(asyncpg.IntegrityConstraintViolationError):
                await db.execute(f"DELETE FROM {table}")


async def test_keys_scopes_and_hostile_input(settings):
    async with serving_api(settings, webhooks_allow_private=True) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        blind = (await create_key(db, "acme", ("customers:read", "customers:write"))).key
        revoked = (await create_key(db, "acme", ("webhooks:write",))).key
        await revoke_key(db, parse_key(revoked)[0])
        webhook = await make_webhook(port, key, "https://hooks.example.com/ere")
        body = {"url": "https://hooks.example.com/other", "events": ["payout.sent"]}
        for method, path in (
            ("POST", "/v1/webhooks"),
            ("GET", "/v1/webhooks"),
            ("GET", f"/v1/webhooks/{webhook['id']}"),
            ("DELETE", f"/v1/webhooks/{webhook['id']}"),
            ("GET", f"/v1/webhooks/{webhook['id']}/deliveries"),
            ("POST", f"/v1/webhooks/{webhook['id']}/ping"),
        ):
            sent = body if path == "/v1/webhooks" and method == "POST" else None
            for credential, status in ((blind, 403), (revoked, 401), (None, 401)):
                reply = await call(
                    port, method, path, key=credential, json_body=sent, headers=idem()
                )
                problem_of(reply, status)

        too_long = "https://hooks.example.com/" + "a" * 2100
        hostile = [
            (b'{"url": "https://hooks.example.com/x", "events": [', 400),
            (json.dumps({"url": "https://h.example.com/", "events": []}).encode(), 422),
            (json.dumps({"url": "https://h.example.com/", "events": ["nope"]}).encode(), 422),
            (json.dumps({"url": "https://h.example.com/", "events": "payout.sent"}).encode(), 422),
            (json.dumps({"url": 5, "events": ["payout.sent"]}).encode(), 422),
            (json.dumps({"url": too_long, "events": ["payout.sent"]}).encode(), 422),
            (json.dumps({"url": "https://h.example.com/", "events": ["payout.sent"], "x": 1}).encode(), 422),
            (json.dumps({"url": "https://h.example.com/", "events": ["payout.sent"], "description": "a\u202eb"}).encode(), 422),
            (json.dumps({"url": "https://h.example.com/", "events": ["payout.sent"], "description": "d" * 201}).encode(), 422),
            (json.dumps({"url": "https://h.example.com/\u0000", "events": ["payout.sent"]}).encode(), 422),
            (json.dumps({"url": "https://h\u00e9\u0301.example/", "events": ["payout.sent"] * 21}).encode(), 422),
            (b"x" * 70_000, 413),
        ]  # fmt: skip
        for raw, status in hostile:
            reply = await call(
                port,
                "POST",
                "/v1/webhooks",
                key=key,
                body=raw,
                headers=idem() | {"content-type": "application/json"},
            )
            problem_of(reply, status)
        reply = await call(port, "POST", "/v1/webhooks", key=key, json_body=body)
        assert problem_of(reply, 400)["errors"][0]["field"] == "Idempotency-Key"
        for path in (
            "/v1/webhooks/whk_zzz",
            "/v1/webhooks/" + "whk_" + "0" * 32,
            "/v1/webhooks/..%2F..%2Fcustomers",
            f"/v1/webhooks/{webhook['id']}/deliveries/dlv_nope/replay",
            f"/v1/webhooks/{webhook['id']}/deliveries/{'dlv_' + 'f' * 32}/replay",
        ):
            method = "POST" if path.endswith("replay") else "GET"
            problem_of(await call(port, method, path, key=key, headers=idem()), 404)
        for query in ("?state=bogus", "?limit=0", "?limit=101", "?cursor=garbage"):
            reply = await call(
                port, "GET", f"/v1/webhooks/{webhook['id']}/deliveries{query}", key=key
            )
            problem_of(reply, 400, 422)
        # Events are stored once each, in the catalogue's order, whatever the request repeats.
        repeated = await make_webhook(
            port,
            key,
            "https://hooks.example.com/x",
            events=["payout.sent", "session.completed", "payout.sent"],
        )
        assert repeated["events"] == ["session.completed", "payout.sent"]


async def test_pages_of_webhooks_and_deliveries(settings):
    async with serving_api(settings, webhooks_allow_private=True) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        made = [await make_webhook(port, key, f"https://hooks.example.com/{n}") for n in range(3)]
        first = (await call(port, "GET", "/v1/webhooks?limit=2", key=key)).json()
        second = (
            await call(port, "GET", f"/v1/webhooks?limit=2&cursor={first['next_cursor']}", key=key)
        ).json()
        assert [w["id"] for w in first["data"] + second["data"]] == [w["id"] for w in made]
        assert second["next_cursor"] is None
        for ean in (EAN_1, EAN_2, EAN_3):
            await enrol(port, key, ean)
        path = f"/v1/webhooks/{made[0]['id']}/deliveries"
        page = (await call(port, "GET", f"{path}?limit=2", key=key)).json()
        rest = (
            await call(port, "GET", f"{path}?limit=2&cursor={page['next_cursor']}", key=key)
        ).json()
        seen = [d["id"] for d in page["data"] + rest["data"]]
        assert len(set(seen)) == 3 and rest["next_cursor"] is None
        created = [d["created_at"] for d in page["data"] + rest["data"]]
        assert created == sorted(created, reverse=True)


async def books_with_webhooks(settings, tmp_path, port, db):
    """The ERE books (P1: customer A on CP-A; P2: customer B on CP-B), a session of A's
    finished before any endpoint, then P1 subscribed to every scanned event and P2 to
    completed sessions: (keys, endpoints, config)."""
    await seed(db)
    await add_session(db, "CP-A", "a-before", datetime(2026, 5, 2, 8, tzinfo=UTC), "3")
    keys = [(await create_key(db, p, ALL)).key for p in ("P1", "P2")]
    return keys, config(settings, tmp_path)


async def test_scans_turn_what_other_roles_write_into_events_once(settings, tmp_path):
    async with serving_api(settings, webhooks_allow_private=True) as (db, port):
        (key_1, key_2), cfg = await books_with_webhooks(settings, tmp_path, port, db)
        async with receiving() as receiver:
            p1 = await make_webhook(port, key_1, receiver.url("/p1"), events=SCANNED)
            p2 = await make_webhook(port, key_2, receiver.url("/p2"), events=["session.completed"])
            await add_session(db, "CP-A", "a-may", datetime(2026, 5, 10, 8, tzinfo=UTC), "30")
            await add_session(db, "CP-B", "b-may", datetime(2026, 5, 11, 8, tzinfo=UTC), "5")
            await seed_session(db, "CP-A", "a-active", started_at=datetime.now(UTC))
            assert "close:done" in await close(db, cfg, Q2)
            assert await pay(db, cfg, Q2) == ["payout:done", "statements:done"]

            november = datetime(2026, 11, 1, 12, tzinfo=DUTCH_TIME)
            found = await scan_once(db, november)
            assert found == {
                "session.completed": 2,  # a-may for P1, b-may for P2; not a-before, not active
                "statement.issued": 1,
                "payout.sent": 1,
                "mandate.expiring": 0,  # 31 December is more than 30 days away
            }
            december = datetime(2026, 12, 10, 12, tzinfo=DUTCH_TIME)
            assert (await scan_once(db, december))["mandate.expiring"] == 1
            assert set((await scan_once(db, december)).values()) == {0}  # once each

            async with Deliverer(db, keys=None, allow_private=True) as sender:
                at = now()
                assert await sender.run_once(at) == 5
            events = {}
            for request in receiver.received:
                secret = p1["secret"] if request.path == "/p1" else p2["secret"]
                event = signed(request, secret, at)
                events[request.path, event["type"]] = event["data"]
        assert set(events) == {
            ("/p1", "session.completed"),
            ("/p1", "statement.issued"),
            ("/p1", "payout.sent"),
            ("/p1", "mandate.expiring"),
            ("/p2", "session.completed"),
        }
        session = events["/p1", "session.completed"]
        assert (session["charger"], session["transaction_id"], session["customer_id"]) == (
            "CP-A",
            "a-may",
            "A",
        )
        assert session["energy_kwh"] == "30.000" and session["ended_at"].endswith("Z")
        assert events["/p2", "session.completed"]["transaction_id"] == "b-may"
        assert events["/p1", "statement.issued"] | {"issued_at": None} == {
            "statement_id": "2026Q2-A",
            "run_id": "2026Q2",
            "quarter": "2026Q2",
            "customer_id": "A",
            "issued_at": None,
        }
        payout = events["/p1", "payout.sent"]
        assert (payout["run_id"], payout["transfers"]) == ("2026Q2", 1)
        transferred = await db.fetchval(
            "SELECT amount FROM payout_transfers WHERE payee_id = 'A' AND run_id = '2026Q2'"
        )
        assert payout["amount_eur"] == str(transferred)
        assert events["/p1", "mandate.expiring"]["valid_until"] == "2026-12-31"


async def test_a_scan_waits_for_none_while_another_process_scans(settings):
    async with open_database(settings) as db:
        async with db.connection() as holder, holder.transaction() as tx:
            assert await tx.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtextextended('webhook-scan', 0))"
            )
            assert await scan_once(db, now()) == {}
        assert set((await scan_once(db, now())).values()) == {0}


async def test_the_role_tasks_scan_and_deliver_until_stopped(settings):
    async with serving_api(settings, webhooks_allow_private=True) as (db, port):
        key = await partner_with_key(db, "acme", ALL)
        async with receiving() as receiver:
            webhook = await make_webhook(port, key, receiver.url(), events=["session.completed"])
            customer = await enrol(port, key, EAN_1)
            charger = {"identity": "CP-WEBHOOK", "upstream": "wss://csms.example.com/ocpp"}
            reply = await call(
                port, "POST", "/v1/chargers", key=key, json_body=charger, headers=idem()
            )
            assert reply.status == 201, reply.body
            link = {"customer_id": customer["id"], "max_power_w": 11000}
            reply = await call(
                port,
                "POST",
                "/v1/chargers/CP-WEBHOOK/links",
                key=key,
                json_body=link,
                headers=idem(),
            )
            assert reply.status == 201, reply.body
            start = datetime.now(UTC) + timedelta(seconds=1)
            await seed_session(
                db,
                "CP-WEBHOOK",
                "tx-1",
                started_at=start,
                stopped_at=start + timedelta(minutes=1),
                kwh="4.2",
            )
            stop = trio.Event()
            with trio.fail_after(30):
                async with Deliverer(db, keys=None, allow_private=True) as sender:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(run_scans, db, stop)
                        nursery.start_soon(lambda: sender.run(stop, poll=0.05))
                        (request,) = await receiver.wait_for(1)
                        stop.set()
            event = json.loads(request.body)
            assert event["type"] == "session.completed"
            assert event["data"]["energy_kwh"] == "4.200"
            assert verify(
                request.headers["ere-signature"], request.body, webhook["secret"], now().timestamp()
            )
