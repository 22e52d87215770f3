"""One measurement of `bench idle-memory`: a proxy in this process, N idle chargers through it.

`python -m bench.load.idle_probe --chargers N --engine native|python [--trace]` starts the fake
CSMS and the idle chargers (`bench.load.idle_chargers`) as processes of their own, serves them
with a `ProxyServer` in this process (capture off, no outbox), and prints JSON: this process's
RSS growth per connected charger and, with `--trace`, the Python heap that tracemalloc sees grow
per charger, by file and by allocating line (tracemalloc's own bookkeeping inflates the RSS of a
traced run, so the two figures come from separate runs).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import trio

from bench.harness.targets import start_csms, stop
from testkit.in_process_proxy import proxy_config, start_proxy

REPO = Path(__file__).resolve().parents[2]


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _where(frame: tracemalloc.Frame) -> str:
    """The frame's file from the repository, site-packages or the standard library on."""
    name = frame.filename
    for root in (f"{REPO}/", "site-packages/"):
        name = name.split(root)[-1]
    if name.startswith("/") and "/lib/python" in name:
        name = name.split("/lib/python", 1)[1].split("/", 1)[-1]
    return name


async def measure(chargers: int, engine: str, trace: bool, top: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="ere-idle-") as scratch:
        csms, port = start_csms(Path(scratch), lifetime=600)
        clients = None
        try:
            async with trio.open_nursery() as nursery:
                config = proxy_config(port, engine=engine, idle_timeout=3600.0)
                handle = await start_proxy(nursery, config)
                gc.collect()
                if trace:
                    tracemalloc.start()
                before = tracemalloc.take_snapshot() if trace else None
                rss_before = rss_bytes()
                clients = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bench.load.idle_chargers",
                        str(handle.port),
                        str(chargers),
                    ],
                    cwd=REPO,
                    stdout=subprocess.PIPE,
                )
                line = await trio.to_thread.run_sync(clients.stdout.readline)  # type: ignore[union-attr]
                if not line.startswith(b"connected"):
                    raise RuntimeError("the idle chargers did not all connect")
                await trio.sleep(2)  # the last answers and hand-overs settle
                gc.collect()
                result: dict = {
                    "chargers": chargers,
                    "engine": engine,
                    "rss_per_charger": (rss_bytes() - rss_before) / chargers,
                }
                if before is not None:
                    after = tracemalloc.take_snapshot()
                    by_file: dict[str, int] = {}
                    for stat in after.compare_to(before, "filename"):
                        key = _where(stat.traceback[0])
                        by_file[key] = by_file.get(key, 0) + stat.size_diff
                    result["traced_per_charger"] = sum(by_file.values()) / chargers
                    result["by_file"] = sorted(
                        ((f, size / chargers) for f, size in by_file.items()), key=lambda x: -x[1]
                    )[:top]
                    result["by_line"] = [
                        (
                            f"{_where(s.traceback[0])}:{s.traceback[0].lineno}",
                            s.size_diff / chargers,
                            s.count_diff / chargers,
                        )
                        for s in after.compare_to(before, "lineno")[:top]
                    ]
                    tracemalloc.stop()
                nursery.cancel_scope.cancel()
        finally:
            if clients is not None:
                clients.kill()
                clients.wait()
            stop(csms)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load.idle_probe")
    parser.add_argument("--chargers", type=int, default=2000)
    parser.add_argument("--engine", choices=("native", "python"), default="native")
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(json.dumps(trio.run(measure, args.chargers, args.engine, args.trace, args.top)))


if __name__ == "__main__":
    main()
