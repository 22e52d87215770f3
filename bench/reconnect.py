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

    .venv/bin/python -m bench.reconnect [--chargers 20000] [--ramp 10] [--workers 3] [--no-results]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import procstat
from bench.loadgen import spawn
from bench.outage import _execute, _get, free_port, wait_until
from bench.results import loadavg, machine_line, publish, raise_fd_limit
from bench.scenarios import RESULTS
from bench.storm import _consecutive_ports
from testkit.postgres import ServerThread, make_data_dir

REPO = Path(__file__).resolve().parent.parent
FD_PER_PROCESS = 20_000


def metrics(admin: int, workers: int) -> dict[str, float]:
    """Every sample of every worker, summed by series (name with labels)."""
    total: dict[str, float] = {}
    for i in range(workers):
        for line in (_get(admin + i, "/metrics") or "").splitlines():
            if line.startswith("ere_proxy_") and " " in line:
                name, value = line.rsplit(" ", 1)
                total[name] = total.get(name, 0.0) + float(value)
    return total


def start_csms(scratch: Path, count: int) -> tuple[int, list[subprocess.Popen]]:
    """`count` fake CSMS processes sharing one port (distinct transaction id ranges)."""
    port, procs = free_port(), []
    for i in range(count):
        with (scratch / f"csms{i}.log").open("wb") as log:
            procs.append(
                spawn(
                    [
                        sys.executable,
                        "-m",
                        "testkit.fake_csms",
                        "--port",
                        str(port),
                        "--reuse-port",
                        "--first-transaction-id",
                        str(1 + i * 100_000_000),
                        "--max-seconds",
                        "3600",
                    ],
                    cwd=REPO,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    return port, procs


def start_proxy(
    scratch: Path, csms_port: int, dsn: str, workers: int
) -> tuple[subprocess.Popen, int, int]:
    """The proxy (capture and outbox on) with `workers` processes; returns it, its port, its first admin port."""
    port, admin = free_port(), _consecutive_ports(workers)
    config = scratch / "proxy.toml"
    config.write_text(
        f'[proxy]\nhost = "127.0.0.1"\nport = {port}\npath_prefix = "/ocpp"\nworkers = {workers}\n'
        # Past one source address's ephemeral ports towards the one fake CSMS port.
        f"upstream_source_addresses = {json.dumps([f'127.0.10.{k}' for k in range(1, 5)])}\n"
        f'[admin]\nhost = "127.0.0.1"\nport = {admin}\n[log]\nlevel = "warning"\n'
        f"[registry]\nenabled = false\n[capture]\nenabled = true\n[outbox]\nenabled = true\n"
        f'[database]\ndsn = "{dsn}"\ndata_dir = "{scratch / "proxy-data"}"\n'
        f'[default_route]\nupstream = "ws://127.0.0.1:{csms_port}/ocpp"\nauth = "passthrough"\n'
    )
    with (scratch / "proxy.log").open("wb") as log:
        proxy = spawn(
            [sys.executable, "-m", "proxy", "proxy", "--config", str(config)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    wait_until(lambda: all(_get(admin + i, "/readyz") for i in range(workers)), "proxy ready", 90)
    return proxy, port, admin


def start_fleet(
    scratch: Path, port: int, chargers: int, processes: int, options: list[str]
) -> list[subprocess.Popen]:
    """Simulator processes splitting `chargers` (identities R<p>-<n>); summaries in sim<p>.json/.stderr.

    "{index}" in an option becomes the process number (for per-process output files).
    """
    sims = []
    for i in range(processes):
        count = chargers // processes + (i < chargers % processes)
        with (
            (scratch / f"sim{i}.json").open("wb") as out,
            (scratch / f"sim{i}.stderr").open("wb") as err,
        ):
            sims.append(
                spawn(
                    [
                        sys.executable,
                        "-m",
                        "bench.simulator",
                        "--url",
                        f"ws://127.0.0.1:{port}/ocpp",
                        "--chargers",
                        str(count),
                        "--protocol",
                        "mixed",
                        "--prefix",
                        f"R{i}-",
                        *(option.replace("{index}", str(i)) for option in options),
                    ],
                    cwd=REPO,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                )
            )
    return sims


def fleet_results(scratch: Path, processes: int) -> tuple[list[dict], list[dict]]:
    """Each simulator's progress events and its summary."""
    events, summaries = [], []
    for i in range(processes):
        events += [
            json.loads(line) for line in (scratch / f"sim{i}.stderr").read_text().splitlines()
        ]
        summaries.append(json.loads((scratch / f"sim{i}.json").read_text()))
    return events, summaries


def run(args: argparse.Namespace, scratch: Path) -> dict:
    procs: list[subprocess.Popen] = []
    database = ServerThread(scratch / "db").open()
    try:
        asyncio.run(_execute(database.server.dsn(), "CREATE DATABASE ere_proxy"))
        csms_port, csms = start_csms(scratch, args.csms_procs)
        procs += csms
        proxy, port, admin = start_proxy(
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
        figures = metrics(admin, args.workers)
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


def merged_errors(summaries: list[dict]) -> dict[str, int]:
    errors: dict[str, int] = {}
    for summary in summaries:
        for error, n in summary["errors"].items():
            errors[error] = errors.get(error, 0) + n
    return errors


def stop_all(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def report(args: argparse.Namespace, argv: list[str], started: datetime, result: dict) -> str:
    handshakes = {
        key.split('outcome="')[1].rstrip('"}'): int(v) for key, v in result["handshakes"].items()
    }
    refused = sum(n for outcome, n in handshakes.items() if outcome != "accepted")
    return "\n".join(
        [
            f"## reconnect storm, {started:%Y-%m-%d %H:%M} UTC",
            "",
            machine_line(args.loadavg_at_start),
            f"- command (from the repository root): `.venv/bin/python -m bench reconnect-storm {shlex.join(argv)}`",
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m bench.reconnect", description=__doc__.split("\n")[0]
    )
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
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    for what, count in (
        ("--workers", args.workers),
        ("--sim-procs", args.sim_procs),
        ("--csms-procs", args.csms_procs),
    ):
        per_process = args.chargers / count * (2 if what == "--workers" else 1)
        if per_process > FD_PER_PROCESS - 200:
            parser.error(
                f"{what} {count}: {per_process:.0f} sockets per process is over the open-file cap"
            )
    raise_fd_limit()
    args.loadavg_at_start = loadavg()
    started = datetime.now(UTC)
    scratch = make_data_dir("ocpp-reconnect-")
    try:
        result = run(args, scratch)
    finally:
        if args.keep:
            print(f"scratch kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    text = report(args, argv, started, result)
    publish(text, args)
    refused = sum(v for k, v in result["handshakes"].items() if 'outcome="accepted"' not in k)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
