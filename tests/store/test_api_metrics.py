"""The api role's admin port on the embedded PostgreSQL: /metrics, /healthz and /readyz served
apart from the partner port, scraped over a real socket after real requests: requests by route
template, method and status class, their latency, rate-limit refusals and failed
authentications, webhook deliveries by outcome, the backlog of pending deliveries, scan rounds
and housekeeping purges; no label carries an id, a key or a partner."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from proxy.api.keys import SCOPES
from proxy.api.metrics import ApiMetrics
from proxy.api.role import Serving, serve_api, serve_role
from proxy.api.webhook_delivery import Deliverer
from proxy.api.webhook_schedule import Backoff
from proxy.runtime.config import ApiSettings, DatabaseSettings
from proxy.runtime.http_admin import AdminServer
from proxy.store.db import Database, open_database
from testkit.ere_admin import EAN_1, EAN_2
from testkit.partner_api import call, enrolment, partner_with_key, seed_session
from testkit.ports import free_port
from testkit.waiting import eventually
from testkit.webhook_receiver import receiving

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@asynccontextmanager
async def api_role(
    settings: DatabaseSettings, **api: Any
) -> AsyncIterator[tuple[Database, int, int]]:
    """The api role's serving over a fresh database: (database, partner port, admin port)."""
    port, admin_port = free_port(), free_port()
    api_settings = ApiSettings(enabled=True, port=port, admin_port=admin_port, **api)
    async with open_database(settings) as db, trio.open_nursery() as nursery:
        stop = trio.Event()
        serving: Serving = await nursery.start(serve_role, db, api_settings, stop)
        assert serving.metrics == f"http://127.0.0.1:{admin_port}/metrics"
        try:
            yield db, port, admin_port
        finally:
            stop.set()


async def scrape(admin_port: int) -> Samples:
    """Every sample of the admin port's /metrics: (name, labels) -> value."""
    reply = await call(admin_port, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(reply.body.decode())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests(samples: Samples, route: str, method: str, status: str) -> float:
    return value(samples, "ere_api_requests_total", route=route, method=method, status=status)


async def until_scraped(admin_port: int, name: str, expected: float, **labels: str) -> Samples:
    """Scrape until the sample is `expected` (what another task of the role brings about)."""
    seen: Samples = {}

    async def reached() -> bool:
        seen.update(await scrape(admin_port))
        return value(seen, name, **labels) == expected

    await eventually(reached, limit=30)
    return seen


class Unreachable:
    """A database connection whose server is gone."""

    async def fetchrow(self, query: str, *args: object) -> None:
        raise ConnectionRefusedError("connection refused")


def idem() -> dict[str, str]:
    return {"idempotency-key": str(uuid.uuid4())}


async def test_requests_are_counted_by_route_template_method_and_status_class(settings):
    limits = {
        "rate_limit_burst": 3,
        "rate_limit_per_second": 0.001,
        "failed_auth_burst": 2,
        "failed_auth_per_second": 0.001,
    }
    async with api_role(settings, **limits) as (db, port, admin_port):
        key = await partner_with_key(db, "acme", SCOPES)
        assert (await call(admin_port, "GET", "/healthz")).status == 200
        assert (await call(admin_port, "GET", "/readyz")).status == 200
        for path in ("/metrics", "/healthz", "/readyz"):  # never on the partner port
            assert (await call(port, "GET", path)).status == 404

        assert (await call(port, "GET", "/v1/customers", key=key)).status == 200
        assert (await call(port, "HEAD", "/v1/customers", key=key)).status == 200
        unknown = "/v1/customers/cus_00000000000000000000"
        assert (await call(port, "GET", unknown, key=key)).status == 404
        assert (await call(port, "GET", "/v1/customers", key=key)).status == 429  # its burst
        assert (await call(port, "GET", "/v1/customers")).status == 401
        assert (await call(port, "GET", "/v1/customers", key="ere_nokey_guess")).status == 401
        assert (await call(port, "GET", "/v1/customers")).status == 429  # the address's failures
        assert (await call(port, "BREW", "/v1/customers")).status == 405
        samples = await scrape(admin_port)

    assert requests(samples, "/v1/customers", "GET", "2xx") == 1
    assert requests(samples, "/v1/customers", "HEAD", "2xx") == 1
    assert requests(samples, "/v1/customers/{customer_id}", "GET", "4xx") == 1
    assert requests(samples, "/v1/customers", "GET", "4xx") == 4
    assert requests(samples, "/v1/customers", "other", "4xx") == 1
    assert requests(samples, "unmatched", "GET", "4xx") == 3
    assert value(samples, "ere_api_rate_limited_total", limit="key") == 1
    assert value(samples, "ere_api_rate_limited_total", limit="address") == 1
    assert value(samples, "ere_api_failed_authentications_total") == 2
    assert value(samples, "ere_api_request_seconds_count", route="/v1/customers") == 7
    assert value(samples, "ere_api_request_seconds_bucket", route="/v1/customers", le="10.0") == 7
    assert value(samples, "ere_api_request_seconds_bucket", route="/v1/customers", le="+Inf") == 7
    assert value(samples, "ere_api_webhook_pending_deliveries") == 0
    labels = {v for _, pairs in samples for _, v in pairs}
    assert not {v for v in labels if "cus_" in v or "acme" in v or key[:12] in v or "BREW" in v}
    assert {route for name, pairs in samples for k, route in pairs if k == "route"} == {
        "/v1/customers",
        "/v1/customers/{customer_id}",
        "unmatched",
    }


async def test_a_delivery_the_scans_and_housekeeping_show_on_the_admin_port(settings):
    async with open_database(settings) as db:  # housekeeping finds this at its first round
        await partner_with_key(db, "old", ("customers:read",))
        await db.execute(
            "INSERT INTO api_idempotency (partner_id, idem_key, request_sha256, status, body, "
            "created_at) VALUES ('old', 'k', 'x', 201, '{}', now() - interval '200 hours')"
        )
    async with (
        receiving() as receiver,
        api_role(settings, webhooks_allow_private=True, webhook_scan_interval=0.1) as (
            db,
            port,
            admin_port,
        ),
    ):
        await until_scraped(
            admin_port, "ere_api_housekeeping_purged_total", 1, kind="idempotency_key"
        )
        key = await partner_with_key(db, "acme", SCOPES)
        body = {"url": receiver.url(), "events": ["customer.enrolled", "session.completed"]}
        reply = await call(port, "POST", "/v1/webhooks", key=key, json_body=body, headers=idem())
        assert reply.status == 201, reply.body
        enrolled = await call(
            port, "POST", "/v1/customers", key=key, json_body=enrolment(EAN_1), headers=idem()
        )
        assert enrolled.status == 201, enrolled.body
        charger = {"identity": "CP-METRICS", "upstream": "wss://csms.example.com/ocpp"}
        reply = await call(port, "POST", "/v1/chargers", key=key, json_body=charger, headers=idem())
        assert reply.status == 201, reply.body
        link = {"customer_id": enrolled.json()["id"], "max_power_w": 11000}
        path = "/v1/chargers/CP-METRICS/links"
        reply = await call(port, "POST", path, key=key, json_body=link, headers=idem())
        assert reply.status == 201, reply.body
        start = datetime.now(UTC) + timedelta(seconds=1)
        await seed_session(
            db, "CP-METRICS", "tx-1", started_at=start, stopped_at=start + timedelta(minutes=1)
        )

        with trio.fail_after(30):
            received = await receiver.wait_for(2)
        assert sorted(r.headers["ere-event-type"] for r in received) == [
            "customer.enrolled",
            "session.completed",
        ]
        await until_scraped(admin_port, "ere_api_webhook_deliveries_total", 2, outcome="delivered")
        samples = await until_scraped(
            admin_port, "ere_api_webhook_scan_events_total", 1, type="session.completed"
        )
        assert value(samples, "ere_api_webhook_scan_timestamp_seconds") > 0
        assert value(samples, "ere_api_webhook_deliveries_total", outcome="retrying") == 0
        assert value(samples, "ere_api_housekeeping_purged_total", kind="access_token") == 0
        assert requests(samples, "/v1/chargers/{identity}/links", "POST", "2xx") == 1


async def test_failed_attempts_give_up_and_the_backlog_shows_what_waits(settings):
    metrics = ApiMetrics()
    async with open_database(settings) as db, trio.open_nursery() as nursery:
        admin = AdminServer(metrics.registry, lambda: metrics.backlog.database_ok)
        admin_port = free_port()
        await nursery.start(admin.serve, "127.0.0.1", admin_port)
        key = await partner_with_key(db, "acme", SCOPES)
        assert (await call(admin_port, "GET", "/readyz")).status == 503  # nothing read yet
        app_port = free_port()  # the partner API alone: the test delivers
        stop = trio.Event()
        serve = functools.partial(serve_api, metrics=metrics)
        settings_api = ApiSettings(enabled=True, port=app_port, webhooks_allow_private=True)
        await nursery.start(serve, db, settings_api, stop)
        async with receiving([500, 500, 500]) as receiver:
            body = {"url": receiver.url(), "events": ["customer.enrolled"]}
            reply = await call(
                app_port, "POST", "/v1/webhooks", key=key, json_body=body, headers=idem()
            )
            assert reply.status == 201, reply.body
            for ean in (EAN_1, EAN_2):
                reply = await call(
                    app_port,
                    "POST",
                    "/v1/customers",
                    key=key,
                    json_body=enrolment(ean),
                    headers=idem(),
                )
                assert reply.status == 201, reply.body
            assert await metrics.backlog.refresh(db)
            samples = await scrape(admin_port)
            assert value(samples, "ere_api_webhook_pending_deliveries") == 2
            assert value(samples, "ere_api_webhook_oldest_due_seconds") >= 0
            assert (await call(admin_port, "GET", "/readyz")).status == 200

            # Each attempt fails; the second of a delivery is its last.
            schedule = Backoff(attempts=2)
            async with Deliverer(
                db,
                keys=None,
                allow_private=True,
                backoff=schedule,
                draw=lambda: 0.0,
                metrics=metrics,
            ) as sender:
                t0 = datetime.now(UTC)
                assert await sender.run_once(t0) == 2
                samples = await scrape(admin_port)
                assert value(samples, "ere_api_webhook_deliveries_total", outcome="retrying") == 2
                assert await metrics.backlog.refresh(db)
                samples = await scrape(admin_port)
                assert value(samples, "ere_api_webhook_pending_deliveries") == 2
                assert value(samples, "ere_api_webhook_oldest_due_seconds") == 0  # none due

                # One is due again since 20 minutes: it waits, counted, until it is tried.
                await db.execute(
                    "UPDATE webhook_deliveries SET next_attempt_at = now() - interval '20 minutes'"
                    " WHERE delivery_id = (SELECT min(delivery_id) FROM webhook_deliveries)"
                )
                assert await metrics.backlog.refresh(db)
                samples = await scrape(admin_port)
                assert value(samples, "ere_api_webhook_oldest_due_seconds") >= 20 * 60

                assert await sender.run_once(datetime.now(UTC)) == 1
                samples = await scrape(admin_port)
                assert value(samples, "ere_api_webhook_deliveries_total", outcome="gave_up") == 1
                assert value(samples, "ere_api_webhook_deliveries_total", outcome="delivered") == 0
                assert await metrics.backlog.refresh(db)
                samples = await scrape(admin_port)
                assert value(samples, "ere_api_webhook_pending_deliveries") == 1
                assert value(samples, "ere_api_webhook_oldest_due_seconds") == 0
            assert len(receiver.received) == 3
        stop.set()
        # The database out of reach: the figures stay, and the role is not ready.
        assert not await metrics.backlog.refresh(Unreachable())
        assert value(await scrape(admin_port), "ere_api_webhook_pending_deliveries") == 1
        assert (await call(admin_port, "GET", "/readyz")).status == 503
        nursery.cancel_scope.cancel()
