"""Worker 0's pipeline figures while jobs run: a job under way is not a job waiting, and a job that
hangs does not leave the figures stale (real PostgreSQL, the worker role in this process)."""

from __future__ import annotations

import json
import urllib.request

import msgspec
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from proxy.ere.jobs.queue import run_one
from proxy.ere.jobs.worker import WorkerMetrics, run_worker_role
from proxy.runtime.config import Config, EreSettings
from proxy.store import open_database
from testkit.ports import free_port
from testkit.waiting import until

OLDEST = "ere_worker_pipeline_jobs_oldest_queued_seconds"
DUE_LONG_AGO = "now() - interval '2 hours'"


async def test_a_job_a_worker_runs_is_not_waiting_and_one_no_worker_took_is(settings):
    metrics = WorkerMetrics(CollectorRegistry(), pipeline=True)
    running, release = trio.Event(), trio.Event()

    async def hangs(conn, job) -> None:
        running.set()
        await release.wait()

    async with open_database(settings) as db:
        for kind in ("statements", "payout"):
            await db.execute(
                f"INSERT INTO ere_jobs (kind, job_key, run_after) VALUES ($1, 'k', {DUE_LONG_AGO})",
                kind,
            )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: run_one(db, {"statements": hangs}, retry_base=1.0, max_attempts=1)
            )
            await running.wait()  # claimed, and under way in its transaction
            await metrics.refresh(db)
            waiting = metrics.registry.get_sample_value
            assert waiting(OLDEST, {"kind": "statements"}) is None
            assert waiting(OLDEST, {"kind": "payout"}) >= 7200 - 60
            release.set()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
        f"http://127.0.0.1:{port}/metrics", timeout=5
    ) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_worker_0_keeps_its_figures_fresh_while_a_job_hangs(settings):
    port = free_port()
    ere = {"admin_port": port, "poll_interval": 0.05, "pipeline_refresh": 0.05}
    config = Config(database=settings, ere=msgspec.convert(ere, EreSettings))
    async with open_database(settings) as db:
        async with db.transaction() as lock:
            # A close under way takes this lock: the close job below waits for it (it hangs).
            await lock.execute("LOCK TABLE quarter_closes IN SHARE ROW EXCLUSIVE MODE")
            await db.execute(
                "INSERT INTO ere_jobs (kind, job_key, args, run_after)"
                f" VALUES ('close', '2026Q3/r1', $1, {DUE_LONG_AGO})",
                json.dumps({"quarter": "2026Q3", "shards": 1}),
            )
            async with trio.open_nursery() as nursery:
                await nursery.start(run_worker_role, config, 0)

                def running_and_read_at() -> tuple[float, float]:
                    figures = scrape(port)
                    return (
                        figures[("ere_worker_job_running_seconds", ())],
                        figures[("ere_worker_pipeline_refreshed_timestamp_seconds", ())],
                    )

                await until(lambda: min(running_and_read_at()) > 0, "the close job hanging", 30)
                read_at = (await trio.to_thread.run_sync(running_and_read_at))[1]
                await until(lambda: running_and_read_at()[1] > read_at, "figures read again", 30)
                figures = await trio.to_thread.run_sync(scrape, port)
                assert figures[("ere_worker_job_running_seconds", ())] > 0  # still hanging
                assert (OLDEST, (("kind", "close"),)) not in figures  # running, not waiting
                nursery.cancel_scope.cancel()


async def test_a_claim_waiting_for_the_database_is_not_a_running_job(settings):
    """Only a claimed job runs: a worker whose claim waits (the queue locked) shows 0 running
    seconds, so EreJobRunningLong does not take a slow database for a hung job."""
    port = free_port()
    ere = {"admin_port": port, "poll_interval": 0.05, "pipeline_refresh": 60}
    config = Config(database=settings, ere=msgspec.convert(ere, EreSettings))
    async with open_database(settings) as db:
        await db.execute(
            f"INSERT INTO ere_jobs (kind, job_key, run_after) VALUES ('statements', 'k', {DUE_LONG_AGO})"
        )
        async with db.transaction() as lock:
            await lock.execute("LOCK TABLE ere_jobs IN ACCESS EXCLUSIVE MODE")
            async with trio.open_nursery() as nursery:
                await nursery.start(run_worker_role, config, 1)  # worker 1: no pipeline figures

                async def claim_waiting() -> bool:
                    return bool(
                        await db.fetchval(
                            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                            " AND query LIKE '%ere_jobs%' AND pid <> pg_backend_pid()"
                        )
                    )

                while not await claim_waiting():
                    await trio.sleep(0.05)
                await trio.sleep(0.2)  # it goes on waiting
                figures = await trio.to_thread.run_sync(scrape, port + 1)
                assert figures[("ere_worker_job_running_seconds", ())] == 0
                nursery.cancel_scope.cancel()
