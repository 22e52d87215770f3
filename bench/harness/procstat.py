"""CPU time and memory of a process tree from /proc, and a description of the machine.

A target may be several processes (nginx: master + worker; a proxy may have workers), so
everything is summed over the live process tree under the root pid. An embedded PostgreSQL is
detached by pg_ctl and measured apart (bench/harness/pg.py).
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (field 3 onwards), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text[text.rindex(")") + 2 :].split()


def tree(root: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """`root` and all its live descendants (minus `exclude` and their descendants)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in exclude:
            continue
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(
    root: int, *, exclude: set[int] | frozenset[int] = frozenset(), reaped: bool = False
) -> float:
    """utime + stime of the live tree under `root`, in seconds (all threads included).

    `exclude`: pids (with their subtrees) not to count. `reaped`: add the CPU of `root`'s
    children that exited and were waited for (cutime + cstime), e.g. a postmaster's backends.
    """
    ticks = 0
    for pid in tree(root, exclude):
        if fields := _stat_fields(pid):
            ticks += int(fields[11]) + int(fields[12])
            if reaped and pid == root:
                ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def rss_bytes(root: int, exclude: set[int] | frozenset[int] = frozenset()) -> int:
    """Resident set size summed over the live tree under `root` (shared pages count per process)."""
    pages = 0
    for pid in tree(root, exclude):
        if fields := _stat_fields(pid):
            pages += int(fields[21])
    return pages * PAGE_SIZE


def machine() -> dict[str, str]:
    """nproc, CPU model, kernel and Python version, for the results file."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
    }
