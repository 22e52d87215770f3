"""Mirrors: the primary link's latency with a mirror back-office up, down and slow, in one run.

The same open-loop load (MeterValues CALLs, as `fixed-load`) goes through `ere-proxy` (the
native engine; a mirror without an allow-list, the default, leaves the link to it) four times,
with fresh processes each: without a mirror, with a mirror that answers (a second fake CSMS),
with one that is down (connections refused) and with one that accepts and never reads. The
figures to quote are the ratios of each p50/p99 and CPU per frame to the run without a mirror;
a mirror's trouble should not show in the primary's latency. `--target ere-proxy-python` runs
the same on the Trio pumps (where links with an allow-list are forwarded).

    .venv/bin/python -m bench mirrors [--chargers 200] [--rate 1000] [--duration 15] [--rounds 1]
"""

from __future__ import annotations

import argparse
import math
import queue
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import trio

from bench.harness.report import Report, command, loadavg, machine_line
from bench.harness.targets import start_csms, stop
from bench.load.loadgen import add_load_options
from bench.load.target_run import Run, run_once
from testkit.mirror_peers import RawMirror
from testkit.ports import free_port

TARGETS = ("ere-proxy", "ere-proxy-python")
MODES = ("none", "up", "down", "slow")


@contextmanager
def silent_mirror() -> Iterator[int]:
    """A mirror that completes handshakes and never reads, on its own Trio loop in a thread;
    yields its port and stops it on leaving."""
    started: queue.Queue[tuple[int, trio.lowlevel.TrioToken, trio.CancelScope]] = queue.Queue()

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            port = await RawMirror().start(nursery)
            started.put((port, trio.lowlevel.current_trio_token(), nursery.cancel_scope))

    thread = threading.Thread(target=trio.run, args=(serve,), name="silent-mirror", daemon=True)
    thread.start()
    port, token, scope = started.get(timeout=30)
    try:
        yield port
    finally:
        token.run_sync_soon(scope.cancel)
        thread.join(30)


@contextmanager
def mirror_for(mode: str, lifetime: float) -> Iterator[str]:
    """The `[[default_route.mirrors]]` table of `mode` ("" for none), with its mirror running."""
    if mode == "none":
        yield ""
        return
    if mode == "down":
        yield _table(free_port())  # nothing listens there
        return
    if mode == "slow":
        with silent_mirror() as port:
            yield _table(port)
        return
    scratch = Path(tempfile.mkdtemp(prefix="ocpp-bench-mirror-"))
    csms, port = start_csms(scratch, lifetime)
    try:
        yield _table(port)
    finally:
        stop(csms)
        shutil.rmtree(scratch, ignore_errors=True)


def _table(port: int) -> str:
    return f'[[default_route.mirrors]]\nurl = "ws://127.0.0.1:{port}/ocpp"\n'


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_load_options(parser)
    parser.set_defaults(chargers=200, rate=1000.0, warmup=3.0, duration=15.0)
    parser.add_argument("--rounds", type=int, default=1, help="every mode again, order reversed")
    parser.add_argument("--keep-tmp", action="store_true", help="keep every run's logs")
    parser.add_argument("--target", choices=TARGETS, default=TARGETS[0], help="the proxy")


def _row(mode: str, run: Run, base: Run | None) -> str:
    if run.load is None:
        return f"| {mode} | skipped: {run.skipped} ||||||||"
    load = run.load
    p50, p99 = load.percentile_ms(50), load.percentile_ms(99)

    def ratio(value: float, of: float) -> str:
        return f"{value / of:.2f}×" if of and not math.isnan(of) and not math.isnan(value) else "–"

    base_p50 = base.load.percentile_ms(50) if base and base.load else math.nan
    base_p99 = base.load.percentile_ms(99) if base and base.load else math.nan
    base_us = base.us_per_frame if base else math.nan
    return (
        f"| {mode} | {load.achieved_rate:.0f} | {p50:.2f} | {p99:.2f} | {ratio(p50, base_p50)} | "
        f"{ratio(p99, base_p99)} | {run.us_per_frame:.1f} | {ratio(run.us_per_frame, base_us)} | "
        f"{load.error_count} |"
    )


def run(args: argparse.Namespace) -> Report:
    args.ere_workers, args.ere_extra_toml = 1, ""
    started = datetime.now(UTC)
    load_at_start = loadavg()
    lifetime = args.warmup + args.duration + args.drain + 300
    rows: list[str] = []
    ok = True
    for round_no in range(1, args.rounds + 1):
        order = MODES if round_no % 2 else tuple(reversed(MODES))
        runs: dict[str, Run] = {}
        for mode in order:
            with mirror_for(mode, lifetime) as table:
                args.ere_extra_toml = table
                runs[mode] = run_once(args.target, round_no, args)
            ok = ok and runs[mode].load is not None and runs[mode].load.error_count == 0
            print(f"round {round_no} {mode}: done", file=sys.stderr, flush=True)
        rows += [_row(f"{mode} (round {round_no})", runs[mode], runs.get("none")) for mode in MODES]
    text = "\n".join(
        [
            f"## mirrors, {started:%Y-%m-%d %H:%M} UTC",
            "",
            machine_line(load_at_start),
            f"- command (from the repository root): `{command(args)}`",
            f"- {args.chargers} chargers, {args.rate:g} MeterValues CALLs/s for {args.duration:g} s "
            f"after {args.warmup:g} s, through {args.target} (one worker, capture off); the mirror: none, "
            "a fake CSMS (up), a refused port (down), a server that never reads (slow)",
            "",
            "| mirror | achieved/s | p50 ms | p99 ms | p50 vs none | p99 vs none | proxy µs/frame |"
            " CPU vs none | errors |",
            "|:--|--:|--:|--:|--:|--:|--:|--:|--:|",
            *rows,
        ]
    )
    return Report(text, ok)
