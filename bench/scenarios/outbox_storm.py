"""Outbox reconnect storm: a fleet served offline through an upstream outage, the upstream back at once.

One run, everything on this machine:

1. a PostgreSQL of the bench's own (embedded server, default settings: fsync on), the fake CSMS in
   this process (recording every CALL it answers), and the proxy with `--workers` processes
   (SO_REUSEPORT), session capture and the outbox on;
2. the fleet (`bench.load.simulator`, spread over `--sim-procs` processes; half OCPP 1.6, half 2.0.1;
   sessions back to back with an energy reading every `--interval` s) connects through the proxy;
3. after `--before` s the fake CSMS stops (close 1001 on every connection, new ones refused):
   every link goes offline, the proxy answers the chargers itself and queues what they send;
4. after `--outage` s the fake CSMS starts again. From that instant the storm is measured: every
   relay redials (back-off and jitter as configured: `--redial-max`), replays its outbox in order
   and hands back to byte forwarding. Sampled every 0.5 s: links offline and proxy RSS (summed
   over the proxy's processes) and the rows left in `outbox_entries`; at the ends: proxy and
   database CPU (utime + stime from /proc). Done when no link is offline and no entry is left.
5. The fleet is told to finish (SIGUSR1: sessions under way end normally), and the ledger check
   (`testkit.ledger`) runs over what the chargers were answered and what the CSMS received: every
   transaction CALL exactly once, in each charger's order, with consistent transaction ids.

The proxy holds two sockets per charger once the upstream is back, and this machine caps open
files at 20,000 per process: keep chargers per worker under ~9,900 (the default 10,000 chargers
over 2 workers gives 5,000 each).

    .venv/bin/python -m bench outbox-storm [--chargers 10000] [--workers 2] [--sim-procs 2] \
        [--outage 60] [--redial-max 60] [--interval 10] [--samples 3] [--no-results]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from bench.harness import admin, pg, procstat
from bench.harness.database import execute, fetch
from bench.harness.processes import REPO, raise_fd_limit, spawn, stop
from bench.harness.report import Report, UsageError, command, loadavg, machine_line
from testkit import websocket
from testkit.fake_csms import FakeCsms
from testkit.ledger import counts, exactly_once
from testkit.ports import free_port
from testkit.postgres import ServerThread, make_data_dir
from testkit.waiting import until

SAMPLE_EVERY = 0.5


@dataclass
class Drain:
    """What the storm measured, from the instant the CSMS listened again."""

    queued: int = 0  # outbox rows when the CSMS came back
    first_back: float = math.nan  # seconds until the first relay was connected again
    all_back: float = math.nan  # until no link was offline
    drained: float = math.nan  # until no outbox row was left
    replayed: float = 0.0  # entries replayed (proxy metric, summed over workers)
    proxy_cpu: float = 0.0  # proxy CPU seconds over the drain
    database_cpu: float = 0.0
    rss_before: int = 0  # proxy RSS when the CSMS came back (bytes)
    rss_peak: int = 0
    timeline: list[tuple[float, float, int, int]] = field(
        default_factory=list
    )  # (s, offline, rows, rss)


class Proxy:
    """The proxy under test: `workers` processes, worker i's admin endpoint on `admin + i`."""

    def __init__(self, scratch: Path, csms_port: int, dsn: str, args: argparse.Namespace) -> None:
        self.workers = args.workers
        self.port = free_port()
        self.admin = free_port(consecutive=args.workers)
        config = scratch / "proxy.toml"
        config.write_text(
            f'[proxy]\nhost = "127.0.0.1"\nport = {self.port}\npath_prefix = "/ocpp"\nworkers = {args.workers}\n'
            f'[admin]\nhost = "127.0.0.1"\nport = {self.admin}\n[log]\nlevel = "warning"\n'
            f"[registry]\nenabled = false\n[capture]\nenabled = true\n"
            f"[outbox]\nenabled = true\nredial_max = {args.redial_max}\n"
            f'[database]\ndsn = "{dsn}"\ndata_dir = "{scratch / "proxy-data"}"\n'
            f'[default_route]\nupstream = "ws://127.0.0.1:{csms_port}/ocpp"\nauth = "passthrough"\n'
        )
        self.log = scratch / "proxy.log"
        with self.log.open("wb") as log:
            self.proc = spawn(
                [sys.executable, "-m", "proxy", "proxy", "--config", str(config)],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"proxy exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
            )
        return all(admin.get(self.admin + i, "/readyz") is not None for i in range(self.workers))

    def metric(self, name: str) -> float:
        """`name` summed over the workers (NaN if a worker does not answer)."""
        return sum(admin.metric(self.admin + i, name) for i in range(self.workers))

    def stop(self) -> int:
        return stop(self.proc, grace=60)


def outbox_rows(dsn: str) -> int:
    rows = fetch(dsn, "SELECT count(*) FROM outbox_entries WHERE dead_reason IS NULL")
    return int(rows[0][0])


def start_fleet(
    args: argparse.Namespace, url: str, scratch: Path
) -> list[tuple[subprocess.Popen, Path, Path]]:
    """The simulator processes (identities S<p>-<index>), each with its summary and sent log."""
    fleet = []
    per_proc = [
        args.chargers // args.sim_procs + (i < args.chargers % args.sim_procs)
        for i in range(args.sim_procs)
    ]
    for index, chargers in enumerate(per_proc):
        summary, sent = scratch / f"sim{index}.json", scratch / f"sent{index}.json"
        argv = [
            sys.executable,
            "-m",
            "bench.load.simulator",
            "--url",
            url,
            "--chargers",
            str(chargers),
            "--protocol",
            "mixed",
            "--sessions",
            "0",
            "--samples",
            str(args.samples),
            "--interval",
            str(args.interval),
            "--max-seconds",
            str(args.limit),
            "--duration",
            str(args.limit),
            "--call-timeout",
            "60",
            "--prefix",
            f"S{index}-",
            "--sent-log",
            str(sent),
        ]
        with summary.open("wb") as out, (scratch / f"sim{index}.stderr").open("wb") as err:
            fleet.append(
                (
                    spawn(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=err),
                    summary,
                    sent,
                )
            )
    return fleet


async def storm(args: argparse.Namespace, scratch: Path) -> tuple[Drain, dict, list[str], float]:
    """Run the scenario; returns the drain figures, fleet totals, ledger problems and outage CPU."""
    database = await trio.to_thread.run_sync(ServerThread(scratch / "db").open)
    proxy: Proxy | None = None
    fleet: list[tuple[subprocess.Popen, Path, Path]] = []
    try:
        await trio.to_thread.run_sync(execute, database.server.dsn(), "CREATE DATABASE ere_proxy")
        dsn = database.server.dsn("ere_proxy")
        csms = FakeCsms(record=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(csms.serve)
            proxy = Proxy(scratch, csms.port, dsn, args)
            await until(proxy.ready, "proxy /readyz", 90)
            fleet = start_fleet(args, proxy.url, scratch)
            _say(f"{args.chargers} chargers connecting")
            await until(
                lambda: proxy.metric("ere_proxy_connected_chargers") == args.chargers,
                "the fleet",
                600,
            )
            await trio.sleep(args.before)

            _say(f"upstream down for {args.outage:g} s")
            await csms.stop()
            outage_started, cpu = time.monotonic(), procstat.cpu_seconds(proxy.proc.pid)
            await until(
                lambda: proxy.metric("ere_proxy_links_offline") == args.chargers,
                "every link offline",
                120,
            )
            await trio.sleep(max(0.0, outage_started + args.outage - time.monotonic()))
            outage_cpu = (procstat.cpu_seconds(proxy.proc.pid) - cpu) / (
                time.monotonic() - outage_started
            )

            drain = await _measure_drain(csms, proxy, dsn, scratch / "db", args)
            _say(f"drained in {drain.drained:.1f} s; the fleet finishes its sessions")
            for proc, _, _ in fleet:
                proc.send_signal(signal.SIGUSR1)
            limit = args.interval * (args.samples + 2) + 120
            for proc, _, _ in fleet:
                if await trio.to_thread.run_sync(proc.wait, limit) != 0:
                    raise RuntimeError(f"a simulator failed: see {scratch}")
            nursery.cancel_scope.cancel()
        status = proxy.stop()
        if status != 0:
            raise RuntimeError(f"proxy exited with {status}:\n{proxy.log.read_text()[-3000:]}")
        sent: dict = {}
        totals: dict[str, Any] = {"calls": 0, "resent": 0, "reconnects": 0, "errors": {}}
        for _, summary_path, sent_path in fleet:
            summary = json.loads(summary_path.read_text())
            for key in ("calls", "resent", "reconnects"):
                totals[key] += summary[key]
            for error, n in summary["errors"].items():
                totals["errors"][error] = totals["errors"].get(error, 0) + n
            sent.update(json.loads(sent_path.read_text()))
        totals.update(counts(csms.received))
        return drain, totals, exactly_once(sent, csms.received), outage_cpu
    finally:
        for proc, _, _ in fleet:
            if proc.poll() is None:
                proc.kill()
        if proxy is not None:
            proxy.stop()
        await trio.to_thread.run_sync(database.close)


async def _measure_drain(
    csms: FakeCsms, proxy: Proxy, dsn: str, db_dir: Path, args: argparse.Namespace
) -> Drain:
    drain = Drain()
    drain.queued = await trio.to_thread.run_sync(outbox_rows, dsn)
    drain.rss_before = drain.rss_peak = procstat.rss_bytes(proxy.proc.pid)
    replayed_before = await trio.to_thread.run_sync(proxy.metric, "ere_proxy_outbox_replayed_total")
    cpu, db_cpu = procstat.cpu_seconds(proxy.proc.pid), pg.cpu_seconds(db_dir)
    _say(f"upstream back: {drain.queued} entries queued")
    await csms.start()
    back = time.monotonic()
    while True:
        offline = await trio.to_thread.run_sync(proxy.metric, "ere_proxy_links_offline")
        rows = await trio.to_thread.run_sync(outbox_rows, dsn)
        rss = procstat.rss_bytes(proxy.proc.pid)
        now = time.monotonic() - back
        drain.rss_peak = max(drain.rss_peak, rss)
        drain.timeline.append((now, offline, rows, rss))
        if offline < args.chargers and math.isnan(drain.first_back):
            drain.first_back = now
        if offline == 0 and math.isnan(drain.all_back):
            drain.all_back = now
        if rows == 0 and math.isnan(drain.drained):
            drain.drained = now
        if offline == 0 and rows == 0:
            break
        if now > args.drain_limit:
            raise TimeoutError(
                f"not drained after {args.drain_limit:g} s: {offline:.0f} offline, {rows} rows left"
            )
        await trio.sleep(SAMPLE_EVERY)
    drain.proxy_cpu = procstat.cpu_seconds(proxy.proc.pid) - cpu
    drain.database_cpu = pg.cpu_seconds(db_dir) - db_cpu
    drain.replayed = (
        await trio.to_thread.run_sync(proxy.metric, "ere_proxy_outbox_replayed_total")
        - replayed_before
    )
    return drain


def _say(text: str) -> None:
    print(f"[storm {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def report(
    args: argparse.Namespace,
    started: datetime,
    drain: Drain,
    totals: dict,
    problems: list[str],
    outage_cpu: float,
) -> str:
    mb = 1024 * 1024
    end = max(drain.all_back, drain.drained)
    lines = [
        f"## outbox storm, {started:%Y-%m-%d %H:%M} UTC",
        "",
        machine_line(args.loadavg_at_start),
        f"- command (from the repository root): `{command(args)}`",
        f"- {args.chargers} chargers ({args.sim_procs} simulator processes, half OCPP 1.6, half 2.0.1, a reading "
        f"every {args.interval:g} s, sessions of {args.samples} readings), proxy with {args.workers} workers, "
        f"capture and outbox on, PostgreSQL fsync on; upstream down {args.outage:g} s; `redial_max = "
        f"{args.redial_max:g}`; codec {websocket.CODEC}",
        "",
        "| upstream back → | first relay connected | every link back | every outbox empty |"
        " entries replayed | replay rate | proxy CPU (cores) | DB CPU (cores) | proxy RSS before → peak |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        f"| seconds | {drain.first_back:.1f} | {drain.all_back:.1f} | {drain.drained:.1f} | {drain.replayed:.0f} "
        f"(of {drain.queued} rows) | {drain.replayed / end:.0f}/s | {drain.proxy_cpu / end:.2f} "
        f"| {drain.database_cpu / end:.2f} | {drain.rss_before / mb:.0f} → {drain.rss_peak / mb:.0f} MB "
        f"({drain.rss_peak / args.chargers / 1024:.1f} KB per charger, all included) |",
        "",
        f"- while offline the proxy used {outage_cpu:.2f} cores answering the fleet itself",
        f"- fleet: {totals['calls']} CALLs answered, {totals['resent']} resent, {totals['reconnects']} reconnects, "
        f"errors {totals['errors'] or 'none'}",
        f"- upstream received {totals['starts']} StartTransaction, {totals['meter_values']} MeterValues, "
        f"{totals['stops']} StopTransaction, {totals['transaction_events']} TransactionEvent from "
        f"{totals['chargers']} chargers; ledger: "
        + (
            "every transaction CALL exactly once, in order"
            if not problems
            else f"{len(problems)} PROBLEMS: {problems[:5]}"
        ),
        "",
        "| s after upstream back | links offline | outbox rows | proxy RSS MB |",
        "|--:|--:|--:|--:|",
    ]
    step = max(1, len(drain.timeline) // 20)
    shown = drain.timeline[::step]
    if shown[-1] is not drain.timeline[-1]:
        shown.append(drain.timeline[-1])
    for t, offline, rows, rss in shown:
        lines.append(f"| {t:.1f} | {offline:.0f} | {rows} | {rss / mb:.0f} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chargers", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2, help="proxy worker processes")
    parser.add_argument("--sim-procs", type=int, default=2, help="simulator processes")
    parser.add_argument(
        "--interval", type=float, default=10.0, help="seconds between a charger's readings"
    )
    parser.add_argument("--samples", type=int, default=3, help="periodic readings per session")
    parser.add_argument(
        "--before", type=float, default=10.0, help="seconds of normal operation before the outage"
    )
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the upstream is down")
    parser.add_argument(
        "--redial-max", type=float, default=60.0, help="the proxy's [outbox] redial_max"
    )
    parser.add_argument("--drain-limit", type=float, default=600.0, help="give up after this long")
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch directory (logs, sent logs)"
    )


def run(args: argparse.Namespace) -> Report:
    """The storm; the report fails if the ledger found a transaction CALL lost or doubled."""
    if args.chargers / args.workers > 9_900:
        raise UsageError(
            "at most ~9,900 chargers per proxy worker (20,000 open files per process, two per charger)"
        )
    args.limit = 600 + args.before + args.outage + args.drain_limit  # the fleet's hard bound
    raise_fd_limit()
    args.loadavg_at_start = loadavg()
    started = datetime.now(UTC)
    scratch = make_data_dir("ocpp-storm-")
    try:
        drain, totals, problems, outage_cpu = trio.run(storm, args, scratch)
    finally:
        if args.keep:
            print(f"scratch kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    text = report(args, started, drain, totals, problems, outage_cpu)
    return Report(text, ok=not problems)
