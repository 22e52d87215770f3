"""`idle-memory`: what an idle charger costs in memory, and where this proxy's Python heap goes.

N chargers connect, boot once and stay idle (`bench.load.idle_chargers`). For this proxy, each
measurement runs in a process of its own (`bench.load.idle_probe`, the proxy in-process with
capture off and no outbox): the RSS growth per connected charger on the native engine and on the
Trio pumps, then a traced run on the native engine that splits the Python heap per charger by file
and by allocating line (tracemalloc; its bookkeeping inflates RSS, so that run gives no RSS).
nginx, in front of the same fake CSMS, holds the same chargers in the same run for the ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import procstat
from bench.harness.processes import REPO, raise_fd_limit
from bench.harness.report import Report, command, loadavg, machine_line
from bench.harness.table import table
from bench.harness.targets import Unavailable, start_csms, start_target, stop


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chargers", type=int, default=2000, help="idle chargers held at once")
    parser.add_argument("--top", type=int, default=15, help="files and lines of the heap shown")


def _probe(chargers: int, engine: str, *, trace: bool, top: int) -> dict:
    argv = [sys.executable, "-m", "bench.load.idle_probe", "--chargers", str(chargers)]
    argv += ["--engine", engine, "--top", str(top)] + (["--trace"] if trace else [])
    done = subprocess.run(argv, cwd=REPO, capture_output=True, check=True, timeout=600)
    return json.loads(done.stdout)


def _nginx(chargers: int) -> float | None:
    """nginx's RSS growth per idle charger (None: nginx is not installed)."""
    with tempfile.TemporaryDirectory(prefix="ere-idle-nginx-") as scratch:
        csms, csms_port = start_csms(Path(scratch), lifetime=600)
        try:
            # sized for twice the chargers: at 2 connections per charger and 256 spare, nginx
            # "reuses" (closes) idle connections near 2,000 chargers
            target = start_target(
                "nginx", Path(scratch), csms_port, chargers=2 * chargers, lifetime=600
            )
        except Unavailable:
            stop(csms)
            return None
        clients = None
        try:
            assert target.proc is not None
            before = procstat.rss_bytes(target.proc.pid)
            port = target.url.split(":")[2].split("/")[0]
            clients = subprocess.Popen(
                [sys.executable, "-m", "bench.load.idle_chargers", port, str(chargers)],
                cwd=REPO,
                stdout=subprocess.PIPE,
            )
            assert clients.stdout is not None
            if not clients.stdout.readline().startswith(b"connected"):
                raise RuntimeError("the idle chargers did not all connect to nginx")
            return (procstat.rss_bytes(target.proc.pid) - before) / chargers
        finally:
            if clients is not None:
                clients.kill()
                clients.wait()
            stop(target)
            stop(csms)


def run(args: argparse.Namespace) -> Report:
    raise_fd_limit()
    load = loadavg()
    started = datetime.now(UTC)
    native = _probe(args.chargers, "native", trace=False, top=args.top)
    pumps = _probe(args.chargers, "python", trace=False, top=args.top)
    traced = _probe(args.chargers, "native", trace=True, top=args.top)
    nginx = _nginx(args.chargers)
    kb = 1024
    rows = [
        ["ere-proxy (native engine)", f"{native['rss_per_charger'] / kb:.1f}"],
        ["ere-proxy (Trio pumps)", f"{pumps['rss_per_charger'] / kb:.1f}"],
        ["nginx", "–" if nginx is None else f"{nginx / kb:.1f}"],
    ]
    lines = [
        f"## idle-memory, {started:%Y-%m-%d %H:%M} UTC",
        "",
        machine_line(load),
        f"- command (from the repository root): `{command(args)}`",
        f"- {args.chargers} chargers connected, booted once, then idle; the proxy with capture off"
        " and no outbox; RSS growth of the serving process per connected charger",
        "",
        table(("target", "KB per idle charger"), rows),
        "",
    ]
    if nginx:
        lines.append(
            f"- ere-proxy (native engine) vs nginx: {native['rss_per_charger'] / nginx:.2f}×"
        )
    lines += [
        f"- Python heap per idle charger on the native engine (tracemalloc, a run of its own): "
        f"{traced['traced_per_charger'] / kb:.2f} KB; by file:",
        "",
        table(("file", "bytes per charger"), [[f, f"{b:.0f}"] for f, b in traced["by_file"]]),
        "",
        "- by allocating line:",
        "",
        table(
            ("line", "bytes per charger", "objects per charger"),
            [[where, f"{b:.0f}", f"{n:.2f}"] for where, b, n in traced["by_line"]],
        ),
    ]
    return Report("\n".join(lines) + "\n")
