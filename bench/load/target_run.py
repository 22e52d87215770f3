"""One target measured once under the open-loop load, with fresh processes: a fake CSMS, the target
in front of it, the load generator; over the steady window the target's CPU and RSS (its embedded
PostgreSQL apart, for `ere-proxy-capture`, with the journal's counters and the rows it stored),
the fake CSMS's CPU and the load's figures. Used by `fixed-load` and `max-rate`.

`args` carries the load options (`bench.load.loadgen.add_load_options`) and `ere_workers`,
`ere_extra_toml` and `keep_tmp`.
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import pg, procstat
from bench.harness.processes import REPO
from bench.harness.targets import Running, Unavailable, start_csms, start_target, stop
from bench.load.loadgen import LoadGen, LoadResult, load_config
from testkit.postgres import postmaster_pid


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
