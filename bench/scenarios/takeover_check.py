"""`takeover-check`: what a worker's look for chargers taken over elsewhere costs, per look.

Every `takeover_check_interval` (1 s) a worker asks PostgreSQL which of the chargers it serves a
link on another node or worker has taken over. N chargers are held (their rows in
`outbox_chargers`, a handful taken over meanwhile); the first look compares every held epoch
(`OutboxStore.superseded` without `since`: the held identities and epochs sent as arrays, as every
look did before), each later look reads only the takeovers since the one before. Both are timed
through the proxy's own database layer (asyncpg under trio-asyncio), side by side, with
PostgreSQL's CPU per look from /proc.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

import trio

from bench.harness import pg
from bench.harness.capture_db import settings
from bench.harness.report import Report, command, loadavg, machine_line
from bench.harness.table import table
from testkit.postgres import make_data_dir, remove_data_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chargers", type=int, default=10_000, help="chargers held")
    parser.add_argument("--looks", type=int, default=200, help="looks timed of each kind")


async def _measure(args: argparse.Namespace, data_dir: Path) -> dict[str, tuple[float, float]]:
    from proxy.outbox.store import OutboxStore
    from proxy.runtime.config import OutboxSettings
    from proxy.store.db import open_database

    identities = [f"CP{i:06d}" for i in range(args.chargers)]
    async with open_database(settings(data_dir)) as db:
        await db.execute(
            "INSERT INTO outbox_chargers (identity, epoch, taken_at)"
            " SELECT unnest($1::text[]), 1, now() - interval '1 hour'",
            identities,
        )
        await db.execute("ANALYZE outbox_chargers")
        held = dict.fromkeys(identities, 1)
        store = OutboxStore(db, OutboxSettings())
        await db.execute(  # a few taken over elsewhere, as a fleet has
            "UPDATE outbox_chargers SET epoch = 2, taken_at = clock_timestamp()"
            " WHERE identity = ANY($1::text[])",
            identities[:5],
        )
        results = {}
        _, since = await store.superseded(held)
        for kind, look in (
            (
                "every held epoch compared (the first look; before: every look)",
                lambda: store.superseded(held),
            ),
            ("takeovers since the last look", lambda: store.superseded(held, since)),
        ):
            for _ in range(5):
                await look()  # plans kept, caches warm
            cpu, started = pg.cpu_seconds(data_dir), time.perf_counter()
            for _ in range(args.looks):
                await look()
            wall = (time.perf_counter() - started) / args.looks
            results[kind] = (wall, (pg.cpu_seconds(data_dir) - cpu) / args.looks)
        return results


def run(args: argparse.Namespace) -> Report:
    load = loadavg()
    started = datetime.now(UTC)
    data_dir = make_data_dir("ocpp-bench-takeover-")
    try:
        results = trio.run(_measure, args, data_dir / "db")
    finally:
        remove_data_dir(data_dir / "db")
        remove_data_dir(data_dir)
    (full_wall, full_db), (since_wall, since_db) = results.values()
    rows = [[kind, f"{wall * 1e3:.2f}", f"{db * 1e3:.2f}"] for kind, (wall, db) in results.items()]
    text = "\n".join(
        [
            f"## takeover-check, {started:%Y-%m-%d %H:%M} UTC",
            "",
            machine_line(load),
            f"- command (from the repository root): `{command(args)}`",
            f"- {args.chargers} chargers held by one worker, 5 taken over elsewhere; {args.looks}"
            " looks of each kind through the proxy's database layer, one after another",
            "",
            table(("look", "ms per look (worker's wall)", "PostgreSQL CPU ms per look"), rows),
            "",
            f"- a later look vs the full comparison: {since_wall / full_wall:.3f}× the wall time,"
            f" {since_db / full_db:.3f}× PostgreSQL's CPU"
            if full_db
            else "",
        ]
    )
    return Report(text + "\n")
