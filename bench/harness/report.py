"""A scenario's report and what becomes of it: the machine and command lines, printing, and
appending to bench/RESULTS.md."""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.harness import procstat

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "RESULTS.md"


@dataclass
class Report:
    """A scenario's markdown (its "## name, date" heading first) and whether every check held."""

    text: str
    ok: bool = True


class UsageError(Exception):
    """Options that do not go together; reported like any other wrong option."""


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_line(load_at_start: str) -> str:
    info = procstat.machine()
    return (
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, Python {info['python']}; "
        f"load average at start {load_at_start}"
    )


def command(args: argparse.Namespace) -> str:
    """The command that ran the scenario, as typed at the repository root."""
    python = Path(sys.executable)
    try:
        python = python.relative_to(REPO)
    except ValueError:
        pass
    return f"{python} -m bench {shlex.join([args.scenario, *args.argv])}"


def publish(report: Report, args: argparse.Namespace) -> None:
    """Print the report and append it to `args.results` unless `args.no_results`."""
    print("\n" + report.text)
    if args.no_results:
        return
    if not args.results.exists():
        args.results.write_text(
            "# Benchmark results\n\nAppended by `python -m bench`, newest last; "
            "README.md explains how to read the tables.\n"
        )
    with args.results.open("a") as out:
        out.write("\n" + report.text.rstrip("\n") + "\n")
    print(f"appended to {args.results}", file=sys.stderr)
