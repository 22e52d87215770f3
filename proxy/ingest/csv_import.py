"""Checking a whole CSV file of sessions: every row, each bad one reported with its line.

`check_file(lines, format, options, now=...)` reads a file given as its raw lines (bytes, as read
from disk or a request body) and returns a `CheckedFile`: the sessions of its good rows, with
their lines, and a `RowProblem` for every bad row, so a caller imports all or nothing:

- the file is UTF-8 (a byte order mark is skipped); a line that is not, or that holds a NUL,
  makes its row bad; cells are separated by `,`, `;` or a tab, whichever the header uses most;
- the header must fit the layout (`proxy.ingest.csv_formats`); if it does not, that is the one
  problem (line 1) and no row is read;
- each row must give a session (`Layout.read`) that meets the rules of `proxy.ingest.records`,
  and the rows together those of `proxy.ingest.batch_checks` (duplicates, overlaps per charger,
  meters going backwards), which name the other row's line;
- blank rows are skipped; a file of more than `max_rows` rows, or one the CSV reader cannot go
  on reading (a cell larger than it takes), ends with a problem at that line.

Every value a problem quotes from the file goes through `proxy.ingest.cells.shown`. `progress`
is called with the number of rows read every `PROGRESS_EVERY` rows and at the end. Pure but for
that callback; linear in the file's size.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from proxy.ingest.batch_checks import check_batch
from proxy.ingest.cells import shown
from proxy.ingest.csv_formats import CellError, HeaderError, ImportOptions, Layout, layout_for
from proxy.ingest.records import ExternalSession, RecordError, check

__all__ = ["MAX_ROWS", "PROGRESS_EVERY", "CheckedFile", "RowProblem", "check_file"]

MAX_ROWS = 1_000_000
PROGRESS_EVERY = 500
_DELIMITERS = (",", ";", "\t")
# The layout's field each record attribute comes from (RecordError names the attribute).
_FIELD_OF = {
    "source_ref": "id",
    "identity": "charger",
    "energy_wh": "energy",
    "meter_start_wh": "meter_start",
    "meter_stop_wh": "meter_stop",
}


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why the row starting at `line` is bad; `column` as the header names it (None: the row)."""

    line: int
    column: str | None
    detail: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f": {shown(self.column)}" if self.column else "")
        return f"{where}: {self.detail}"


@dataclass(slots=True)
class CheckedFile:
    sessions: list[ExternalSession] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the line of each session
    problems: list[RowProblem] = field(default_factory=list)
    rows: int = 0  # rows read, header and blank rows not counted


class _Lines:
    """The file's lines decoded for the CSV reader, remembering those that could not be."""

    def __init__(self, raw: Iterable[bytes]) -> None:
        self._raw = iter(raw)
        self.number = 0
        self.bad: dict[int, str] = {}

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        data = next(self._raw)
        self.number += 1
        if self.number == 1 and data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.bad[self.number] = "is not UTF-8 text (save the file as UTF-8)"
            text = data.decode("utf-8", "replace")
        if "\x00" in text:
            self.bad[self.number] = "contains a NUL character"
            text = text.replace("\x00", "\ufffd")
        return text


def check_file(
    lines: Iterable[bytes],
    format: str,
    options: ImportOptions,
    *,
    now: datetime,
    max_rows: int = MAX_ROWS,
    progress: Callable[[int], None] | None = None,
) -> CheckedFile:
    """Check every row of the file (see the module docstring)."""
    result = CheckedFile()
    source = _Lines(lines)
    try:
        first = next(source)
    except StopIteration:
        result.problems.append(RowProblem(1, None, "the file is empty: no header"))
        return result
    delimiter = max(_DELIMITERS, key=first.count)
    reader = csv.reader(_chain(first, source), delimiter=delimiter, strict=False)
    try:
        layout = layout_for(format, next(reader), options)
    except HeaderError as error:
        result.problems.append(RowProblem(1, None, f"header: {error}"))
        return result
    _rows(reader, source, layout, result, now, max_rows, progress)
    names = dict(enumerate(result.lines))
    bad = set()
    for problem in check_batch(result.sessions):
        column = layout.columns.get(_FIELD_OF.get(problem.field, problem.field))
        detail = problem.detail.replace("{other}", f"line {names[problem.other]}")
        result.problems.append(
            RowProblem(names[problem.position], column[1] if column else None, detail)
        )
        bad.add(problem.position)
    if bad:
        kept = [i for i in range(len(result.sessions)) if i not in bad]
        result.sessions = [result.sessions[i] for i in kept]
        result.lines = [result.lines[i] for i in kept]
    result.problems.sort(key=lambda p: p.line)
    return result


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def _rows(
    reader: Iterator[list[str]],
    source: _Lines,
    layout: Layout,
    result: CheckedFile,
    now: datetime,
    max_rows: int,
    progress: Callable[[int], None] | None,
) -> None:
    read_to = source.number  # the last physical line read so far (the header's)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            result.problems.append(RowProblem(read_to + 1, None, f"unreadable CSV: {error}"))
            return
        line, read_to = read_to + 1, source.number
        if not any(cell.strip() for cell in cells):
            continue
        result.rows += 1
        if result.rows > max_rows:
            result.problems.append(RowProblem(line, None, f"more than {max_rows} rows"))
            return
        if progress is not None and result.rows % PROGRESS_EVERY == 0:
            progress(result.rows)
        bad = next((source.bad[n] for n in range(line, read_to + 1) if n in source.bad), None)
        if bad is not None:
            result.problems.append(RowProblem(line, None, bad))
            continue
        try:
            session = layout.read(cells, line)
            check(session, now)
        except CellError as error:
            result.problems.append(RowProblem(line, error.column, error.detail))
            continue
        except RecordError as error:
            column = layout.columns.get(_FIELD_OF.get(error.field, error.field))
            result.problems.append(RowProblem(line, column[1] if column else None, error.detail))
            continue
        result.sessions.append(session)
        result.lines.append(line)
    if progress is not None:
        progress(result.rows)
