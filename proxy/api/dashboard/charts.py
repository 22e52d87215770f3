"""Bar charts for the dashboard's pages, drawn on the server as SVG geometry (pure).

`bar_chart` turns a series of (label, value) into the rectangles, axis ticks and labels a
template draws as inline SVG: no script and no chart library, so the page works under a
Content-Security-Policy without scripts and reads the same with a screen reader, which gets the
same figures as a table. `series_json` is the series as the chart's `data-series` attribute
(decimal strings, exact), for anything that wants the numbers behind the picture. Negative
values (a correction) are drawn as zero-height bars; every value is still listed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

__all__ = ["Bar", "BarChart", "bar_chart", "nice_ceiling", "series_json"]

_LEFT, _BOTTOM, _TOP, _RIGHT = 64, 40, 12, 8
_MAX_BAR = 72


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: Decimal
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class BarChart:
    """What a template draws: the plot's box, the bars, and the y ticks (label, y)."""

    width: int
    height: int
    left: int
    bottom: float
    bars: tuple[Bar, ...]
    ticks: tuple[tuple[str, float], ...]


def nice_ceiling(value: Decimal) -> Decimal:
    """The smallest of 1, 2, 2.5, 5 × a power of ten at or above `value` (1 for 0 or less)."""
    if value <= 0:
        return Decimal(1)
    power = Decimal(10) ** (value.adjusted())
    for step in (1, 2, Decimal("2.5"), 5, 10):
        if power * step >= value:
            return power * step
    return power * 10  # pragma: no cover - 10 × power always reaches value


def _steps(top: Decimal) -> int:
    """How many gridlines divide the scale into round steps (1 → 5 × 0.2, 2 → 4 × 0.5,
    2.5 → 5 × 0.5, 5 → 5 × 1, each times its power of ten)."""
    leading = top.scaleb(-top.adjusted()).normalize()
    return 4 if leading == 2 else 5


def bar_chart(
    series: Sequence[tuple[str, Decimal]], *, width: int = 480, height: int = 240
) -> BarChart:
    """The geometry of a bar chart of `series` in a `width` × `height` box."""
    top = nice_ceiling(max((value for _, value in series), default=Decimal(0)))
    plot_width = width - _LEFT - _RIGHT
    plot_height = height - _TOP - _BOTTOM
    bottom = float(_TOP + plot_height)
    slot = plot_width / max(len(series), 1)
    bars = []
    for index, (label, value) in enumerate(series):
        shown = max(value, Decimal(0))
        # rounded once, and the top from it: the bar stands on the baseline
        bar_height = round(float(shown / top) * plot_height, 2)
        bar_width = min(slot * 0.7, _MAX_BAR)
        bars.append(
            Bar(
                label,
                value,
                round(_LEFT + index * slot + (slot - bar_width) / 2, 2),
                round(bottom - bar_height, 2),
                round(bar_width, 2),
                bar_height,
            )
        )
    steps = _steps(top)
    ticks = tuple(
        (
            format((top * step / steps).normalize(), "f"),
            round(bottom - plot_height * step / steps, 2),
        )
        for step in range(steps + 1)
    )
    return BarChart(width, height, _LEFT, bottom, tuple(bars), ticks)


def series_json(series: Sequence[tuple[str, Decimal | None]]) -> str:
    """The series as JSON: [[label, "decimal" or null], ...]."""
    return json.dumps([[label, None if value is None else str(value)] for label, value in series])
