"""The accounting commands: `quarter close|reopen|status`, `payout run|status`, `rev export`, `jobs`.

Closes and payout runs are jobs (`proxy.ere.jobs.closing`, `proxy.ere.jobs.payouts`) that the
worker processes run; these commands check what they can at once (a quarter string like
`2026Q5`, a quarter that may not close yet, a payout without a debtor account), queue the job,
and with `--wait` wait until the workers are done. `rev export YEAR` runs in the command's
process (`proxy.ere.jobs.rev_export`): it reads what closed quarters stated, and refuses the final
export until all four quarters of YEAR are closed and `[ere] provider_kvk` and
`provider_nea_account` are set; `--draft` writes a draft (marked DRAFT in its file names and
contents) meanwhile. `quarter status` lists the closes of every quarter (each revision: closing,
closed or reopened) with their totals, and `quarter status 2026Q3` those of that quarter alone.

Exit status: 0 done, 1 store error or a failed job, 2 bad input or a refused operation.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import trio

from proxy.ere.core.quarters import Quarter, QuarterFormatError
from proxy.ere.core.rev_booking import RevExportError, RevProvider
from proxy.ere.jobs.close_requests import CloseRefused, reopen, request_close
from proxy.ere.jobs.payouts import PayoutRefused, request_payout
from proxy.ere.jobs.rev_export import export_rev, parse_year
from proxy.runtime.config import Config
from proxy.store import open_database
from proxy.store.db import DATABASE_ERRORS


def add_accounting_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `quarter`, `payout`, `rev` and `jobs` groups; `common` carries `--config`."""
    quarter = sub.add_parser("quarter", help="close and inspect quarters").add_subparsers(
        dest="action", required=True
    )
    close = quarter.add_parser(
        "close", parents=[common], help="queue the close of a quarter, e.g. 2026Q3"
    )
    close.add_argument("quarter")
    close.add_argument("--wait", action="store_true", help="wait until the workers have closed it")
    again = quarter.add_parser(
        "reopen",
        parents=[common],
        help="reopen a closed quarter (audited); `quarter close` closes it again",
    )
    again.add_argument("quarter")
    again.add_argument("--reason", required=True, help="why (kept in the audit log)")
    status = quarter.add_parser(
        "status", parents=[common], help="closes and their totals, of every quarter or one"
    )
    status.add_argument("quarter", nargs="?", help="only this quarter, e.g. 2026Q3")
    status.add_argument("--json", action="store_true")
    payout = sub.add_parser("payout", help="pay closed quarters out").add_subparsers(
        dest="action", required=True
    )
    run = payout.add_parser(
        "run", parents=[common], help="queue the payout run of a closed quarter"
    )
    run.add_argument("quarter")
    run.add_argument(
        "--execution-date",
        metavar="YYYY-MM-DD",
        help="the day the bank is to execute the transfers (default: today; at most a year ahead)",
    )
    run.add_argument("--wait", action="store_true")
    shown = payout.add_parser(
        "status", parents=[common], help="payout runs, transfers and carry-overs"
    )
    shown.add_argument("--json", action="store_true")
    rev = sub.add_parser("rev", help="the annual REV booking export").add_subparsers(
        dest="action", required=True
    )
    export = rev.add_parser(
        "export", parents=[common], help="CSV, XML and audit packs for a delivery year"
    )
    export.add_argument("year", help="the delivery year, e.g. 2026")
    export.add_argument("--out", type=Path, default=Path("rev"), help="directory to write into")
    export.add_argument(
        "--draft",
        action="store_true",
        help="write a draft (marked DRAFT) while quarters of the year are still open",
    )
    jobs = sub.add_parser("jobs", help="the ERE job queue").add_subparsers(
        dest="action", required=True
    )
    listing = jobs.add_parser(
        "list", parents=[common], help="jobs not done (with --all: every job)"
    )
    listing.add_argument("--all", action="store_true")
    listing.add_argument("--json", action="store_true")
    requeue = jobs.add_parser("requeue", parents=[common], help="run a failed job again")
    requeue.add_argument("job_id", type=int)


async def accounting_command(
    config: Config, args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> int:
    """Run one accounting command; see the module docstring for the exit status."""
    try:
        async with open_database(config.database, query_timeout=config.ere.query_timeout) as db:
            return await _COMMANDS[args.command, args.action](db, config, args, out)
    except (QuarterFormatError, CloseRefused, PayoutRefused, RevExportError, ValueError) as exc:
        print(f"ere-proxy: {exc}", file=err)
        return 2
    except DATABASE_ERRORS as exc:
        print(f"ere-proxy: database: {exc}", file=err)
        return 1


async def _close(db: Any, config: Config, args: argparse.Namespace, out: TextIO) -> int:
    quarter = Quarter.parse(args.quarter)
    async with db.transaction() as conn:
        await conn.execute("LOCK TABLE quarter_closes IN SHARE ROW EXCLUSIVE MODE")
        queued = await request_close(conn, quarter, config.ere)
    if not queued:
        failed = await db.fetchrow(
            "SELECT job_id, last_error FROM ere_jobs WHERE kind = 'close' AND job_key LIKE $1"
            " AND state = 'failed' ORDER BY job_id DESC LIMIT 1",
            f"{quarter}/r%",
        )
        if failed is not None:
            print(
                f"the close of {quarter} failed: {failed[1]}; once the cause is fixed,"
                f" `ere-proxy jobs requeue {failed[0]}`",
                file=out,
            )
            return 1
    print(
        f"close of {quarter} queued" if queued else f"close of {quarter} was already queued",
        file=out,
    )
    return await _wait_closed(db, quarter, out) if args.wait else 0


async def _reopen(db: Any, config: Config, args: argparse.Namespace, out: TextIO) -> int:
    quarter = Quarter.parse(args.quarter)
    actor = await trio.to_thread.run_sync(_actor)  # may ask the user database (NSS) for our name
    async with db.transaction() as conn:
        revision = await reopen(conn, quarter, actor, args.reason)
    print(
        f"{quarter} reopened (revision {revision}); close it again with `ere-proxy quarter close {quarter}`",
        file=out,
    )
    return 0


async def _wait_closed(db: Any, quarter: Quarter, out: TextIO) -> int:
    while True:
        state = await db.fetchval(
            "SELECT state FROM quarter_closes WHERE quarter = $1 AND state <> 'reopened'",
            str(quarter),
        )
        failed = await db.fetchval(
            "SELECT count(*) FROM ere_jobs WHERE kind IN ('close', 'close-shard') AND job_key LIKE $1"
            " AND state = 'failed'",
            f"{quarter}/%",
        )
        if state == "closed":
            print(f"{quarter} closed", file=out)
            return 0
        if failed:
            print(f"{quarter}: {failed} close job(s) failed; see `ere-proxy jobs list`", file=out)
            return 1
        await trio.sleep(0.5)


async def _quarter_status(db: Any, config: Config, args: argparse.Namespace, out: TextIO) -> int:
    quarter = None if args.quarter is None else str(Quarter.parse(args.quarter))
    rows = await db.fetch(
        """
        SELECT c.quarter, c.revision, c.state, c.shards, c.closed_at, count(l.*), coalesce(sum(l.kwh), 0),
               coalesce(sum(l.ere), 0), coalesce(sum(l.gross), 0), coalesce(sum(l.fee), 0), coalesce(sum(l.net), 0)
        FROM quarter_closes c LEFT JOIN statement_lines l ON (l.quarter, l.revision) = (c.quarter, c.revision)
        WHERE $1::text IS NULL OR c.quarter = $1
        GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2""",
        quarter,
    )
    keys = (
        "quarter",
        "revision",
        "state",
        "shards",
        "closed_at",
        "lines",
        "kwh",
        "ere",
        "gross",
        "fee",
        "net",
    )
    records = [dict(zip(keys, row, strict=True)) for row in rows]
    _print(records, args.json, out)
    return 0


async def _payout(db: Any, config: Config, args: argparse.Namespace, out: TextIO) -> int:
    quarter = Quarter.parse(args.quarter)
    execution_date = _execution_date(args.execution_date)
    async with db.transaction() as conn:
        queued = await request_payout(
            conn, quarter, config.ere, datetime.now(UTC), execution_date=execution_date
        )
    print(
        f"payout run of {quarter} queued"
        if queued
        else f"payout run of {quarter} was already queued",
        file=out,
    )
    if not args.wait:
        return 0
    while True:
        states = dict(
            await db.fetch(
                "SELECT kind, state FROM ere_jobs WHERE kind IN ('payout', 'statements') AND job_key = $1",
                str(quarter),
            )
        )
        if "failed" in states.values():
            print(f"payout run of {quarter} failed; see `ere-proxy jobs list`", file=out)
            return 1
        if states.get("statements") == "done":
            row = await db.fetchrow(
                "SELECT file_name, control_sum, (SELECT count(*) FROM payout_transfers WHERE run_id = $1)"
                " FROM payout_runs WHERE run_id = $1",
                str(quarter),
            )
            print(
                f"paid out: {row[2]} transfers, {row[1] or 0} EUR, file {row[0] or '(none)'}",
                file=out,
            )
            return 0
        await trio.sleep(0.5)


def _execution_date(text: str | None) -> date | None:
    """`--execution-date` as a date; ValueError naming the option for anything else."""
    if text is None:
        return None
    shown = text if len(text) <= 20 else text[:20] + "…"
    wrong = ValueError(f"execution-date: {shown!r} is not a date (YYYY-MM-DD)")
    if len(text) != len("YYYY-MM-DD"):
        raise wrong
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise wrong from None


async def _payout_status(db: Any, config: Config, args: argparse.Namespace, out: TextIO) -> int:
    rows = await db.fetch("""
        SELECT r.run_id, r.file_name, r.control_sum, count(t.*),
               (SELECT coalesce(sum(amount), 0) FROM payout_carry_overs k WHERE k.run_id = r.run_id)
        FROM payout_runs r LEFT JOIN payout_transfers t USING (run_id) GROUP BY 1, 2, 3 ORDER BY 1""")
    keys = ("run", "file", "transferred", "transfers", "carried_over")
    _print([dict(zip(keys, row, strict=True)) for row in rows], args.json, out)
    return 0


async def _rev_export(db: Any, config: Config, args: argparse.Namespace, out: TextIO) -> int:
    year = parse_year(args.year)
    settings = config.ere
    provider = RevProvider(
        settings.provider_name or settings.debtor_name,
        settings.provider_kvk or None,
        settings.provider_nea_account or None,
    )
    export = await export_rev(db, year, provider, args.out, draft=args.draft)
    total = sum((row.kwh for row in export.rows), Decimal(0))
    kind = "DRAFT (not for the NEa)" if export.draft else "final"
    print(
        f"REV {year} {kind}: {len(export.rows)} EANs, {total.normalize():f} kWh,"
        f" {len(export.files)} files -> {args.out}",
        file=out,
    )
    return 0


async def _jobs_list(db: Any, config: Config, args: argparse.Namespace, out: TextIO) -> int:
    rows = await db.fetch(
        "SELECT job_id, kind, job_key, state, attempts, run_after, last_error FROM ere_jobs"
        + ("" if args.all else " WHERE state <> 'done'")
        + " ORDER BY job_id"
    )
    keys = ("job", "kind", "key", "state", "attempts", "due", "last_error")
    _print([dict(zip(keys, row, strict=True)) for row in rows], args.json, out)
    return 0


async def _jobs_requeue(db: Any, config: Config, args: argparse.Namespace, out: TextIO) -> int:
    status = await db.execute(
        "UPDATE ere_jobs SET state = 'queued', attempts = 0, run_after = now() WHERE job_id = $1 AND state = 'failed'",
        args.job_id,
    )
    if status.endswith(" 0"):
        raise ValueError(f"job {args.job_id} is not a failed job")
    print(f"job {args.job_id} queued again", file=out)
    return 0


_COMMANDS = {
    ("quarter", "close"): _close,
    ("quarter", "reopen"): _reopen,
    ("quarter", "status"): _quarter_status,
    ("payout", "run"): _payout,
    ("payout", "status"): _payout_status,
    ("rev", "export"): _rev_export,
    ("jobs", "list"): _jobs_list,
    ("jobs", "requeue"): _jobs_requeue,
}


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _print(records: list[dict[str, Any]], as_json: bool, out: TextIO) -> None:
    if as_json:
        print(json.dumps(records, default=str), file=out)
        return
    if not records:
        print("(none)", file=out)
        return
    keys = list(records[0])
    cells = [[_cell(r[k]) for k in keys] for r in records]
    widths = [max(len(k), *(len(row[i]) for row in cells)) for i, k in enumerate(keys)]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)), file=out)
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)), file=out)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)
