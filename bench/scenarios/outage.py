"""Forwarding latency while the capture database is down: a fleet through the proxy, PostgreSQL killed.

One run, side by side on this machine:

1. `direct`: the fleet simulator (`bench.load.simulator`) talks straight to the fake CSMS;
2. the same fleet through the proxy with capture off (forwarding alone);
3. the same fleet through the proxy with capture on (`[database] dsn` pointing at a PostgreSQL
   server this script owns, fsync on). After `--warmup` + `--before` seconds the server is crashed
   (SIGQUIT: immediate shutdown), stays down `--outage` seconds and is started again (crash
   recovery); the fleet runs on for `--after` seconds while the journal replays its spill log).

Latency is the CALL round trip each simulated charger sees (send → answer), taken from the
simulator's per-CALL log and cut by send time into the windows before the outage, during it
(kill → server accepting again) and after it; proxy CPU (utime + stime from /proc) is sampled at
the same boundaries. At the end the database is checked against what the fleet reported: every
session with its exact meter start and stop, every sample once.

    python -m bench outage [--chargers 200] [--interval 1] [--samples 4] \
        [--warmup 5] [--before 15] [--outage 10] [--after 15]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.harness import procstat
from bench.harness.admin import get, metric
from bench.harness.database import execute, fetch
from bench.harness.percentiles import percentiles
from bench.harness.processes import REPO, spawn, stop
from bench.harness.report import Report, command, loadavg, machine_line
from bench.harness.targets import accepts
from bench.load.simulator import read_latencies
from testkit.ports import free_port
from testkit.postgres import ServerThread, make_data_dir
from testkit.waiting import wait_until


@dataclass
class Window:
    name: str
    start: float  # epoch
    end: float
    cpu_s: float | None = None  # proxy CPU over the window


def simulate(
    url: str, args: argparse.Namespace, scratch: Path, name: str
) -> tuple[subprocess.Popen, Path, Path]:
    """Start the fleet against `url`; returns the process, its summary path and its latency log."""
    summary, latencies = scratch / f"{name}.json", scratch / f"{name}.csv"
    argv = [
        sys.executable,
        "-m",
        "bench.load.simulator",
        "--url",
        url,
        "--chargers",
        str(args.chargers),
        "--protocol",
        "mixed",
        "--sessions",
        "0",
        "--samples",
        str(args.samples),
        "--interval",
        str(args.interval),
        "--duration",
        str(args.warmup + args.before + args.outage + args.after),
        "--max-seconds",
        str(args.warmup + args.before + args.outage + args.after + 60),
        "--latency-file",
        str(latencies),
        "--prefix",
        name.upper()[:6],
    ]
    with summary.open("wb") as out, (scratch / f"{name}.stderr").open("wb") as err:
        proc = spawn(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    return proc, summary, latencies


def finish(proc: subprocess.Popen, summary: Path, scratch: Path, name: str, limit: float) -> dict:
    if proc.wait(limit) != 0:
        raise RuntimeError(f"simulator {name} failed:\n{(scratch / f'{name}.stderr').read_text()}")
    return json.loads(summary.read_text())


def window_stats(rows: list[tuple[float, float]], window: Window) -> dict[str, Any]:
    stats: dict[str, Any] = percentiles(
        [rtt for sent, rtt in rows if window.start <= sent < window.end]
    )
    span = window.end - window.start
    stats["seconds"] = span
    stats["cpu"] = window.cpu_s / span if window.cpu_s is not None else None
    stats["us_per_call"] = (
        window.cpu_s / stats["n"] * 1e6 if window.cpu_s is not None and stats["n"] else None
    )
    return stats


def check_stored(dsn: str, summary: dict) -> tuple[int, int, int]:
    """(sessions expected, sessions stored exactly as reported, duplicated samples)."""
    rows = fetch(
        dsn,
        """
        SELECT s.identity, s.transaction_id, s.meter_start_wh, s.meter_stop_wh,
               (SELECT count(*) FROM meter_samples m WHERE m.session_id = s.session_id)
        FROM sessions s""",
    )
    stored = {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}
    expected = {
        (c["identity"], t["transaction_id"]): (
            Decimal(t["meter_start"]),
            None if t["meter_stop"] is None else Decimal(t["meter_stop"]),
            t["samples"],
        )
        for c in summary["chargers"]
        for t in c["transactions"]
    }
    exact = sum(stored.get(key) == value for key, value in expected.items())
    duplicates = fetch(
        dsn,
        """
        SELECT count(*) FROM (SELECT 1 FROM meter_samples
        GROUP BY session_id, sampled_at, measurand, value HAVING count(*) > 1) d""",
    )[0][0]
    return len(expected), exact, duplicates


@dataclass
class Proxy:
    proc: subprocess.Popen
    port: int
    admin: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    def cpu(self) -> float:
        return procstat.cpu_seconds(self.proc.pid)


def start_proxy(scratch: Path, name: str, csms_port: int, dsn: str | None) -> Proxy:
    """A proxy process in front of the fake CSMS, capturing into `dsn` (None: capture off)."""
    port, admin = free_port(), free_port()
    storage = "[capture]\nenabled = false\n"
    if dsn is not None:
        storage = (
            f'[capture]\nenabled = true\n[database]\ndsn = "{dsn}"\ndata_dir = "{scratch / name}"\n'
        )
    config = scratch / f"{name}.toml"
    config.write_text(
        f'[proxy]\nhost = "127.0.0.1"\nport = {port}\npath_prefix = "/ocpp"\n'
        f'[admin]\nhost = "127.0.0.1"\nport = {admin}\n[log]\nlevel = "warning"\n'
        f"[registry]\nenabled = false\n{storage}"
        f'[default_route]\nupstream = "ws://127.0.0.1:{csms_port}/ocpp"\nauth = "passthrough"\n'
    )
    with (scratch / f"{name}.log").open("wb") as log:
        proxy = spawn(
            [sys.executable, "-m", "proxy", "proxy", "--config", str(config)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        wait_until(lambda: get(admin, "/readyz") is not None, f"proxy {name} /readyz", 60)
    except BaseException:
        stop(proxy)
        raise
    return Proxy(proxy, port, admin)


def timeline(
    rows: list[tuple[float, float]], start: float, end: float, kill_at: float, back_at: float
) -> list[str]:
    """Per-second latency of the capture run, seconds counted from the kill."""
    lines = [
        "",
        "| s from kill |    n | p50 ms  | p99 ms  | max ms  |",
        "|------------:|-----:|--------:|--------:|--------:|",
    ]
    second = math.floor(start - kill_at)
    while kill_at + second < end:
        lo = kill_at + second
        stats = percentiles([rtt for sent, rtt in rows if lo <= sent < lo + 1])
        mark = " kill" if second == 0 else " back" if lo <= back_at < lo + 1 else ""
        lines.append(
            f"| {second:>6}{mark:<5} | {stats['n']:>4} | {stats['p50_ms']:>7.2f} | {stats['p99_ms']:>7.2f} "
            f"| {stats['max_ms']:>7.2f} |"
        )
        second += 1
    return lines


def measure(args: argparse.Namespace) -> str:
    scratch = make_data_dir("ocpp-outage-")
    procs: list[subprocess.Popen] = []
    database: ServerThread | None = None
    steady = args.before + args.outage + args.after
    try:
        database = ServerThread(scratch / "db").open()
        execute(database.server.dsn(), "CREATE DATABASE ere_proxy")
        dsn = database.server.dsn("ere_proxy")

        csms_port = free_port()
        with (scratch / "csms.log").open("wb") as log:
            procs.append(
                spawn(
                    [sys.executable, "-m", "testkit.fake_csms", "--port", str(csms_port)],
                    cwd=REPO,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        wait_until(lambda: accepts(csms_port), "fake CSMS", 15)

        # 1. direct baseline
        print(f"direct: {args.chargers} chargers for {args.warmup + steady:g} s", file=sys.stderr)
        started = time.time()
        proc, summary_path, latency_path = simulate(
            f"ws://127.0.0.1:{csms_port}/ocpp", args, scratch, "direct"
        )
        direct_summary = finish(proc, summary_path, scratch, "direct", args.warmup + steady + 120)
        direct = window_stats(
            read_latencies(latency_path),
            Window("direct", started + args.warmup, started + args.warmup + steady),
        )

        # 2. through the proxy without capture: what forwarding alone costs
        print(
            f"proxy, capture off: {args.chargers} chargers for {args.warmup + steady:g} s",
            file=sys.stderr,
        )
        plain = start_proxy(scratch, "plain", csms_port, None)
        procs.append(plain.proc)
        started = time.time()
        proc, summary_path, latency_path = simulate(plain.url, args, scratch, "plain")
        window = Window("plain", started + args.warmup, started + args.warmup + steady)
        time.sleep(max(0.0, window.start - time.time()))
        cpu = plain.cpu()
        time.sleep(max(0.0, window.end - time.time()))
        window.cpu_s = plain.cpu() - cpu
        plain_summary = finish(proc, summary_path, scratch, "plain", 120)
        forwarding = window_stats(read_latencies(latency_path), window)
        stop(plain.proc)

        # 3. through the proxy with capture, the database crashed in the middle
        proxy = start_proxy(scratch, "capture", csms_port, dsn)
        procs.append(proxy.proc)
        print(
            f"proxy: {args.chargers} chargers; database down after {args.warmup + args.before:g} s "
            f"for {args.outage:g} s",
            file=sys.stderr,
        )
        started = time.time()
        proc, summary_path, latency_path = simulate(proxy.url, args, scratch, "proxy")
        before = Window("before", started + args.warmup, 0.0)
        time.sleep(max(0.0, before.start - time.time()))
        cpu = proxy.cpu()
        time.sleep(max(0.0, before.start + args.before - time.time()))
        kill_at = time.time()
        spent = proxy.cpu() - cpu
        before.end, before.cpu_s = kill_at, spent
        cpu += spent
        crashed, database = database, None  # no second close if the crash fails half-way
        crashed.crash()
        time.sleep(max(0.0, kill_at + args.outage - time.time()))
        database = ServerThread(scratch / "db").open()
        back_at = time.time()
        spent = proxy.cpu() - cpu
        during = Window("during", kill_at, back_at, spent)
        cpu += spent
        after = Window("after", back_at, started + args.warmup + steady)
        time.sleep(max(0.0, after.end - time.time()))
        after.cpu_s = proxy.cpu() - cpu
        proxy_summary = finish(proc, summary_path, scratch, "proxy", 120)
        rows = read_latencies(latency_path)

        caught_up = time.time()
        wait_until(
            lambda: (
                metric(proxy.admin, "ere_proxy_journal_spilling") == 0
                and metric(proxy.admin, "ere_proxy_journal_queued") == 0
            ),
            "the journal to catch up",
            120,
        )
        expected, exact, duplicates = check_stored(dsn, proxy_summary)
        for _ in range(50):  # the last batch may still be in flight
            if exact == expected:
                break
            time.sleep(0.2)
            expected, exact, duplicates = check_stored(dsn, proxy_summary)
        caught_up = time.time() - caught_up
        spilled = metric(proxy.admin, "ere_proxy_journal_spilled_total")
        replayed = metric(proxy.admin, "ere_proxy_journal_replayed_total")
        lost = metric(proxy.admin, "ere_proxy_journal_lost_total")
    finally:
        for p in reversed(procs):
            stop(p)
        if database is not None:
            database.close()
        if args.keep:
            print(f"scratch kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    def line(label: str, s: dict) -> str:
        cpu = f"{s['cpu']:>6.1%}" if s["cpu"] is not None else "     -"
        per = f"{s['us_per_call']:>8.0f}" if s["us_per_call"] is not None else "       -"
        return (
            f"| {label:<32} | {s['seconds']:>5.1f} | {s['n']:>6} | {s['p50_ms']:>7.2f} | {s['p99_ms']:>7.2f} "
            f"| {s['max_ms']:>7.2f} | {cpu} | {per} |"
        )

    total = sum(len(c["transactions"]) for c in proxy_summary["chargers"])
    seconds = timeline(rows, before.start, after.end, kill_at, back_at) if args.timeline else []
    return "\n".join(
        [
            f"{args.chargers} chargers (half OCPP 1.6, half 2.0.1), one energy reading per charger every "
            f"{args.interval:g} s, sessions of {args.samples} readings; database down {during.end - during.start:.1f} s "
            f"(SIGQUIT → restarted and accepting).",
            "",
            "| window                           |     s |  CALLs | p50 ms  | p99 ms  | max ms  | proxy CPU | µs/CALL |",
            "|----------------------------------|------:|-------:|--------:|--------:|--------:|----------:|--------:|",
            line("direct to the fake CSMS", direct),
            line("proxy, capture off", forwarding),
            line("proxy, before the outage", window_stats(rows, before)),
            line("proxy, database down", window_stats(rows, during)),
            line("proxy, after restart (replaying)", window_stats(rows, after)),
            "",
            f"fleet: direct {direct_summary['calls']} CALLs, errors {direct_summary['errors'] or 'none'}; capture off "
            f"{plain_summary['calls']} CALLs, errors {plain_summary['errors'] or 'none'}; "
            f"proxy {proxy_summary['calls']} CALLs, {proxy_summary['resent']} resent, "
            f"{proxy_summary['reconnects']} reconnects, errors {proxy_summary['errors'] or 'none'}",
            f"journal: {spilled:.0f} events spilled, {replayed:.0f} replayed, {lost:.0f} lost; caught up "
            f"{caught_up:.1f} s after the fleet stopped",
            f"database: {exact} of {expected} sessions (of {total} reported) stored with exact meter start, stop and "
            f"sample count; {duplicates} duplicated samples",
            *seconds,
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chargers", type=int, default=200)
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between a charger's readings"
    )
    parser.add_argument("--samples", type=int, default=4, help="periodic readings per session")
    parser.add_argument(
        "--warmup", type=float, default=5.0, help="seconds before the measured windows"
    )
    parser.add_argument(
        "--before", type=float, default=15.0, help="measured seconds before the outage"
    )
    parser.add_argument("--outage", type=float, default=10.0, help="seconds the database is down")
    parser.add_argument(
        "--after", type=float, default=15.0, help="measured seconds after the restart"
    )
    parser.add_argument(
        "--timeline", action="store_true", help="also print the capture run second by second"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch directory (logs, per-CALL CSVs)"
    )


def run(args: argparse.Namespace) -> Report:
    started, load = datetime.now(UTC), loadavg()
    body = measure(args)
    heading = [
        f"## outage, {started:%Y-%m-%d %H:%M} UTC",
        "",
        machine_line(load),
        f"- command (from the repository root): `{command(args)}`",
        "",
    ]
    return Report("\n".join([*heading, body]))
