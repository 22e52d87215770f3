"""Prometheus metrics of the partner API role, served on `[api] admin_port`.

Label values are bounded: a request's route is its template (`/v1/customers/{customer_id}`,
never an id, a key or a partner), its method one of the HTTP methods the API knows, its status
a class (`2xx`); what a client can make up falls into one value each (`unmatched`, `other`).
Labelled counters of fixed label sets are exported at zero from the start, so `increase()` sees
their first event. The webhook backlog is read from the database by `WebhookBacklog.refresh`,
which the role calls every few seconds; a scrape only reads what it found.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import trio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from proxy.api.throttle import Throttle
from proxy.runtime.metrics import register_build_info
from proxy.store.connection import Connection
from proxy.store.db import DATABASE_ERRORS

__all__ = [
    "DELIVERY_OUTCOMES",
    "METHODS",
    "UNMATCHED",
    "ApiMetrics",
    "ThrottleCollector",
    "WebhookBacklog",
    "status_class",
]

disable_created_metrics()

log = logging.getLogger("proxy.api.metrics")

UNMATCHED = "unmatched"  # the route label of a path no route of the API matches
METHODS = frozenset(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
# A delivery attempt recorded: a 2xx, a failure tried again later, or the last failure.
DELIVERY_OUTCOMES = {"delivered": "delivered", "pending": "retrying", "failed": "gave_up"}
# What the scans record (`proxy.api.webhook_scans`) and what housekeeping deletes.
_SCANNED_TYPES = ("session.completed", "statement.issued", "payout.sent", "mandate.expiring")
_PURGED_KINDS = ("idempotency_key", "access_token")
# From a cached read (milliseconds) to a statement PDF or a slow database (seconds).
_REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Pending deliveries, and how long the earliest due one has been due (the database's clock).
_BACKLOG = """
SELECT count(*) AS pending,
       coalesce(extract(epoch FROM now() - min(next_attempt_at)
                FILTER (WHERE next_attempt_at <= now())), 0)::float8 AS oldest_due
FROM webhook_deliveries WHERE state = 'pending'
"""

# What says the database did not answer (the role's readiness).
_UNREACHABLE: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, trio.TooSlowError)


def status_class(status: int) -> str:
    """`2xx` for 200-299, and so on; anything outside 100-599 is `other`."""
    return f"{status // 100}xx" if 100 <= status <= 599 else "other"


class ApiMetrics:
    """All metrics of one api process, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, open fds, CPU seconds
        register_build_info(r, "ere_api")
        self.requests = Counter(
            "ere_api_requests",
            "Requests answered, by route template, method and status class (2xx ... 5xx).",
            ["route", "method", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "ere_api_request_seconds",
            "Time from a request's arrival to the last byte of its answer handed to the server, "
            "by route template.",
            ["route"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.deliveries = Counter(
            "ere_api_webhook_deliveries",
            "Webhook delivery attempts recorded, by outcome: delivered (a 2xx), retrying (failed, "
            "tried again later), gave_up (the last attempt failed; the delivery is failed).",
            ["outcome"],
            registry=r,
        )
        self.scan_events = Counter(
            "ere_api_webhook_scan_events",
            "Webhook events the scans of this process recorded, by type.",
            ["type"],
            registry=r,
        )
        self.scanned_at = Gauge(
            "ere_api_webhook_scan_timestamp_seconds",
            "Unix time of the last webhook scan round that worked (or found another process "
            "scanning); 0: none yet.",
            registry=r,
        )
        self.purged = Counter(
            "ere_api_housekeeping_purged",
            "Rows housekeeping deleted, by kind: idempotency_key (answers kept for an "
            "Idempotency-Key past [api] idempotency_hours), access_token (expired).",
            ["kind"],
            registry=r,
        )
        for outcome in DELIVERY_OUTCOMES.values():
            self.deliveries.labels(outcome)
        for event_type in _SCANNED_TYPES:
            self.scan_events.labels(event_type)
        for kind in _PURGED_KINDS:
            self.purged.labels(kind)
        self.backlog = WebhookBacklog()
        r.register(self.backlog)

    def delivery_recorded(self, state: str) -> None:
        """Count an attempt that moved its delivery to `state` (delivered, pending, failed)."""
        self.deliveries.labels(DELIVERY_OUTCOMES[state]).inc()

    def scan_round(self, found: dict[str, int]) -> None:
        """Count a scan round that worked: the events it recorded, by type."""
        for event_type, count in found.items():
            if event_type in _SCANNED_TYPES and count:
                self.scan_events.labels(event_type).inc(count)
        self.scanned_at.set(time.time())

    def housekeeping_round(self, idempotency_keys: int, access_tokens: int) -> None:
        """Count what a housekeeping round deleted."""
        self.purged.labels("idempotency_key").inc(idempotency_keys)
        self.purged.labels("access_token").inc(access_tokens)

    def watch_throttle(self, throttle: Throttle) -> None:
        """Export what `throttle` refused and counted (read at scrape time)."""
        self.registry.register(ThrottleCollector(throttle))


class ThrottleCollector:
    """The rate limits' refusals and the failed authentications, as the throttle counted them."""

    def __init__(self, throttle: Throttle) -> None:
        self._throttle = throttle

    def collect(self) -> Iterator[Metric]:
        counts = self._throttle.counts
        refused = CounterMetricFamily(
            "ere_api_rate_limited",
            "Requests refused with 429 by a rate limit: key (the key's requests, "
            "[api] rate_limit_*) or address (the address's failed authentications, "
            "[api] failed_auth_*).",
            labels=["limit"],
        )
        refused.add_metric(["key"], counts.refused_key)
        refused.add_metric(["address"], counts.refused_address)
        yield refused
        failed = CounterMetricFamily(
            "ere_api_failed_authentications",
            "Requests with a missing, malformed, unknown, revoked or expired credential (401), "
            "token requests with a bad client included.",
        )
        failed.add_metric([], counts.failed_authentications)
        yield failed


class WebhookBacklog:
    """Pending webhook deliveries and the age of the oldest due one, from the last `refresh`.

    `database_ok` says whether the last refresh reached the database (the role's readiness).
    """

    def __init__(self) -> None:
        self.pending = 0
        self.oldest_due_seconds = 0.0
        self.database_ok = False
        self._failing = False

    async def refresh(self, db: Connection, timeout: float = 5.0) -> bool:
        """Read the backlog (one aggregate over the pending deliveries' index); whether the
        database answered within `timeout` seconds. A failure keeps the last figures; it is
        logged when it starts and when it ends."""
        try:
            with trio.fail_after(timeout):
                row: Any = await db.fetchrow(_BACKLOG)
        except _UNREACHABLE as error:  # the figures stay as they were
            if not self._failing:
                log.warning("cannot read the webhook backlog", extra={"error": str(error)})
            self.database_ok, self._failing = False, True
            return False
        self.pending, self.oldest_due_seconds = int(row["pending"]), float(row["oldest_due"])
        if self._failing:
            log.info("the webhook backlog is read again")
        self.database_ok, self._failing = True, False
        return True

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "ere_api_webhook_pending_deliveries",
            "Webhook deliveries waiting for an attempt (due or backing off), all partners.",
            value=self.pending,
        )
        yield GaugeMetricFamily(
            "ere_api_webhook_oldest_due_seconds",
            "How long the earliest due webhook delivery has waited for an attempt (0: none due).",
            value=self.oldest_due_seconds,
        )
