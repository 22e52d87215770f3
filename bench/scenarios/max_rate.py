"""Max rate: 200 chargers, a rising offered rate, until the proxy falls behind (one proxy process).

Each step offers `rate` MeterValues CALLs per second (open loop, like `fixed-load`) for a short
window, to a direct connection and to `ere-proxy` (one worker, capture off: forwarding alone;
`--capture` for capture on), each with fresh processes. The steps rise by `--step` until the
proxy achieves less than 95 % of the offered rate or its p99 exceeds 50 ms. A step where the
direct connection itself falls short, or a generator process is near a full core, says so: then
the load generator (or the fake CSMS), not the proxy, is the limit on this machine.

    .venv/bin/python -m bench max-rate [--start 2000] [--step 2000] [--max 30000] [--no-results]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from bench.harness.report import Report, command, loadavg, machine_line
from bench.load.loadgen import LoadConfig
from bench.load.target_run import run_once

ACHIEVED, P99_MS = 0.95, 50.0


def step_args(args: argparse.Namespace, rate: float) -> argparse.Namespace:
    """What `run_once` takes for one step: `fixed-load`'s defaults but for the rate and window."""
    defaults = LoadConfig(url="")
    return argparse.Namespace(
        chargers=args.chargers,
        rate=rate,
        warmup=3.0,
        duration=args.duration,
        drain=defaults.drain,
        procs=args.gen_procs,
        connect_concurrency=defaults.connect_concurrency,
        ere_workers=1,
        ere_extra_toml="",
        keep_tmp=False,
    )


def measure(args: argparse.Namespace, target: str, rate: float) -> dict:
    measured = run_once(target, 1, step_args(args, rate))
    if measured.load is None:
        raise RuntimeError(f"{target} at {rate:g}/s: {measured.skipped}")
    load = measured.load
    return {
        "achieved": load.achieved_rate,
        "p99": load.percentile_ms(99),
        "p50": load.percentile_ms(50),
        "errors": load.error_count,
        "gen_cpu": max(load.gen_cpu),
        "csms_cpu": measured.csms_cpu_s / measured.window_s,
        "proxy_cpu": (
            measured.proxy_cpu_s / measured.window_s
            if measured.proxy_cpu_s == measured.proxy_cpu_s
            else None
        ),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chargers", type=int, default=200)
    parser.add_argument("--start", type=float, default=2000)
    parser.add_argument("--step", type=float, default=2000)
    parser.add_argument("--max", type=float, default=30000)
    parser.add_argument("--duration", type=float, default=10, help="measured seconds per step")
    parser.add_argument("--gen-procs", type=int, default=2)
    parser.add_argument(
        "--capture", action="store_true", help="ere-proxy-capture instead of ere-proxy"
    )


def run(args: argparse.Namespace) -> Report:
    target = "ere-proxy-capture" if args.capture else "ere-proxy"
    started = datetime.now(UTC)
    load_at_start = loadavg()
    rows, best = [], None
    rate = args.start
    while rate <= args.max:
        direct, proxy = measure(args, "direct", rate), measure(args, target, rate)
        ok = proxy["achieved"] >= ACHIEVED * rate and proxy["p99"] <= P99_MS
        limit = []
        if direct["achieved"] < ACHIEVED * rate or direct["p99"] > P99_MS:
            limit.append("direct falls short too")
        if max(direct["gen_cpu"], proxy["gen_cpu"]) > 0.9:
            limit.append("a generator process near a full core")
        rows.append(
            f"| {rate:.0f} | {direct['achieved']:.0f} | {direct['p99']:.2f} | {proxy['achieved']:.0f} | "
            f"{proxy['p50']:.2f} | {proxy['p99']:.2f} | {proxy['proxy_cpu']:.0%} | {proxy['gen_cpu']:.0%} | "
            f"{proxy['csms_cpu']:.0%} | {proxy['errors']} | {'ok' if ok else 'FALLS BEHIND'} "
            f"{'; '.join(limit)} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
        if not ok:
            break
        best = rate
        rate += args.step
    text = "\n".join(
        [
            f"## max rate, {started:%Y-%m-%d %H:%M} UTC",
            "",
            machine_line(load_at_start),
            f"- command (from the repository root): `{command(args)}`",
            f"- {args.chargers} chargers, MeterValues CALLs (~260 B) at a rising offered rate, {args.duration:g} s per "
            f"step, {args.gen_procs} generator processes; {target} with one worker; a step passes with ≥ 95 % "
            f"achieved and p99 ≤ {P99_MS:g} ms",
            "",
            "| offered/s | direct achieved | direct p99 ms | proxy achieved | p50 ms | p99 ms | proxy CPU | gen CPU (max) |"
            " CSMS CPU | errors | verdict |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:--|",
            *rows,
            "",
            f"- highest passing step: {best:.0f} CALLs/s ({2 * best:.0f} frames/s)"
            if best
            else "- no step passed",
        ]
    )
    return Report(text)
