"""Prometheus metrics of the proxy role.

Label values are bounded: the action label only takes OCPP action names (anything else a
charger sends counts as "other"), so a hostile charger cannot blow up the series count.
Children are resolved once per direction, so the forwarding path only does increments. The
`upstream` label is a back-office's host:port (bounded by the routes, never credentials).
Limits are exported next to what they bound (`*_max_*`, `ere_proxy_charger_capacity`), so alerts
can warn at a share of them before anything is refused or lost.
"""

from __future__ import annotations

import importlib.metadata
import math
import platform
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from proxy.forward.policy import LinkEnd
from proxy.runtime.mirror_metrics import MirrorMetrics
from proxy.wire.codec import (
    BINARY,
    CALL,
    CALLERROR,
    CALLRESULT,
    CALLRESULTERROR,
    CLOSE,
    NOT_OCPP,
    PING,
    PONG,
    SEND,
    TEXT,
)

if TYPE_CHECKING:
    from proxy.capture.journal import Journal
    from proxy.capture.tracker import Tracker
    from proxy.outbox.entries import Budget
    from proxy.outbox.policy import ChargerOutbox

disable_created_metrics()  # the *_created series only add noise for SREs

CHARGER_TO_UPSTREAM = "charger_to_upstream"
UPSTREAM_TO_CHARGER = "upstream_to_charger"

# Actions of OCPP 1.6, 2.0.1 and 2.1.
OCPP_ACTIONS = frozenset(
    [
        "AFRRSignal",
        "AdjustPeriodicEventStream",
        "Authorize",
        "BatterySwap",
        "BootNotification",
        "CancelReservation",
        "CertificateSigned",
        "ChangeAvailability",
        "ChangeConfiguration",
        "ChangeTransactionTariff",
        "ClearCache",
        "ClearChargingProfile",
        "ClearDERControl",
        "ClearDisplayMessage",
        "ClearTariffs",
        "ClearVariableMonitoring",
        "ClearedChargingLimit",
        "ClosePeriodicEventStream",
        "CostUpdated",
        "CustomerInformation",
        "DataTransfer",
        "DeleteCertificate",
        "DiagnosticsStatusNotification",
        "ExtendedTriggerMessage",
        "FirmwareStatusNotification",
        "Get15118EVCertificate",
        "GetBaseReport",
        "GetCertificateChainStatus",
        "GetCertificateStatus",
        "GetChargingProfiles",
        "GetCompositeSchedule",
        "GetConfiguration",
        "GetDERControl",
        "GetDiagnostics",
        "GetDisplayMessages",
        "GetInstalledCertificateIds",
        "GetLocalListVersion",
        "GetLog",
        "GetMonitoringReport",
        "GetPeriodicEventStream",
        "GetReport",
        "GetTariffs",
        "GetTransactionStatus",
        "GetVariables",
        "Heartbeat",
        "InstallCertificate",
        "LogStatusNotification",
        "MeterValues",
        "NotifyAllowedEnergyTransfer",
        "NotifyChargingLimit",
        "NotifyCustomerInformation",
        "NotifyDERAlarm",
        "NotifyDERStartStop",
        "NotifyDisplayMessages",
        "NotifyEVChargingNeeds",
        "NotifyEVChargingSchedule",
        "NotifyEvent",
        "NotifyMonitoringReport",
        "NotifyPriorityCharging",
        "NotifyReport",
        "NotifySettlement",
        "NotifyWebPaymentStarted",
        "OpenPeriodicEventStream",
        "PublishFirmware",
        "PublishFirmwareStatusNotification",
        "PullDynamicScheduleUpdate",
        "RemoteStartTransaction",
        "RemoteStopTransaction",
        "ReportChargingProfiles",
        "ReportDERControl",
        "RequestBatterySwap",
        "RequestStartTransaction",
        "RequestStopTransaction",
        "ReservationStatusUpdate",
        "ReserveNow",
        "Reset",
        "SecurityEventNotification",
        "SendLocalList",
        "SetChargingProfile",
        "SetDERControl",
        "SetDefaultTariff",
        "SetDisplayMessage",
        "SetMonitoringBase",
        "SetMonitoringLevel",
        "SetNetworkProfile",
        "SetVariableMonitoring",
        "SetVariables",
        "SignCertificate",
        "SignedFirmwareStatusNotification",
        "SignedUpdateFirmware",
        "StartTransaction",
        "StatusNotification",
        "StopTransaction",
        "TransactionEvent",
        "TriggerMessage",
        "UnlockConnector",
        "UnpublishFirmware",
        "UpdateDynamicSchedule",
        "UpdateFirmware",
        "UsePriorityCharging",
        "VatNumberValidation",
    ]
)

_OCPP_TYPE_NAMES = {
    CALL: "call",
    CALLRESULT: "callresult",
    CALLERROR: "callerror",
    CALLRESULTERROR: "callresulterror",  # OCPP 2.1
    SEND: "send",  # OCPP 2.1
    NOT_OCPP: "not_ocpp",
}
_CONTROL_NAMES = {BINARY: "binary", CLOSE: "close", PING: "ping", PONG: "pong"}

# Forwarding takes microseconds (the SLO's bound is 0.5 ms: a bucket of its own), a stall
# milliseconds to a second; dialing an upstream takes milliseconds to seconds.
_FORWARD_BUCKETS = (
    *(2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3),
    *(1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0),
)
# The accept() errors that mean out of descriptors or kernel memory: the listener counts them
# (`ere_proxy_accept_errors_total{error}`) and retries.
ACCEPT_ERRORS = ("EMFILE", "ENFILE", "ENOBUFS", "ENOMEM")
_DIAL_BUCKETS = (1e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# The handshake outcomes the handshake objective counts (grafana/recording.yml): admitted, or
# refused for a cause of ours or of the back-office's outage.
SLO_HANDSHAKE_OUTCOMES = (
    *("accepted", "accepted_offline", "busy", "at_capacity", "internal_error"),
    *("store_unavailable", "outbox_full", "upstream_unreachable", "upstream_timeout"),
    *("upstream_error", "offline_unproven"),
)


def version() -> str:
    """The installed package's version ("unknown" when it is run from a tree not installed)."""
    try:
        return importlib.metadata.version("ere-proxy")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def register_build_info(registry: CollectorRegistry, prefix: str) -> None:
    """`<prefix>_build_info`: always 1, its labels the running version and Python."""
    Gauge(
        f"{prefix}_build_info",
        "Always 1; the labels tell the running version.",
        ["version", "python"],
        registry=registry,
    ).labels(version(), platform.python_version()).set(1)


class ProxyMetrics:
    """All metrics of one proxy process, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connected = Gauge(
            "ere_proxy_connected_chargers", "Chargers with a live link.", registry=r
        )
        ProcessCollector(registry=r)  # process_resident_memory_bytes, open and max fds, CPU seconds
        self.handshakes = Counter(
            "ere_proxy_handshakes", "Charger handshakes by outcome.", ["outcome"], registry=r
        )
        self.frames = Counter(
            "ere_proxy_frames",
            "Forwarded WebSocket messages by direction and OCPP-J message type.",
            ["direction", "type"],
            registry=r,
        )
        self.bytes = Counter(
            "ere_proxy_forwarded_bytes", "Forwarded bytes by direction.", ["direction"], registry=r
        )
        self.calls = Counter(
            "ere_proxy_calls",
            "Forwarded OCPP CALLs by direction and action.",
            ["direction", "action"],
            registry=r,
        )
        self.dials = Counter(
            "ere_proxy_upstream_dials",
            "Dials of a back-office by upstream (host:port) and outcome (ok, refused, timeout, "
            "tls_error, dns_error, unreachable, protocol_error, http_<status>, forbidden, "
            "at_capacity).",
            ["upstream", "outcome"],
            registry=r,
        )
        self.dial_seconds = Histogram(
            "ere_proxy_upstream_dial_seconds",
            "Time to connect and complete the upstream handshake, or to fail, by upstream and "
            "result (ok, failed).",
            ["upstream", "result"],
            buckets=_DIAL_BUCKETS,
            registry=r,
        )
        self.upstream_certificate_expiry = Gauge(
            "ere_proxy_upstream_certificate_expiry_timestamp_seconds",
            "Not-after time of the certificate a back-office presented at its last TLS dial.",
            ["upstream"],
            registry=r,
        )
        self.certificate_expiry = Gauge(
            "ere_proxy_certificate_expiry_timestamp_seconds",
            "Not-after time of the listener's certificate (certificate=listener) and of the first "
            "CA of the client CA bundle to expire (certificate=client_ca), as loaded at start or "
            "on SIGHUP.",
            ["certificate"],
            registry=r,
        )
        self.certificate_errors = Counter(
            "ere_proxy_certificate_read_errors",
            "Certificates whose expiry could not be read, by source (listener, client_ca, "
            "upstream).",
            ["source"],
            registry=r,
        )
        self.accept_errors = Counter(
            "ere_proxy_accept_errors",
            "Charger connections the listener could not accept, by error (EMFILE, ENFILE, "
            "ENOBUFS, ENOMEM): out of descriptors or memory; accepting resumes shortly.",
            ["error"],
            registry=r,
        )
        # Each at 0 from the start: the first run out of descriptors stops the scrapes too, so a
        # series that appeared only then would show up at its final value, which increase() (and
        # ProxyAcceptErrors) cannot see.
        for error in ACCEPT_ERRORS:
            self.accept_errors.labels(error)
        self.charger_capacity = Gauge(
            "ere_proxy_charger_capacity",
            "Chargers this worker can hold with its open-file limit (two sockets each).",
            registry=r,
        )
        register_build_info(r, "ere_proxy")
        self.forward_seconds = Histogram(
            "ere_proxy_forward_seconds",
            "Time per forwarded chunk, from reading bytes from one side to having written them "
            "to the other (with the Python engine, the capture hand-off included).",
            ["direction"],
            buckets=_FORWARD_BUCKETS,
            registry=r,
        )
        self.codec_errors = Counter(
            "ere_proxy_codec_errors",
            "WebSocket protocol errors by the side that made them and the close code sent.",
            ["direction", "close_code"],
            registry=r,
        )
        self.password_checks = Counter(
            "ere_proxy_password_checks",
            "Managed chargers' password checks by verdict (admitted, wrong, rate_limited, busy) and "
            "whether a slow hash was computed (no: a recent success, a generated password's fast "
            "hash, or refused before hashing).",
            ["verdict", "hashed"],
            registry=r,
        )
        self.link_ends = Counter(
            "ere_proxy_link_ends", "Links ended, by reason.", ["reason"], registry=r
        )
        # At 0 from the start, so that rate() and increase() count the first ones too.
        for outcome in SLO_HANDSHAKE_OUTCOMES:
            self.handshakes.labels(outcome)
        for end in LinkEnd:
            self.link_ends.labels(end.value)

        self.outbox = OutboxMeters(r)
        self.mirrors = MirrorMetrics(r)
        self.trackers = TrackerCounts()
        r.register(self.trackers)

    def direction(self, direction: str) -> DirectionMeters:
        return DirectionMeters(self, direction)

    def upstream_dial(self, upstream: str, outcome: str, seconds: float) -> None:
        """Count one dial of `upstream` and observe its time, whatever its outcome."""
        self.dials.labels(upstream, outcome).inc()
        result = "ok" if outcome == "ok" else "failed"
        self.dial_seconds.labels(upstream, result).observe(seconds)

    def certificate_unreadable(self, source: str) -> None:
        self.certificate_errors.labels(source).inc()

    def listener_certificate(self, not_after: float | None, which: str = "listener") -> None:
        """Export the not-after time of the listener's certificate, or of its client CA bundle
        (`which`="client_ca"); None: unreadable, counted."""
        if not_after is None:
            self.certificate_unreadable(which)
        else:
            self.certificate_expiry.labels(which).set(not_after)


class OutboxMeters:
    """The outbox: links answered offline, queued and replayed CALLs, dead letters, id rewrites."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.offline = Gauge(
            "ere_proxy_links_offline",
            "Chargers connected while their upstream is unreachable.",
            registry=r,
        )
        self._answers = Counter(
            "ere_proxy_offline_answers",
            "Charger CALLs answered by the proxy itself, by action.",
            ["action"],
            registry=r,
        )
        self._other_answers = self._answers.labels("other")
        self.queued = Counter("ere_proxy_outbox_queued", "CALLs added to an outbox.", registry=r)
        self.replayed = Counter(
            "ere_proxy_outbox_replayed", "Outbox entries delivered upstream.", registry=r
        )
        self.retries = Counter(
            "ere_proxy_outbox_retries",
            "Replayed CALLs answered with a CALLERROR and retried.",
            registry=r,
        )
        self.dead_letters = Counter(
            "ere_proxy_outbox_dead_letters",
            "Outbox entries parked after failing every retry.",
            registry=r,
        )
        self.rewrites = Counter(
            "ere_proxy_transaction_id_rewrites",
            "Frames whose 1.6 transactionId the proxy rewrote.",
            registry=r,
        )
        self.full = Counter(
            "ere_proxy_outbox_full",
            "Chargers closed (1001) because an outbox bound was reached.",
            registry=r,
        )
        self.dropped_answers = Counter(
            "ere_proxy_outbox_dropped_answers",
            "Charger answers to CALLs of an upstream connection that was gone.",
            registry=r,
        )
        self.dropped_unanswered = Counter(
            "ere_proxy_outbox_dropped_unanswered",
            "OCPP 2.1 messages that expect no answer (SEND, CALLRESULTERROR) a charger sent while"
            " its upstream was unreachable: not queued, as nothing waits for them.",
            registry=r,
        )

    def offline_answer(self, action: str | None) -> None:
        (self._answers.labels(action) if action in OCPP_ACTIONS else self._other_answers).inc()


class DirectionMeters:
    """Pre-resolved metric children for one forwarding direction (shared by all links)."""

    def __init__(self, metrics: ProxyMetrics, direction: str) -> None:
        self.direction = direction
        self.bytes = metrics.bytes.labels(direction)
        self.forward_seconds = metrics.forward_seconds.labels(direction)
        self._metrics = metrics
        self._frames = {
            (TEXT, t): metrics.frames.labels(direction, name)
            for t, name in _OCPP_TYPE_NAMES.items()
        }
        self._frames.update(
            {
                (op, NOT_OCPP): metrics.frames.labels(direction, name)
                for op, name in _CONTROL_NAMES.items()
            }
        )
        self._calls: dict[str | None, Counter] = {}
        self._other_calls = metrics.calls.labels(direction, "other")

    def count(self, opcode: int, message_type: int, action: str | None) -> None:
        """Count one forwarded message."""
        self._frames[opcode, message_type].inc()
        if message_type == CALL:
            self.add_calls(action, 1)

    def add_frames(self, opcode: int, message_type: int, n: int) -> None:
        """Count `n` forwarded messages of one kind (the native engine's batches)."""
        counter = self._frames.get((opcode, message_type))
        if counter is not None:
            counter.inc(n)

    def add_calls(self, action: str | None, n: int) -> None:
        """Count `n` forwarded CALLs of `action` (the native engine's batches)."""
        counter = self._calls.get(action)
        if counter is None:
            if action not in OCPP_ACTIONS:
                counter = self._other_calls
            else:
                counter = self._calls[action] = self._metrics.calls.labels(self.direction, action)
        counter.inc(n)

    def codec_error(self, close_code: int) -> None:
        self._metrics.codec_errors.labels(self.direction, str(close_code)).inc()


# The counters every session tracker keeps (`proxy.capture.tracker.Tracker`), exported by kind.
TRACKER_COUNTS = ("unparseable", "unmatched_answers", "duplicate_ids", "evicted_calls")


class TrackerCounts:
    """The session trackers' counters of one worker, added up at scrape time (a collector).

    A connection's tracker is counted while the connection lasts (`add`); when it ends (`ended`), its
    counts join those of the ended connections. The forwarding path does nothing for this: the
    trackers count as they always do, and a scrape reads the live ones.
    """

    def __init__(self) -> None:
        self._ended = dict.fromkeys(TRACKER_COUNTS, 0)
        self._live: set[Tracker] = set()

    def add(self, tracker: Tracker) -> None:
        """Count `tracker` while its connection lasts (`ended` when it ends)."""
        self._live.add(tracker)

    def ended(self, tracker: Tracker) -> None:
        """The connection of `tracker` ended: its counts join those of the ended ones."""
        self._live.discard(tracker)
        for kind in TRACKER_COUNTS:
            self._ended[kind] += getattr(tracker, kind)

    def totals(self) -> dict[str, int]:
        """Each counter over the ended connections and the live ones."""
        totals = dict(self._ended)
        for tracker in self._live:
            for kind in TRACKER_COUNTS:
                totals[kind] += getattr(tracker, kind)
        return totals

    def collect(self) -> Iterator[Metric]:
        counter = CounterMetricFamily(
            "ere_proxy_capture_tracker_events",
            "What the session trackers met, by kind: unparseable (a tracked payload without what "
            "its action needs, kept as an unparseable event), unmatched_answers (an answer to no "
            "outstanding CALL), duplicate_ids (a CALL reusing an outstanding id), evicted_calls "
            "(an unanswered CALL forgotten beyond the bound). With the native engine the trackers "
            "see only the CALLs capture reads and their answers.",
            labels=["kind"],
        )
        for kind, count in self.totals().items():
            counter.add_metric([kind], count)
        yield counter


class OutboxCollector:
    """Outbox depth and oldest entry per upstream (links of this process) and in total (database)."""

    def __init__(
        self, budget: Budget, relays: Callable[[], Iterable[tuple[str, ChargerOutbox]]]
    ) -> None:
        self._budget = budget
        self._relays = relays

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "ere_proxy_outbox_depth",
            "Entries queued in the outboxes of connected chargers, by upstream.",
            labels=["upstream"],
        )
        oldest = GaugeMetricFamily(
            "ere_proxy_outbox_oldest_seconds",
            "Age of the oldest queued entry of connected chargers, by upstream.",
            labels=["upstream"],
        )
        served = GaugeMetricFamily(
            "ere_proxy_upstream_offline_links",
            "Chargers served from the outbox (upstream unreachable, or replaying), by upstream.",
            labels=["upstream"],
        )
        entries: dict[str, int] = {}
        links: dict[str, int] = {}
        first: dict[str, float] = {}
        for upstream, outbox in self._relays():
            entries[upstream] = entries.get(upstream, 0) + len(outbox.entries)
            links[upstream] = links.get(upstream, 0) + 1
            if outbox.entries:
                first[upstream] = min(first.get(upstream, math.inf), outbox.entries[0].received_at)
        now = time.time()
        for upstream, count in entries.items():
            depth.add_metric([upstream], count)
            oldest.add_metric([upstream], now - first[upstream] if upstream in first else 0.0)
            served.add_metric([upstream], links[upstream])
        yield depth
        yield oldest
        yield served
        yield GaugeMetricFamily(
            "ere_proxy_outbox_entries",
            "Entries queued in all outboxes (database, refreshed periodically).",
            value=self._budget.entries,
        )
        yield GaugeMetricFamily(
            "ere_proxy_outbox_bytes",
            "Payload bytes queued in all outboxes (database, refreshed periodically).",
            value=self._budget.bytes,
        )
        yield GaugeMetricFamily(
            "ere_proxy_outbox_max_entries",
            "Bound on the entries of all outboxes ([outbox] max_entries_total).",
            value=self._budget.max_entries,
        )
        yield GaugeMetricFamily(
            "ere_proxy_outbox_max_bytes",
            "Bound on the payload bytes of all outboxes ([outbox] max_bytes_total).",
            value=self._budget.max_bytes,
        )


class JournalCollector:
    """Journal and spill-log figures, read at scrape time (nothing to do on the forwarding path)."""

    def __init__(self, journal: Journal, spill_max_bytes: int | None = None) -> None:
        self._journal = journal
        self._spill_max_bytes = spill_max_bytes

    def collect(self) -> Iterator[Metric]:
        journal = self._journal
        stats = journal.stats
        for name, help_text, value in (
            ("submitted", "Events handed to the journal by the links.", stats.submitted),
            ("stored", "Events written straight to the database.", stats.stored),
            ("spilled", "Events written to the on-disk spill log.", stats.spilled),
            ("replayed", "Events moved from the spill log into the database.", stats.replayed),
            (
                "lost",
                "Events lost: over a spill log bound (disk or memory), or refused even as dead letters.",
                stats.lost,
            ),
            (
                "database_errors",
                "Failed database writes (the events were spilled).",
                stats.database_errors,
            ),
        ):
            counter = CounterMetricFamily(f"ere_proxy_journal_{name}", help_text)
            counter.add_metric([], value)
            yield counter
        dead_letters = CounterMetricFamily(
            "ere_proxy_capture_dead_letters",
            "Events kept in capture_dead_letters: refused by the database on their own, or not encodable.",
        )
        dead_letters.add_metric([], stats.dead_letters)
        yield dead_letters
        # Every stage is exported from the start, so increase() sees the first failure.
        failures = CounterMetricFamily(
            "ere_proxy_capture_failures",
            "Failures of the capture machinery by stage (encode, spill_write, spill_read, spill_ack, dead_letter, "
            "internal); forwarding goes on.",
            labels=["stage"],
        )
        for stage, count in stats.failures.items():
            failures.add_metric([stage], count)
        yield failures
        yield GaugeMetricFamily(
            "ere_proxy_journal_queued", "Event batches waiting in memory.", value=journal.queued
        )
        yield GaugeMetricFamily(
            "ere_proxy_journal_spilling",
            "1 while events go to disk instead of the database.",
            value=int(journal.spilling),
        )
        yield GaugeMetricFamily(
            "ere_proxy_journal_spill_bytes",
            "Bytes of the spill log on disk.",
            value=journal.spill_bytes,
        )
        yield GaugeMetricFamily(
            "ere_proxy_journal_spill_unflushed",
            "Spilled events not yet synced to disk (a crash now would lose them).",
            value=journal.spill_unflushed,
        )
        if self._spill_max_bytes is not None:
            yield GaugeMetricFamily(
                "ere_proxy_journal_spill_max_bytes",
                "Bound on the spill log ([capture] spill_max_bytes): past it events are lost.",
                value=self._spill_max_bytes,
            )
        yield GaugeMetricFamily(
            "ere_proxy_journal_spill_failing",
            "1 while the spill log cannot be written (disk full, I/O errors): spilled events wait in memory.",
            value=int(journal.spill_failing),
        )
