"""Latency percentiles (nearest rank) of round trips given in seconds, reported in ms."""

from __future__ import annotations

import math


def percentiles(values: list[float]) -> dict[str, float | int]:
    """Count and nearest-rank p50/p99/max of round trips given in seconds, in ms."""
    ordered = sorted(values)

    def rank(p: float) -> float:
        if not ordered:
            return math.nan
        return round(
            ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))] * 1000, 3
        )

    return {"n": len(ordered), "p50_ms": rank(50), "p99_ms": rank(99), "max_ms": rank(100)}
