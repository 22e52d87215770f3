"""The metrics of mirror back-offices (`proxy.forward.mirror`), part of `ProxyMetrics`.

The `mirror` label is a mirror's host:port (bounded by the routes), never a charger identity.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

# The outcomes of a mirror's CALLs (`proxy.forward.mirror_core.Outcome`, and timeouts).
CALL_OUTCOMES = ("allowed", "blocked", "busy", "timed_out", "invalid", "reply_dropped")


class MirrorMetrics:
    """Connections, queues, drops and CALLs of mirrors, per mirror back-office."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.connected = Gauge(
            "ere_proxy_mirror_connected",
            "Open connections to a mirror back-office (one per charger mirrored to it).",
            ["mirror"],
            registry=r,
        )
        self.queued = Gauge(
            "ere_proxy_mirror_queued",
            "Copies and answers waiting to be sent to a mirror.",
            ["mirror"],
            registry=r,
        )
        self.dropped = Counter(
            "ere_proxy_mirror_dropped",
            "Copies of charger CALLs a mirror did not get: its queue was full.",
            ["mirror"],
            registry=r,
        )
        self.sent = Counter(
            "ere_proxy_mirror_sent", "Messages sent to a mirror.", ["mirror"], registry=r
        )
        self.calls = Counter(
            "ere_proxy_mirror_calls",
            "CALLs of a mirror to chargers by outcome: allowed, blocked, busy, timed_out, "
            "invalid, reply_dropped.",
            ["mirror", "outcome"],
            registry=r,
        )
        self.answers_dropped = Counter(
            "ere_proxy_mirror_answers_dropped",
            "Answers of a mirror to copied charger CALLs, dropped (the primary answered).",
            ["mirror"],
            registry=r,
        )
        self.dials = Counter(
            "ere_proxy_mirror_dials",
            "Dials of a mirror by outcome (as the upstreams': ok, refused, timeout, tls_error, "
            "http_<status>, ...); kept apart, so that UpstreamDown is about primaries only.",
            ["mirror", "outcome"],
            registry=r,
        )
        self.errors = Counter(
            "ere_proxy_mirror_protocol_errors",
            "Mirror connections dropped because the mirror broke the WebSocket protocol.",
            ["mirror"],
            registry=r,
        )

    def serving(self, mirror: str) -> None:
        """Create the series of `mirror` at 0, so the first drop or CALL shows as an increase
        (and the dashboard has the mirror's rows before anything happened)."""
        for family in (
            self.connected,
            self.queued,
            self.dropped,
            self.sent,
            self.answers_dropped,
            self.errors,
        ):
            family.labels(mirror)
        for outcome in CALL_OUTCOMES:
            self.calls.labels(mirror, outcome)
        self.dials.labels(mirror, "ok")

    def dial(self, mirror: str, outcome: str, seconds: float) -> None:
        """Count one dial of `mirror` (its time is not kept: `connected` shows its state)."""
        self.dials.labels(mirror, outcome).inc()
