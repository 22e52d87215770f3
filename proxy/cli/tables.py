"""Aligned text tables for the command line: a header row, then one row per item.

What the listing commands (`chargers list`, `sessions list`) print by default; each also has
`--json` for scripts. Cells are turned into text with `str`, `None` shows as "-". Pure: no
errors of its own, nothing to cancel.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TextIO


def cell(value: object) -> str:
    """How one value shows in a table: "-" for nothing, else its text."""
    return "-" if value is None or value == "" else str(value)


def print_table(header: Sequence[str], rows: Iterable[Sequence[object]], stdout: TextIO) -> None:
    """Print `header` and `rows` in columns two spaces apart, without trailing blanks."""
    lines = [list(header), *([cell(value) for value in row] for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print(
            "  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip(), file=stdout
        )
