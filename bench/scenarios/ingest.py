"""`ingest`: how many session events per second the capture path stores in PostgreSQL.

A fresh database (`bench.harness.capture_db`: embedded server, default settings, fsync on) and
real events: OCPP 1.6 frames of simulated chargers through `proxy.capture.tracker.Tracker`
(`bench.load.tracker_events`), generated before any timing starts. For each batch size and each
path, for a bounded time:

- `store`: `proxy.capture.sessions.store_events` in one transaction per batch, back to back (what the
  journal's writer does, without the journal);
- `journal`: a producer hands the events one frame at a time to `Journal.submit` (as links do)
  while `Journal.run` (with a SpillLog in a scratch dir) writes them; the producer keeps the
  journal's channel at most half full so nothing spills, and the rate is what the writer stored;
- `asyncio` (diagnostic): the same `store_events` on raw asyncpg on a plain asyncio loop.

Reported: events/s and samples/s, and the CPU per event of this process (Python: tracker-free,
journal + store_events + asyncpg + trio-asyncio) and of PostgreSQL (postmaster tree), so the
cost splits between the two.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import trio
import trio.lowlevel

from bench.harness import pg
from bench.harness.capture_db import header, sequence_note, server_facts, settings
from bench.harness.report import Report, UsageError, loadavg
from bench.harness.table import fmt, table
from bench.load.tracker_events import count_samples, fleet_events
from testkit.postgres import make_data_dir, remove_data_dir


def own_cpu() -> float:
    """CPU seconds of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class IngestRun:
    path: str  # store | journal
    batch: int
    events: int = 0
    samples: int = 0
    wall_s: float = math.nan
    py_cpu_s: float = math.nan
    db_cpu_s: float = math.nan
    pool_exhausted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.events / self.wall_s if self.wall_s else math.nan

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.wall_s if self.wall_s else math.nan

    def us_per_event(self, cpu: float) -> float:
        return cpu * 1e6 / self.events if self.events else math.nan


async def _ingest_store(
    db, run: IngestRun, frames: list[list], data_dir: Path, duration: float
) -> None:
    from proxy.capture.sessions import store_events

    events = [e for f in frames for e in f]
    batches = [events[i : i + run.batch] for i in range(0, len(events), run.batch)]
    c0, d0, t0 = own_cpu(), pg.cpu_seconds(data_dir), time.monotonic()
    deadline = t0 + duration
    for batch in batches:
        async with db.transaction() as conn:
            await store_events(conn, batch)
        run.events += len(batch)
        run.samples += count_samples(batch)
        if time.monotonic() >= deadline:
            break
    else:
        run.pool_exhausted = True
    run.wall_s, run.py_cpu_s, run.db_cpu_s = (
        time.monotonic() - t0,
        own_cpu() - c0,
        pg.cpu_seconds(data_dir) - d0,
    )


def _ingest_asyncio(
    dsn: str, run: IngestRun, frames: list[list], data_dir: Path, duration: float
) -> None:
    """Diagnostic: the same store_events on a raw asyncpg connection on a plain asyncio loop
    (in a thread of its own), i.e. without trio-asyncio and the pool's per-release reset."""
    import asyncio

    import asyncpg

    from proxy.capture.sessions import store_events

    events = [e for f in frames for e in f]
    batches = [events[i : i + run.batch] for i in range(0, len(events), run.batch)]

    async def main() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            c0, d0, t0 = own_cpu(), pg.cpu_seconds(data_dir), time.monotonic()
            deadline = t0 + duration
            for batch in batches:
                async with conn.transaction():
                    await store_events(conn, batch)
                run.events += len(batch)
                run.samples += count_samples(batch)
                if time.monotonic() >= deadline:
                    break
            else:
                run.pool_exhausted = True
            run.wall_s, run.py_cpu_s, run.db_cpu_s = (
                time.monotonic() - t0,
                own_cpu() - c0,
                pg.cpu_seconds(data_dir) - d0,
            )
        finally:
            await conn.close()

    asyncio.run(main())


async def _ingest_journal(
    db, run: IngestRun, frames: list[list], data_dir: Path, duration: float, spill_dir: Path
) -> None:
    from proxy.capture.journal import DatabaseStore, Journal
    from proxy.capture.spill import SpillLog

    spill = SpillLog(spill_dir)
    capacity = 10_000  # [capture] queue_events default
    journal = Journal(spill, capacity=capacity, batch_size=run.batch)
    samples_by_frame = [count_samples(f) for f in frames]
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run, DatabaseStore(db))
            c0, d0, t0 = own_cpu(), pg.cpu_seconds(data_dir), time.monotonic()
            deadline = t0 + duration
            submitted = 0
            for events in frames:
                while journal.queued >= capacity // 2:  # keep it from spilling: measure the writer
                    await trio.sleep(0.001)
                journal.submit(events)
                submitted += 1
                if submitted % 64 == 0:
                    await trio.lowlevel.checkpoint()  # links yield between frames too
                if time.monotonic() >= deadline:
                    break
            # what was stored within the window (the writer's last batch may straddle it)
            while time.monotonic() < deadline and journal.stats.stored < journal.stats.submitted:
                await trio.sleep(0.01)
            run.pool_exhausted = journal.stats.stored >= sum(len(f) for f in frames)
            run.wall_s, run.py_cpu_s, run.db_cpu_s = (
                time.monotonic() - t0,
                own_cpu() - c0,
                pg.cpu_seconds(data_dir) - d0,
            )
            stored = journal.stats.stored
            run.events = stored
            # samples of the events stored so far (they are stored in submission order)
            n, run.samples = 0, 0
            for f, s in zip(frames, samples_by_frame):
                if n + len(f) > stored:
                    break
                n += len(f)
                run.samples += s
            if journal.stats.spilled:
                run.notes.append(f"{journal.stats.spilled} events spilled")
            nursery.cancel_scope.cancel()
    finally:
        spill.close()


async def _ingest(args: argparse.Namespace, data_dir: Path, scratch: Path) -> list[IngestRun]:
    from proxy.store.db import open_database

    runs: list[IngestRun] = []
    async with open_database(settings(data_dir)) as db:
        await server_facts(db, args)
        index = 0
        for path in args.paths:
            for batch in args.batch_sizes:
                index += 1
                print(
                    f"[ingest] {path}, batches of {batch}: generating events …",
                    file=sys.stderr,
                    flush=True,
                )
                frames = []
                total = 0
                gen = fleet_events(
                    f"ING{index}-",
                    args.chargers,
                    10**9,
                    session_minutes=args.session_minutes,
                    samples=(1, 3),
                    seed=index,
                )
                while total < args.events:
                    frames.append(next(gen))
                    total += len(frames[-1])
                run = IngestRun(path, batch)
                # Empty tables for every run, and the measurands sequence restarted: store_events
                # draws a smallint code per sampled MeterValues, so a database fails after 32,767 (see
                # the report's last line); the runs must stay below that.
                await db.execute(
                    "TRUNCATE charger_events, meter_samples, sessions, charger_boots, measurands "
                    "RESTART IDENTITY CASCADE"
                )
                print(
                    f"[ingest] {path}, batches of {batch}: {total} events ready; storing for "
                    f"{args.duration:g} s …",
                    file=sys.stderr,
                    flush=True,
                )
                if path == "store":
                    await _ingest_store(db, run, frames, data_dir, args.duration)
                elif path == "asyncio":
                    await trio.to_thread.run_sync(
                        _ingest_asyncio, db.dsn, run, frames, data_dir, args.duration
                    )
                else:
                    await _ingest_journal(
                        db, run, frames, data_dir, args.duration, scratch / f"spill-{index}"
                    )
                if run.pool_exhausted and run.events < total:
                    run.pool_exhausted = False
                if run.pool_exhausted:
                    run.notes.append(
                        f"all {total} pre-generated events stored before the time was up (raise --events)"
                    )
                print(
                    f"    {run.events_per_s:.0f} events/s, {run.samples_per_s:.0f} samples/s",
                    file=sys.stderr,
                    flush=True,
                )
                runs.append(run)
                del frames
        args.rows = {t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in pg.TABLES}
        args.sequence = await sequence_note(db, args.rows["meter_samples"])
    return runs


def ingest_report(runs: list[IngestRun], args: argparse.Namespace) -> str:
    rows = [
        [
            r.path,
            str(r.batch),
            str(r.events),
            fmt(r.wall_s, ".1f"),
            fmt(r.events_per_s, ".0f"),
            fmt(r.samples_per_s, ".0f"),
            fmt(r.us_per_event(r.py_cpu_s), ".0f"),
            fmt(r.us_per_event(r.db_cpu_s), ".0f"),
            fmt(r.py_cpu_s / r.wall_s * 100, ".0f", "%"),
            fmt(r.db_cpu_s / r.wall_s * 100, ".0f", "%"),
        ]
        for r in runs
    ]
    out = [
        table(
            (
                "path",
                "batch",
                "events",
                "s",
                "events/s",
                "samples/s",
                "Python µs/event",
                "PG µs/event",
                "Python CPU",
                "PG CPU",
            ),
            rows,
        )
    ]
    notes = [f"- {r.path}/{r.batch}: {n}" for r in runs for n in r.notes]
    by = {(r.path, r.batch): r for r in runs}
    ratios = []
    for b in args.batch_sizes:
        if ("store", b) in by and ("journal", b) in by:
            ratios.append(
                f"- batches of {b}: journal/store events/s "
                f"{by['journal', b].events_per_s / by['store', b].events_per_s:.2f}×"
            )
        if ("store", b) in by and ("asyncio", b) in by:
            ratios.append(
                f"- batches of {b}: asyncio (no trio-asyncio)/store events/s "
                f"{by['asyncio', b].events_per_s / by['store', b].events_per_s:.2f}×, Python µs/event "
                f"{by['asyncio', b].us_per_event(by['asyncio', b].py_cpu_s) / by['store', b].us_per_event(by['store', b].py_cpu_s):.2f}×"
            )
    if len(args.batch_sizes) > 1:
        lo, hi = args.batch_sizes[0], args.batch_sizes[-1]
        if ("store", lo) in by and ("store", hi) in by:
            ratios.append(
                f"- store_events, batches of {hi} vs {lo}: "
                f"{by['store', hi].events_per_s / by['store', lo].events_per_s:.2f}× events/s"
            )
    if ratios:
        out += ["", "Ratios:", *ratios]
    out += [
        "",
        "Rows in the database at the end: "
        + ", ".join(f"{t} {n}" for t, n in args.rows.items())
        + f"; {args.sequence}",
    ]
    if notes:
        out += ["", "Notes:", *notes]
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--duration", type=float, default=15.0, help="seconds per path and batch size"
    )
    parser.add_argument(
        "--batch-sizes", default="100,1000", help="events per transaction, comma-separated"
    )
    parser.add_argument(
        "--paths",
        default="store,journal,asyncio",
        help="store (store_events through the proxy's Database), journal (Journal), "
        "asyncio (diagnostic: store_events on raw asyncpg + asyncio, no trio-asyncio)",
    )
    parser.add_argument(
        "--chargers", type=int, default=500, help="simulated chargers (interleaved)"
    )
    parser.add_argument(
        "--events",
        type=int,
        default=30_000,
        help="events generated before each run (upper bound; keep below ~32,000: the measurands "
        "sequence of the current schema overflows after 32,767 sampled events)",
    )
    parser.add_argument("--session-minutes", type=int, default=60, help="MeterValues per session")


def run(args: argparse.Namespace) -> Report:
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    if not set(args.paths) <= {"store", "journal", "asyncio"}:
        raise UsageError("--paths: choose from store, journal, asyncio")
    args.loadavg_at_start = loadavg()
    started = datetime.now(UTC)
    data_dir = make_data_dir("ocpp-bench-ingest-")
    try:
        runs = trio.run(_ingest, args, data_dir / "db", data_dir)
    finally:
        remove_data_dir(data_dir / "db")
        remove_data_dir(data_dir)
    body = (
        f"- load: {args.chargers} simulated OCPP 1.6 chargers through proxy.capture.tracker.Tracker, sessions of "
        f"{args.session_minutes} MeterValues (1–3 samples each) between Start/StopTransaction; "
        f"{args.duration:g} s per path and batch size\n\n" + ingest_report(runs, args)
    )
    return Report(header("ingest", args, started) + "\n" + body + "\n")
