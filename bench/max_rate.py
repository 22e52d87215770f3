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
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.results import loadavg, machine_line, publish
from bench.scenarios import RESULTS, add_fixed_load_parser, finish_args, run_once

ACHIEVED, P99_MS = 0.95, 50.0


def fixed_load_args(args: argparse.Namespace, target: str, rate: float) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_fixed_load_parser(parser.add_subparsers())
    argv = [
        "fixed-load",
        "--targets",
        target,
        "--chargers",
        str(args.chargers),
        "--rate",
        str(rate),
        "--warmup",
        "3",
        "--duration",
        str(args.duration),
        "--gen-procs",
        str(args.gen_procs),
    ]
    step = parser.parse_args(argv)
    finish_args(step, argv)
    return step


def measure(args: argparse.Namespace, target: str, rate: float) -> dict:
    run = run_once(target, 1, fixed_load_args(args, target, rate))
    if run.load is None:
        raise RuntimeError(f"{target} at {rate:g}/s: {run.skipped}")
    load = run.load
    return {
        "achieved": load.achieved_rate,
        "p99": load.percentile_ms(99),
        "p50": load.percentile_ms(50),
        "errors": load.error_count,
        "gen_cpu": max(load.gen_cpu),
        "csms_cpu": run.csms_cpu_s / run.window_s,
        "proxy_cpu": run.proxy_cpu_s / run.window_s if run.proxy_cpu_s == run.proxy_cpu_s else None,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="python -m bench max-rate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--chargers", type=int, default=200)
    parser.add_argument("--start", type=float, default=2000)
    parser.add_argument("--step", type=float, default=2000)
    parser.add_argument("--max", type=float, default=30000)
    parser.add_argument("--duration", type=float, default=10, help="measured seconds per step")
    parser.add_argument("--gen-procs", type=int, default=2)
    parser.add_argument(
        "--capture", action="store_true", help="ere-proxy-capture instead of ere-proxy"
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args(argv)
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
            f"- command (from the repository root): `.venv/bin/python -m bench max-rate {shlex.join(argv)}`",
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
    publish(text, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
