"""`ere-proxy import sessions FILE --format evcc|eflux|generic --partner P`: a CSV file of a
partner's sessions into the sessions table, all rows or none.

Every row is checked first (`proxy.ingest.csv_import`: the layout, each session's rules, and the
rows together: repeats, overlaps per charger, meters going backwards). If any is bad, each is
printed on stdout with its line and why (`--report FILE` also writes them as CSV, every cell
safe to open in a spreadsheet), and the command exits 2 having stored nothing. Otherwise the
sessions are stored in one transaction (`proxy.ingest.store.record_sessions`, source `csv`,
in chunks of `CHUNK` rows); a charger that is not the partner's, or a row imported before with
other content, is reported the same way and nothing is stored. `--dry-run` does all of it and
rolls back. A session of a charging event the books have from another source is stored as a
duplicate (evidence, not counted).

Options: `--charger ID` (every row's charger) or `--charger-map NAME=ID` (repeatable: an evcc
loadpoint, or a charger name of the file, and the identity it is), `--timezone` (of times without
an offset; Europe/Amsterdam), `--dst-fold refuse|earlier|later` (a local time the clocks passed
twice), `--max-rows` (1,000,000).

Progress goes to stderr: on a terminal a bar with rows, rows a second and the time left, redrawn
in place; otherwise a plain line every few seconds (`proxy.ingest.progress`).

Exit status: 0 imported (or a clean dry run), 2 bad rows, a refused import or bad arguments, 1
the database failed (one line on stderr).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from zoneinfo import ZoneInfo

from proxy.cli.db import missing_embedded_database
from proxy.ingest.cells import shown, spreadsheet_safe
from proxy.ingest.csv_formats import FOLDS, FORMATS, ImportOptions, parse_charger_map
from proxy.ingest.csv_import import MAX_ROWS, CheckedFile, RowProblem, check_file
from proxy.ingest.progress import Progress
from proxy.ingest.records import ExternalSession
from proxy.runtime.config import Config
from proxy.store.db import DATABASE_ERRORS, open_database

if TYPE_CHECKING:
    from proxy.ingest.store import IngestResult

__all__ = ["CHUNK", "add_import_parser", "import_command"]

EXIT_OK, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2
CHUNK = 5000
_OTHER_CONTENT = "imported before with other content; a session is never changed"
_NOT_YOURS = "is not one of the partner's chargers (register, grant or link it first)"


def add_import_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `import` subcommand group; `common` carries `--config`."""
    group = sub.add_parser("import", help="import a partner's sessions from a file")
    kinds = group.add_subparsers(dest="what", required=True)
    sessions = kinds.add_parser(
        "sessions",
        parents=[common],
        help="sessions from a CSV file (evcc, a CPMS's CDR export, or generic)",
        description="Import a CSV file of a partner's sessions: every row is checked first; any "
        "bad row is reported with its line and nothing is stored.",
    )
    sessions.add_argument("file", type=Path, metavar="FILE")
    sessions.add_argument("--format", required=True, choices=FORMATS)
    sessions.add_argument("--partner", required=True, help="the partner whose chargers they are")
    sessions.add_argument("--charger", metavar="IDENTITY", help="the charger of every row")
    sessions.add_argument(
        "--charger-map",
        action="append",
        default=[],
        metavar="NAME=IDENTITY",
        help="the charger a loadpoint (evcc) or charger name of the file is; repeatable",
    )
    sessions.add_argument(
        "--timezone",
        default="Europe/Amsterdam",
        help="time zone of times without an offset (default Europe/Amsterdam)",
    )
    sessions.add_argument(
        "--dst-fold",
        choices=FOLDS,
        default="refuse",
        help="a local time the clocks passed twice: refuse it (default) or take the earlier "
        "(summer time) or later one",
    )
    sessions.add_argument("--dry-run", action="store_true", help="check and roll back")
    sessions.add_argument("--report", type=Path, metavar="CSV", help="also write bad rows here")
    sessions.add_argument(
        "--max-rows", type=int, default=MAX_ROWS, help=f"at most this many rows ({MAX_ROWS:,})"
    )


class _Refused(Exception):
    """Ends the command with exit status 2 after a message (and rolls a transaction back)."""

    def __init__(self, message: str, problems: Sequence[RowProblem] = ()) -> None:
        super().__init__(message)
        self.message, self.problems = message, list(problems)


class _DryRun(Exception):
    """Rolls a dry run's transaction back."""

    def __init__(self, totals: dict[str, int]) -> None:
        super().__init__("dry run")
        self.totals = totals


class _Shown:
    """Progress on `stream`, drawn as `Progress` says."""

    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.meter = Progress(total, clock=time.monotonic, tty=_isatty(stream))

    def update(self, phase: str, done: int) -> None:
        self._write(self.meter.update(phase, done))

    def finish(self, phase: str, done: int) -> None:
        self._write(self.meter.finish(phase, done))

    def _write(self, text: str | None) -> None:
        if text is not None:
            self.stream.write(text if text.startswith("\r") else text + "\n")
            self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


async def import_command(
    config: Config,
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run `ere-proxy import sessions`; returns the exit status (see the module docstring)."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        options = _options(args)
        checked = _check(args, options, stderr)
        if checked.problems:
            raise _Refused(
                f"{len(checked.problems)} bad row(s) in {args.file.name}; nothing was imported",
                checked.problems,
            )
        if not checked.sessions:
            raise _Refused(f"{args.file.name} has no rows; nothing was imported")
        if reason := missing_embedded_database(config.database):
            print(f"ere-proxy: {reason}", file=stderr)
            return EXIT_FAILED
        totals = await _store(config, args, checked, stderr)
    except _Refused as refused:
        for problem in refused.problems:
            print(problem, file=stdout)
        if refused.problems and args.report is not None:
            try:
                _write_report(args.report, refused.problems)
            except OSError as error:
                print(f"ere-proxy: cannot write {args.report}: {error.strerror}", file=stderr)
        print(f"ere-proxy: {refused.message}", file=stderr)
        return EXIT_REFUSED
    except _DryRun as dry:
        print(f"dry run, nothing stored: {_summary(checked.rows, dry.totals)}", file=stdout)
        return EXIT_OK
    except DATABASE_ERRORS as exc:
        print(f"ere-proxy: {type(exc).__name__}: {exc}", file=stderr)
        return EXIT_FAILED
    print(f"imported {args.file.name}: {_summary(checked.rows, totals)}", file=stdout)
    return EXIT_OK


def _options(args: argparse.Namespace) -> ImportOptions:
    try:
        zone = ZoneInfo(args.timezone)
    except (ValueError, OSError, KeyError):
        raise _Refused(f"--timezone: {shown(args.timezone)} is not a time zone") from None
    try:
        chargers = parse_charger_map(args.charger_map)
    except ValueError as error:
        raise _Refused(f"--charger-map: {error}") from None
    if args.max_rows < 1:
        raise _Refused("--max-rows must be at least 1")
    return ImportOptions(args.partner, args.file.name, zone, chargers, args.charger, args.dst_fold)


def _check(args: argparse.Namespace, options: ImportOptions, stderr: TextIO) -> CheckedFile:
    """Every row of the file checked, with progress."""
    try:
        with args.file.open("rb") as counting:
            total = max(
                sum(chunk.count(b"\n") for chunk in iter(lambda: counting.read(1 << 20), b"")) - 1,
                0,
            )
        shown_progress = _Shown(stderr, total)
        shown_progress.update("checking", 0)
        with args.file.open("rb") as lines:
            checked = check_file(
                lines,
                args.format,
                options,
                now=datetime.now(UTC),
                max_rows=args.max_rows,
                progress=lambda done: shown_progress.update("checking", done),
            )
    except OSError as error:
        raise _Refused(f"cannot read {args.file}: {error.strerror or error}") from None
    shown_progress.finish("checking", checked.rows)
    return checked


async def _store(
    config: Config, args: argparse.Namespace, checked: CheckedFile, stderr: TextIO
) -> dict[str, int]:
    """Store the checked sessions in one transaction; the totals per outcome."""
    # Here, not at the top: the store reads the partner API's charger query (FastAPI), which
    # the processes that build this command's parser (an ERE worker) need not load.
    from proxy.ingest.store import record_sessions

    progress = _Shown(stderr, len(checked.sessions))
    totals = {"inserted": 0, "duplicate": 0, "unchanged": 0}
    problems: list[RowProblem] = []
    async with open_database(config.database) as db, db.transaction() as tx:
        if not await tx.fetchval("SELECT 1 FROM partners WHERE partner_id = $1", args.partner):
            raise _Refused(f"--partner: no partner {shown(args.partner)}")
        progress.update("storing", 0)
        for start in range(0, len(checked.sessions), CHUNK):
            chunk = checked.sessions[start : start + CHUNK]
            result = await record_sessions(tx, chunk)
            problems += _refusals(result, chunk, checked.lines[start : start + CHUNK])
            for item in result.outcomes:
                if item.outcome in totals:
                    totals[item.outcome] += 1
            progress.update("storing", start + len(chunk))
        progress.finish("storing", len(checked.sessions))
        if problems:
            raise _Refused(
                f"{len(problems)} row(s) of {args.file.name} cannot be stored; nothing was"
                " imported",
                problems,
            )
        if args.dry_run:
            raise _DryRun(totals)
    return totals


def _refusals(
    result: IngestResult, sessions: Sequence[ExternalSession], lines: Sequence[int]
) -> list[RowProblem]:
    found = []
    for line, session, item in zip(lines, sessions, result.outcomes):
        if item.outcome == "refused":
            found.append(RowProblem(line, None, f"charger {shown(session.identity)} {_NOT_YOURS}"))
        elif item.outcome == "invalid" and item.error is not None:
            found.append(RowProblem(line, None, f"{item.error.field}: {item.error.detail}"))
        elif item.outcome == "conflict":
            found.append(RowProblem(line, None, f"{_OTHER_CONTENT} (session {item.session_id})"))
    return found


def _summary(rows: int, totals: dict[str, int]) -> str:
    return (
        f"{rows} rows: {totals['inserted']} new, {totals['duplicate']} duplicates of sessions"
        f" from another source (kept as evidence, not counted), {totals['unchanged']} imported"
        " before"
    )


def _write_report(path: Path, problems: Sequence[RowProblem]) -> None:
    """The bad rows as CSV: line, column, problem; no cell reads as a formula."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["line", "column", "problem"])
        for problem in problems:
            column = shown(problem.column) if problem.column else ""
            writer.writerow([problem.line, column, spreadsheet_safe(problem.detail)])
