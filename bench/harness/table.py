"""Markdown tables of figures: cells formatted or "–" when there is no figure, medians, ratios."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable


def median(values: Iterable[float | None]) -> float:
    """The median of the figures there are (NaN when there is none)."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else math.nan


def fmt(value: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "–" if value is None or math.isnan(value) else f"{value:{spec}}{suffix}"


def ratio(a: float, b: float) -> str:
    return "–" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.2f}×"


def table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(cells: Iterable[str]) -> str:
        padded = (c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join("-" * (w + 1) + ":" if i else ":" + "-" * (w + 1) for i, w in enumerate(widths))
        + "|"
    )
    return "\n".join([line(header), rule, *(line(r) for r in rows)])
