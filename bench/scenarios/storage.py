"""`storage`: the bytes per charger-day the capture tables take at one sample a minute.

N chargers × one day at one MeterValues a minute (1,440 per charger, one
Energy.Active.Import.Register sample each, `bench.load.tracker_events`), in sessions of
`--session-minutes`, stored with `store_events` into a fresh database (`bench.harness.capture_db`);
then `pg_total_relation_size` (heap + TOAST + indexes) per table (summed over its monthly
partitions), per charger-day, as written and after VACUUM FULL (the sessions table is updated
once per session per batch, so it bloats much less than at one update per reading).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import trio

from bench.harness import pg
from bench.harness.capture_db import header, sequence_note, server_facts, settings
from bench.harness.report import Report, loadavg
from bench.harness.table import table
from bench.load.tracker_events import count_samples, fleet_events
from testkit.postgres import make_data_dir, remove_data_dir

# Per table, summed over its partitions (a table that is not partitioned is its own only leaf).
_SIZES = """
SELECT t.name, sum(pg_relation_size(p.relid))::bigint,
       sum(pg_table_size(p.relid) - pg_relation_size(p.relid))::bigint,
       sum(pg_indexes_size(p.relid))::bigint, sum(pg_total_relation_size(p.relid))::bigint
FROM unnest($1::text[]) AS t(name)
CROSS JOIN LATERAL (
    SELECT relid FROM pg_partition_tree(to_regclass(t.name)) WHERE isleaf
    UNION
    SELECT c.oid FROM pg_class c WHERE c.oid = to_regclass(t.name) AND c.relkind = 'r'
) AS p(relid)
GROUP BY t.name
"""


async def _sizes(db, tables: list[str]) -> dict[str, tuple[int, int, int, int]]:
    rows = await db.fetch(_SIZES, tables)
    return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


async def _storage(args: argparse.Namespace, data_dir: Path) -> dict:
    from proxy.capture.sessions import store_events
    from proxy.store.db import open_database

    result: dict = {}
    encoder = msgspec.msgpack.Encoder()
    json_bytes = msgpack_bytes = 0
    events_total = samples_total = meter_values = 0
    async with open_database(settings(data_dir)) as db:
        await server_facts(db, args)
        print(
            f"[storage] {args.chargers} chargers × {args.days:g} day(s) …",
            file=sys.stderr,
            flush=True,
        )
        minutes = round(args.days * 1440)
        batch: list = []
        t0 = time.monotonic()
        for events in fleet_events(
            "CP", args.chargers, minutes, session_minutes=args.session_minutes, samples=(1, 1)
        ):
            for e in events:
                json_bytes += len(msgspec.json.encode(e))
                msgpack_bytes += len(encoder.encode(e))
                meter_values += e.__struct_config__.tag == "meter_values"
            batch += events
            samples_total += count_samples(events)
            if len(batch) >= 1000:
                async with db.transaction() as conn:
                    await store_events(conn, batch)
                events_total += len(batch)
                batch = []
        if batch:
            async with db.transaction() as conn:
                await store_events(conn, batch)
            events_total += len(batch)
        result["store_s"] = time.monotonic() - t0
        tables = list(pg.TABLES)
        result["rows"] = {t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in tables}
        result["written"] = await _sizes(db, tables)
        result["sequence"] = await sequence_note(db, result["rows"]["meter_samples"])
        result["body"] = await db.fetchrow(
            "SELECT avg(pg_column_size(body)), avg(octet_length(body::text)), avg(pg_column_size(c.*)) "
            "FROM charger_events c"
        )
        result["sample_row"] = await db.fetchval(
            "SELECT avg(pg_column_size(s.*)) FROM meter_samples s"
        )
        # A narrower layout of the same samples, for comparison (see the report's notes).
        await db.execute(
            "CREATE TABLE compact_samples (session_id integer NOT NULL, sampled_at timestamptz NOT NULL, "
            "value numeric, measurand smallint NOT NULL, flags smallint NOT NULL DEFAULT 0)"
        )
        await db.execute(
            "INSERT INTO compact_samples SELECT session_id, sampled_at, value, measurand FROM meter_samples "
            "ORDER BY session_id, sampled_at"
        )
        await db.execute("CREATE INDEX ON compact_samples (session_id, sampled_at)")
        await db.execute("CREATE TABLE compact_samples_brin (LIKE compact_samples)")
        await db.execute("INSERT INTO compact_samples_brin SELECT * FROM compact_samples")
        await db.execute("CREATE INDEX ON compact_samples_brin USING brin (session_id, sampled_at)")
        async with db.connection() as conn:
            await conn.execute("VACUUM FULL ANALYZE")
        result["vacuumed"] = await _sizes(db, tables + ["compact_samples", "compact_samples_brin"])
    result.update(
        events=events_total,
        samples=samples_total,
        meter_values=meter_values,
        json_bytes=json_bytes,
        msgpack_bytes=msgpack_bytes,
    )
    return result


def storage_report(res: dict, args: argparse.Namespace) -> str:
    days = args.chargers * args.days
    per = lambda n: n / days
    kb = lambda n: f"{per(n) / 1024:.1f}"
    out = []
    for label, key in (("as written", "written"), ("after VACUUM FULL", "vacuumed")):
        sizes = res[key]
        total = sum(sizes[t][3] for t in pg.TABLES if t in sizes)
        rows = [
            [
                t,
                str(res["rows"].get(t, "")),
                kb(h),
                kb(toast),
                kb(idx),
                kb(tot),
                f"{tot / total:.0%}" if total else "–",
            ]
            for t in pg.TABLES
            if t in sizes
            for h, toast, idx, tot in [sizes[t]]
        ]
        rows.append(
            [
                "total",
                "",
                kb(sum(sizes[t][0] for t in pg.TABLES if t in sizes)),
                kb(sum(sizes[t][1] for t in pg.TABLES if t in sizes)),
                kb(sum(sizes[t][2] for t in pg.TABLES if t in sizes)),
                kb(total),
                "100%",
            ]
        )
        out += [
            f"KB per charger-day, {label}:",
            "",
            table(("table", "rows", "heap", "TOAST", "indexes", "total", "share"), rows),
            "",
        ]
        if key == "vacuumed":
            res["total_vacuumed"] = total
    v = res["vacuumed"]
    body_col, body_text, event_row = res["body"]
    ms = v["meter_samples"][3]
    out += [
        f"- {res['events']} events ({res['meter_values']} MeterValues, {res['samples']} samples) stored in "
        f"{res['store_s']:.1f} s; per charger-day {per(res['total_vacuumed']) / 2**20:.2f} MiB in all "
        f"(≈ {per(res['total_vacuumed']) * 365 / 2**30:.2f} GiB per charger-year)",
        f"- charger_events: body jsonb {float(body_col):.0f} B on disk per event on average (its JSON text "
        f"{float(body_text):.0f} B; msgpack of the same event {res['msgpack_bytes'] / res['events']:.0f} B, "
        f"msgspec JSON {res['json_bytes'] / res['events']:.0f} B), whole row {float(event_row):.0f} B before "
        "the tuple header and the two indexes",
        f"- meter_samples: {float(res['sample_row']):.0f} B per row before the tuple header; the same samples as "
        f"(session_id int, sampled_at, value, measurand, flags) take {kb(v['compact_samples'][3])} KB per charger-day "
        f"with a btree index ({v['compact_samples'][3] / ms:.2f}× of meter_samples) and "
        f"{kb(v['compact_samples_brin'][3])} KB with a BRIN index ({v['compact_samples_brin'][3] / ms:.2f}×)",
        f"- {res['sequence']}",
    ]
    return "\n".join(out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chargers", type=int, default=20)
    parser.add_argument("--days", type=float, default=1.0)
    parser.add_argument("--session-minutes", type=int, default=240, help="MeterValues per session")


def run(args: argparse.Namespace) -> Report:
    args.loadavg_at_start = loadavg()
    started = datetime.now(UTC)
    data_dir = make_data_dir("ocpp-bench-storage-")
    try:
        res = trio.run(_storage, args, data_dir / "db")
    finally:
        remove_data_dir(data_dir / "db")
        remove_data_dir(data_dir)
    body = (
        f"- load: {args.chargers} chargers × {args.days:g} day(s), one MeterValues a minute with one "
        f"Energy.Active.Import.Register sample, sessions of {args.session_minutes} minutes "
        "(Start/StopTransaction around them), stored with store_events in batches of 1,000\n\n"
        + storage_report(res, args)
    )
    return Report(header("storage", args, started) + "\n" + body + "\n")
