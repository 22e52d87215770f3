"""The worker role: `ere-proxy worker` runs ERE jobs from the queue until it is told to stop.

Each worker is one OS process (`run` starts `ere.workers` of them; at scale they run alone on
other machines); any number may share one database, since a job is claimed with SKIP LOCKED in
the transaction that does it (see `proxy.ere.jobs.queue`). An idle worker looks for due jobs
every `poll_interval` seconds. Worker i serves /metrics, /healthz and /readyz on
`ere.admin_port + i`: job runs by kind and outcome and their duration; worker 0 also exports the
pipeline from the database (jobs by state, sessions by status and meter class, eligible energy
(in joules, Prometheus's base unit), ERE and net payout per quarter, and the deadline of each delivery year whose REV export is still due:
a year with stated energy and no final export), refreshed every `pipeline_refresh` seconds by a
task of its own, beside the job under way (a close that runs for an hour leaves them fresh). A
refresh that fails keeps the last figures but says so: `ere_worker_pipeline_refresh_ok` drops to 0
and `ere_worker_pipeline_refreshed_timestamp_seconds` keeps the time of the last one that worked
(the worker's start until one has: figures never read are as old as the worker, not 56 years).
With the figures come the age of the oldest due job still waiting, by kind
(`ere_worker_pipeline_jobs_oldest_queued_seconds`; jobs a worker runs are not waiting), and the
outbox entries parked as dead letters (`ere_worker_pipeline_outbox_dead_letters`).
Every worker exports how long the job it runs has been running (`ere_worker_job_running_seconds`,
0 when idle: a hung job shows before it ends), its database errors by operation
(`ere_worker_database_errors_total`) and `ere_worker_build_info`. The factor table is
read once, at start, in a worker thread; jobs run their file and network I/O in worker threads
too, so the event loop (metrics, signals) runs on while they wait.

Stopping: SIGTERM or SIGINT lets the job under way finish, then the worker exits; a second
signal (or SIGKILL) abandons it, and its transaction is rolled back (the job runs again). A file
being written or a statement being sent when the second signal comes is finished first (see
`proxy.ere.jobs.payouts`).
Errors: a database that is unavailable is retried every `poll_interval` (logged); a failing
job is recorded by the queue and never stops the worker.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from proxy.ere.core.factors import load_factor_table
from proxy.ere.jobs.closing import close_shard, start_close
from proxy.ere.jobs.payouts import run_payout, send_statements
from proxy.ere.jobs.queue import Handler, Job, run_one
from proxy.ere.jobs.rev_export import rev_deadline
from proxy.runtime.config import Config
from proxy.runtime.http_admin import AdminServer, metrics_url
from proxy.runtime.metrics import register_build_info
from proxy.store.connection import Connection
from proxy.store.db import DATABASE_ERRORS, open_database

log = logging.getLogger("proxy.ere.worker")

JOULES_PER_KWH = 3_600_000  # metrics carry energy in joules, the base unit

# Delivery years with stated energy whose final REV export is not written yet.
_REV_EXPORTS_DUE = """
SELECT left(l.delivery_quarter, 4)::integer FROM statement_lines l
JOIN quarter_closes c ON (c.quarter, c.revision) = (l.quarter, l.revision)
WHERE c.state = 'closed' GROUP BY 1 HAVING sum(l.kwh) > 0
EXCEPT SELECT year FROM rev_exports WHERE final
ORDER BY 1
"""
# Outbox entries parked as dead letters (replayed CALLs the back-office refused), until requeued.
_PARKED_DEAD_LETTERS = "SELECT count(*) FROM outbox_entries WHERE dead_reason IS NOT NULL"
# Age of the oldest job per kind that is due and still waits for a worker.
# A job a worker runs stays 'queued' (and row-locked) until its transaction commits: locked rows
# are being run, not waiting, and are skipped (FOR KEY SHARE waits for no one; it needs the
# UPDATE privilege a worker has anyway).
_OLDEST_QUEUED = """
SELECT kind, extract(epoch FROM now() - min(run_after)) FROM (
    SELECT kind, run_after FROM ere_jobs WHERE state = 'queued' AND run_after <= now()
    FOR KEY SHARE SKIP LOCKED
) AS due GROUP BY 1
"""


def handlers(config: Config) -> dict[str, Handler]:
    """The job kinds a worker runs and their handlers."""
    settings = config.ere
    factors = load_factor_table(Path(settings.factors_file) if settings.factors_file else None)

    async def shard(conn: Connection, job: Job) -> None:
        await close_shard(conn, job, factors)

    return {
        "close": start_close,
        "close-shard": shard,
        "payout": partial(_with_settings, run_payout, settings),
        "statements": partial(_with_settings, send_statements, settings),
    }


async def _with_settings(
    handler: Callable[[Connection, Job, Any], Awaitable[None]],
    settings: Any,
    conn: Connection,
    job: Job,
) -> None:
    await handler(conn, job, settings)


class WorkerMetrics:
    """Job runs of this worker, and (worker 0) the pipeline as the database shows it."""

    def __init__(self, registry: CollectorRegistry, pipeline: bool) -> None:
        self.registry = registry
        self.runs = Counter(
            "ere_worker_job_runs",
            "Jobs run by this worker, by kind and outcome.",
            ["kind", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "ere_worker_job_seconds",
            "Time to run a job, by kind.",
            ["kind"],
            buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 1800),
            registry=registry,
        )
        self.database_errors = Counter(
            "ere_worker_database_errors",
            "Database calls of this worker that failed, by operation (jobs: claiming and running a "
            "job's transaction; pipeline: reading the pipeline figures).",
            ["operation"],
            registry=registry,
        )
        for operation in ("jobs", "pipeline"):  # exported from the start: increase() sees the first
            self.database_errors.labels(operation)
        running = Gauge(
            "ere_worker_job_running_seconds",
            "How long the job this worker runs has been running (0 when idle).",
            registry=registry,
        )
        running.set_function(self._running_seconds)
        register_build_info(registry, "ere_worker")
        self.job_started: float | None = None  # monotonic time the running job started
        self.pipeline: list[Metric] = []
        self.refresh_ok = False
        self.refreshed_wall = time.time()  # none read yet: as old as this worker
        self.exports_pipeline = pipeline
        if pipeline:
            registry.register(self)

    def _running_seconds(self) -> float:
        started = self.job_started
        return 0.0 if started is None else time.monotonic() - started

    def collect(self) -> list[Metric]:
        ok = GaugeMetricFamily(
            "ere_worker_pipeline_refresh_ok",
            "1 if the last read of the pipeline figures worked, 0 if it failed (they are stale).",
            value=1 if self.refresh_ok else 0,
        )
        at = GaugeMetricFamily(
            "ere_worker_pipeline_refreshed_timestamp_seconds",
            "Unix time of the last read of the pipeline figures that worked (the worker's start"
            " until one has).",
            value=self.refreshed_wall,
        )
        return [*self.pipeline, ok, at]

    async def refresh_or_mark_stale(self, db: Any) -> None:
        """`refresh`; a database error is logged and marks the figures stale until the next one."""
        try:
            await self.refresh(db)
        except DATABASE_ERRORS as exc:
            log.warning("could not read the pipeline figures", extra={"error": str(exc)})
            self.database_errors.labels("pipeline").inc()
            self.refresh_ok = False

    async def refresh(self, db: Any) -> None:
        """Read the pipeline figures from the database (a few aggregate queries)."""
        jobs = GaugeMetricFamily(
            "ere_worker_pipeline_jobs",
            "ERE jobs in the queue by kind and state.",
            labels=["kind", "state"],
        )
        for kind, state, count in await db.fetch(
            "SELECT kind, state, count(*) FROM ere_jobs GROUP BY 1, 2"
        ):
            jobs.add_metric([kind, state], count)
        sessions = GaugeMetricFamily(
            "ere_worker_pipeline_sessions",
            "Captured sessions by status and meter class.",
            labels=["status", "meter_class"],
        )
        for status, meter_class, count in await db.fetch(
            "SELECT status, meter_class, count(*) FROM sessions GROUP BY 1, 2"
        ):
            sessions.add_metric([status, meter_class], count)
        assessed = GaugeMetricFamily(
            "ere_worker_pipeline_session_assessments",
            "Sessions by the eligibility of their last close.",
            labels=["eligibility", "reason"],
        )
        for eligibility, reason, count in await db.fetch(
            "SELECT eligibility, reason, count(*) FROM current_session_assessments GROUP BY 1, 2"
        ):
            assessed.add_metric([eligibility, reason], count)
        energy = GaugeMetricFamily(
            "ere_worker_pipeline_eligible_energy_joules",
            "Eligible energy stated per closed quarter, in joules (kWh × 3.6e6).",
            labels=["quarter"],
        )
        credits = GaugeMetricFamily(
            "ere_worker_pipeline_credits", "ERE stated per closed quarter.", labels=["quarter"]
        )
        net = GaugeMetricFamily(
            "ere_worker_pipeline_net_payout_eur",
            "Net payout stated per closed quarter (EUR).",
            labels=["quarter"],
        )
        for quarter, q_kwh, q_ere, q_net in await db.fetch("""
                SELECT l.quarter, sum(l.kwh), sum(l.ere), sum(l.net) FROM statement_lines l
                JOIN quarter_closes c ON (c.quarter, c.revision) = (l.quarter, l.revision)
                WHERE c.state = 'closed' GROUP BY 1"""):
            energy.add_metric([quarter], float(q_kwh * JOULES_PER_KWH))
            credits.add_metric([quarter], float(q_ere))
            net.add_metric([quarter], float(q_net))
        due = GaugeMetricFamily(
            "ere_worker_pipeline_rev_export_deadline_timestamp_seconds",
            "When the REV export of a delivery year with stated energy and no final export is due"
            " at the NEa (1 March of the next year, Dutch time), as a Unix time.",
            labels=["year"],
        )
        for (year,) in await db.fetch(_REV_EXPORTS_DUE):
            due.add_metric([str(year)], rev_deadline(year).timestamp())
        oldest = GaugeMetricFamily(
            "ere_worker_pipeline_jobs_oldest_queued_seconds",
            "Age of the oldest due ERE job still queued, by kind (since it became due).",
            labels=["kind"],
        )
        for kind, age in await db.fetch(_OLDEST_QUEUED):
            oldest.add_metric([kind], float(age))
        parked = GaugeMetricFamily(
            "ere_worker_pipeline_outbox_dead_letters",
            "Outbox entries parked as dead letters in the database, until requeued or deleted.",
        )
        for (count,) in await db.fetch(_PARKED_DEAD_LETTERS):
            parked.add_metric([], count)
        self.pipeline = [jobs, sessions, assessed, energy, credits, net, due, oldest, parked]
        self.refreshed_wall = time.time()
        self.refresh_ok = True


async def run_worker_role(
    config: Config, index: int = 0, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run jobs until SIGTERM/SIGINT (or cancellation); see the module docstring."""
    settings = config.ere
    jobs = await trio.to_thread.run_sync(handlers, config)  # reads the factor table
    metrics = WorkerMetrics(CollectorRegistry(), pipeline=index == 0)
    stopping = trio.Event()
    log.info("worker starting", extra={"worker": index, "kinds": sorted(jobs)})
    async with open_database(config.database, query_timeout=config.ere.query_timeout) as db:
        admin = AdminServer(metrics.registry, lambda: not stopping.is_set())
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                if settings.admin_port:
                    listeners = await nursery.start(
                        admin.serve, settings.admin_host, settings.admin_port + index
                    )
                    metrics_at = metrics_url(settings.admin_host, listeners)
                    log.info("worker serving metrics", extra={"metrics": metrics_at})
                nursery.start_soon(_stop_on_signal, signals, stopping, nursery.cancel_scope)
                if metrics.exports_pipeline:
                    nursery.start_soon(_refresh_pipeline, db, metrics, settings.pipeline_refresh)
                task_status.started()
                await _work(db, jobs, metrics, stopping, config)
                nursery.cancel_scope.cancel()
    log.info("worker stopped", extra={"worker": index})


async def _refresh_pipeline(db: Any, metrics: WorkerMetrics, every: float) -> None:
    """Worker 0: read the pipeline figures every `every` seconds, beside the jobs, so that a job
    running for an hour leaves them fresh. A failed read marks them stale; runs until cancelled."""
    while True:
        await metrics.refresh_or_mark_stale(db)
        await trio.sleep(every)


async def _stop_on_signal(signals: Any, stopping: trio.Event, scope: trio.CancelScope) -> None:
    async for signum in signals:
        if stopping.is_set():
            scope.cancel()  # a second signal: abandon the job under way (it is rolled back)
            return
        log.info(
            "worker stopping after the job under way", extra={"signal": signal.Signals(signum).name}
        )
        stopping.set()


async def _work(
    db: Any, jobs: dict[str, Handler], metrics: WorkerMetrics, stopping: trio.Event, config: Config
) -> None:
    settings = config.ere

    def claimed(job: Job) -> None:
        metrics.job_started = time.monotonic()  # a claim still waiting is not a running job

    while not stopping.is_set():
        try:
            outcome = await run_one(
                db,
                jobs,
                retry_base=settings.retry_base,
                max_attempts=settings.max_attempts,
                claimed=claimed,
            )
        except DATABASE_ERRORS as exc:
            log.warning("database unavailable", extra={"error": str(exc)})
            metrics.database_errors.labels("jobs").inc()
            outcome = None
        finally:
            started, metrics.job_started = metrics.job_started, None
        if outcome is not None and outcome.job is not None and started is not None:
            kind = outcome.job.kind  # claimed (`started`), then run
            metrics.runs.labels(kind, outcome.state).inc()
            metrics.seconds.labels(kind).observe(time.monotonic() - started)
            log.info(
                "job finished",
                extra={
                    "job": outcome.job.job_id,
                    "kind": kind,
                    "key": outcome.job.key,
                    "state": outcome.state,
                    "seconds": round(time.monotonic() - started, 3),
                },
            )
            continue  # there may be more due at once
        with trio.move_on_after(settings.poll_interval):
            await stopping.wait()
