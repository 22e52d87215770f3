"""`fixed-load`: the same offered load through every target, side by side.

For each round and target, a fresh fake CSMS and a fresh target process are started, the load
generator connects all chargers through the target, and over the steady window (after the
warm-up) we take:

- the target's CPU time (utime+stime of its process tree, /proc/<pid>/stat; for the proxy with
  capture on that includes its store process) divided by the frames it forwarded in both
  directions (a CALL and its CALLRESULT are 2 frames): µs per frame;
- for `ere-proxy-capture`, the CPU of its embedded PostgreSQL (postmaster, backends and reaped
  children; detached from the proxy's tree by pg_ctl) per frame in a column of its own, the
  journal's counters from the admin endpoint, and the rows stored once the journal has caught up;
- latency percentiles (open-loop, from the due time) and the p99 added over `direct` in the
  same round;
- RSS of the target's processes and RSS per connected charger (over the idle process);
- achieved rate, late CALLs, errors, and the CPU of the generator and of the fake CSMS, so a
  saturated helper is visible in the table instead of silently skewing it.

The machine is shared and noisy, so ratios are computed within one invocation, and `--rounds N`
repeats the whole set with the order reversed every other round (medians are reported).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.harness.peers import nginx
from bench.harness.processes import raise_fd_limit
from bench.harness.report import Report, UsageError, command, loadavg, machine_line
from bench.harness.table import fmt, median, ratio, table
from bench.harness.targets import TARGETS
from bench.load.loadgen import add_load_options
from bench.load.target_run import Run, run_once
from testkit import websocket

SATURATED = 0.85  # a helper above this share of a core may be what limits the run
QUICK = {"chargers": 100, "rate": 200.0, "warmup": 2.0, "duration": 5.0}


# ---------------------------------------------------------------- aggregation and the table


@dataclass
class Row:
    """Medians over the rounds of one target."""

    target: str
    runs: list[Run]
    direct_by_round: dict[int, Run]

    def m(self, get) -> float:
        return median(get(r) for r in self.runs if r.load)

    def added_p99(self) -> float:
        base = {n: r.load.percentile_ms(99) for n, r in self.direct_by_round.items() if r.load}
        return self.m(lambda r: r.load.percentile_ms(99) - base.get(r.round, math.nan))


COLUMNS = (
    "target",
    "CALLs/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "p99.9 ms",
    "max ms",
    "+p99 ms",
    "µs/frame",
    "proxy CPU",
    "DB µs/frame",
    "DB CPU",
    "RSS MB",
    "KB/charger",
    "late",
    "errors",
    "gen CPU",
    "CSMS CPU",
)


def _cells(row: Row) -> list[str]:
    pct = lambda p: row.m(lambda r: r.load.percentile_ms(p))
    direct = row.target == "direct"
    return [
        row.target,
        fmt(row.m(lambda r: r.load.achieved_rate), ".0f"),
        fmt(pct(50)),
        fmt(pct(90)),
        fmt(pct(99)),
        fmt(pct(99.9)),
        fmt(pct(100)),
        "(base)" if direct else fmt(row.added_p99(), "+.2f"),
        "–" if direct else fmt(row.m(lambda r: r.us_per_frame), ".1f"),
        "–" if direct else fmt(row.m(lambda r: r.proxy_cpu * 100), ".0f", "%"),
        fmt(row.m(lambda r: r.db_us_per_frame), ".1f"),
        fmt(row.m(lambda r: r.db_cpu * 100), ".0f", "%"),
        "–" if direct else fmt(row.m(lambda r: r.proxy_rss / 2**20), ".1f"),
        "–" if direct else fmt(row.m(lambda r: r.kb_per_charger), ".1f"),
        fmt(row.m(lambda r: r.load.late), ".0f"),
        fmt(row.m(lambda r: r.load.error_count), ".0f"),
        fmt(row.m(lambda r: max(r.load.gen_cpu) * 100), ".0f", "%"),
        fmt(row.m(lambda r: r.csms_cpu * 100), ".0f", "%"),
    ]


def report(runs: list[Run], args: argparse.Namespace) -> str:
    """The markdown report: main table, ratios, notes (and a per-round table for several rounds)."""
    direct = {r.round: r for r in runs if r.target == "direct" and r.load}
    rows = [Row(t, [r for r in runs if r.target == t], direct) for t in args.targets]
    measured = [row for row in rows if any(r.load for r in row.runs)]
    out = (
        [table(COLUMNS, [_cells(row) for row in measured])]
        if measured
        else ["(no target could be measured)"]
    )

    by_name = {row.target: row for row in measured}
    per_frame = {t: row.m(lambda r: r.us_per_frame) for t, row in by_name.items()}
    lines = []
    for ours_name in (
        "ere-proxy",
        "ere-proxy-python",
        "ere-proxy-capture",
        "ere-proxy-capture-python",
    ):
        if ours_name not in per_frame:
            continue
        ours = per_frame[ours_name]
        db = by_name[ours_name].m(lambda r: r.db_us_per_frame) if "capture" in ours_name else 0.0
        total = ours + (0.0 if math.isnan(db) else db)
        for peer in ("naive-trio-ws", "naive-websockets", "nginx"):
            if peer in per_frame:
                lines.append(
                    f"- {ours_name} CPU per frame{' (+ PostgreSQL)' if db else ''} vs {peer}: "
                    f"{ratio(total, per_frame[peer])} ({fmt(total, '.1f')} vs "
                    f"{fmt(per_frame[peer], '.1f')} µs)"
                )
    for off_name, on_name in (
        ("ere-proxy", "ere-proxy-capture"),
        ("ere-proxy-python", "ere-proxy-capture-python"),
    ):
        if off_name in per_frame and on_name in per_frame:
            off, on = per_frame[off_name], per_frame[on_name]
            db = by_name[on_name].m(lambda r: r.db_us_per_frame)
            lines.append(
                f"- {on_name} on/off, proxy CPU per frame: {ratio(on, off)} ({fmt(on, '.1f')} vs "
                f"{fmt(off, '.1f')} µs); proxy + PostgreSQL: {ratio(on + db, off)} "
                f"({fmt(on + db, '.1f')} vs {fmt(off, '.1f')} µs)"
            )
    added = [
        f"{t} {fmt(row.added_p99(), '+.2f')} ms" for t, row in by_name.items() if t != "direct"
    ]
    if direct and added:
        lines.append("- p99 added over direct: " + ", ".join(added))
    if lines:
        out += ["", "Ratios (medians over rounds):", *lines]

    notes = []
    offered = args.rate
    for r in runs:
        tag = f"{r.target} (round {r.round})"
        if r.skipped:
            notes.append(f"- {tag} skipped: {r.skipped}")
            continue
        if r.load is None:
            continue
        if max(r.load.gen_cpu) >= SATURATED:
            notes.append(
                f"- {tag}: load generator near saturation ({max(r.load.gen_cpu):.0%} of a core); "
                "use more --gen-procs"
            )
        if r.csms_cpu >= SATURATED:
            notes.append(f"- {tag}: fake CSMS near saturation ({r.csms_cpu:.0%} of a core)")
        if r.load.achieved_rate < 0.98 * offered:
            notes.append(
                f"- {tag}: overloaded, achieved {r.load.achieved_rate:.0f}/s of {offered:g}/s offered "
                f"({r.load.late} late, {r.load.unsent} never sent); its latencies describe "
                "only the answered CALLs"
            )
        if r.load.errors:
            detail = ", ".join(f"{k}: {v}" for k, v in sorted(r.load.errors.items()))
            notes.append(f"- {tag} errors: {detail}")
        if r.journal or r.rows:
            j = r.journal
            window = (
                f"journal over the window: {j.get('submitted', 0):.0f} events submitted, "
                f"{j.get('stored', 0):.0f} stored directly, {j.get('spilled', 0):.0f} spilled, "
                f"{j.get('replayed', 0):.0f} replayed, {j.get('lost', 0):.0f} lost, "
                f"{j.get('database_errors', 0):.0f} database errors, "
                f"{j.get('queued_at_end', math.nan):.0f} batches queued at its end"
            )
            after = (
                "; after the load: caught up in " + fmt(r.catch_up_s, ".1f") + " s, "
                f"{j.get('total_submitted', math.nan):.0f} events submitted in all, rows stored: "
                + ", ".join(f"{t} {n}" for t, n in r.rows.items())
            )
            store = r.store_cpu_s * 1e6 / r.load.frames if r.load and r.load.frames else math.nan
            notes.append(
                f"- {tag}: {window}{after}; PostgreSQL RSS {r.db_rss / 2**20:.0f} MB; "
                f"of the µs/frame, the worker's store process {fmt(store, '.1f')}"
            )
        notes += [f"- {tag}: {n}" for n in r.notes]
    if notes:
        out += ["", "Notes:", *notes]

    if args.rounds > 1:
        per_round = [
            [
                r.target,
                str(r.round),
                fmt(r.us_per_frame, ".1f"),
                fmt(r.db_us_per_frame, ".1f"),
                fmt(r.load.percentile_ms(99)),
                fmt(r.load.achieved_rate, ".0f"),
                str(r.load.error_count),
            ]
            for r in runs
            if r.load is not None
        ]
        out += [
            "",
            "Per round:",
            "",
            table(
                ("target", "round", "µs/frame", "DB µs/frame", "p99 ms", "CALLs/s", "errors"),
                per_round,
            ),
        ]
    return "\n".join(out)


def header(args: argparse.Namespace, started: datetime) -> str:
    """Date, machine, versions, exact command and load of this invocation."""
    nginx_binary = nginx.find_nginx()
    order = " → ".join(args.targets)
    return "\n".join(
        [
            f"## fixed-load, {started:%Y-%m-%d %H:%M} UTC",
            "",
            machine_line(args.loadavg_at_start)
            + " (1/5/15 min; other work on the machine skews results)",
            f"- codec in generator and fake CSMS: {websocket.CODEC}; nginx: "
            + (nginx.version(nginx_binary) if nginx_binary else "not installed"),
            f"- command (from the repository root): `{command(args)}`",
            f"- load: {args.chargers} chargers, {args.rate:g} CALLs/s offered (OCPP 1.6 MeterValues, ~260 B), "
            f"{args.warmup:g} s warm-up + {args.duration:g} s steady window, {args.procs} generator "
            f"process(es), {args.rounds} round(s), order {order} (reversed every other round)",
            "- ere-proxy runs with `[capture] enabled = false` (pure forwarding); ere-proxy-capture with capture on "
            "and a fresh embedded PostgreSQL (default settings: fsync on) in a scratch data_dir; its µs/frame "
            "counts the worker and its store process",
            '- ere-proxy and ere-proxy-capture forward with the native engine (`[proxy] engine = "native"`), '
            "the -python targets with the Trio pumps (the reference path)",
        ]
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"comma-separated subset/order of: {', '.join(TARGETS)}",
    )
    add_load_options(parser)
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat all targets, alternating the order"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small smoke run: "
        + ", ".join(f"--{k} {v:g}" for k, v in QUICK.items())
        + " (explicit options win)",
    )
    parser.add_argument("--ere-workers", type=int, default=1, help="worker processes of ere-proxy")
    parser.add_argument(
        "--ere-extra-config", type=Path, help="TOML appended to the ere-proxy config"
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep scratch dirs (configs, logs)")


def run(args: argparse.Namespace) -> Report:
    """Every target in every round; the report fails when no target could be measured."""
    if args.quick:
        for name, value in QUICK.items():
            if not any(a == f"--{name}" or a.startswith(f"--{name}=") for a in args.argv):
                setattr(args, name, value)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        raise UsageError(
            f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}"
        )
    args.ere_extra_toml = args.ere_extra_config.read_text() if args.ere_extra_config else ""
    raise_fd_limit()
    started = datetime.now(UTC)
    args.loadavg_at_start = loadavg()
    runs: list[Run] = []
    for round_no in range(1, args.rounds + 1):
        order = args.targets if round_no % 2 else args.targets[::-1]
        for target in order:
            print(
                f"[round {round_no}/{args.rounds}] {target}: {args.chargers} chargers at {args.rate:g}/s …",
                file=sys.stderr,
                flush=True,
            )
            measured = run_once(target, round_no, args)
            runs.append(measured)
            if measured.load:
                print(
                    f"    {measured.load.achieved_rate:.0f}/s, p99 {measured.load.percentile_ms(99):.2f} ms, "
                    f"{fmt(measured.us_per_frame, '.1f')} µs/frame, errors {measured.load.error_count}",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                print(f"    skipped: {measured.skipped}", file=sys.stderr, flush=True)
            time.sleep(1)  # let sockets of the previous run settle
    text = header(args, started) + "\n\n" + report(runs, args) + "\n"
    return Report(text, ok=any(r.load for r in runs))
