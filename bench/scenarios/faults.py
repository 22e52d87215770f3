"""Fault figures for the trust boundary and fault containment: four faults against the real proxy.

Every part starts its own proxy process (`python -m proxy proxy --config ...`, one worker, session
capture and the outbox on) with its own PostgreSQL (`testkit.postgres.ServerThread`: the embedded server,
default settings, fsync on), the fake CSMS (`testkit.fake_csms.FakeCsms`, in this process, recording
every CALL it answers) as the back-office, and a healthy fleet (`bench.load.simulator`: half OCPP 1.6,
half 2.0.1, sessions back to back, an energy reading every `--interval` s, HTTP Basic credentials,
now and then a dropped network and a reconnect). Once the fleet has booted, `--before` seconds of
normal operation, then the fault for `--fault` seconds, then `--after` seconds; the fleet's CALL
round trips (its `--latency-file`) are cut by send time into those three windows. The fleet then
finishes its sessions (SIGUSR1) and what reached the back-office is checked against what the
chargers were answered (`testkit.ledger.exactly_once`), and what the database holds against what the
chargers reported (every session with its exact meter start, stop and sample count).

Parts (`--part`, default all, in this order):

1. `outage`: the fake CSMS stops (close 1001, new connections refused). While it is down,
   `--attackers` clients (`bench.load.fault_clients --mode spoof`, from `--attack-sources`) upgrade
   with real chargers' identities, with no credentials, a wrong password or another identity's
   name, again and again; an admitted one would send a marked BootNotification, StartTransaction
   and StopTransaction. The CSMS comes back once the attackers have stopped. Reported: attempts,
   admitted (must be 0), live links replaced (`ere_proxy_link_ends_total{reason="replaced"}`, must
   stay 0), refusals by status and credential, the fleet's own reconnects admitted offline, the
   outbox drain, the ledger (sessions lost and doubled: 0), and that no marked message reached the
   CSMS or the database.
2. `db-stall`: the database is stopped half-open: SIGSTOP to the postmaster and every process under
   it (backends, checkpointer, ...), connections stay open and nothing answers; SIGCONT after
   `--fault` seconds. The upstream stays up: forwarding must go on. Reported: the journal's
   spill/replay figures (`ere_proxy_journal_*`), how long it took to catch up, the database check.
3. `disk-full`: the proxy's data_dir (its spill log, `<data_dir>/spill/worker-0`) is a tmpfs of
   `--tmpfs-mb`; at the fault a filler file takes every free byte (ENOSPC) and the database is
   stopped as in `db-stall`, so the journal must spill and cannot; after `--fault` seconds the
   filler is deleted and the database resumed. Reported: `capture_failures{stage="spill_write"}`,
   `journal_spill_failing`, events lost (`journal_lost`; beyond `[capture] spill_buffer_bytes`,
   `--spill-buffer-bytes`, events are lost and counted), the database check.
4. `password-flood`: a `managed` default route (`--password-hash scrypt`: the hash of a password
   a person chose, from `proxy.routing.auth.hash_password`; `generated`: the fast hash the
   registry stores for the passwords it generates, `hash_generated_password`), the fleet with the
   right password. During the fault `--flood-clients` clients
   (`bench.load.fault_clients --mode flood`, one source address each by default) send wrong passwords
   again and again; meanwhile `--managed` chargers with the right password connect, cold (first
   connection to this proxy) and then warm (they were connected a moment ago), each fleet starting
   all at once; reported as the time from their first handshake try to all connected, and their
   own CALL latency. `--flood-targets others` floods made-up identities; `own` floods the
   identities of the connecting chargers themselves (a fresh set for the cold case). Reported:
   refusals by status (401/429/503), hashes computed (`password_checks_total{hashed="yes"}`).

The report (date, machine, load at start and end, the exact command, one section per part with
the latency table and the part's counts, and a list of every check that failed) is printed and
appended to bench/RESULTS.md. Exit status 1 if a check failed.

    .venv/bin/python -m bench faults [--part outage,db-stall,disk-full,password-flood] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import trio

from bench.harness import pg, procstat
from bench.harness.admin import get
from bench.harness.database import execute, fetch
from bench.harness.percentiles import percentiles
from bench.harness.processes import REPO, raise_fd_limit, spawn
from bench.harness.report import Report, UsageError, command, loadavg, machine_line
from bench.load.fault_clients import MARKER, MARKER_METER
from bench.load.simulator import read_latencies
from testkit import websocket
from testkit.fake_csms import FakeCsms
from testkit.ledger import TRANSACTION_ACTIONS, counts, exactly_once
from testkit.ports import free_port
from testkit.postgres import ServerThread, make_data_dir
from testkit.waiting import until

PARTS = ("outage", "db-stall", "disk-full", "password-flood")
# The fleet's HTTP Basic password (managed route: the right one); 32 characters of 62, like the
# passwords the registry generates, so that `--password-hash generated` may hash it as one.
PASSWORD = "Bench0Charger0Password0Of32Chars"
SAMPLE_EVERY = 1.0


def _say(text: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- metrics -------------------------------------------------------------------------------------

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


class Scrape:
    """One /metrics page: samples as (name, labels, value)."""

    def __init__(self, text: str | None, at: float) -> None:
        self.at = at
        self.ok = text is not None
        self.samples: list[tuple[str, dict[str, str], float]] = []
        for line in (text or "").splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            name, _, labels = key.partition("{")
            self.samples.append((name, dict(_LABEL.findall(labels)), float(value)))

    def get(self, name: str, **labels: str) -> float:
        """Sum of the samples called `name` whose labels include `labels` (NaN if the page is missing)."""
        if not self.ok:
            return math.nan
        return sum(
            v
            for n, l, v in self.samples
            if n == name and all(l.get(k) == x for k, x in labels.items())
        )

    def by(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for n, l, v in self.samples:
            if n == name and label in l:
                out[l[label]] = out.get(l[label], 0.0) + v
        return out


def delta(after: Scrape, before: Scrape, name: str, label: str) -> dict[str, int]:
    """Per label value, how much a counter grew between two scrapes (zeros left out)."""
    old = before.by(name, label)
    grown = {k: round(v - old.get(k, 0.0)) for k, v in after.by(name, label).items()}
    return {k: v for k, v in sorted(grown.items()) if v}


# -- the processes -------------------------------------------------------------------------------


class Proxy:
    """The proxy under test: one worker, its admin endpoint, its log."""

    def __init__(
        self,
        scratch: Path,
        csms_port: int,
        dsn: str,
        data_dir: Path,
        *,
        managed_hash: str | None = None,
        capture_extra: str = "",
    ) -> None:
        self.port, self.admin = free_port(), free_port()
        route = 'auth = "passthrough"\n'
        if managed_hash is not None:
            route = f'auth = "managed"\npassword_hash = "{managed_hash}"\n'
        self.config = scratch / "proxy.toml"
        self.config.write_text(
            f'[proxy]\nhost = "127.0.0.1"\nport = {self.port}\npath_prefix = "/ocpp"\nworkers = 1\n'
            f'[admin]\nhost = "127.0.0.1"\nport = {self.admin}\n[log]\nlevel = "warning"\n'
            f"[registry]\nenabled = false\n[capture]\nenabled = true\n{capture_extra}[outbox]\nenabled = true\n"
            f'[database]\ndsn = "{dsn}"\ndata_dir = "{data_dir}"\n'
            f'[default_route]\nupstream = "ws://127.0.0.1:{csms_port}/ocpp"\n{route}'
        )
        self.log = scratch / "proxy.log"
        with self.log.open("wb") as log:
            self.proc = spawn(
                [sys.executable, "-m", "proxy", "proxy", "--config", str(self.config)],
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ocpp"

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"proxy exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
            )
        return get(self.admin, "/readyz") is not None

    def scrape(self) -> Scrape:
        return Scrape(get(self.admin, "/metrics"), time.time())

    def cpu(self) -> float:
        """The worker and its children, those it reaped included (a store process killed after the
        journal's store timeout is replaced by a new one)."""
        return procstat.cpu_seconds(self.proc.pid, reaped=True)

    def rss(self) -> int:
        return procstat.rss_bytes(self.proc.pid)

    def niced_threads_cpu(self) -> float:
        """CPU seconds of the worker's threads running at a lower priority (nice > 0): its password
        hashing threads (`proxy.routing.password_gate.HashingThreads`, nice 10), whether or not anyone still
        waits for the hash they compute."""
        total = 0
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            try:
                text = (task / "stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2 :].split()
            if int(fields[16]) > 0:  # nice
                total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / procstat.CLOCK_TICKS

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


@dataclass
class Fleet:
    """A simulator process and its files."""

    name: str
    prefix: str
    chargers: int
    proc: subprocess.Popen
    scratch: Path

    def path(self, kind: str) -> Path:
        return self.scratch / f"{self.name}.{kind}"

    @property
    def identities(self) -> list[str]:
        return [f"{self.prefix}{i:05d}" for i in range(self.chargers)]

    def booted(self) -> bool:
        if self.proc.poll() is not None and self.proc.returncode != 0:
            raise RuntimeError(
                f"simulator {self.name} failed:\n{self.path('stderr').read_text()[-3000:]}"
            )
        return '"event": "booted"' in self.path("stderr").read_text()

    def summary(self) -> dict[str, Any]:
        return json.loads(self.path("json").read_text())

    def latencies(self) -> list[tuple[float, float]]:
        return read_latencies(self.path("csv"))

    def sent(self) -> dict[str, Any]:
        return json.loads(self.path("sent").read_text())

    def connections(self) -> list[dict[str, Any]]:
        with self.path("connect").open() as f:
            return [
                {
                    "identity": r["identity"],
                    "first": float(r["first_try_epoch"]),
                    "connected": float(r["connected_epoch"]) if r["connected_epoch"] else None,
                    "attempts": int(r["attempts"]),
                    "failures": r["failures"],
                }
                for r in csv.DictReader(f)
            ]


def start_fleet(
    scratch: Path,
    name: str,
    url: str,
    chargers: int,
    prefix: str,
    *,
    limit: float,
    interval: float,
    samples: int,
    sessions: int = 0,
    ramp: float | None = None,
    offline_every: float = 0.0,
    offline_for: float = 5.0,
    password: str | None = PASSWORD,
    max_seconds: float | None = None,
    protocol: str = "mixed",
    source_addresses: int = 1,
) -> Fleet:
    fleet = Fleet(name, prefix, chargers, None, scratch)  # type: ignore[arg-type]
    argv = [
        sys.executable,
        "-m",
        "bench.load.simulator",
        "--url",
        url,
        "--chargers",
        str(chargers),
        "--protocol",
        protocol,
        "--sessions",
        str(sessions),
        "--samples",
        str(samples),
        "--interval",
        str(interval),
        "--duration",
        str(limit),
        "--max-seconds",
        str(max_seconds or limit + 120),
        "--call-timeout",
        "60",
        "--prefix",
        prefix,
        "--latency-file",
        str(fleet.path("csv")),
        "--sent-log",
        str(fleet.path("sent")),
        "--connect-log",
        str(fleet.path("connect")),
    ]
    if ramp is not None:
        argv += ["--ramp", str(ramp)]
    if offline_every > 0:
        argv += ["--offline-every", str(offline_every), "--offline-for", str(offline_for)]
    if password is not None:
        argv += ["--password", password]
    if source_addresses > 1:  # charger i connects from 127.0.<1 + i mod n>.1
        argv += ["--source-addresses", str(source_addresses)]
    with fleet.path("json").open("wb") as out, fleet.path("stderr").open("wb") as err:
        fleet.proc = spawn(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    return fleet


async def finish_fleet(fleet: Fleet, limit: float) -> dict[str, Any]:
    """SIGUSR1 (sessions under way end normally), wait, return the summary."""
    if fleet.proc.poll() is None:
        fleet.proc.send_signal(signal.SIGUSR1)
    status = await trio.to_thread.run_sync(fleet.proc.wait, limit)
    if status != 0:
        raise RuntimeError(
            f"simulator {fleet.name} exited with {status}:\n{fleet.path('stderr').read_text()[-3000:]}"
        )
    return fleet.summary()


def start_clients(
    scratch: Path,
    name: str,
    url: str,
    mode: str,
    identities: list[str],
    clients: int,
    sources: str,
    seconds: float,
) -> tuple[subprocess.Popen, Path]:
    ids = scratch / f"{name}.identities"
    ids.write_text("\n".join(identities) + "\n")
    out_path = scratch / f"{name}.json"
    argv = [
        sys.executable,
        "-m",
        "bench.load.fault_clients",
        "--url",
        url,
        "--mode",
        mode,
        "--identities",
        str(ids),
        "--clients",
        str(clients),
        "--sources",
        sources,
        "--seconds",
        str(seconds),
    ]
    with out_path.open("wb") as out, (scratch / f"{name}.stderr").open("wb") as err:
        proc = spawn(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    return proc, out_path


async def finish_clients(
    proc: subprocess.Popen, out_path: Path, *, stop: bool, limit: float = 60.0
) -> dict:
    if stop and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        await trio.to_thread.run_sync(proc.wait, limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{out_path.stem} did not stop within {limit:g} s") from None
    if proc.returncode != 0:
        raise RuntimeError(
            f"{out_path.stem} exited with {proc.returncode}: "
            f"{out_path.with_suffix('.stderr').read_text()[-3000:]}"
        )
    return json.loads(out_path.read_text())


class Sampler:
    """Scrapes the proxy every SAMPLE_EVERY s (and its RSS and CPU) until cancelled."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.rows: list[tuple[Scrape, int, float]] = []
        self.niced: list[tuple[float, float]] = []  # (epoch, CPU seconds of the niced threads)

    async def run(self) -> None:
        while True:
            scrape = await trio.to_thread.run_sync(self.proxy.scrape)
            self.rows.append((scrape, self.proxy.rss(), self.proxy.cpu()))
            self.niced.append((time.time(), self.proxy.niced_threads_cpu()))
            await trio.sleep(SAMPLE_EVERY)

    def niced_seconds(self, start: float, end: float) -> float:
        """CPU seconds of the niced (hashing) threads from the last sample at or before `start` to
        the first at or after `end`."""
        first = next((row for row in reversed(self.niced) if row[0] <= start), None)
        last = next((row for row in self.niced if row[0] >= end), None)
        return math.nan if first is None or last is None else last[1] - first[1]

    def between(self, start: float, end: float) -> list[tuple[Scrape, int, float]]:
        return [row for row in self.rows if start <= row[0].at < end]

    def peak(self, name: str, start: float, end: float, **labels: str) -> float:
        values = [s.get(name, **labels) for s, _, _ in self.between(start, end) if s.ok]
        return max(values) if values else math.nan

    def rss_peak(self, start: float, end: float) -> int:
        return max((rss for _, rss, _ in self.between(start, end)), default=0)

    def cpu_share(self, start: float, end: float) -> float:
        """The proxy's CPU as a share of one core, from the last sample at or before `start` to the
        first at or after `end` (a window shorter than the sampling period is widened to one)."""
        first = next((row for row in reversed(self.rows) if row[0].at <= start), None)
        last = next((row for row in self.rows if row[0].at >= end), None)
        if first is None or last is None or last[0].at <= first[0].at:
            return math.nan
        return (last[2] - first[2]) / (last[0].at - first[0].at)

    def first(self, name: str, start: float, test, **labels: str) -> float:
        """Seconds from `start` until the sampled value of `name` first passes `test` (NaN: never)."""
        for scrape, _, _ in self.rows:
            if scrape.at >= start and scrape.ok and test(scrape.get(name, **labels)):
                return scrape.at - start
        return math.nan


# -- the database --------------------------------------------------------------------------------


async def create_database(admin_dsn: str) -> None:
    await trio.to_thread.run_sync(execute, admin_dsn, "CREATE DATABASE ere_proxy")


def stored_check(
    dsn: str, summary: dict, rename: dict[tuple[str, str], str] | None = None
) -> dict[str, int]:
    """Sessions the fleet reported against the `sessions` table (as `outage` checks them).

    `rename` maps (identity, transaction id the charger was told) to the id the back-office gave,
    for 1.6 transactions started while the proxy answered offline (provisional ids).
    """
    rows = fetch(
        dsn,
        """
        SELECT s.identity, s.transaction_id, s.meter_start_wh, s.meter_stop_wh,
               (SELECT count(*) FROM meter_samples m WHERE m.session_id = s.session_id)
        FROM sessions s""",
    )
    stored: dict[tuple[str, str], list] = {}
    for r in rows:
        stored.setdefault((r[0], r[1]), []).append((r[2], r[3], r[4]))
    rename = rename or {}
    expected = {}
    for charger in summary["chargers"]:
        for t in charger["transactions"]:
            key = (charger["identity"], t["transaction_id"])
            key = (key[0], rename.get(key, key[1]))
            expected[key] = (
                Decimal(t["meter_start"]),
                None if t["meter_stop"] is None else Decimal(t["meter_stop"]),
                t["samples"],
            )
    exact = sum(stored.get(key) == [value] for key, value in expected.items())
    missing = sum(key not in stored for key in expected)
    doubled = sum(len(v) > 1 for v in stored.values())
    duplicates = fetch(
        dsn,
        """
        SELECT count(*) FROM (SELECT 1 FROM meter_samples
        GROUP BY session_id, sampled_at, measurand, value HAVING count(*) > 1) d""",
    )[0][0]
    return {
        "expected": len(expected),
        "exact": exact,
        "missing": missing,
        "rows": len(rows),
        "doubled": doubled,
        "duplicate_samples": duplicates,
        "unexpected": sum(key not in expected for key in stored),
    }


def renames(sent: dict, received: dict) -> dict[tuple[str, str], str]:
    """(identity, charger's 1.6 transaction id) → back-office id: the k-th start sent ↔ the k-th received."""
    out: dict[tuple[str, str], str] = {}
    for identity, entries in sent.items():
        mine = [e.get("transaction_id") for e in entries if e["action"] == "StartTransaction"]
        theirs = [
            (r[3] or {}).get("transactionId")
            for r in received.get(identity, ())
            if r[0] == "StartTransaction"
        ]
        if len(mine) == len(theirs):
            out.update(
                {(identity, str(a)): str(b) for a, b in zip(mine, theirs, strict=True) if a != b}
            )
    return out


def session_problems(problems: list[str], sent: dict, received: dict) -> tuple[int, int]:
    """(sessions lost, sessions doubled) among the ledger's problems: starts that never arrived upstream,
    and starts that arrived more than once (1.6 StartTransaction, 2.0.1 TransactionEvent Started)."""

    def is_start(action: str, payload: Any) -> bool:
        return action == "StartTransaction" or (
            action == "TransactionEvent"
            and isinstance(payload, dict)
            and payload.get("eventType") == "Started"
        )

    lost = doubled = 0
    for problem in problems:
        if m := re.match(r"(.+?): sent\[(\d+)\] (\w+) never arrived", problem):
            mine = [e for e in sent.get(m.group(1), ()) if e["action"] in TRANSACTION_ACTIONS]
            index = int(m.group(2))
            lost += index < len(mine) and is_start(mine[index]["action"], mine[index]["payload"])
        elif m := re.match(r"(.+?): received\[(\d+)\] (\w+) \(id .*\) is a duplicate", problem):
            got = [e for e in received.get(m.group(1), ()) if e[0] in TRANSACTION_ACTIONS]
            index = int(m.group(2))
            doubled += index < len(got) and is_start(got[index][0], got[index][1])
    return lost, doubled


def pg_pids(db_dir: Path) -> list[int]:
    """The postmaster and every process under it."""
    pids = sorted(pg.postgres_pids(db_dir))
    if not pids:
        raise RuntimeError("no PostgreSQL processes found")
    return pids


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# -- windows and tables --------------------------------------------------------------------------


@dataclass
class Windows:
    before: tuple[float, float]
    during: tuple[float, float]
    after: tuple[float, float]


def stats(rows: list[tuple[float, float]], window: tuple[float, float]) -> dict[str, Any]:
    return percentiles([rtt for sent, rtt in rows if window[0] <= sent < window[1]])


def latency_table(
    rows: list[tuple[float, float]],
    windows: Windows,
    sampler: Sampler | None,
    during_label: str,
    parts: list[tuple[str, tuple[float, float]]] = (),
) -> list[str]:
    """Before, during (and `parts` of it), after; p99 against before's, the proxy's CPU (share of a core)."""
    lines = [
        "| fleet CALLs sent | seconds | CALLs | p50 ms | p99 ms | max ms | p99 ÷ before | proxy CPU |",
        "|:--|--:|--:|--:|--:|--:|--:|--:|",
    ]
    base = stats(rows, windows.before)
    for label, window in (
        ("before", windows.before),
        (during_label, windows.during),
        *parts,
        ("after", windows.after),
    ):
        s = stats(rows, window)
        ratio = (
            s["p99_ms"] / base["p99_ms"]
            if base["n"] and s["n"] and base["p99_ms"] > 0
            else math.nan
        )
        cpu = sampler.cpu_share(*window) if sampler is not None else math.nan
        lines.append(
            f"| {label} | {window[1] - window[0]:.1f} | {s['n']} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} "
            f"| {s['max_ms']:.1f} | {ratio:.2f} | {cpu:.0%} |"
        )
    return lines


def fmt_counts(counter: dict) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items())) or "none"


def connect_times(rows: list[dict[str, Any]], first_only: bool = True) -> dict[str, Any]:
    """Time from the earliest first try to the last 101, and per connection; of the first connection
    of every charger (`first_only`, a wave), or of every connection in `rows` (reconnects)."""
    if first_only:
        first: dict[str, dict[str, Any]] = {}
        for row in rows:
            first.setdefault(row["identity"], row)
        rows = list(first.values())
    done = [r for r in rows if r["connected"] is not None]
    start = min((r["first"] for r in rows), default=math.nan)
    each = sorted(r["connected"] - r["first"] for r in done)
    failures: Counter[str] = Counter()
    for r in rows:
        for item in filter(None, r["failures"].split(";")):
            why, _, n = item.rpartition(":")
            failures[why] += int(n)
    return {
        "chargers": len(rows),
        "connected": len(done),
        "all_connected_s": (max(r["connected"] for r in done) - start)
        if len(done) == len(rows) and done
        else math.nan,
        "p50_s": each[len(each) // 2] if each else math.nan,
        "max_s": each[-1] if each else math.nan,
        "attempts": sum(r["attempts"] for r in rows),
        "failures": dict(failures),
    }


@dataclass
class Part:
    name: str
    title: str
    lines: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # checks that did not hold
    load_start: str = ""
    load_end: str = ""

    def check(self, ok: bool, what: str) -> str:
        if not ok:
            self.failed.append(what)
        return "ok" if ok else "**FAILED**"


# -- common set-up -------------------------------------------------------------------------------


@dataclass
class Stage:
    """What every part sets up: a database, the fake CSMS, the proxy, the fleet."""

    scratch: Path
    database: ServerThread
    dsn: str
    csms: FakeCsms
    proxy: Proxy
    fleet: Fleet
    sampler: Sampler


async def open_database(scratch: Path) -> tuple[ServerThread, str]:
    database = await trio.to_thread.run_sync(ServerThread(scratch / "db").open)
    await create_database(database.server.dsn())
    return database, database.server.dsn("ere_proxy")


async def start_stage(
    nursery: trio.Nursery,
    scratch: Path,
    args: argparse.Namespace,
    database: ServerThread,
    dsn: str,
    *,
    data_dir: Path | None = None,
    managed_hash: str | None = None,
    capture_extra: str = "",
    fleet_ramp: float | None = None,
    fleet_addresses: int = 1,
) -> Stage:
    csms = FakeCsms(record=True)
    await nursery.start(csms.serve)
    proxy = Proxy(
        scratch,
        csms.port,
        dsn,
        data_dir or scratch / "proxy-data",
        managed_hash=managed_hash,
        capture_extra=capture_extra,
    )
    try:
        await until(proxy.ready, "proxy /readyz", 120)
        fleet = start_fleet(
            scratch,
            "fleet",
            proxy.url,
            args.chargers,
            "F-",
            limit=args.fleet_limit,
            interval=args.interval,
            samples=args.samples,
            ramp=fleet_ramp,
            offline_every=args.offline_every,
            offline_for=args.offline_for,
            source_addresses=fleet_addresses,
        )
        _say(f"{args.chargers} chargers connecting")
        await until(fleet.booted, "the fleet to boot", 600, every=1.0)
        sampler = Sampler(proxy)
        nursery.start_soon(sampler.run)
        await trio.sleep(args.settle)
    except BaseException:
        proxy.stop()
        raise
    return Stage(scratch, database, dsn, csms, proxy, fleet, sampler)


async def caught_up(stage: Stage, limit: float) -> float:
    """Seconds until the journal holds nothing back (nothing spilling, queued or unflushed)."""

    def done() -> bool:
        s = stage.proxy.scrape()
        return (
            s.get("ere_proxy_journal_spilling") == 0
            and s.get("ere_proxy_journal_queued") == 0
            and s.get("ere_proxy_journal_spill_unflushed") == 0
        )

    return await until(done, "the journal to catch up", limit)


async def check_database(
    stage: Stage, summary: dict, rename: dict | None, limit: float = 60
) -> dict[str, int]:
    """The stored check, repeated (the last batches may still be in flight) until exact or `limit`."""
    deadline = time.monotonic() + limit
    while True:
        result = await trio.to_thread.run_sync(stored_check, stage.dsn, summary, rename)
        if result["exact"] == result["expected"] or time.monotonic() > deadline:
            return result
        await trio.sleep(1)


def database_lines(part: Part, result: dict[str, int]) -> list[str]:
    ok = (
        result["exact"] == result["expected"]
        and not result["doubled"]
        and not result["duplicate_samples"]
    )
    return [
        (
            f"- database: {result['exact']} of {result['expected']} sessions stored with exact meter start, stop "
            f"and sample count ({result['missing']} missing, {result['doubled']} stored twice, "
            f"{result['duplicate_samples']} duplicated samples, {result['rows']} session rows) — "
            f"{part.check(ok, 'database: sessions not stored exactly')}"
        )
    ]


def ledger_lines(part: Part, sent: dict, received: dict) -> list[str]:
    problems = exactly_once(sent, received)
    lost, doubled = session_problems(problems, sent, received)
    sessions = sum(
        1
        for entries in sent.values()
        for e in entries
        if e["action"] == "StartTransaction"
        or (e["action"] == "TransactionEvent" and e["payload"].get("eventType") == "Started")
    )
    got = counts(received)
    line = (
        f"- ledger (testkit.ledger.exactly_once, chargers' answered transaction CALLs vs the CSMS): {sessions} "
        f"sessions, **lost {lost}, doubled {doubled}**; {len(problems)} problems in all — "
        f"{part.check(not problems, 'ledger: transaction CALLs not exactly once')}; the CSMS received "
        f"{got['starts']} StartTransaction, {got['meter_values']} MeterValues, {got['stops']} StopTransaction, "
        f"{got['transaction_events']} TransactionEvent"
    )
    lines = [line]
    lines += [f"  - {p}" for p in problems[:10]]
    return lines


def reconnect_line(connections: list[dict[str, Any]]) -> str:
    """The fleet's reconnections that began during a fault: how soon they got in."""
    if not connections:
        return "- the fleet's own reconnects during the fault: none"
    t = connect_times(connections, first_only=False)
    return (
        f"- the fleet's own reconnects that began during the fault: {t['chargers']}, connected {t['connected']}; "
        f"time to connect p50 {t['p50_s']:.2f} s, max {t['max_s']:.2f} s; failed tries: {fmt_counts(t['failures'])}"
    )


def fleet_line(summary: dict) -> str:
    return (
        f"- fleet: {summary['calls']} CALLs answered, {summary['resent']} resent, {summary['reconnects']} "
        f"reconnects, {summary['offline_periods']} offline periods; errors: {fmt_counts(summary['errors'])}"
    )


def proxy_stopped(part: Part, stage: Stage) -> str:
    status = stage.proxy.stop()
    return (
        f"- proxy exit status {status} — {part.check(status == 0, f'proxy exited with {status}')}"
    )


async def staged(args: argparse.Namespace, scratch: Path, part: Part, body, **stage: Any) -> Part:
    """Database, fake CSMS, proxy and fleet up; `body(args, part, stage)`; the proxy's exit checked; all down."""
    database, dsn = await open_database(scratch)
    try:
        async with trio.open_nursery() as nursery:
            running = await start_stage(nursery, scratch, args, database, dsn, **stage)
            try:
                await body(args, part, running)
                part.lines.append(await trio.to_thread.run_sync(proxy_stopped, part, running))
            finally:
                running.proxy.stop()
            nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(database.close)
    return part


# -- 1. upstream outage with attackers -----------------------------------------------------------


async def part_outage(args: argparse.Namespace, scratch: Path) -> Part:
    return await staged(args, scratch, Part("outage", "Upstream outage with attackers"), _outage)


async def _outage(args: argparse.Namespace, part: Part, stage: Stage) -> None:
    proxy, csms, fleet = stage.proxy, stage.csms, stage.fleet
    await trio.sleep(args.before)
    m0 = await trio.to_thread.run_sync(proxy.scrape)
    fault = time.time()
    _say("upstream down")
    await csms.stop()
    # The outage alone for a quarter of it, then the attackers until a second before its end (an
    # attempt whose dial reached a CSMS already back would be admitted by the back-office's 101).
    await trio.sleep(max(0.0, fault + args.fault / 4 - time.time()))
    attack_start = time.time()
    _say(f"{args.attackers} attackers from {args.attack_sources}")
    ma = await trio.to_thread.run_sync(proxy.scrape)
    attack, attack_out = start_clients(
        stage.scratch,
        "attackers",
        proxy.url,
        "spoof",
        fleet.identities,
        args.attackers,
        args.attack_sources,
        max(1.0, fault + args.fault - 1 - time.time()),
    )
    attackers = await finish_clients(attack, attack_out, stop=False, limit=args.fault + 60)
    attack_end = time.time()
    await trio.sleep(max(0.0, fault + args.fault - time.time()))
    m1 = await trio.to_thread.run_sync(proxy.scrape)
    offline_peak = stage.sampler.peak("ere_proxy_links_offline", fault, time.time())
    outbox_peak = stage.sampler.peak("ere_proxy_outbox_entries", fault, time.time())
    back = time.time()
    _say("upstream back")
    await csms.start()
    await trio.sleep(args.after)
    end = time.time()

    def drained() -> bool:
        rows = fetch(stage.dsn, "SELECT count(*) FROM outbox_entries WHERE dead_reason IS NULL")[0][
            0
        ]
        return rows == 0 and proxy.scrape().get("ere_proxy_links_offline") == 0

    await until(drained, "outbox drained", args.drain_limit, every=1.0)
    drained_at = time.time() - back
    all_back = stage.sampler.first("ere_proxy_links_offline", back, lambda v: v == 0)
    _say("fleet finishing its sessions")
    summary = await finish_fleet(fleet, args.interval * (args.samples + 2) + 120)
    await caught_up(stage, args.drain_limit)
    m2 = await trio.to_thread.run_sync(proxy.scrape)
    sent, received = fleet.sent(), {k: list(v) for k, v in csms.received.items()}
    result = await check_database(stage, summary, renames(sent, received))
    marked_upstream = sum(
        1 for calls in received.values() for c in calls if MARKER in orjson.dumps(c[1]).decode()
    )
    marked_db = await trio.to_thread.run_sync(
        lambda: fetch(
            stage.dsn,
            f"""
        SELECT (SELECT count(*) FROM sessions WHERE id_tag = '{MARKER}' OR transaction_id = '{MARKER}'
                   OR meter_start_wh = {MARKER_METER}),
               (SELECT count(*) FROM charger_boots WHERE vendor = '{MARKER}'),
               (SELECT count(*) FROM charger_events WHERE body::text LIKE '%{MARKER}%'),
               (SELECT count(*) FROM outbox_entries WHERE position('{MARKER}'::bytea in payload) > 0)""",
        )[0]
    )
    dead = await trio.to_thread.run_sync(
        lambda: fetch(stage.dsn, "SELECT count(*) FROM outbox_entries")[0][0]
    )

    windows = Windows((fault - args.before, fault), (fault, back), (back, end))
    rows = fleet.latencies()
    admitted = len(attackers["admitted"])
    replaced_attack = m1.get("ere_proxy_link_ends_total", reason="replaced") - ma.get(
        "ere_proxy_link_ends_total", reason="replaced"
    )
    replaced_all = m2.get("ere_proxy_link_ends_total", reason="replaced")
    fleet_during = [c for c in fleet.connections() if fault <= c["first"] < back]
    seconds = attackers["ended"] - attackers["started"]
    part.lines += [
        (
            f"{args.chargers} chargers (half OCPP 1.6, half 2.0.1, HTTP Basic credentials, passthrough route), a reading "
            f"every {args.interval:g} s, sessions of {args.samples} readings back to back, an offline period every "
            f"~{args.offline_every:g} s per charger; the fake CSMS down {back - fault:.1f} s; {args.attackers} attacker "
            f"clients from {args.attack_sources} from a quarter into the outage until a second before its end."
        ),
        "",
        *latency_table(
            rows,
            windows,
            stage.sampler,
            "upstream down",
            [
                ("… of which: no attackers yet", (fault, attack_start)),
                ("… of which: attackers", (attack_start, attack_end)),
            ],
        ),
        "",
        f"- attackers: **{attackers['attempts']} attempts** in {seconds:.1f} s ({attackers['attempts'] / seconds:.0f}/s), "
        f"**admitted {admitted}** — {part.check(admitted == 0, f'attackers admitted: {admitted}')}; answers by "
        f"status: {fmt_counts(attackers['statuses'])}; by credential: "
        + "; ".join(f"{k}: {fmt_counts(v)}" for k, v in attackers["by_credential"].items())
        + f"; client errors: {fmt_counts(attackers['errors'])}",
        (
            f'- live links replaced during the attack (`ere_proxy_link_ends_total{{reason="replaced"}}`): '
            f"**{replaced_attack:.0f}** — {part.check(replaced_attack == 0, 'live links replaced during the attack')}; "
            f"over the whole run {replaced_all:.0f}"
        ),
        (
            f"- proxy handshakes during the outage by outcome: {fmt_counts(delta(m1, m0, 'ere_proxy_handshakes_total', 'outcome'))}"
            f"; during the attack: {fmt_counts(delta(m1, ma, 'ere_proxy_handshakes_total', 'outcome'))}"
        ),
        reconnect_line(fleet_during)
        + f"; {sum(c['connected'] is not None and c['connected'] < back for c in fleet_during)}"
        " of them admitted while the CSMS was down (proof: the verifier of their Authorization header)",
        (
            f"- outage: peak {offline_peak:.0f} links offline, peak {outbox_peak:.0f} outbox entries; after the CSMS came "
            f"back every link was forwarding again after {all_back:.1f} s and the outbox empty after {drained_at:.1f} s; "
            f"outbox replayed {m2.get('ere_proxy_outbox_replayed_total') - m0.get('ere_proxy_outbox_replayed_total'):.0f}, "
            f"offline answers {sum(delta(m1, m0, 'ere_proxy_offline_answers_total', 'action').values())}, "
            f"outbox rows left {dead} (dead letters included)"
        ),
        fleet_line(summary),
        *ledger_lines(part, sent, received),
        (
            f"- marked attacker messages: {marked_upstream} at the CSMS — "
            f"{part.check(marked_upstream == 0, 'attacker messages reached the CSMS')}; in the database: sessions "
            f"{marked_db[0]}, charger_boots {marked_db[1]}, charger_events {marked_db[2]}, outbox_entries {marked_db[3]} — "
            f"{part.check(not any(marked_db), 'attacker messages in the database')}"
        ),
        *database_lines(part, result),
        (
            f"- journal: {m2.get('ere_proxy_journal_lost_total'):.0f} events lost, "
            f"dead letters {m2.get('ere_proxy_capture_dead_letters_total'):.0f}"
        ),
    ]
    if admitted:
        part.lines += [f"  - admitted: {json.dumps(a)[:300]}" for a in attackers["admitted"][:5]]


# -- 2. database half-open -------------------------------------------------------------------------


async def part_db_stall(args: argparse.Namespace, scratch: Path) -> Part:
    return await staged(
        args,
        scratch,
        Part("db-stall", "Database half-open (SIGSTOP)"),
        partial(_stalled, disk_full=None),
    )


async def part_disk_full(args: argparse.Namespace, scratch: Path) -> Part:
    part = Part("disk-full", "Disk full (and the database stopped)")
    data_dir = scratch / "proxy-data"
    data_dir.mkdir(mode=0o711)
    await trio.run_process(
        ["mount", "-t", "tmpfs", "-o", f"size={args.tmpfs_mb}m,mode=0711", "tmpfs", str(data_dir)]
    )
    try:
        extra = (
            f"spill_buffer_bytes = {args.spill_buffer_bytes}\n" if args.spill_buffer_bytes else ""
        )
        await staged(
            args,
            scratch,
            part,
            partial(_stalled, disk_full=data_dir),
            data_dir=data_dir,
            capture_extra=extra,
        )
    finally:
        with trio.CancelScope(shield=True):
            result = await trio.run_process(
                ["umount", str(data_dir)], check=False, capture_stderr=True
            )
            if result.returncode != 0:  # still busy: detach it now, it goes when the last user does
                await trio.run_process(["umount", "-l", str(data_dir)], check=False)
    return part


def fill(directory: Path) -> int:
    """Write a filler file until the file system is full (ENOSPC); returns its size."""
    path = directory / "filler"
    written = 0
    with path.open("wb", buffering=0) as out:
        for chunk in (b"\0" * (1 << 20), b"\0" * 4096, b"\0"):
            while True:
                try:
                    written += out.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


async def _stalled(
    args: argparse.Namespace, part: Part, stage: Stage, disk_full: Path | None
) -> None:
    proxy, fleet, sampler = stage.proxy, stage.fleet, stage.sampler
    db_dir = stage.scratch / "db"
    await trio.sleep(args.before)
    m0 = await trio.to_thread.run_sync(proxy.scrape)
    fault = time.time()
    filler = 0
    if disk_full is not None:
        filler = await trio.to_thread.run_sync(fill, disk_full)
        free = os.statvfs(disk_full)
        _say(
            f"{disk_full} full: filler {filler / 1e6:.1f} MB, {free.f_bavail * free.f_frsize} bytes free"
        )
    pids = pg_pids(db_dir)
    _say(f"database stopped (SIGSTOP to {len(pids)} processes)")
    signal_all(pids, signal.SIGSTOP)
    try:
        await trio.sleep(max(0.0, fault + args.fault - time.time()))
        m1 = await trio.to_thread.run_sync(proxy.scrape)
        if disk_full is not None:
            (disk_full / "filler").unlink()
            _say("filler deleted")
    finally:
        signal_all(pids, signal.SIGCONT)
    back = time.time()
    _say("database resumed")
    await trio.sleep(args.after)
    end = time.time()
    catch_up = await caught_up(stage, args.drain_limit)
    spilling_ended = sampler.first("ere_proxy_journal_spilling", back, lambda v: v == 0)
    _say("fleet finishing its sessions")
    summary = await finish_fleet(fleet, args.interval * (args.samples + 2) + 120)
    await caught_up(stage, args.drain_limit)
    m2 = await trio.to_thread.run_sync(proxy.scrape)
    sent, received = fleet.sent(), {k: list(v) for k, v in stage.csms.received.items()}
    result = await check_database(stage, summary, renames(sent, received))

    windows = Windows((fault - args.before, fault), (fault, back), (back, end))
    rows = fleet.latencies()
    during = stats(rows, windows.during)
    per_second = Counter(int(sent_at - fault) for sent_at, _ in rows if fault <= sent_at < back)
    silent = [s for s in range(int(back - fault)) if per_second.get(s, 0) == 0]
    journal = {
        name: m2.get(f"ere_proxy_journal_{name}_total") - m0.get(f"ere_proxy_journal_{name}_total")
        for name in ("submitted", "stored", "spilled", "replayed", "lost", "database_errors")
    }
    failures = delta(m2, m0, "ere_proxy_capture_failures_total", "stage")
    fleet_during = [c for c in fleet.connections() if fault <= c["first"] < back]
    what = (
        "the proxy's data_dir on a tmpfs of "
        f"{args.tmpfs_mb} MB filled to ENOSPC (filler {filler / 1e6:.1f} MB) and "
        if disk_full
        else ""
    )
    part.lines += [
        f"{args.chargers} chargers (half OCPP 1.6, half 2.0.1, passthrough), a reading every {args.interval:g} s, "
        f"sessions of {args.samples} readings back to back, an offline period every ~{args.offline_every:g} s per "
        f"charger; upstream up throughout; {what}the database stopped half-open (SIGSTOP to the postmaster and its "
        f"{len(pids) - 1} children) for {back - fault:.1f} s"
        + (
            f"; `[capture] spill_buffer_bytes = {args.spill_buffer_bytes}`"
            if args.spill_buffer_bytes
            else ("; `[capture] spill_buffer_bytes` default (64 MiB)" if disk_full else "")
        )
        + ".",
        "",
        *latency_table(
            rows, windows, sampler, "database stopped" + (" + disk full" if disk_full else "")
        ),
        "",
        (
            f"- forwarding during the fault: {during['n']} CALLs answered, seconds without a single CALL sent: "
            f"{len(silent)} — {part.check(during['n'] > 0 and not silent, 'forwarding stalled during the fault')}"
        ),
        (
            f"- journal over the run: submitted {journal['submitted']:.0f}, stored directly {journal['stored']:.0f}, "
            f"spilled {journal['spilled']:.0f}, replayed {journal['replayed']:.0f}, **lost {journal['lost']:.0f}**, "
            f"database errors {journal['database_errors']:.0f}; capture failures by stage: {fmt_counts(failures)}"
        ),
        (
            f"- during the fault: spilling (peak) {sampler.peak('ere_proxy_journal_spilling', fault, back):.0f}, "
            f"spill_failing (peak) {sampler.peak('ere_proxy_journal_spill_failing', fault, back):.0f}, spilled events "
            f"waiting in memory (`spill_unflushed`, peak) {sampler.peak('ere_proxy_journal_spill_unflushed', fault, back):.0f}, "
            f"spill log on disk (peak) {sampler.peak('ere_proxy_journal_spill_bytes', fault, end) / 1e6:.2f} MB, "
            f"proxy RSS before {sampler.rss_peak(fault - args.before, fault) / 2**20:.0f} MB → peak "
            f"{sampler.rss_peak(fault, back) / 2**20:.0f} MB; at the end of the fault: spilled "
            f"{m1.get('ere_proxy_journal_spilled_total') - m0.get('ere_proxy_journal_spilled_total'):.0f}, "
            f"lost {m1.get('ere_proxy_journal_lost_total') - m0.get('ere_proxy_journal_lost_total'):.0f}"
        ),
        (
            f"- after the fault: the journal stopped spilling {spilling_ended:.1f} s after the database resumed and had "
            f"nothing held back (spilling, queued, unflushed all 0) {args.after + catch_up:.1f} s after"
        ),
        reconnect_line(fleet_during),
        (
            f"- proxy handshakes during the fault by outcome: {fmt_counts(delta(m1, m0, 'ere_proxy_handshakes_total', 'outcome'))}; "
            f"link ends: {fmt_counts(delta(m1, m0, 'ere_proxy_link_ends_total', 'reason'))}"
        ),
        fleet_line(summary),
        *ledger_lines(part, sent, received),
        *database_lines(part, result),
    ]
    if disk_full is not None:
        spill_write = failures.get("spill_write", 0)
        part.lines.append(
            f'- `ere_proxy_capture_failures_total{{stage="spill_write"}}` grew by {spill_write}: '
            f"{part.check(spill_write > 0, 'the disk-full fault did not reach the spill log')}"
        )


# -- 4. password flood -----------------------------------------------------------------------------


async def part_password_flood(args: argparse.Namespace, scratch: Path) -> Part:
    from proxy.routing.auth import hash_generated_password, hash_password

    make_hash = hash_generated_password if args.password_hash == "generated" else hash_password
    return await staged(
        args,
        scratch,
        Part("password-flood", "Password flood"),
        _flood,
        managed_hash=make_hash(PASSWORD),
        fleet_ramp=args.managed_ramp,
        fleet_addresses=args.wave_addresses,
    )


async def _connect_wave(
    args: argparse.Namespace,
    stage: Stage,
    name: str,
    prefix: str,
    addresses: int | None = None,
) -> dict[str, Any]:
    """`--managed` chargers with the right password, all starting at once, one short session each.

    OCPP 1.6 only: the same identities connect in several waves (several simulator processes), and
    a 2.0.1 simulator names its transactions `<identity>-1`, `-2`, ... afresh in each process.
    """
    started = time.time()
    fleet = start_fleet(
        stage.scratch,
        name,
        stage.proxy.url,
        args.managed,
        prefix,
        limit=args.connect_limit,
        interval=1.0,
        samples=1,
        sessions=1,
        ramp=0.0,
        max_seconds=args.connect_limit + 20,
        protocol="ocpp1.6",
        source_addresses=args.wave_addresses if addresses is None else addresses,
    )
    status = await trio.to_thread.run_sync(fleet.proc.wait, args.connect_limit + 120)
    if status != 0:
        raise RuntimeError(
            f"simulator {name} exited with {status}:\n{fleet.path('stderr').read_text()[-3000:]}"
        )
    times = connect_times(fleet.connections())
    times["latency"] = percentiles([rtt for _, rtt in fleet.latencies()])
    connected = (
        times["all_connected_s"]
        if times["connected"] == times["chargers"]
        else time.time() - started
    )
    await trio.sleep(SAMPLE_EVERY)  # a sample after the wave
    times["proxy_cpu"] = stage.sampler.cpu_share(started, started + connected)
    times["fleet"] = fleet
    return times


async def _flood(args: argparse.Namespace, part: Part, stage: Stage) -> None:
    proxy, fleet, sampler = stage.proxy, stage.fleet, stage.sampler
    # The warm set connects once before the flood (also the no-flood reference for a wave).
    _say(f"{args.managed} managed chargers connecting without a flood (they are warm from now on)")
    waves: list[tuple[str, str, dict[str, Any]]] = [
        ("none", "first connection", await _connect_wave(args, stage, "warm-up", "MW-"))
    ]  # (flood target, wave, figures)
    _say(f"{args.managed} other managed chargers connecting without a flood, all from one address")
    waves.append(
        (
            "none",
            "first connection, all from 127.0.0.1",
            await _connect_wave(args, stage, "one-address", "MS-", addresses=1),
        )
    )
    await trio.sleep(args.settle)
    await trio.sleep(args.before)
    m0 = await trio.to_thread.run_sync(proxy.scrape)
    fault = time.time()
    sources = f"127.2.0.1+{args.flood_addresses}"
    floods: list[tuple[str, dict[str, Any], Scrape, Scrape]] = []
    for number, target in enumerate(args.flood_targets):
        cold = f"MC{number}-"  # never connected before
        if target == "others":
            identities = [f"FLOOD-{i:05d}" for i in range(args.flood_clients)]
        else:
            identities = [
                f"{prefix}{i:05d}" for prefix in ("MW-", cold) for i in range(args.managed)
            ]
        plan = [("cold", cold), ("warm", "MW-")]
        _say(
            f"flood ({target}): {args.flood_clients} clients from {args.flood_addresses} addresses"
        )
        before_flood = await trio.to_thread.run_sync(proxy.scrape)
        proc, out = start_clients(
            stage.scratch,
            f"flood-{target}",
            proxy.url,
            "flood",
            identities,
            args.flood_clients,
            sources,
            args.connect_limit * 4 + 300,
        )
        # At its height: every client has been answered at least once.
        answered = before_flood.get("ere_proxy_handshakes_total") + args.flood_clients
        await until(
            lambda answered=answered: proxy.scrape().get("ere_proxy_handshakes_total") >= answered,
            "the flood to reach its height",
            60,
        )
        for wave, prefix in plan:
            _say(f"{args.managed} managed chargers connecting ({wave}) during the flood")
            waves.append(
                (target, wave, await _connect_wave(args, stage, f"{wave}-{target}", prefix))
            )
        after_flood = await trio.to_thread.run_sync(proxy.scrape)
        floods.append(
            (target, await finish_clients(proc, out, stop=True), before_flood, after_flood)
        )
    back = time.time()
    _say("flood over")
    await trio.sleep(args.after)
    end = time.time()
    m_after = await trio.to_thread.run_sync(proxy.scrape)
    summary = await finish_fleet(fleet, args.interval * (args.samples + 2) + 120)
    await caught_up(stage, args.drain_limit)
    # The waves count too (in the order they ran: the same identities connect in several).
    sent, everything = fleet.sent(), dict(summary, chargers=list(summary["chargers"]))
    for _, _, wave in waves:
        for identity, entries in wave["fleet"].sent().items():
            sent.setdefault(identity, []).extend(entries)
        everything["chargers"] += wave["fleet"].summary()["chargers"]
    received = {k: list(v) for k, v in stage.csms.received.items()}
    result = await check_database(stage, everything, renames(sent, received))
    m1 = await trio.to_thread.run_sync(proxy.scrape)

    windows = Windows((fault - args.before, fault), (fault, back), (back, end))
    part.lines += [
        (
            f"{args.chargers} managed chargers (half OCPP 1.6, half 2.0.1; `managed` default route, "
            f"{HASH_SCHEMES[args.password_hash]}; started over {args.managed_ramp:g} s before the flood), a reading every "
            f"{args.interval:g} s, sessions of {args.samples} readings back to back, an offline period every "
            f"~{args.offline_every:g} s per charger, from {args.wave_addresses} addresses (127.0.k.1). During the flood ({back - fault:.1f} s): {args.flood_clients} clients "
            f"sending wrong passwords without pause from {args.flood_addresses} loopback addresses (127.2.0.1 on); "
            f"meanwhile waves of {args.managed} managed OCPP 1.6 chargers with the right password, all starting at "
            f"once, one short session each (the ledger and database checks include them), each from its own address "
            f"(127.0.k.1, {args.wave_addresses} addresses) unless the row says otherwise."
        ),
        "",
        *latency_table(fleet.latencies(), windows, sampler, "flood"),
        "",
        (
            "| flood on | wave | chargers connected | first try → all connected | p50 / max per charger | handshakes tried "
            "| their refusals | their CALLs p50 / p99 / max ms | proxy CPU |"
        ),
        "|:--|:--|--:|--:|--:|--:|:--|--:|--:|",
    ]
    for target, wave, t in waves:
        lat = t["latency"]
        ok = t["connected"] == t["chargers"] and t["all_connected_s"] <= args.connect_target
        mark = part.check(
            ok,
            f"{wave} chargers ({'no flood' if target == 'none' else 'flood on ' + target}): not "
            f"all connected within {args.connect_target:g} s",
        )
        on = {
            "none": "no flood",
            "others": "made-up identities",
            "own": "these chargers’ identities",
        }[target]
        part.lines.append(
            f"| {on} | {wave} "
            f"| {t['connected']} of {t['chargers']} | "
            + (
                f"**{t['all_connected_s']:.2f} s**"
                if t["connected"] == t["chargers"]
                else f"**not all in {args.connect_limit + 20:g} s**"
            )
            + f" ({mark}) "
            f"| {t['p50_s']:.2f} / {t['max_s']:.2f} s | {t['attempts']} | {fmt_counts(t['failures'])} "
            f"| {lat['p50_ms']:.1f} / {lat['p99_ms']:.1f} / {lat['max_ms']:.1f} | {t['proxy_cpu']:.0%} |"
        )
    part.lines.append("")
    for target, flood, before_flood, after_flood in floods:
        seconds = flood["ended"] - flood["started"]
        checks = delta(after_flood, before_flood, "ere_proxy_password_checks_total", "hashed")
        verdicts = delta(after_flood, before_flood, "ere_proxy_password_checks_total", "verdict")
        admitted = len(flood["admitted"])
        part.lines += [
            (
                f"- flood on {'made-up identities' if target == 'others' else 'the connecting chargers’ identities'}: "
                f"{flood['attempts']} attempts in {seconds:.1f} s ({flood['attempts'] / seconds:.0f}/s), answers by status: "
                f"{fmt_counts(flood['statuses'])}; admitted {admitted} — {part.check(admitted == 0, 'flood admitted')}; "
                f"client errors: {fmt_counts(flood['errors'])}"
            ),
            (
                f"  - password checks (all clients, the waves included): hashed {checks.get('yes', 0)} "
                f"(**{checks.get('yes', 0) / seconds:.1f} hashes/s**), not hashed {checks.get('no', 0)}; by verdict: "
                f"{fmt_counts(verdicts)}; handshakes by outcome: "
                f"{fmt_counts(delta(after_flood, before_flood, 'ere_proxy_handshakes_total', 'outcome'))}"
            ),
        ]
    hashed_after = delta(m_after, floods[-1][3], "ere_proxy_password_checks_total", "hashed").get(
        "yes", 0
    )
    per_hash = await trio.to_thread.run_sync(hash_cpu_seconds)
    part.lines += [
        (
            f"- after the last flood client stopped (the {args.after:g} s after window and the moments before it): "
            f"password checks by verdict {fmt_counts(delta(m_after, floods[-1][3], 'ere_proxy_password_checks_total', 'verdict'))}"
            f", hashed {hashed_after}; proxy CPU in the after window {sampler.cpu_share(back, end):.0%}"
        ),
        *hashing_lines(sampler, floods, per_hash, end, hashed_after),
        f"- proxy link ends during the flood: {fmt_counts(delta(m1, m0, 'ere_proxy_link_ends_total', 'reason'))}",
        fleet_line(summary),
        *ledger_lines(part, sent, received),
        *database_lines(part, result),
    ]


HASH_SCHEMES = {
    "scrypt": "scrypt hash from `proxy.routing.auth.hash_password` (a password a person chose)",
    "generated": "fast hash from `proxy.routing.auth.hash_generated_password` (a generated password)",
}


def hash_cpu_seconds() -> float:
    """CPU seconds one password check costs here (the proxy's scrypt parameters), median of five."""
    from proxy.routing.auth import hash_password, verify_password

    encoded = hash_password("reference")
    times = []
    for _ in range(5):
        started = time.thread_time()
        verify_password("wrong", encoded)
        times.append(time.thread_time() - started)
    return sorted(times)[2]


def hashing_lines(
    sampler: Sampler, floods: list, per_hash: float, end: float, hashed_after: int
) -> list[str]:
    """The hashing threads' CPU against the hashes the metrics count: hashes nobody waited for any more."""
    lines = []
    windows = [(f"flood on {target}", before.at, after.at) for target, _, before, after in floods]
    windows.append(("after the floods", floods[-1][3].at, end))
    for label, start, stop in windows:
        cpu = sampler.niced_seconds(start, stop)
        counted = hashed_after
        for target, _, before, after in floods:
            if label == f"flood on {target}":
                counted = delta(after, before, "ere_proxy_password_checks_total", "hashed").get(
                    "yes", 0
                )
        lines.append(
            f"{label}: {cpu:.1f} CPU s in the hashing threads over {stop - start:.0f} s "
            f"({cpu / (stop - start):.0%} of a core) ≈ {cpu / per_hash:.0f} hashes at {per_hash * 1000:.0f} ms "
            f"each; hashes counted by the metrics (callers still waiting): {counted}"
        )
    return [
        f"- hashing threads (the proxy's threads at nice > 0, from /proc; one hash costs {per_hash * 1000:.0f} ms "
        f"of CPU in this process when idle): " + "; ".join(lines)
    ]


# -- the run -------------------------------------------------------------------------------------

RUNNERS = {
    "outage": part_outage,
    "db-stall": part_db_stall,
    "disk-full": part_disk_full,
    "password-flood": part_password_flood,
}


def report(args: argparse.Namespace, started: datetime, parts: list[Part]) -> str:
    lines = [
        f"## faults, {started:%Y-%m-%d %H:%M} UTC",
        "",
        machine_line(args.loadavg_at_start),
        "- load average per part (start → end): "
        + "; ".join(f"{p.name} {p.load_start} → {p.load_end}" for p in parts),
        f"- command (from the repository root): `{command(args)}`",
        f"- tree: {args.revision}",
        (
            f"- proxy: one worker, capture and outbox on, its own PostgreSQL (embedded server, fsync on); fake CSMS "
            f"in the bench process; codec {websocket.CODEC}; latency = CALL round trip as the fleet's simulator sees it, "
            f"cut by send time"
        ),
    ]
    for number, part in enumerate(parts, 1):
        lines += ["", f"### {number}. {part.title} (`--part {part.name}`)", "", *part.lines]
    failed = [f"{p.name}: {what}" for p in parts for what in p.failed]
    lines += [
        "",
        "Checks: "
        + ("all held." if not failed else f"**{len(failed)} FAILED**: " + "; ".join(failed)),
    ]
    return "\n".join(lines)


async def run_parts(args: argparse.Namespace, scratch: Path) -> list[Part]:
    parts = []
    for name in args.part:
        _say(f"part {name}")
        load = loadavg()
        directory = scratch / name
        directory.mkdir(mode=0o711)
        try:
            part = await RUNNERS[name](args, directory)
        except Exception as exc:
            part = Part(name, f"{name} (did not complete)")
            part.lines.append(
                f"- the part could not complete: {type(exc).__name__}: {str(exc)[:2000]}"
            )
            part.failed.append(f"did not complete ({type(exc).__name__})")
            _say(f"part {name} failed: {exc!r}")
        part.load_start, part.load_end = load, loadavg()
        parts.append(part)
    return parts


def revision() -> str:
    """The commit the proxy runs from, and whether its code differs from it."""

    def git(*command: str) -> str:
        return subprocess.run(
            ["git", *command], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    changed = git("status", "--porcelain", "--", "proxy", "codec_rs")
    return (git("log", "-1", "--format=%h %s")[:90] or "unknown") + (
        " (proxy code changed since)" if changed else ""
    )


QUICK = {
    "chargers": 100,
    "before": 5.0,
    "fault": 20.0,
    "after": 10.0,
    "attackers": 10,
    "flood_clients": 100,
    "managed": 20,
    "interval": 2.0,
    "offline_every": 60.0,
    "offline_for": 3.0,
    "managed_ramp": 5.0,
    "settle": 2.0,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--part",
        default=",".join(PARTS),
        help=f"comma-separated parts to run, in this order: {', '.join(PARTS)} (default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: "
        + ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in QUICK.items())
        + " (explicit options win)",
    )
    parser.add_argument("--chargers", type=int, help="the healthy fleet (default 1000)")
    parser.add_argument(
        "--interval", type=float, help="seconds between a charger's readings (default 5)"
    )
    parser.add_argument("--samples", type=int, default=3, help="periodic readings per session")
    parser.add_argument(
        "--offline-every",
        type=float,
        help="a charger's network drops on average this often, seconds (default 300; 0: never)",
    )
    parser.add_argument(
        "--offline-for", type=float, help="and stays away about this long (default 5)"
    )
    parser.add_argument(
        "--before", type=float, help="measured seconds before the fault (default 30)"
    )
    parser.add_argument("--fault", type=float, help="seconds the fault lasts (default 60)")
    parser.add_argument("--after", type=float, help="measured seconds after the fault (default 30)")
    parser.add_argument(
        "--settle", type=float, help="seconds between the fleet booted and --before (default 5)"
    )
    parser.add_argument("--attackers", type=int, help="outage: attacker clients (default 100)")
    parser.add_argument(
        "--attack-sources",
        default="127.0.0.9",
        help="outage: attackers' source addresses (comma-separated, A+N: N from A)",
    )
    parser.add_argument(
        "--tmpfs-mb", type=int, default=64, help="disk-full: size of the tmpfs data_dir"
    )
    parser.add_argument(
        "--spill-buffer-bytes",
        type=int,
        default=0,
        help="disk-full: the proxy's [capture] spill_buffer_bytes (0: its default, 64 MiB)",
    )
    parser.add_argument(
        "--flood-clients", type=int, help="password-flood: concurrent clients (default 1000)"
    )
    parser.add_argument(
        "--flood-addresses",
        type=int,
        help="password-flood: their source addresses, 127.2.0.1 on (default: one per client)",
    )
    parser.add_argument(
        "--flood-targets",
        default="others,own",
        help="password-flood: floods to run, comma-separated: others (made-up identities), own "
        "(the connecting chargers' identities)",
    )
    parser.add_argument(
        "--password-hash",
        choices=sorted(HASH_SCHEMES),
        default="scrypt",
        help="password-flood: the managed route's hash: scrypt (a password a person chose) or "
        "generated (the fast hash of a password the registry generated); default scrypt",
    )
    parser.add_argument(
        "--managed", type=int, help="password-flood: chargers per connecting wave (default 100)"
    )
    parser.add_argument(
        "--wave-addresses",
        type=int,
        help="password-flood: source addresses of a wave and of the "
        "managed fleet, 127.0.k.1 for k = 1..N (default: one per wave charger, at most 254)",
    )
    parser.add_argument(
        "--managed-ramp",
        type=float,
        help="password-flood: the fleet's start-up spread, seconds "
        "(each managed charger costs a hash; default 60)",
    )
    parser.add_argument(
        "--connect-limit",
        type=float,
        default=60.0,
        help="password-flood: a wave's chargers try to connect this long at most",
    )
    parser.add_argument(
        "--connect-target",
        type=float,
        default=2.0,
        help="password-flood: a wave must be connected within this many seconds",
    )
    parser.add_argument(
        "--drain-limit",
        type=float,
        default=300.0,
        help="give up waiting for a drain after this long",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the scratch directory (configs, logs, CSVs)"
    )


def run(args: argparse.Namespace) -> Report:
    """The parts in turn; the report fails when a check did not hold."""
    defaults = {
        "chargers": 1000,
        "interval": 5.0,
        "offline_every": 300.0,
        "offline_for": 5.0,
        "before": 30.0,
        "fault": 60.0,
        "after": 30.0,
        "settle": 5.0,
        "attackers": 100,
        "flood_clients": 1000,
        "managed": 100,
        "managed_ramp": 60.0,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, QUICK.get(key, value) if args.quick else value)
    if args.flood_addresses is None:
        args.flood_addresses = args.flood_clients
    if args.wave_addresses is None:
        args.wave_addresses = min(254, args.managed)
    if not 1 <= args.wave_addresses <= 254:
        raise UsageError("need 1 <= --wave-addresses <= 254")
    args.part = [p.strip() for p in args.part.split(",") if p.strip()]
    args.flood_targets = [t.strip() for t in args.flood_targets.split(",") if t.strip()]
    if not args.part or any(p not in PARTS for p in args.part):
        raise UsageError(f"--part takes {', '.join(PARTS)}")
    if not args.flood_targets or any(t not in ("others", "own") for t in args.flood_targets):
        raise UsageError("--flood-targets takes others, own")
    if (
        args.chargers < 1
        or args.fault <= 0
        or args.interval <= 0
        or not 1 <= args.flood_addresses <= 60000
    ):
        raise UsageError(
            "need --chargers >= 1, --fault > 0, --interval > 0, 1 <= --flood-addresses <= 60000"
        )
    if "disk-full" in args.part and os.geteuid() != 0:
        raise UsageError(
            "the disk-full part mounts a tmpfs: run as root (or leave it out with --part)"
        )
    # The fleet's hard bound: every phase, the flood's waves, drains, with room to spare.
    args.fleet_limit = (
        args.before
        + args.fault
        + args.after
        + 4 * args.connect_limit
        + 2 * args.drain_limit
        + args.managed_ramp
        + 600
    )
    raise_fd_limit()
    args.revision = revision()
    args.loadavg_at_start = loadavg()
    started = datetime.now(UTC)
    scratch = make_data_dir("ocpp-faults-")
    try:
        parts = trio.run(run_parts, args, scratch)
    finally:
        if args.keep:
            print(f"scratch kept in {scratch}", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return Report(report(args, started, parts), ok=not any(p.failed for p in parts))
