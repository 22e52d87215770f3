"""A real Prometheus sees the ERE worker, capture and forwarding-latency alerts fire, each from
the fault an operator would meet.

Set up: PostgreSQL (owned by the test, so it can take it away), the fake back-office
(`testkit.fake_csms.FakeCsms`) and a slow one (`testkit.ere_faults.SlowBackOffice`, which reads
64 KiB every 10 ms) in this process, a proxy process (the native engine, the product's) with
capture on and a 16 KiB spill log (charger SLOW-1 routed to the slow back-office), ERE worker 0
logging in as a role of its own (`create_worker_role`), and Prometheus (the Debian package) with
1 s scrape and evaluation intervals, `grafana/recording.yml` and the rules of `grafana/alerts.yml`
with every `for:` shortened to 1 s (`testkit.prometheus.prometheus_config`). The burn-rate rules' 1 h, 6 h and 3 d
windows hold only the minutes of the run, so their ratios are those of the run.

Under normal traffic (a charger's StatusNotifications, answered by the back-office) the
expression of every rule of these alerts is empty and none is pending or firing; then, one fault
after the other:

- SLOW-1 sends 8 KiB DataTransfer CALLs as fast as its socket takes them: the proxy's writes to
  the slow back-office wait for it to read, so many forwarded chunks take far over 0.5 ms:
  ForwardingLatencyBudgetBurn;
- a charger sends MeterValues whose payload has the wrong shape, again and again:
  CaptureUnparseablePayloads;
- worker 0 is restarted after its role lost SELECT on `statement_lines`: its pipeline read fails
  from the start, the figures were never read (as old as the worker) and each refresh counts a
  database error: ErePipelineStale, EreWorkerDatabaseErrors, ErePipelineFreshnessBudgetBurn.
  Rather than wait the 10 minutes after which figures are stale, the test starts this worker
  under libfaketime 15 minutes in the past (`ShiftableClock`);
- the database crashes (SIGQUIT) while a charger keeps sending StatusNotifications: the journal
  spills them to its small spill log, which fills, and then loses events: SpillLogNearlyFull
  (warning and critical), SpillLogFillsSoon, CaptureErrorBudgetBurn;
- a quarter's close hangs: the test holds the lock on `quarter_closes` a close under way takes,
  and worker 0's close job waits for it; a job due two hours ago is queued meanwhile and waits
  for the busy worker (the close under way is not counted as waiting): EreJobsWaiting; then
  EreJobRunningLong. The job's running time is the
  worker's own monotonic clock since it claimed it, so rather than wait an hour the test runs
  worker 0 under libfaketime (`ShiftableClock`) and moves its clocks two hours on while the job
  hangs (its [ere] query_timeout is set above the shift: the client's statement deadline runs
  on that clock too and would end the job).

Prometheus must be installed (`scripts/setup-debian`); without it the test fails, it never skips.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from testkit.engines import ENGINE_VARIABLE
from testkit.ere_faults import (
    WORKER_ROLE,
    ShiftableClock,
    SlowBackOffice,
    create_worker_role,
    holding,
    keep_sending,
    text_frame,
    unique_id,
    until_firing,
)
from testkit.fake_csms import FakeCsms
from testkit.grafana import alert_rules
from testkit.ports import free_port
from testkit.postgres import ServerThread, create_database, make_data_dir, sql, start_database
from testkit.prometheus import (
    ERE_FAULT_ALERTS,
    WAIT,
    Prometheus,
    prometheus_config,
    require,
    start_worker,
    stop,
    worker_config,
)
from testkit.prometheus_faults import NORMAL_VOLUME
from testkit.proxy_process import log_problems, metric, start_capture_proxy
from testkit.waiting import until

pytestmark = pytest.mark.slow

PROVOKED = ERE_FAULT_ALERTS
SPILL_MAX_BYTES = 16 * 1024
# Log lines the faults bring about: events lost to the full spill log, the database pool's
# reconnection attempts (with their tracebacks) while the database is down.
EXPECTED_ERRORS = ("spill log full: events lost", "asyncpg")
SLOW = "SLOW-1"
# 32 DataTransfer CALLs of 8 KiB (each below the size the native engine hands back to Python).
FLOOD = b"".join(
    text_frame([2, f"dt-{n}", "DataTransfer", {"vendorId": "ere", "data": "x" * 8000}])
    for n in range(32)
)


def unparseable_meter_values() -> bytes:
    """A MeterValues CALL whose payload lacks what the action needs (wrong types)."""
    return text_frame([2, unique_id("mv"), "MeterValues", {"connectorId": "one", "meterValue": 7}])


def status_notification() -> bytes:
    """A StatusNotification capture keeps as an event (each with a time of its own)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    payload = {"connectorId": 1, "status": "Available", "errorCode": "NoError", "timestamp": now}
    return text_frame([2, unique_id("sn"), "StatusNotification", payload])


def active(prometheus: Prometheus) -> set[str]:
    """Names of the alerts of PROVOKED that are pending or firing."""
    return set(prometheus.alert_states()) & PROVOKED


def severities_firing(prometheus: Prometheus, name: str) -> set[str]:
    """The severities of the rules of alert `name` that are firing."""
    return {
        alert["labels"]["severity"]
        for alert in prometheus.alerts()
        if alert["labels"]["alertname"] == name and alert["state"] == "firing"
    }


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = make_data_dir("ere-prometheus-ere-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_each_ere_capture_and_latency_fault_fires_its_alert(tmp_path, data_dir, monkeypatch):
    # The product's engine: on the Python reference path a busy machine takes over 0.5 ms for
    # a few per cent of chunks of normal traffic (the capture hand-off included), which is
    # already over the latency objective's 3-day budget.
    monkeypatch.setenv(ENGINE_VARIABLE, "native")
    binary = require("prometheus")
    first = await trio.to_thread.run_sync(start_database, data_dir)
    database: ServerThread | None = first  # the server running now, if any
    dsn = await trio.to_thread.run_sync(create_database, first)
    csms = FakeCsms(port=free_port(), record=False)
    slow = SlowBackOffice()
    worker_admin = free_port()
    proxy = worker = prometheus = None
    fired: set[str] = set()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(csms.serve)
            await nursery.start(slow.serve)
            proxy = await trio.to_thread.run_sync(
                lambda: start_capture_proxy(
                    tmp_path,
                    data_dir,
                    dsn,
                    upstream_port=csms.port,
                    capture=f"spill_max_bytes = {SPILL_MAX_BYTES}\n",
                    routes=(
                        f'\n[chargers."{SLOW}"]\nupstream = "ws://127.0.0.1:{slow.port}/ocpp"\n'
                        'auth = "passthrough"\n'
                    ),
                )
            )
            # The proxy has migrated the database: the worker's role gets its privileges.
            config = worker_config(tmp_path, await create_worker_role(dsn), worker_admin)
            worker = start_worker(config, tmp_path)
            prometheus = Prometheus(
                binary,
                prometheus_config(tmp_path, proxy.admin_port, worker_admin, free_port()),
                tmp_path,
            )
            await until(prometheus.ready, "Prometheus to be ready", WAIT)
            await until(
                lambda: prometheus.has_data(
                    'min(up{job="ere-proxy"}) * max(ere_worker_pipeline_refresh_ok) == 1'
                ),
                "the proxy scraped and worker 0's figures read",
                WAIT,
            )
            await until(
                lambda: all(rule["health"] == "ok" for rule in prometheus.rules()),
                "every rule evaluated",
                WAIT,
            )
            # Normal traffic (a charger's StatusNotifications, answered) meets no alert's condition;
            # judged on a few thousand chunks, where two slow ones at the start do not weigh 1 %.
            async with trio.open_nursery() as sender:
                await sender.start(keep_sending, proxy.port, "NORMAL-1", status_notification, 0.01)
                await until(
                    lambda: prometheus.has_data(
                        f"slo:ere_proxy_forwarding_latency_events:increase1h >= {NORMAL_VOLUME}"
                    ),
                    "normal traffic recorded",
                    WAIT,
                )
                sender.cancel_scope.cancel()
            for rule in alert_rules():
                if rule.name in PROVOKED:
                    answer = await trio.to_thread.run_sync(prometheus.query, rule.expr)
                    assert answer["data"]["result"] == [], (rule.name, answer)
            assert await trio.to_thread.run_sync(active, prometheus) == set()

            # Forwarding latency: writes to a back-office that reads slowly wait.
            async with trio.open_nursery() as flood:
                await flood.start(keep_sending, proxy.port, SLOW, lambda: FLOOD, 0)
                await until_firing(prometheus, "ForwardingLatencyBudgetBurn")
                flood.cancel_scope.cancel()
            fired.add("ForwardingLatencyBudgetBurn")
            assert slow.received > 0

            # Payloads capture cannot read, sent again and again.
            async with trio.open_nursery() as sender:
                await sender.start(
                    keep_sending, proxy.port, "BROKEN-1", unparseable_meter_values, 0.2
                )
                await until_firing(prometheus, "CaptureUnparseablePayloads")
                sender.cancel_scope.cancel()
            fired.add("CaptureUnparseablePayloads")

            # Worker 0 restarted without SELECT on a table its pipeline read needs, started (on
            # its clock) 15 minutes ago: its figures, never read, are that old.
            assert await trio.to_thread.run_sync(stop, worker) == 0
            await sql(dsn, (f"REVOKE SELECT ON statement_lines FROM {WORKER_ROLE}",))
            past = ShiftableClock(tmp_path / "worker-past-clock", offset=-900)
            worker = start_worker(config, tmp_path, past.env())
            await until_firing(
                prometheus,
                "ErePipelineStale",
                "EreWorkerDatabaseErrors",
                "ErePipelineFreshnessBudgetBurn",
            )
            fired |= {
                "ErePipelineStale",
                "EreWorkerDatabaseErrors",
                "ErePipelineFreshnessBudgetBurn",
            }

            await sql(dsn, (f"GRANT SELECT ON statement_lines TO {WORKER_ROLE}",))

            # The database crashes while a charger keeps sending: the small spill log fills.
            assert (
                await trio.to_thread.run_sync(metric, proxy, "ere_proxy_journal_spill_bytes") == 0
            )
            async with trio.open_nursery() as sender:
                await sender.start(keep_sending, proxy.port, "SPILL-1", status_notification, 0.05)
                database = None
                await trio.to_thread.run_sync(first.crash)
                await until_firing(
                    prometheus, "SpillLogNearlyFull", "SpillLogFillsSoon", "CaptureErrorBudgetBurn"
                )
                await until(
                    lambda: (
                        severities_firing(prometheus, "SpillLogNearlyFull")
                        == {"warning", "critical"}
                    ),
                    "both SpillLogNearlyFull rules firing",
                    WAIT,
                )
                sender.cancel_scope.cancel()
            fired |= {"SpillLogNearlyFull", "SpillLogFillsSoon", "CaptureErrorBudgetBurn"}
            assert await trio.to_thread.run_sync(metric, proxy, "ere_proxy_journal_lost_total") > 0
            database = await trio.to_thread.run_sync(start_database, data_dir)
            await until(
                lambda: metric(proxy, "ere_proxy_journal_spilling") == 0,
                "the journal to catch up",
                WAIT,
            )

            # A close waits for the lock another close holds, on a clock moved two hours on.
            assert await trio.to_thread.run_sync(stop, worker) == 0
            clock = ShiftableClock(tmp_path / "worker-clock")
            hanging = tmp_path / "worker-hanging.toml"
            hanging.write_text(
                config.read_text().replace("[ere]\n", "[ere]\nquery_timeout = 86400.0\n")
            )
            worker = start_worker(hanging, tmp_path, clock.env())
            async with holding(dsn, "LOCK TABLE quarter_closes IN SHARE ROW EXCLUSIVE MODE"):
                await sql(
                    dsn,
                    (
                        "INSERT INTO ere_jobs (kind, job_key, args) VALUES ('close', '2026Q3/r1', $1)",
                        json.dumps({"quarter": "2026Q3", "shards": 1}),
                    ),
                )
                await until(
                    lambda: prometheus.has_data("ere_worker_job_running_seconds > 3"),
                    "the close job hanging",
                    WAIT,
                )
                # Worker 0 is busy: a job due two hours ago waits (the close, under way, does not).
                await sql(
                    dsn,
                    (
                        "INSERT INTO ere_jobs (kind, job_key, run_after)"
                        " VALUES ('statements', 'waiting', now() - interval '2 hours')",
                    ),
                )
                await until_firing(prometheus, "EreJobsWaiting")
                fired.add("EreJobsWaiting")
                assert not await trio.to_thread.run_sync(
                    prometheus.has_data,
                    'ere_worker_pipeline_jobs_oldest_queued_seconds{kind="close"}',
                )
                clock.shift(2 * 3600)
                await until_firing(prometheus, "EreJobRunningLong")
            fired.add("EreJobRunningLong")
            nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(stop, worker)
        if proxy is not None:
            await trio.to_thread.run_sync(proxy.terminate)
        if prometheus is not None:
            await trio.to_thread.run_sync(prometheus.stop)
        if database is not None:
            await trio.to_thread.run_sync(database.close)

    assert fired == PROVOKED
    assert "level=error" not in prometheus.stderr(), prometheus.stderr()
    for stderr in (proxy.stderr(), (tmp_path / "worker.stderr").read_text()):
        problems = log_problems(stderr)
        assert [line for line in problems if not any(e in line for e in EXPECTED_ERRORS)] == []
