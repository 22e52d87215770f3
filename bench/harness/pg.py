"""The embedded PostgreSQL of a benchmark run, measured: its processes, its CPU, its rows.

The proxy starts its embedded server with `pg_ctl`, which detaches the postmaster (it is *not* in
the proxy's process tree). We find it through `<data_dir>/postgres/postmaster.pid` and account
for the postmaster and its backends separately from the proxy. Backends and autovacuum workers
that exit during a window are included through the postmaster's reaped-children time. Scratch
directories and servers of the bench's own come from `testkit.postgres`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from bench.harness import procstat
from proxy.store.embedded import EmbeddedPostgres
from testkit.postgres import postmaster_pid

# Session-capture tables, in the order reports list them.
TABLES = ("charger_events", "meter_samples", "sessions", "charger_boots", "measurands")


def postgres_pids(data_dir: Path) -> set[int]:
    pid = postmaster_pid(data_dir)
    return set(procstat.tree(pid)) if pid else set()


def cpu_seconds(data_dir: Path) -> float:
    """CPU of the server: postmaster + live backends + children it has reaped (0 if not running)."""
    pid = postmaster_pid(data_dir)
    return procstat.cpu_seconds(pid, reaped=True) if pid else 0.0


def count_rows(data_dir: Path, timeout: float = 30.0) -> dict[str, int]:
    """Rows per capture table on the running server (over its unix socket)."""

    async def count() -> dict[str, int]:
        conn = await asyncpg.connect(EmbeddedPostgres(data_dir).dsn("ere_proxy"), timeout=timeout)
        try:
            return {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
        finally:
            await conn.close()

    return asyncio.run(asyncio.wait_for(count(), timeout))
