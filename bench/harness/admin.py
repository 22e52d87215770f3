"""The proxy's admin endpoint as a scenario reads it: /readyz, /metrics, one worker or all."""

from __future__ import annotations

import math
import urllib.request

# Loopback only: never through an HTTP proxy from the environment.
_local = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(port: int, path: str) -> str | None:
    """The body of a GET on 127.0.0.1:`port` if it answers 200, else None."""
    try:
        with _local.open(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.read().decode() if response.status == 200 else None
    except OSError:
        return None


def metric(port: int, name: str) -> float:
    """The unlabelled series `name` of one worker (NaN if it does not answer or lacks it)."""
    for line in (get(port, "/metrics") or "").splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return math.nan


def summed(port: int, workers: int) -> dict[str, float]:
    """Every `ere_proxy_` sample of workers on `port`, `port + 1`, ..., summed by series (name
    with labels)."""
    total: dict[str, float] = {}
    for i in range(workers):
        for line in (get(port + i, "/metrics") or "").splitlines():
            if line.startswith("ere_proxy_") and " " in line:
                name, value = line.rsplit(" ", 1)
                total[name] = total.get(name, 0.0) + float(value)
    return total
