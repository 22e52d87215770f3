"""Quarter close at fleet scale: 10,000 chargers × 90 days × 1–2 sessions a day, 1 and 2 workers.

For each worker count, in one run on one PostgreSQL (embedded server, default settings: fsync
on): a fresh database gets `--chargers` customers (one charger, EAN and mandate each) and about
1.5 sessions per charger per day over the quarter (`sessions` rows with signed readings; one in
twenty without MID evidence), then `ere-proxy worker` processes close the quarter. Measured from
the moment the close is queued until the quarter is `closed`: wall time, peak RSS of each worker
(sampled every 0.2 s from /proc), worker and database CPU. The statement lines of the runs are
compared: they must be identical whatever the number of workers.

    .venv/bin/python -m bench quarter-close [--chargers 10000] [--days 90] [--workers 1,2] [--shards 8] [--no-results]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from bench.harness import pg, procstat
from bench.harness.database import execute, fetch
from bench.harness.processes import REPO, spawn
from bench.harness.report import Report, UsageError, command, loadavg, machine_line
from testkit.postgres import ServerThread, make_data_dir

_SEED = [
    """INSERT INTO partners (partner_id, name, kind, payout_model) VALUES ('P1', 'Installer', 'installer', 'direct')""",
    """INSERT INTO customers (customer_id, partner_id, name, address, postcode, city, ean, grid_operator, iban)
       SELECT 'C' || n, 'P1', 'Customer ' || n, 'Straat ' || n, '1234 AB', 'Utrecht',
              b || ((10 - (SELECT sum(substr(b, i, 1)::int * CASE WHEN i % 2 = 1 THEN 3 ELSE 1 END)
                          FROM generate_series(1, 17) AS i) % 10) % 10),
              'Stedin', 'NL91ABNA0417164300'
       FROM generate_series(1, $1) AS n, LATERAL (SELECT '871' || lpad(n::text, 14, '0') AS b) AS digits""",
    """INSERT INTO mandates (ean, year, customer_id, issued_on, valid_from, valid_until, consent)
       SELECT ean, 2026, customer_id, '2026-01-01', '2026-01-01', '2026-12-31', '{"by": "customer"}' FROM customers""",
    """INSERT INTO charger_links SELECT 'CP-' || customer_id, customer_id, 11000 FROM customers""",
    # Day d, session k (k = 1 always, k = 2 on odd days for odd customers): about 1.5 a day.
    """INSERT INTO sessions (identity, transaction_id, connector_id, started_at, stopped_at, meter_start_wh,
                             meter_stop_wh, status, meter_class)
       SELECT 'CP-C' || n, d || '-' || k, 1,
              timestamptz '2026-07-01 00:00+02' + d * interval '1 day' + (k * 8 + n % 5) * interval '1 hour',
              timestamptz '2026-07-01 00:00+02' + d * interval '1 day' + (k * 8 + n % 5 + 3) * interval '1 hour',
              1000000 + d * 100000, 1000000 + d * 100000 + 2000 + (n * 37 + d * 11 + k) % 20000, 'completed',
              CASE WHEN (n + d) % 20 = 0 THEN 'unknown' ELSE 'signed-verified' END
       FROM generate_series(1, $1) AS n, generate_series(0, $2 - 1) AS d, generate_series(1, 2) AS k
       WHERE k = 1 OR (n + d) % 2 = 1""",
    "ANALYZE",
]


async def _seed(dsn: str, chargers: int, days: int) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in _SEED:
            args = [a for a in (chargers, days)][: statement.count("$")]
            await conn.execute(statement, *args)
        return int(await conn.fetchval("SELECT count(*) FROM sessions"))
    finally:
        await conn.close()


def run_close(
    server: ServerThread, db_dir: Path, scratch: Path, args: argparse.Namespace, workers: int
) -> dict:
    name = f"close_{workers}"
    execute(server.server.dsn(), f'CREATE DATABASE "{name}"')
    dsn = server.server.dsn(name)
    config = scratch / f"{name}.toml"
    config.write_text(
        f'[log]\nlevel = "warning"\n[database]\ndsn = {json.dumps(dsn)}\npool_size = 4\n'
        f"[ere]\nclose_shards = {args.shards}\npoll_interval = 0.2\n"
    )
    migrate = subprocess.run(
        [sys.executable, "-m", "proxy", "migrate", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if migrate.returncode != 0:
        raise RuntimeError(migrate.stderr)
    print(
        f"[close] seeding {args.chargers} chargers × {args.days} days", file=sys.stderr, flush=True
    )
    sessions = asyncio.run(_seed(dsn, args.chargers, args.days))
    print(
        f"[close] {sessions} sessions; closing with {workers} worker(s)",
        file=sys.stderr,
        flush=True,
    )
    procs = []
    for index in range(workers):
        with (scratch / f"{name}-{index}.log").open("wb") as log:
            procs.append(
                spawn(
                    [sys.executable, "-m", "proxy", "worker", "--config", str(config)],
                    cwd=REPO,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )
    time.sleep(3)  # let the workers import and connect: their start-up is not the close
    peaks = [0] * workers
    db_cpu, worker_cpu = pg.cpu_seconds(db_dir), sum(procstat.cpu_seconds(p.pid) for p in procs)
    queued = subprocess.run(
        [sys.executable, "-m", "proxy", "quarter", "close", "2026Q3", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    started = time.monotonic()
    if queued.returncode != 0:
        raise RuntimeError(queued.stderr)
    while True:
        for index, proc in enumerate(procs):
            peaks[index] = max(peaks[index], procstat.rss_bytes(proc.pid))
            if proc.poll() is not None:
                raise RuntimeError(
                    f"worker {index} exited: {(scratch / f'{name}-{index}.log').read_text()[-2000:]}"
                )
        state = fetch(dsn, "SELECT state FROM quarter_closes")
        if state and state[0][0] == "closed":
            break
        failed = fetch(dsn, "SELECT last_error FROM ere_jobs WHERE state = 'failed'")
        if failed:
            raise RuntimeError(f"close failed: {failed[0][0]}")
        time.sleep(0.2)
    seconds = time.monotonic() - started
    worker_cpu = sum(procstat.cpu_seconds(p.pid) for p in procs) - worker_cpu
    db_cpu = pg.cpu_seconds(db_dir) - db_cpu
    for proc in procs:
        proc.terminate()
        proc.wait(60)
    lines = fetch(
        dsn,
        "SELECT customer_id, kwh, ere, gross, fee, fee_vat, net, sessions"
        " FROM statement_lines ORDER BY customer_id",
    )
    eligible = fetch(
        dsn,
        "SELECT count(*) FILTER (WHERE eligibility = 'eligible'), count(*)"
        " FROM session_assessments",
    )[0]
    retried = fetch(dsn, "SELECT kind, job_key, last_error FROM ere_jobs WHERE attempts > 0")
    for kind, key, error in retried:
        print(f"[close] {kind} {key} was retried: {error}", file=sys.stderr, flush=True)
    execute(server.server.dsn(), f'DROP DATABASE "{name}"')
    return {
        "workers": workers,
        "sessions": sessions,
        "seconds": seconds,
        "peaks": peaks,
        "worker_cpu": worker_cpu,
        "db_cpu": db_cpu,
        "lines": [tuple(r) for r in lines],
        "eligible": eligible[0],
        "assessed": eligible[1],
    }


def report(args: argparse.Namespace, started: datetime, runs: list[dict]) -> str:
    mb = 1024 * 1024
    same = all(run["lines"] == runs[0]["lines"] for run in runs)
    base = runs[0]["seconds"]
    rows = [
        f"| {r['workers']} | {r['sessions']:,} | {r['seconds']:.1f} | {base / r['seconds']:.2f}× | "
        f"{r['sessions'] / r['seconds']:,.0f} | {' + '.join(f'{p / mb:.0f}' for p in r['peaks'])} MB | "
        f"{r['worker_cpu']:.1f} | {r['db_cpu']:.1f} | {r['eligible']:,} of {r['assessed']:,} |"
        for r in runs
    ]
    total = runs[0]["lines"]
    return "\n".join(
        [
            f"## quarter close, {started:%Y-%m-%d %H:%M} UTC",
            "",
            machine_line(args.loadavg_at_start),
            f"- command (from the repository root): `{command(args)}`",
            f"- {args.chargers} chargers × {args.days} days, about 1.5 sessions a day; {args.shards} shards; "
            "PostgreSQL embedded, fsync on, on the same 2 CPUs",
            "",
            "| workers | sessions | seconds | speed-up | sessions/s | peak RSS per worker | worker CPU s | DB CPU s |"
            " eligible |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
            *rows,
            "",
            f"- statement lines: {len(total)} (one per customer); identical for every worker count: {'yes' if same else 'NO'}",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chargers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--workers", default="1,2", help="worker counts to run, comma-separated")
    parser.add_argument("--shards", type=int, default=8)


def run(args: argparse.Namespace) -> Report:
    """The close per worker count; the report fails unless their statement lines are identical."""
    if not 1 <= args.days <= 92:
        raise UsageError("--days must fit in one quarter (1..92)")
    args.loadavg_at_start = loadavg()
    started = datetime.now(UTC)
    scratch = make_data_dir("ocpp-close-")
    server = ServerThread(scratch / "db").open()
    try:
        runs = [
            run_close(server, scratch / "db", scratch, args, int(n))
            for n in args.workers.split(",")
        ]
    finally:
        server.close()
        shutil.rmtree(scratch, ignore_errors=True)
    same = all(run["lines"] == runs[0]["lines"] for run in runs)
    return Report(report(args, started, runs), ok=same)
