"""Benchmark scenarios. `fixed-load`: the same offered load through every target, side by side.

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
import re
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import procstat
from bench.harness import pg
from bench.loadgen import LoadGen, LoadResult, add_load_options, load_config
from bench.peers import nginx
from bench.targets import REPO, TARGETS, Running, Unavailable, start_csms, start_target, stop
from testkit import websocket
from testkit.postgres import postmaster_pid

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SATURATED = 0.85  # a helper above this share of a core may be what limits the run
QUICK = {"chargers": 100, "rate": 200.0, "warmup": 2.0, "duration": 5.0}


@dataclass
class Run:
    """One target measured once."""

    target: str
    round: int
    load: LoadResult | None = None
    skipped: str | None = None
    window_s: float = math.nan
    proxy_cpu_s: float = math.nan
    proxy_rss: int = 0
    idle_rss: int = 0
    csms_cpu_s: float = math.nan
    db_cpu_s: float = math.nan  # ere-proxy-capture: its embedded PostgreSQL over the window
    store_cpu_s: float = math.nan  # ere-proxy-capture: its store process (counted in proxy_cpu_s)
    db_rss: int = 0
    journal: dict[str, float] = field(default_factory=dict)  # counter deltas over the window
    rows: dict[str, int] = field(default_factory=dict)  # rows stored after the run
    catch_up_s: float = math.nan  # after the load: until the journal had stored everything
    notes: list[str] = field(default_factory=list)

    @property
    def us_per_frame(self) -> float:
        frames = self.load.frames if self.load else 0
        return self.proxy_cpu_s * 1e6 / frames if frames else math.nan

    @property
    def db_us_per_frame(self) -> float:
        frames = self.load.frames if self.load else 0
        return self.db_cpu_s * 1e6 / frames if frames else math.nan

    @property
    def db_cpu(self) -> float:
        return self.db_cpu_s / self.window_s

    @property
    def proxy_cpu(self) -> float:
        return self.proxy_cpu_s / self.window_s

    @property
    def csms_cpu(self) -> float:
        return self.csms_cpu_s / self.window_s

    @property
    def kb_per_charger(self) -> float:
        if not self.load or not self.load.connected or not self.proxy_rss:
            return math.nan
        return (self.proxy_rss - self.idle_rss) / 1024 / self.load.connected


def _sleep_until(epoch: float) -> None:
    time.sleep(max(0.0, epoch - time.time()))


_METRIC = re.compile(r"^ere_proxy_journal_(\w+?)(?:_total)? ([0-9.e+-]+)$", re.M)


def journal_metrics(admin_port: int) -> dict[str, float]:
    """The journal's counters and gauges from the proxy's /metrics ({} if unavailable)."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{admin_port}/metrics", timeout=5
        ) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {name: float(value) for name, value in _METRIC.findall(text)}


def _caught_up(m: dict[str, float]) -> bool:
    return (
        bool(m)
        and not m.get("spilling")
        and not m.get("queued")
        and (m.get("stored", 0) + m.get("replayed", 0) + m.get("lost", 0) >= m.get("submitted", 0))
    )


def _capture_after_load(run: Run, running: Running, timeout: float = 90.0) -> None:
    """Wait (bounded) until the journal has stored what it was given, then count the rows."""
    assert running.admin_port is not None and running.data_dir is not None
    t0 = time.monotonic()
    while (
        not _caught_up(m := journal_metrics(running.admin_port)) and time.monotonic() - t0 < timeout
    ):
        time.sleep(0.2)
    if _caught_up(m):
        run.catch_up_s = time.monotonic() - t0
    else:
        run.notes.append(f"journal had not caught up {timeout:g} s after the load: {m}")
    run.journal["total_submitted"] = m.get("submitted", math.nan)
    try:
        run.rows = pg.count_rows(running.data_dir)
    except Exception as exc:
        run.notes.append(f"could not count rows: {exc!r}")


def _children_cpu(pid: int, db_pids: set[int]) -> float:
    """CPU seconds of `pid`'s descendants (a proxy worker's store process), PostgreSQL aside."""
    return procstat.cpu_seconds(pid, exclude=db_pids) - procstat.cpu_seconds(
        pid, exclude=set(procstat.tree(pid)[1:])
    )


def run_once(target: str, round_no: int, args: argparse.Namespace) -> Run:
    """Measure `target` once with fresh processes; never raises for an unavailable target."""
    run = Run(target, round_no)
    scratch = Path(tempfile.mkdtemp(prefix=f"ocpp-bench-{target}-"))
    lifetime = args.warmup + args.duration + args.drain + 300
    csms: Running | None = None
    running: Running | None = None
    csms_pid = 0
    gen: LoadGen | None = None
    try:
        csms, csms_port = start_csms(scratch, lifetime)
        csms_pid = csms.pid or 0
        running = start_target(
            target,
            scratch,
            csms_port,
            chargers=args.chargers,
            lifetime=lifetime,
            ere_workers=args.ere_workers,
            ere_extra_toml=args.ere_extra_toml,
        )
        pid = running.pid or 0  # 0: no process of its own (direct)
        data_dir = running.data_dir  # ere-proxy-capture only
        db_pids = pg.postgres_pids(data_dir) if data_dir else set()
        run.idle_rss = procstat.rss_bytes(pid, db_pids) if pid else 0
        gen = LoadGen(load_config(args, running.url), cwd=str(REPO))
        connected, failed = gen.wait_ready(timeout=120)
        if connected == 0:
            raise Unavailable(f"{target}: none of {failed} chargers could connect")
        begin = time.time() + 0.5
        gen.start(begin)
        _sleep_until(begin + args.warmup)
        if data_dir:
            db_pids = pg.postgres_pids(data_dir)
            j0, d0 = journal_metrics(running.admin_port or 0), pg.cpu_seconds(data_dir)
            s0 = _children_cpu(pid, db_pids)
        t0, p0, c0 = (
            time.monotonic(),
            procstat.cpu_seconds(pid, exclude=db_pids) if pid else 0.0,
            procstat.cpu_seconds(csms_pid),
        )
        _sleep_until(begin + args.warmup + args.duration)
        t1, p1, c1 = (
            time.monotonic(),
            procstat.cpu_seconds(pid, exclude=db_pids) if pid else 0.0,
            procstat.cpu_seconds(csms_pid),
        )
        if data_dir:
            d1, j1 = pg.cpu_seconds(data_dir), journal_metrics(running.admin_port or 0)
            run.db_cpu_s, run.store_cpu_s = d1 - d0, _children_cpu(pid, db_pids) - s0
            run.db_rss = (
                procstat.rss_bytes(postmaster_pid(data_dir) or 0) if postmaster_pid(data_dir) else 0
            )
            run.journal = {
                k: j1[k] - j0.get(k, 0)
                for k in ("submitted", "stored", "spilled", "replayed", "lost", "database_errors")
                if k in j1
            }
            run.journal["queued_at_end"] = j1.get("queued", math.nan)
        run.proxy_rss = procstat.rss_bytes(pid, db_pids) if pid else 0
        run.window_s, run.csms_cpu_s = t1 - t0, c1 - c0
        if pid:
            run.proxy_cpu_s = p1 - p0
        run.load = gen.collect()
        if data_dir:
            _capture_after_load(run, running)
    except (Unavailable, TimeoutError, RuntimeError) as exc:
        run.skipped = str(exc)
    finally:
        if gen is not None:
            gen.close()
        for process in (running, csms):
            if process is not None:
                stop(process)
        if run.skipped or args.keep_tmp:
            run.notes.append(f"logs kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return run


# ---------------------------------------------------------------- aggregation and the table


def _median(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def _fmt(value: float, spec: str = ".2f", suffix: str = "") -> str:
    return "–" if value is None or math.isnan(value) else f"{value:{spec}}{suffix}"


@dataclass
class Row:
    """Medians over the rounds of one target."""

    target: str
    runs: list[Run]
    direct_by_round: dict[int, Run]

    def m(self, get) -> float:
        return _median(get(r) for r in self.runs if r.load)

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
        _fmt(row.m(lambda r: r.load.achieved_rate), ".0f"),
        _fmt(pct(50)),
        _fmt(pct(90)),
        _fmt(pct(99)),
        _fmt(pct(99.9)),
        _fmt(pct(100)),
        "(base)" if direct else _fmt(row.added_p99(), "+.2f"),
        "–" if direct else _fmt(row.m(lambda r: r.us_per_frame), ".1f"),
        "–" if direct else _fmt(row.m(lambda r: r.proxy_cpu * 100), ".0f", "%"),
        _fmt(row.m(lambda r: r.db_us_per_frame), ".1f"),
        _fmt(row.m(lambda r: r.db_cpu * 100), ".0f", "%"),
        "–" if direct else _fmt(row.m(lambda r: r.proxy_rss / 2**20), ".1f"),
        "–" if direct else _fmt(row.m(lambda r: r.kb_per_charger), ".1f"),
        _fmt(row.m(lambda r: r.load.late), ".0f"),
        _fmt(row.m(lambda r: r.load.error_count), ".0f"),
        _fmt(row.m(lambda r: max(r.load.gen_cpu) * 100), ".0f", "%"),
        _fmt(row.m(lambda r: r.csms_cpu * 100), ".0f", "%"),
    ]


def _table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: (
        "| "
        + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        + " |"
    )
    rule = (
        "|"
        + "|".join("-" * (w + 1) + ":" if i else ":" + "-" * (w + 1) for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _ratio(a: float, b: float) -> str:
    return "–" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}×"


def report(runs: list[Run], args: argparse.Namespace) -> str:
    """The markdown report: main table, ratios, notes (and a per-round table for several rounds)."""
    direct = {r.round: r for r in runs if r.target == "direct" and r.load}
    rows = [Row(t, [r for r in runs if r.target == t], direct) for t in args.targets]
    measured = [row for row in rows if any(r.load for r in row.runs)]
    out = (
        [_table(COLUMNS, [_cells(row) for row in measured])]
        if measured
        else ["(no target could be measured)"]
    )

    by_name = {row.target: row for row in measured}
    per_frame = {t: row.m(lambda r: r.us_per_frame) for t, row in by_name.items()}
    lines = []
    if "ere-proxy" in per_frame:
        ours = per_frame["ere-proxy"]
        for peer in ("naive-trio-ws", "naive-websockets", "nginx"):
            if peer in per_frame:
                lines.append(
                    f"- ere-proxy CPU per frame vs {peer}: {_ratio(ours, per_frame[peer])} "
                    f"({_fmt(ours, '.1f')} vs {_fmt(per_frame[peer], '.1f')} µs)"
                )
    if "ere-proxy" in per_frame and "ere-proxy-capture" in per_frame:
        off, on = per_frame["ere-proxy"], per_frame["ere-proxy-capture"]
        db = by_name["ere-proxy-capture"].m(lambda r: r.db_us_per_frame)
        lines.append(
            f"- capture on/off, proxy CPU per frame: {_ratio(on, off)} ({_fmt(on, '.1f')} vs "
            f"{_fmt(off, '.1f')} µs); proxy + PostgreSQL: {_ratio(on + db, off)} "
            f"({_fmt(on + db, '.1f')} vs {_fmt(off, '.1f')} µs)"
        )
    added = [
        f"{t} {_fmt(row.added_p99(), '+.2f')} ms" for t, row in by_name.items() if t != "direct"
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
                "; after the load: caught up in " + _fmt(r.catch_up_s, ".1f") + " s, "
                f"{j.get('total_submitted', math.nan):.0f} events submitted in all, rows stored: "
                + ", ".join(f"{t} {n}" for t, n in r.rows.items())
            )
            store = r.store_cpu_s * 1e6 / r.load.frames if r.load and r.load.frames else math.nan
            notes.append(
                f"- {tag}: {window}{after}; PostgreSQL RSS {r.db_rss / 2**20:.0f} MB; "
                f"of the µs/frame, the worker's store process {_fmt(store, '.1f')}"
            )
        notes += [f"- {tag}: {n}" for n in r.notes]
    if notes:
        out += ["", "Notes:", *notes]

    if args.rounds > 1:
        per_round = [
            [
                r.target,
                str(r.round),
                _fmt(r.us_per_frame, ".1f"),
                _fmt(r.db_us_per_frame, ".1f"),
                _fmt(r.load.percentile_ms(99)),
                _fmt(r.load.achieved_rate, ".0f"),
                str(r.load.error_count),
            ]
            for r in runs
            if r.load is not None
        ]
        out += [
            "",
            "Per round:",
            "",
            _table(
                ("target", "round", "µs/frame", "DB µs/frame", "p99 ms", "CALLs/s", "errors"),
                per_round,
            ),
        ]
    return "\n".join(out)


def header(args: argparse.Namespace, argv: list[str], started: datetime) -> str:
    """Date, machine, versions, exact command and load of this invocation."""
    info = procstat.machine()
    python = Path(sys.executable)
    try:
        python = python.relative_to(REPO)
    except ValueError:
        pass
    nginx_binary = nginx.find_nginx()
    order = " → ".join(args.targets)
    return "\n".join(
        [
            f"## fixed-load, {started:%Y-%m-%d %H:%M} UTC",
            "",
            f"- machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, Python {info['python']}; "
            f"load average at start {args.loadavg_at_start} (1/5/15 min; other work on the machine skews results)",
            f"- codec in generator and fake CSMS: {websocket.CODEC}; nginx: "
            + (nginx.version(nginx_binary) if nginx_binary else "not installed"),
            f"- command (from the repository root): `{python} -m bench {shlex.join(argv)}`",
            f"- load: {args.chargers} chargers, {args.rate:g} CALLs/s offered (OCPP 1.6 MeterValues, ~260 B), "
            f"{args.warmup:g} s warm-up + {args.duration:g} s steady window, {args.procs} generator "
            f"process(es), {args.rounds} round(s), order {order} (reversed every other round)",
            "- ere-proxy runs with `[capture] enabled = false` (pure forwarding); ere-proxy-capture with capture on "
            "and a fresh embedded PostgreSQL (default settings: fsync on) in a scratch data_dir; its µs/frame "
            "counts the worker and its store process",
        ]
    )


def fixed_load(args: argparse.Namespace, argv: list[str]) -> int:
    """Run the scenario, print the report and append it to the results file."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by every process we start
    started = datetime.now(UTC)
    args.loadavg_at_start = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    runs: list[Run] = []
    for round_no in range(1, args.rounds + 1):
        order = args.targets if round_no % 2 else args.targets[::-1]
        for target in order:
            print(
                f"[round {round_no}/{args.rounds}] {target}: {args.chargers} chargers at {args.rate:g}/s …",
                file=sys.stderr,
                flush=True,
            )
            run = run_once(target, round_no, args)
            runs.append(run)
            if run.load:
                print(
                    f"    {run.load.achieved_rate:.0f}/s, p99 {run.load.percentile_ms(99):.2f} ms, "
                    f"{_fmt(run.us_per_frame, '.1f')} µs/frame, errors {run.load.error_count}",
                    file=sys.stderr,
                    flush=True,
                )
            else:
                print(f"    skipped: {run.skipped}", file=sys.stderr, flush=True)
            time.sleep(1)  # let sockets of the previous run settle
    text = header(args, argv, started) + "\n\n" + report(runs, args) + "\n"
    print("\n" + text)
    if not args.no_results:
        if not args.results.exists():
            args.results.write_text(
                "# Benchmark results\n\nAppended by `python -m bench`, newest last; "
                "README.md explains how to read the tables.\n"
            )
        with args.results.open("a") as out:
            out.write("\n" + text)
        print(f"appended to {args.results}", file=sys.stderr)
    return 0 if any(r.load for r in runs) else 1


def add_fixed_load_parser(sub) -> None:
    parser = sub.add_parser(
        "fixed-load",
        help="the same offered load through every target, side by side",
        description=__doc__.split("\n")[0],
    )
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
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="markdown file the report is appended to"
    )
    parser.add_argument("--no-results", action="store_true", help="print only, do not append")
    parser.add_argument("--keep-tmp", action="store_true", help="keep scratch dirs (configs, logs)")
    parser.set_defaults(func=fixed_load)


def finish_args(args: argparse.Namespace, argv: list[str]) -> None:
    """Apply --quick (where not given explicitly) and parse --targets."""
    if args.quick:
        for name, value in QUICK.items():
            if not any(a == f"--{name}" or a.startswith(f"--{name}=") for a in argv):
                setattr(args, name, value)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        raise SystemExit(
            f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}"
        )
    args.ere_extra_toml = args.ere_extra_config.read_text() if args.ere_extra_config else ""
