"""The partner API's session list under load: 1,000,000 sessions, 200 clients, 500 requests/s.

One embedded PostgreSQL (a scratch 0711 directory, default settings: fsync on) gets the
migrations and realistic books (`bench.load.partner_books`: 5 partners, their customers and
chargers, `--sessions` sessions over 2026, Q1 and Q2 closed and assessed). The API runs in a
process of its own (`python -m proxy api --config <generated TOML>`: `[database] dsn` on that
server, the default pool, log level warning), and so do the clients (`bench.load.api_clients`:
`--clients` keep-alive HTTP/1.1 connections offering `--rate` GET /v1/sessions per second in
all, open loop, a mix of first pages, next pages, and filters by customer, charger, period and
status). After `--warmup` seconds, the `--duration` window is measured: answers per second,
answers other than 200 and broken connections (errors: the run fails), latency from each
request's due time (p50/p90/p99/p99.9/max, overall and per kind), the CPU of the API process,
of PostgreSQL and of the clients. `--rounds` repeats the load against a fresh API process on
the same books. The target is p99 < 50 ms at 500 requests/s.

    .venv/bin/python -m bench api [--sessions 1000000] [--clients 200] [--rate 500] [--duration 30] [--rounds 2] [--pg-setting NAME=VALUE ...]

Everything stays on 127.0.0.1. The clients stop by themselves, the API is stopped after each
round, and both die with the bench; the scratch directory, database included, is removed at the
end (`--keep` keeps it: the generated config, the API's logs). An API that does not start, or
exits early, is a RuntimeError with the tail of its log; Ctrl-C stops everything on the way out.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import trio

from bench.harness import pg, procstat
from bench.harness.database import execute
from bench.harness.processes import REPO, spawn, stop
from bench.harness.report import Report, UsageError, command, loadavg, machine_line
from bench.harness.table import table
from bench.load.api_clients import (
    DEFAULT_MIX,
    KINDS,
    ApiClients,
    ClientsConfig,
    ClientsResult,
    parse_mix,
    rank_ms,
)
from bench.load.partner_books import PARTNERS, Books, seed
from proxy.runtime.config import DatabaseSettings
from proxy.store.db import open_database
from testkit.ports import free_port
from testkit.postgres import ServerThread, make_data_dir

TARGET_P99_MS = 50.0
TARGET_RATE = 500.0
_PERCENTILES = (50, 90, 99, 99.9, 100)


@dataclass
class Round:
    """One round's load result and what the API and the database spent on it."""

    result: ClientsResult
    api_cpu: float  # share of one core over the window
    db_cpu: float
    api_rss_mb: float
    api_exit: int


async def _seed(dsn: str, scratch: Path, sessions: int, clients: int) -> tuple[Books, str]:
    settings = DatabaseSettings(dsn=dsn, data_dir=str(scratch), pool_size=2)
    async with open_database(settings, query_timeout=3600) as db:
        books = await seed(db, sessions, keys_per_partner=-(-clients // PARTNERS))
        await db.execute("CHECKPOINT")  # the seed's writes are not the window's I/O
        version = str(await db.fetchval("SHOW server_version"))
    return books, version


def _wait_until_serving(
    port: int, key: str, proc: subprocess.Popen, log: Path, limit: float = 60
) -> None:
    """Until the API lists sessions for `key` (RuntimeError if it exits, answers anything but
    200, or takes too long)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request(
                    "GET", "/v1/sessions?limit=1", headers={"authorization": f"Bearer {key}"}
                )
                reply = conn.getresponse()
                body = reply.read()
            finally:
                conn.close()
        except OSError:
            time.sleep(0.2)
            continue
        if reply.status != 200:
            raise RuntimeError(f"the API answered {reply.status}: {body[:500]!r}")
        return
    raise RuntimeError(f"the API did not answer within {limit:.0f} s: {log.read_text()[-2000:]}")


def run_round(
    args: argparse.Namespace, config: Path, port: int, db_dir: Path, scratch: Path, books: Books
) -> Round:
    """A fresh API process under the load of one window; stopped afterwards."""
    index = len(list(scratch.glob("api-*.log")))
    log = scratch / f"api-{index}.log"
    with log.open("wb") as out:
        api = spawn(
            [sys.executable, "-m", "proxy", "api", "--config", str(config)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
    clients: ApiClients | None = None
    try:
        _wait_until_serving(port, next(iter(books.keys.values()))[0], api, log)
        load = ClientsConfig(
            port=port,
            partners={
                p: {
                    "keys": books.keys[p],
                    "customers": books.customers[p],
                    "chargers": books.chargers[p],
                }
                for p in books.keys
            },
            clients=args.clients,
            rate=args.rate,
            warmup=args.warmup,
            duration=args.duration,
            drain=args.drain,
            procs=args.gen_procs,
            mix=args.mix,
            seed=index + 1,
        )
        clients = ApiClients(load, scratch)
        connected, failed = clients.wait_ready()
        print(
            f"[api] round {index + 1}: {connected} clients connected ({failed} failed); "
            f"{args.warmup:g} s warm-up + {args.duration:g} s",
            file=sys.stderr,
            flush=True,
        )
        start = time.time() + 0.5
        clients.start(start)
        time.sleep(max(0.0, start + args.warmup - time.time()))
        api_cpu, db_cpu, wall = (
            procstat.cpu_seconds(api.pid),
            pg.cpu_seconds(db_dir),
            time.monotonic(),
        )
        time.sleep(max(0.0, start + args.warmup + args.duration - time.time()))
        wall = time.monotonic() - wall
        api_cpu = (procstat.cpu_seconds(api.pid) - api_cpu) / wall
        db_cpu = (pg.cpu_seconds(db_dir) - db_cpu) / wall
        rss = procstat.rss_bytes(api.pid) / 2**20
        result = clients.collect()
    finally:
        if clients is not None:
            clients.close()
        status = stop(api)
    return Round(result, api_cpu, db_cpu, rss, status)


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1f}"


def report(
    args: argparse.Namespace,
    started: datetime,
    books: Books,
    version: str,
    seed_seconds: float,
    rounds: list[Round],
) -> str:
    header = (
        *("round", "offered/s", "answered/s", "measured", "errors"),
        *("p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "late"),
        *("API CPU", "API ms/answer", "DB CPU", "clients CPU", "target"),
    )
    rows = []
    for number, r in enumerate(rounds, 1):
        res, every = r.result, r.result.all_us
        met = rank_ms(every, 99) < TARGET_P99_MS and res.achieved_rate >= 0.95 * args.rate
        rows.append(
            [
                str(number),
                f"{args.rate:g}",
                f"{res.achieved_rate:.0f}",
                f"{len(every):,}",
                str(_errors(res)),
                *(_ms(rank_ms(every, p)) for p in _PERCENTILES),
                str(res.late),
                f"{r.api_cpu:.0%}",
                f"{r.api_cpu * 1000 / res.achieved_rate:.1f}" if res.achieved_rate else "–",
                f"{r.db_cpu:.0%}",
                " + ".join(f"{c:.0%}" for c in res.gen_cpu),
                "met" if met else "missed",
            ]
        )
    kinds = []
    for kind in KINDS:
        merged = sorted(v for r in rounds for v in r.result.latencies_us.get(kind, []))
        if merged:
            kinds.append(
                [kind, f"{len(merged):,}", *(_ms(rank_ms(merged, p)) for p in _PERCENTILES)]
            )
    rows_line = ", ".join(f"{table_name} {n:,}" for table_name, n in books.rows.items())
    mix = ", ".join(f"{k} {w:g}" for k, w in args.mix.items() if w)
    lag = sorted(v for r in rounds for v in r.result.send_lag_us)
    notes = [
        "- answered/s: answers with status 200 received in the window; measured: the requests due in "
        "the window that were answered (the latency sample); latency runs from each request's due "
        "time to the answer's last byte (a late request waits for its connection's previous answer "
        "and is counted from its due time); errors: answers other than 200 and broken connections; "
        f"target: p99 < {TARGET_P99_MS:g} ms at {TARGET_RATE:g} requests/s (met only when at least "
        "95 % of the offered rate is answered)",
        f"- send delay (sent − due, late requests included): p99 {_ms(rank_ms(lag, 99))} ms, "
        f"max {_ms(rank_ms(lag, 100))} ms",
    ]
    for number, r in enumerate(rounds, 1):
        res = r.result
        problems = {**res.not_ok, **res.errors}
        if problems:
            notes.append(
                f"- round {number} errors: "
                + ", ".join(f"{k}: {n}" for k, n in sorted(problems.items()))
            )
        if res.unsent or res.unanswered:
            notes.append(
                f"- round {number}: overload: {res.unsent} requests due in the window never sent, "
                f"{res.unanswered} still unanswered {args.drain:g} s after it"
            )
        if res.connect_failed:
            notes.append(f"- round {number}: {res.connect_failed} clients could not connect")
        if r.api_exit != 0:
            notes.append(f"- round {number}: the API exited with status {r.api_exit}")
        notes.append(
            f"- round {number}: API RSS {r.api_rss_mb:.0f} MB at the end of the window, "
            f"{res.bytes_received / max(1, res.responses) / 1024:.1f} KB per answer"
        )
    return "\n".join(
        [
            f"## api, {started:%Y-%m-%d %H:%M} UTC",
            "",
            machine_line(args.loadavg_at_start) + f" (1/5/15 min), at the end {loadavg()}",
            f"- command (from the repository root): `{command(args)}`",
            f"- database: embedded PostgreSQL {version}, {_settings_line(args.pg_settings)}, "
            "on the same CPUs; "
            f"seeded in {seed_seconds:.0f} s: {rows_line}",
            f"- API: `python -m proxy api`, one process, `[database] pool_size` "
            f"{args.pool_size or DatabaseSettings().pool_size}; clients: {args.clients} keep-alive "
            f"HTTP/1.1 connections, each with a key of its own, in {args.gen_procs} process(es), "
            f"{args.rate:g} requests/s offered open loop, {args.warmup:g} s warm-up, "
            f"{args.duration:g} s window; mix: {mix}",
            "",
            table(header, rows),
            "",
            "Per kind, all rounds (ms):",
            "",
            table(("kind", "measured", "p50", "p90", "p99", "p99.9", "max"), kinds)
            if kinds
            else "(no answers)",
            "",
            *notes,
        ]
    )


def _errors(result: ClientsResult) -> int:
    return sum(result.not_ok.values()) + sum(result.errors.values())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, default=1_000_000, help="sessions in the database")
    parser.add_argument("--clients", type=int, default=200, help="keep-alive connections")
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="requests/s offered in all")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds of load before the window"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="the measured window, seconds")
    parser.add_argument("--drain", type=float, default=5.0, help="seconds to wait for late answers")
    parser.add_argument(
        "--rounds", type=int, default=1, help="windows, each with a fresh API process"
    )
    parser.add_argument("--gen-procs", type=int, default=1, help="client processes")
    parser.add_argument("--pool-size", type=int, default=0, help="the API's pool (0: its default)")
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a postgresql.conf setting of the bench's server (repeatable), as "
        "[database.embedded_settings] would give it",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch directory (configs, API logs)"
    )
    parser.add_argument(
        "--mix",
        default=",".join(f"{k}={w:g}" for k, w in DEFAULT_MIX.items()),
        help="request kinds and their weights",
    )


def _setting(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise ValueError(f"--pg-setting {text!r}: expected NAME=VALUE")
    return name, value


def _settings_line(settings: dict[str, str]) -> str:
    if not settings:
        return "default server settings"
    return (
        "server settings " + ", ".join(f"{k}={v}" for k, v in settings.items()) + " (else default)"
    )


def run(args: argparse.Namespace) -> Report:
    """Seed, then one window per round; the report fails on any error."""
    if args.sessions < 1000 or args.clients < 1 or args.rate <= 0 or args.duration <= 0:
        raise UsageError("need --sessions >= 1000, --clients >= 1, --rate > 0 and --duration > 0")
    if not 1 <= args.gen_procs <= args.clients or args.rounds < 1:
        raise UsageError("need 1 <= --gen-procs <= --clients and --rounds >= 1")
    try:
        args.mix = parse_mix(args.mix)
        args.pg_settings = dict(_setting(text) for text in args.pg_setting)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    args.loadavg_at_start = loadavg()
    started = datetime.now(UTC)
    scratch = make_data_dir("ocpp-api-")
    try:
        server = ServerThread(scratch / "db", args.pg_settings or None).open()
        try:
            execute(server.server.dsn(), 'CREATE DATABASE "ere_proxy"')
            dsn = server.server.dsn("ere_proxy")
            print(f"[api] seeding {args.sessions:,} sessions", file=sys.stderr, flush=True)
            seeding = time.monotonic()
            books, version = trio.run(_seed, dsn, scratch, args.sessions, args.clients)
            seed_seconds = time.monotonic() - seeding
            port = free_port()
            pool = f"pool_size = {args.pool_size}\n" if args.pool_size else ""
            config = scratch / "api.toml"
            config.write_text(
                f'[log]\nlevel = "warning"\n'
                f"[database]\ndsn = {json.dumps(dsn)}\ndata_dir = {json.dumps(str(scratch))}\n{pool}"
                f'[api]\nhost = "127.0.0.1"\nport = {port}\n'
            )
            rounds = [
                run_round(args, config, port, scratch / "db", scratch, books)
                for _ in range(args.rounds)
            ]
        finally:
            server.close()
    finally:
        if args.keep:
            print(f"[api] kept {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    text = report(args, started, books, version, seed_seconds, rounds)
    return Report(text, ok=all(_errors(r.result) == 0 and r.api_exit == 0 for r in rounds))
