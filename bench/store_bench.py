"""Session-capture storage scenarios: `ingest` (events/s into PostgreSQL) and `storage` (bytes/charger-day).

Both open a fresh database with `proxy.store.db.open_database` on an embedded server in a
scratch directory (mode 0711, removed afterwards) with the server's default settings: fsync and
synchronous_commit on, as in production. The events are real: OCPP 1.6 frames of simulated
chargers (Start/Stop transactions and MeterValues) fed through `proxy.capture.tracker.Tracker`, exactly
as a link does, and generated before any timing starts.

`ingest`, for each batch size and each path, for a bounded time:
- `store`: `proxy.capture.sessions.store_events` in one transaction per batch, back to back (what the
  journal's writer does, without the journal);
- `journal`: a producer hands the events one frame at a time to `Journal.submit` (as links do)
  while `Journal.run` (with a SpillLog in a scratch dir) writes them; the producer keeps the
  journal's channel at most half full so nothing spills, and the rate is what the writer stored.
Reported: events/s and samples/s, and the CPU per event of this process (Python: tracker-free,
journal + store_events + asyncpg + trio-asyncio) and of PostgreSQL (postmaster tree), so the
cost splits between the two.

`storage`: N chargers × one day at one MeterValues a minute (1,440 per charger, one
Energy.Active.Import.Register sample each), in sessions of `--session-minutes`, stored via
`store_events`; then `pg_total_relation_size` (heap + TOAST + indexes) per table, per charger-day,
as written and after VACUUM FULL (the sessions table is updated for every reading and bloats).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import trio
import trio.lowlevel

from bench import procstat
from bench.harness import pg
from bench.scenarios import RESULTS, _fmt, _table
from bench.targets import REPO
from testkit.postgres import make_data_dir, remove_data_dir

T0 = 1_790_000_000.0  # 2026-09-21, the simulated day starts here


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- realistic events via the tracker


class Charger:
    """One OCPP 1.6 charger on one link: frames through a real Tracker, one minute per step.

    Sessions of `session_minutes` MeterValues (each with `samples` sampled values: the energy
    register first, then Power.Active.Import and Current.Import), bracketed by StartTransaction
    (+ the back-office's transactionId) and StopTransaction. Chargers send MeterValues only inside
    transactions (MeterValuesSampledData during a transaction is the common configuration).
    """

    MEASURANDS = (
        ("Energy.Active.Import.Register", "Wh"),
        ("Power.Active.Import", "W"),
        ("Current.Import", "A"),
    )

    def __init__(
        self, identity: str, *, session_minutes: int, samples: tuple[int, int], seed: int
    ) -> None:
        from proxy.capture.tracker import Tracker
        from proxy.wire.codec import FrameReader, encode_frame

        self.identity = identity
        self.tracker = Tracker(identity, "ocpp1.6")
        self._charger_reader = FrameReader(from_client=True)
        self._upstream_reader = FrameReader(from_client=False)
        self._encode = encode_frame
        self.session_minutes = session_minutes
        self.samples = samples
        self.random = random.Random(seed)
        self.t = T0
        self.wh = self.random.randrange(100_000, 10_000_000)
        self.tx = 0
        self.minute = -1  # -1: no session running
        self.uid = 0
        self.meter_values = 0  # MeterValues sent
        self.sample_count = 0

    def _frame(self, from_charger: bool, frame: list) -> list:
        data = json.dumps(frame, separators=(",", ":")).encode()
        reader = self._charger_reader if from_charger else self._upstream_reader
        [message] = reader.feed(self._encode(1, data, mask=from_charger))
        feed = self.tracker.from_charger if from_charger else self.tracker.from_upstream
        return feed(message, self.t)

    def _exchange(self, action: str, payload: dict, answer: dict) -> list:
        self.uid += 1
        uid = f"{self.identity}-{self.uid:08d}-0000-4000-8000-000000000000"[-36:]
        events = self._frame(True, [2, uid, action, payload])
        self.t += 0.05
        return events + self._frame(False, [3, uid, answer])

    def step(self) -> list:
        """The events of this charger's next minute (a MeterValues, maybe with a Start or Stop)."""
        events = []
        if self.minute < 0:
            self.tx += 1
            events += self._exchange(
                "StartTransaction",
                {
                    "connectorId": 1,
                    "idTag": f"TAG{self.random.randrange(10**6):06d}",
                    "meterStart": self.wh,
                    "timestamp": _iso(self.t),
                },
                {"idTagInfo": {"status": "Accepted"}, "transactionId": self.tx},
            )
            self.minute = 0
        self.t += 60.0
        self.wh += self.random.randrange(50, 190)  # 3-11 kW
        n = self.random.randint(*self.samples)
        sampled = [
            {
                "value": str(self.wh),
                "context": "Sample.Periodic",
                "measurand": self.MEASURANDS[0][0],
                "location": "Outlet",
                "unit": "Wh",
            }
        ]
        if n >= 2:
            sampled.append(
                {
                    "value": f"{self.random.uniform(3000, 11000):.1f}",
                    "context": "Sample.Periodic",
                    "measurand": "Power.Active.Import",
                    "location": "Outlet",
                    "unit": "W",
                }
            )
        if n >= 3:
            sampled.append(
                {
                    "value": f"{self.random.uniform(5, 16):.2f}",
                    "context": "Sample.Periodic",
                    "measurand": "Current.Import",
                    "location": "Outlet",
                    "unit": "A",
                    "phase": "L1",
                }
            )
        events += self._exchange(
            "MeterValues",
            {
                "connectorId": 1,
                "transactionId": self.tx,
                "meterValue": [{"timestamp": _iso(self.t), "sampledValue": sampled}],
            },
            {},
        )
        self.meter_values += 1
        self.sample_count += n
        self.minute += 1
        if self.minute >= self.session_minutes:
            events += self._exchange(
                "StopTransaction",
                {
                    "transactionId": self.tx,
                    "meterStop": self.wh,
                    "timestamp": _iso(self.t),
                    "reason": "EVDisconnected",
                },
                {},
            )
            self.minute = -1
        return events


def fleet_events(
    prefix: str,
    chargers: int,
    minutes: int,
    *,
    session_minutes: int,
    samples: tuple[int, int],
    seed: int = 1,
) -> Iterator[list]:
    """Per simulated minute, per charger: the events, in the order a proxy would submit them."""
    fleet = [
        Charger(
            f"{prefix}{i:05d}",
            session_minutes=session_minutes,
            samples=samples,
            seed=seed * 100_003 + i,
        )
        for i in range(chargers)
    ]
    for _ in range(minutes):
        for charger in fleet:
            yield charger.step()


def _count_samples(events: list) -> int:
    return sum(len(getattr(e, "samples", ())) for e in events)


# ---------------------------------------------------------------- the database


def _settings(data_dir: Path):
    from proxy.runtime.config import DatabaseSettings

    return DatabaseSettings(data_dir=str(data_dir), pool_size=4, connect_timeout=60.0)


_SEQUENCE = "SELECT last_value FROM measurands_code_seq"  # measurands.code: smallint identity


async def _sequence_note(db, samples_rows: int) -> str:
    """How far measurands' smallint identity has advanced: INSERT .. ON CONFLICT DO NOTHING draws a
    value from the sequence on every attempt, also when the name exists."""
    try:
        value = await db.fetchval(_SEQUENCE)
    except Exception as exc:
        return f"measurands sequence not readable ({exc!r})"
    names = await db.fetchval("SELECT count(*) FROM measurands")
    return (
        f"measurands.code (smallint identity, max 32767): sequence at {value} for {names} measurand names "
        f"after {samples_rows} meter_samples rows"
    )


async def _server_facts(db, args: argparse.Namespace) -> None:
    args.server_version = await db.fetchval("SHOW server_version")
    args.server_note = (
        f"fsync={await db.fetchval('SHOW fsync')}, "
        f"synchronous_commit={await db.fetchval('SHOW synchronous_commit')}"
    )


def _own_cpu() -> float:
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
    c0, d0, t0 = _own_cpu(), pg.cpu_seconds(data_dir), time.monotonic()
    deadline = t0 + duration
    for batch in batches:
        async with db.transaction() as conn:
            await store_events(conn, batch)
        run.events += len(batch)
        run.samples += _count_samples(batch)
        if time.monotonic() >= deadline:
            break
    else:
        run.pool_exhausted = True
    run.wall_s, run.py_cpu_s, run.db_cpu_s = (
        time.monotonic() - t0,
        _own_cpu() - c0,
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
            c0, d0, t0 = _own_cpu(), pg.cpu_seconds(data_dir), time.monotonic()
            deadline = t0 + duration
            for batch in batches:
                async with conn.transaction():
                    await store_events(conn, batch)
                run.events += len(batch)
                run.samples += _count_samples(batch)
                if time.monotonic() >= deadline:
                    break
            else:
                run.pool_exhausted = True
            run.wall_s, run.py_cpu_s, run.db_cpu_s = (
                time.monotonic() - t0,
                _own_cpu() - c0,
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
    samples_by_frame = [_count_samples(f) for f in frames]
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run, DatabaseStore(db))
            c0, d0, t0 = _own_cpu(), pg.cpu_seconds(data_dir), time.monotonic()
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
                _own_cpu() - c0,
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
    async with open_database(_settings(data_dir)) as db:
        await _server_facts(db, args)
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
        args.sequence = await _sequence_note(db, args.rows["meter_samples"])
    return runs


def ingest_report(runs: list[IngestRun], args: argparse.Namespace) -> str:
    rows = [
        [
            r.path,
            str(r.batch),
            str(r.events),
            _fmt(r.wall_s, ".1f"),
            _fmt(r.events_per_s, ".0f"),
            _fmt(r.samples_per_s, ".0f"),
            _fmt(r.us_per_event(r.py_cpu_s), ".0f"),
            _fmt(r.us_per_event(r.db_cpu_s), ".0f"),
            _fmt(r.py_cpu_s / r.wall_s * 100, ".0f", "%"),
            _fmt(r.db_cpu_s / r.wall_s * 100, ".0f", "%"),
        ]
        for r in runs
    ]
    out = [
        _table(
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


# ---------------------------------------------------------------- storage per charger-day

_SIZES = """
SELECT c.relname, pg_relation_size(c.oid), pg_table_size(c.oid) - pg_relation_size(c.oid),
       pg_indexes_size(c.oid), pg_total_relation_size(c.oid)
FROM pg_class c WHERE c.relname = ANY($1::text[]) AND c.relkind = 'r'
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
    async with open_database(_settings(data_dir)) as db:
        await _server_facts(db, args)
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
            samples_total += _count_samples(events)
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
        result["sequence"] = await _sequence_note(db, result["rows"]["meter_samples"])
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
            _table(("table", "rows", "heap", "TOAST", "indexes", "total", "share"), rows),
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


# ---------------------------------------------------------------- CLI


def _header(name: str, args: argparse.Namespace, argv: list[str], started: datetime) -> str:
    info = procstat.machine()
    python = Path(sys.executable)
    try:
        python = python.relative_to(REPO)
    except ValueError:
        pass
    loadavg = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    version = getattr(args, "server_version", "")
    return "\n".join(
        [
            f"## {name}, {started:%Y-%m-%d %H:%M} UTC",
            "",
            f"- machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, Python {info['python']}; "
            f"load average at start {loadavg} (1/5/15 min)",
            f"- command (from the repository root): `{python} -m bench {shlex.join(argv)}`",
            f"- database: embedded PostgreSQL {version or ''} in a fresh scratch data_dir, default server settings "
            f"({getattr(args, 'server_note', 'fsync on')}: the production setting), pool through trio-asyncio",
        ]
    )


def _run(args: argparse.Namespace, argv: list[str], name: str) -> int:
    started = datetime.now(UTC)
    data_dir = make_data_dir(f"ocpp-bench-{name}-")
    try:
        if name == "ingest":
            runs = trio.run(_ingest, args, data_dir / "db", data_dir)
            body = (
                f"- load: {args.chargers} simulated OCPP 1.6 chargers through proxy.capture.tracker.Tracker, sessions of "
                f"{args.session_minutes} MeterValues (1–3 samples each) between Start/StopTransaction; "
                f"{args.duration:g} s per path and batch size\n\n" + ingest_report(runs, args)
            )
        else:
            res = trio.run(_storage, args, data_dir / "db")
            body = (
                f"- load: {args.chargers} chargers × {args.days:g} day(s), one MeterValues a minute with one "
                f"Energy.Active.Import.Register sample, sessions of {args.session_minutes} minutes "
                "(Start/StopTransaction around them), stored with store_events in batches of 1,000\n\n"
                + storage_report(res, args)
            )
    finally:
        remove_data_dir(data_dir / "db")
        remove_data_dir(data_dir)
    text = _header(name, args, argv, started) + "\n" + body + "\n"
    print("\n" + text)
    if not args.no_results:
        with args.results.open("a") as out:
            out.write("\n" + text)
        print(f"appended to {args.results}", file=sys.stderr)
    return 0


def add_parsers(sub) -> None:
    ingest = sub.add_parser(
        "ingest",
        help="sustained session-event ingest rate into PostgreSQL",
        description=__doc__.split("\n")[0],
    )
    ingest.add_argument(
        "--duration", type=float, default=15.0, help="seconds per path and batch size"
    )
    ingest.add_argument(
        "--batch-sizes", default="100,1000", help="events per transaction, comma-separated"
    )
    ingest.add_argument(
        "--paths",
        default="store,journal,asyncio",
        help="store (store_events through the proxy's Database), journal (Journal), "
        "asyncio (diagnostic: store_events on raw asyncpg + asyncio, no trio-asyncio)",
    )
    ingest.add_argument(
        "--chargers", type=int, default=500, help="simulated chargers (interleaved)"
    )
    ingest.add_argument(
        "--events",
        type=int,
        default=30_000,
        help="events generated before each run (upper bound; keep below ~32,000: the measurands "
        "sequence of the current schema overflows after 32,767 sampled events)",
    )
    ingest.add_argument("--session-minutes", type=int, default=60, help="MeterValues per session")
    ingest.set_defaults(func=lambda a, argv: _run(a, argv, "ingest"))

    storage = sub.add_parser(
        "storage",
        help="bytes per charger-day at one sample a minute",
        description=__doc__.split("\n")[0],
    )
    storage.add_argument("--chargers", type=int, default=20)
    storage.add_argument("--days", type=float, default=1.0)
    storage.add_argument("--session-minutes", type=int, default=240, help="MeterValues per session")
    storage.set_defaults(func=lambda a, argv: _run(a, argv, "storage"))
    for parser in (ingest, storage):
        parser.add_argument(
            "--results", type=Path, default=RESULTS, help="markdown file the report is appended to"
        )
        parser.add_argument("--no-results", action="store_true", help="print only, do not append")


def finish_args(args: argparse.Namespace) -> None:
    if args.scenario == "ingest":
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
        args.paths = [p.strip() for p in args.paths.split(",") if p.strip()]
        if not set(args.paths) <= {"store", "journal", "asyncio"}:
            raise SystemExit("--paths: choose from store, journal, asyncio")
