"""Reconnect storm: 20,000 chargers connecting through the proxy within 10 seconds.

What a CPO sees after a network blip or a proxy restart: the whole fleet at once. One run on
this machine: a PostgreSQL of the bench's own (fsync on), `--csms-procs` fake back-office
processes sharing one port (SO_REUSEPORT; one process cannot hold 20,000 connections under the
open-file cap), the proxy with `--workers` processes (capture and outbox on, as deployed; every
handshake looks up the charger's outbox), and `--sim-procs` simulator processes whose chargers
start evenly over `--ramp` seconds from 127.0.k.1 source addresses (past one address's
ephemeral ports). Each charger connects, sends BootNotification and StatusNotification and runs
one short session.

Reported: the time from the first charger starting until the last one's BootNotification is
answered through the proxy (all forwarding), handshakes by outcome at the proxy (anything but
`accepted` is a refusal, and must be zero), the chargers' own connect errors and retries, proxy
CPU over the storm and RSS after it.

    .venv/bin/python -m bench reconnect-storm [--chargers 20000] [--ramp 10] [--workers 3] [--no-results]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import admin, procstat
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
from bench.harness.processes import raise_fd_limit
from bench.harness.report import Report, UsageError, command, loadavg, machine_line
from testkit.postgres import ServerThread, make_data_dir


def measure(args: argparse.Namespace, scratch: Path) -> dict:
    procs: list[subprocess.Popen] = []
    database = ServerThread(scratch / "db").open()
    try:
        execute(database.server.dsn(), "CREATE DATABASE ere_proxy")
        csms_port, csms = start_csms(scratch, args.csms_procs)
        procs += csms
        proxy, port, admin_port = start_proxy(
            scratch, csms_port, database.server.dsn("ere_proxy"), args.workers
        )
        procs.append(proxy)
        time.sleep(2)  # quiet before the storm
        cpu = procstat.cpu_seconds(proxy.pid)
        sims = start_fleet(
            scratch,
            port,
            args.chargers,
            args.sim_procs,
            [
                "--sessions",
                "1",
                "--samples",
                "1",
                "--interval",
                "20",
                "--ramp",
                str(args.ramp),
                "--source-addresses",
                str(args.source_addresses),
                "--connect-concurrency",
                str(args.connect_concurrency),
                "--call-timeout",
                "60",
                "--max-seconds",
                "600",
            ],
        )
        procs += sims
        for sim in sims:
            if sim.wait(900) != 0:
                raise RuntimeError(
                    f"simulator failed: {(scratch / 'sim0.stderr').read_text()[-2000:]}"
                )
        figures = admin.summed(admin_port, args.workers)
        result = {
            "proxy_cpu": procstat.cpu_seconds(proxy.pid) - cpu,
            "rss": procstat.rss_bytes(proxy.pid),
            "handshakes": {
                k: v for k, v in figures.items() if k.startswith("ere_proxy_handshakes_total")
            },
        }
        events, summaries = fleet_results(scratch, args.sim_procs)
        booted = [e["epoch"] for e in events if e.get("event") == "booted"]
        if len(booted) != args.sim_procs:
            raise RuntimeError("not every simulator saw all its chargers booted")
        result["storm_seconds"] = max(booted) - min(
            e["epoch"] for e in events if e.get("event") == "started"
        )
        result["calls"] = sum(s["calls"] for s in summaries)
        result["reconnects"] = sum(s["reconnects"] for s in summaries)
        result["errors"] = merged_errors(summaries)
        return result
    finally:
        stop_all(procs)
        database.close()


def report(args: argparse.Namespace, started: datetime, result: dict) -> str:
    handshakes = {
        key.split('outcome="')[1].rstrip('"}'): int(v) for key, v in result["handshakes"].items()
    }
    refused = sum(n for outcome, n in handshakes.items() if outcome != "accepted")
    return "\n".join(
        [
            f"## reconnect storm, {started:%Y-%m-%d %H:%M} UTC",
            "",
            machine_line(args.loadavg_at_start),
            f"- command (from the repository root): `{command(args)}`",
            f"- {args.chargers} chargers (half OCPP 1.6, half 2.0.1) starting evenly over {args.ramp:g} s from "
            f"{args.source_addresses} source addresses, {args.sim_procs} simulator processes; proxy with "
            f"{args.workers} workers, capture and outbox on, PostgreSQL fsync on; {args.csms_procs} fake CSMS processes",
            "",
            "| chargers | ramp s | all forwarding after s | handshakes accepted | refused | charger connect errors |"
            " reconnects | proxy CPU s | proxy RSS MB |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
            f"| {args.chargers} | {args.ramp:g} | {result['storm_seconds']:.1f} | {handshakes.get('accepted', 0)} | "
            f"{refused} | {sum(n for e, n in result['errors'].items() if e.startswith('connect'))} | "
            f"{result['reconnects']} | {result['proxy_cpu']:.1f} | {result['rss'] / 1024 / 1024:.0f} |",
            "",
            f"- handshakes by outcome: {handshakes}; fleet: {result['calls']} CALLs answered, errors "
            f"{result['errors'] or 'none'}",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chargers", type=int, default=20_000)
    parser.add_argument(
        "--ramp", type=float, default=10.0, help="seconds over which every charger starts"
    )
    parser.add_argument("--workers", type=int, default=3, help="proxy worker processes")
    parser.add_argument("--sim-procs", type=int, default=3)
    parser.add_argument("--csms-procs", type=int, default=2)
    parser.add_argument("--source-addresses", type=int, default=4)
    parser.add_argument(
        "--connect-concurrency", type=int, default=256, help="handshakes in flight per simulator"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")


def run(args: argparse.Namespace) -> Report:
    """The storm; the report fails if the proxy refused any handshake."""
    for what, count in (
        ("--workers", args.workers),
        ("--sim-procs", args.sim_procs),
        ("--csms-procs", args.csms_procs),
    ):
        per_process = args.chargers / count * (2 if what == "--workers" else 1)
        if per_process > FD_PER_PROCESS - 200:
            raise UsageError(
                f"{what} {count}: {per_process:.0f} sockets per process is over the open-file cap"
            )
    raise_fd_limit()
    args.loadavg_at_start = loadavg()
    started = datetime.now(UTC)
    scratch = make_data_dir("ocpp-reconnect-")
    try:
        result = measure(args, scratch)
    finally:
        if args.keep:
            print(f"scratch kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    refused = sum(v for k, v in result["handshakes"].items() if 'outcome="accepted"' not in k)
    return Report(report(args, started, result), ok=not refused)
