"""What every scenario does with its report: a machine line, printing, appending to RESULTS.md."""

from __future__ import annotations

import argparse
import resource
from pathlib import Path

from bench import procstat


def raise_fd_limit() -> None:
    """Soft open-file limit up to the hard one (inherited by every process a scenario starts)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_line(load_at_start: str) -> str:
    info = procstat.machine()
    return (
        f"- machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, Python {info['python']}; "
        f"load average at start {load_at_start}"
    )


def publish(text: str, args: argparse.Namespace) -> None:
    """Print the report and append it to `args.results` unless `args.no_results`."""
    print(text)
    if not args.no_results:
        with args.results.open("a") as out:
            out.write("\n" + text + "\n")
