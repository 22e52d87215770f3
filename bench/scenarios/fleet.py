"""Fleet: 50,000 connected chargers with 60 s heartbeats and meter values, held for 10 minutes.

The proxy holds two sockets per charger and this machine caps open files at 20,000 per process,
so the fleet is spread: `--workers` proxy processes (SO_REUSEPORT; each says at start how many
chargers its limit allows), `--sim-procs` simulator processes connecting from `--source-addresses`
source addresses (one address has ~28,000 ephemeral ports), `--csms-procs` fake back-office
processes on one port. Capture and the outbox are on, with a PostgreSQL of the bench's own.

The chargers start evenly over `--ramp` seconds; once all are connected the steady window of
`--hold` seconds begins. Each charger runs sessions back to back with a meter value every
`--interval` seconds and a Heartbeat every `--heartbeat` seconds. Reported over the window:
proxy RSS per charger (all workers' RSS divided by chargers, and the growth from the idle proxy),
proxy CPU (cores), CALLs per second, CALL latency p50/p99/max as the chargers see it, and errors
(connect failures, timeouts, reconnects: all must be zero).

`--offline-every S` gives each charger offline periods (on average one every S seconds, about
`--offline-for` seconds long; see `bench.load.simulator`), as a real fleet has: then "connected at
end" counts the chargers online at that moment, and the periods are reported apart from errors.

    .venv/bin/python -m bench fleet [--chargers 50000] [--hold 600] [--workers 6] [--no-results]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import admin, pg, procstat
from bench.harness.database import execute
from bench.harness.fleet_processes import (
    FD_PER_PROCESS,
    fleet_results,
    merged_errors,
    start_csms,
    start_fleet,
    start_proxy,
    stop_all,
)
from bench.harness.percentiles import percentiles
from bench.harness.processes import raise_fd_limit
from bench.harness.report import Report, UsageError, command, loadavg, machine_line
from testkit.postgres import ServerThread, make_data_dir
from testkit.waiting import wait_until


def measure(args: argparse.Namespace, scratch: Path) -> dict:
    procs = []
    database = ServerThread(scratch / "db").open()
    try:
        execute(database.server.dsn(), "CREATE DATABASE ere_proxy")
        csms_port, csms = start_csms(scratch, args.csms_procs)
        procs += csms
        proxy, port, admin_port = start_proxy(
            scratch, csms_port, database.server.dsn("ere_proxy"), args.workers
        )
        procs.append(proxy)
        idle_rss = procstat.rss_bytes(proxy.pid)
        limit = args.ramp + args.hold + 600
        sims = start_fleet(
            scratch,
            port,
            args.chargers,
            args.sim_procs,
            [
                "--sessions",
                "0",
                "--samples",
                "10",
                "--interval",
                str(args.interval),
                "--heartbeat",
                str(args.heartbeat),
                "--ramp",
                str(args.ramp),
                "--source-addresses",
                str(args.source_addresses),
                "--call-timeout",
                "60",
                "--duration",
                str(limit),
                "--max-seconds",
                str(limit + 300),
                "--latency-file",
                str(scratch / "latency-{index}.csv"),
                "--offline-every",
                str(args.offline_every),
                "--offline-for",
                str(args.offline_for),
            ],
        )
        procs += sims
        online = expected_online(args)
        connected = lambda: (
            admin.summed(admin_port, args.workers).get("ere_proxy_connected_chargers", 0) >= online
        )
        wait_until(connected, "the whole fleet connected", args.ramp + 600)
        window_start, cpu = time.time(), procstat.cpu_seconds(proxy.pid)
        before = admin.summed(admin_port, args.workers)
        peak = 0
        while time.time() < window_start + args.hold:
            peak = max(peak, procstat.rss_bytes(proxy.pid))
            time.sleep(5)
        window_end, cpu = time.time(), procstat.cpu_seconds(proxy.pid) - cpu
        after = admin.summed(admin_port, args.workers)
        still = after.get("ere_proxy_connected_chargers", 0)
        for sim in sims:
            sim.send_signal(signal.SIGUSR1)  # finish the sessions under way, start no new ones
        for sim in sims:
            if sim.wait(args.interval * 12 + 300) != 0:
                raise RuntimeError(
                    f"simulator failed: {(scratch / 'sim0.stderr').read_text()[-2000:]}"
                )
        _, summaries = fleet_results(scratch, args.sim_procs)
        rtts = []
        for path in scratch.glob("latency-*.csv"):
            with path.open() as f:
                rtts += [
                    float(r["rtt_ms"]) / 1000
                    for r in csv.DictReader(f)
                    if window_start <= float(r["send_epoch"]) < window_end
                ]
        return {
            "idle_rss": idle_rss,
            "peak_rss": peak,
            "cpu": cpu / (window_end - window_start),
            "calls_per_s": len(rtts) / (window_end - window_start),
            "latency": percentiles(rtts),
            "connected_at_end": still,
            "errors": merged_errors(summaries),
            "reconnects": sum(s["reconnects"] for s in summaries),
            "db_cpu": pg.cpu_seconds(scratch / "db"),
            "offline_periods": sum(s["offline_periods"] for s in summaries),
            "link_ends": _grown(before, after, "ere_proxy_link_ends_total"),
            "handshakes": _grown(before, after, "ere_proxy_handshakes_total"),
        }
    finally:
        stop_all(procs)
        database.close()


def expected_online(args: argparse.Namespace) -> float:
    """Chargers that must be connected: all, or with offline periods 90 % of the share online."""
    if not args.offline_every:
        return args.chargers
    return 0.9 * args.chargers * args.offline_every / (args.offline_every + args.offline_for)


def _grown(before: dict[str, float], after: dict[str, float], name: str) -> dict[str, int]:
    """How much each labelled series of counter `name` grew in the window, by its label value."""
    grown = {}
    for series, value in after.items():
        if series.startswith(name + "{"):
            label = series[series.index('"') + 1 : series.rindex('"')]
            if value > before.get(series, 0.0):
                grown[label] = int(value - before.get(series, 0.0))
    return grown


def report(args: argparse.Namespace, started: datetime, r: dict) -> str:
    mb, n = 1024 * 1024, args.chargers
    latency = r["latency"]
    return "\n".join(
        [
            f"## fleet, {started:%Y-%m-%d %H:%M} UTC",
            "",
            machine_line(args.loadavg_at_start),
            f"- command (from the repository root): `{command(args)}`",
            f"- {n} chargers (half OCPP 1.6, half 2.0.1; {args.sim_procs} simulator processes, {args.source_addresses} "
            f"source addresses) started over {args.ramp:g} s, then held {args.hold:g} s: a meter value every "
            f"{args.interval:g} s in sessions back to back, a Heartbeat every {args.heartbeat:g} s; proxy with "
            f"{args.workers} workers, capture and outbox on; {args.csms_procs} fake CSMS processes"
            + (
                f"; offline periods of about {args.offline_for:g} s every {args.offline_every:g} s per charger"
                if args.offline_every
                else ""
            ),
            "",
            "| chargers | connected at end | proxy RSS MB (peak) | KB per charger | KB per charger over idle |"
            " proxy CPU (cores) | CALLs/s | p50 ms | p99 ms | max ms | errors | reconnects |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
            f"| {n} | {r['connected_at_end']:.0f} | {r['peak_rss'] / mb:.0f} | {r['peak_rss'] / n / 1024:.1f} | "
            f"{(r['peak_rss'] - r['idle_rss']) / n / 1024:.1f} | {r['cpu']:.2f} | {r['calls_per_s']:.0f} | "
            f"{latency['p50_ms']} | {latency['p99_ms']} | {latency['max_ms']} | "
            f"{sum(r['errors'].values())} | {r['reconnects']} |",
            "",
            f"- errors: {r['errors'] or 'none'}; idle proxy ({args.workers} workers) {r['idle_rss'] / mb:.0f} MB; "
            f"offline periods: {r['offline_periods']}",
            f"- in the window, proxy link ends by reason: {r['link_ends'] or 'none'}; handshakes: "
            f"{r['handshakes'] or 'none'}",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chargers", type=int, default=50_000)
    parser.add_argument(
        "--hold", type=float, default=600.0, help="seconds the whole fleet is held connected"
    )
    parser.add_argument(
        "--ramp",
        type=float,
        default=300.0,
        help="seconds over which the chargers start (a steady start; the storm is reconnect-storm)",
    )
    parser.add_argument(
        "--interval", type=float, default=60.0, help="seconds between a charger's meter values"
    )
    parser.add_argument("--heartbeat", type=float, default=60.0)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--sim-procs", type=int, default=5)
    parser.add_argument("--csms-procs", type=int, default=3)
    parser.add_argument("--source-addresses", type=int, default=8)
    parser.add_argument(
        "--offline-every", type=float, default=0.0, help="mean seconds between offline periods"
    )
    parser.add_argument(
        "--offline-for", type=float, default=30.0, help="mean length of an offline period"
    )


def run(args: argparse.Namespace) -> Report:
    """The fleet held; the report fails on any error or on chargers missing at the end."""
    for what, count, sockets in (
        ("--workers", args.workers, 2),
        ("--sim-procs", args.sim_procs, 1),
        ("--csms-procs", args.csms_procs, 1),
    ):
        if args.chargers / count * sockets > FD_PER_PROCESS - 200:
            raise UsageError(
                f"{what} {count}: too many sockets per process for the open-file cap ({FD_PER_PROCESS})"
            )
    raise_fd_limit()
    args.loadavg_at_start = loadavg()
    started = datetime.now(UTC)
    scratch = make_data_dir("ocpp-fleet-")
    try:
        result = measure(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ok = not result["errors"] and result["connected_at_end"] >= expected_online(args)
    return Report(report(args, started, result), ok=ok)
