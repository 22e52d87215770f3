"""A fleet spread over processes, for the scenarios with tens of thousands of chargers: fake CSMS
processes sharing one port, a proxy with several workers (capture and outbox on), simulator
processes, and what they report.

A proxy worker holds two sockets per charger and a process may hold FD_PER_PROCESS open files:
a scenario spreads its chargers so that no process comes near.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.harness import admin
from bench.harness.processes import REPO, spawn, stop
from testkit.ports import free_port
from testkit.waiting import wait_until

FD_PER_PROCESS = 20_000


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
    port, admin_port = free_port(), free_port(consecutive=workers)
    config = scratch / "proxy.toml"
    config.write_text(
        f'[proxy]\nhost = "127.0.0.1"\nport = {port}\npath_prefix = "/ocpp"\nworkers = {workers}\n'
        # Past one source address's ephemeral ports towards the one fake CSMS port.
        f"upstream_source_addresses = {json.dumps([f'127.0.10.{k}' for k in range(1, 5)])}\n"
        f'[admin]\nhost = "127.0.0.1"\nport = {admin_port}\n[log]\nlevel = "warning"\n'
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
    wait_until(
        lambda: all(admin.get(admin_port + i, "/readyz") for i in range(workers)), "proxy ready", 90
    )
    return proxy, port, admin_port


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
                        "bench.load.simulator",
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


def merged_errors(summaries: list[dict]) -> dict[str, int]:
    """The simulators' errors, counted by kind over all of them."""
    errors: dict[str, int] = {}
    for summary in summaries:
        for error, n in summary["errors"].items():
            errors[error] = errors.get(error, 0) + n
    return errors


def stop_all(procs: list[subprocess.Popen]) -> None:
    """Stop the processes, the last started first."""
    for proc in reversed(procs):
        stop(proc, grace=30)
