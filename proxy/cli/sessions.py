"""`ere-proxy sessions list|show`: the captured charging sessions, without psql.

`list` shows the newest sessions first (by start time; sessions whose start was never seen come
last), filtered by charger, status and a period; the period (`--from`, `--to`) is on the
session's start: `--from` includes, `--to` excludes, and a session without a start time matches
no period. `show` gives one session (by its number, or by charger and transaction id) with its
source (captured over OCPP, or the partner and id it was supplied with; the session it is a
duplicate of, if any), a
summary of its meter readings per measurand, its meter evidence (meter class, how many signed
values), the charger's declared meter, every assessment a quarterly close made of it (quarter,
revision, eligibility, reason, detail, kWh) and the statement lines that counted it (quarter,
revision and whether that close still stands, kind, delivery quarter, kWh counted). Tables by default, `--json` for scripts
(energy as exact decimal numbers, times in ISO 8601 UTC).

Both only read. Every query is bounded: `list` by `--limit` (at most 1,000 rows) and every
statement by `--timeout` (the server cancels it; see `open_database`). They never create a
database: without a DSN, a data directory in which the proxy has never run is an error rather
than a fresh, empty embedded server.

Errors: exit 2 for bad arguments, 1 for an unknown session, an unreachable database or a query
past its deadline (one line on stderr each). Cancellation (Ctrl-C) ends the query on the server.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TextIO

import asyncpg
import msgspec

from proxy.cli.db import missing_embedded_database
from proxy.cli.tables import cell, print_table
from proxy.runtime.config import Config
from proxy.store.db import DATABASE_ERRORS, open_database

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
STATUSES = ("active", "completed", "orphaned", "rejected")
DEFAULT_LIMIT, MAX_LIMIT = 50, 1000
DEFAULT_TIMEOUT = 10.0
MAX_MEASURAND_ROWS = 100  # (measurand, phase, location) groups shown by `show`

_SESSION_COLUMNS = """
s.session_id, s.identity, s.transaction_id, s.connector_id, s.evse_id, s.id_tag, s.status, s.stop_reason,
s.started_at, s.stopped_at, s.meter_start_wh, s.meter_stop_wh, s.first_reading_at, s.last_reading_at,
s.last_reading_wh, s.signed_start_wh, s.signed_stop_wh, s.energy_wh, s.energy_source, s.meter_class, s.updated_at,
s.source, s.source_partner_id, s.source_ref, s.duplicate_of
"""

_LIST = f"""
SELECT {_SESSION_COLUMNS} FROM sessions s
WHERE ($1::text IS NULL OR s.identity = $1)
  AND ($2::text IS NULL OR s.status = $2)
  AND ($3::timestamptz IS NULL OR s.started_at >= $3)
  AND ($4::timestamptz IS NULL OR s.started_at < $4)
ORDER BY s.started_at DESC NULLS LAST, s.session_id DESC
LIMIT $5
"""

_BY_ID = f"SELECT {_SESSION_COLUMNS} FROM sessions s WHERE s.session_id = $1"
_BY_TRANSACTION = (
    f"SELECT {_SESSION_COLUMNS} FROM sessions s WHERE s.identity = $1 AND s.transaction_id = $2"
)

_CHARGER_METER = (
    "SELECT vendor, model, meter_type, meter_serial FROM charger_boots WHERE identity = $1"
)

# Every close that looked at the session (a history once closes keep one row per revision).
_ASSESSMENTS = """
SELECT quarter, (to_jsonb(a) ->> 'revision')::integer AS revision, eligibility, reason, detail, kwh,
       assessed_at
FROM session_assessments a WHERE session_id = $1 ORDER BY quarter, revision NULLS FIRST, assessed_at
"""
_STATED = """
SELECT s.quarter, s.revision, q.state, s.kind, s.delivery_quarter, s.kwh
FROM statement_sessions s JOIN quarter_closes q USING (quarter, revision)
WHERE s.session_id = $1 ORDER BY s.quarter, s.revision, s.kind DESC, s.delivery_quarter
"""
_SIGNED_VALUES = "SELECT count(signed_data) FROM meter_samples WHERE session_id = $1"

# Per measurand (and phase and location): how many samples, how many carry a value or signed
# data, the first and last value by time, and the range. A session has at most a few thousand.
_READINGS = f"""
SELECT m.name AS measurand, s.phase, s.location, count(*) AS samples, count(s.value) AS valid,
       count(s.signed_data) AS signed, min(s.sampled_at) AS first_at, max(s.sampled_at) AS last_at,
       (array_agg(s.value ORDER BY s.sampled_at) FILTER (WHERE s.value IS NOT NULL))[1] AS first_value,
       (array_agg(s.value ORDER BY s.sampled_at DESC) FILTER (WHERE s.value IS NOT NULL))[1] AS last_value,
       min(s.value) AS min_value, max(s.value) AS max_value
FROM meter_samples s JOIN measurands m ON m.code = s.measurand
WHERE s.session_id = $1
GROUP BY m.name, s.phase, s.location
ORDER BY m.name, s.phase NULLS FIRST, s.location NULLS FIRST
LIMIT {MAX_MEASURAND_ROWS}
"""


def add_sessions_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The `sessions` subcommand group; `common` carries `--config`."""
    sessions = sub.add_parser("sessions", help="show captured charging sessions")
    actions = sessions.add_subparsers(dest="action", required=True)
    bounded = argparse.ArgumentParser(add_help=False, parents=[common])
    bounded.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bounded.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"deadline of each query (default {DEFAULT_TIMEOUT:g})",
    )
    listing = actions.add_parser(
        "list",
        parents=[bounded],
        help="sessions, newest first",
        description="Sessions, newest first by start time. --from/--to select by the session's start (UTC "
        "unless an offset is given; --from includes, --to excludes).",
    )
    listing.add_argument("--charger", metavar="ID", help="only this charger's sessions")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument(
        "--from",
        dest="since",
        type=_moment,
        metavar="TIME",
        help="started at or after this time (2026-07-01 or 2026-07-01T08:00+02:00)",
    )
    listing.add_argument(
        "--to", dest="until", type=_moment, metavar="TIME", help="started before this time"
    )
    listing.add_argument(
        "--limit",
        type=_limit,
        default=DEFAULT_LIMIT,
        help=f"at most this many sessions (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})",
    )
    show = actions.add_parser(
        "show",
        parents=[bounded],
        help="one session with its meter readings",
        description="One session, by its number (the SESSION column of `sessions list`) or by "
        "--charger and --transaction.",
    )
    show.add_argument("session_id", nargs="?", type=int, metavar="SESSION_ID")
    show.add_argument("--charger", metavar="ID")
    show.add_argument(
        "--transaction", metavar="TRANSACTION_ID", help="the charger's transaction id"
    )


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"the limit must be between 1 and {MAX_LIMIT}")
    return value


def _moment(text: str) -> datetime:
    """An ISO 8601 date or time; without an offset it is UTC, a date alone is its midnight."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 date or time (2026-07-01T08:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _Failure(Exception):
    """Ends the command with one line on stderr and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message, self.code = message, code


async def sessions_command(
    config: Config,
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one `ere-proxy sessions` action; returns the exit code (see the module docstring)."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        if args.action == "show" and not _one_session_named(args):
            raise _Failure(
                "sessions show takes a SESSION_ID, or --charger and --transaction", EXIT_USAGE
            )
        if reason := missing_embedded_database(config.database):
            raise _Failure(reason)
        async with open_database(config.database, migrate=False, query_timeout=args.timeout) as db:
            if args.action == "list":
                rows = await db.fetch(
                    _LIST, args.charger, args.status, args.since, args.until, args.limit
                )
                _print_list([dict(row) for row in rows], args.json, stdout)
            else:
                await _show(db, args, stdout)
    except _Failure as failure:
        print(f"ere-proxy: {failure.message}", file=stderr)
        return failure.code
    except asyncpg.UndefinedTableError:
        print(
            "ere-proxy: the database has no sessions yet (no schema): start the proxy once, "
            "or run `ere-proxy db migrate`",
            file=stderr,
        )
        return EXIT_FAILED
    except asyncpg.QueryCanceledError:
        print(f"ere-proxy: the query took longer than {args.timeout:g} s (--timeout)", file=stderr)
        return EXIT_FAILED
    except DATABASE_ERRORS as exc:  # includes StoreError (e.g. the database is unreachable)
        print(f"ere-proxy: {type(exc).__name__}: {exc}", file=stderr)
        return EXIT_FAILED
    return EXIT_OK


def _one_session_named(args: argparse.Namespace) -> bool:
    by_transaction = (args.charger, args.transaction)
    if args.session_id is not None:
        return by_transaction == (None, None)
    return None not in by_transaction


async def _show(db: Any, args: argparse.Namespace, stdout: TextIO) -> None:
    if args.session_id is not None:
        row = await db.fetchrow(_BY_ID, args.session_id)
        wanted = f"no session {args.session_id}"
    else:
        row = await db.fetchrow(_BY_TRANSACTION, args.charger, args.transaction)
        wanted = f"no session of charger {args.charger!r} with transaction id {args.transaction!r}"
    if row is None:
        raise _Failure(wanted)
    session = dict(row)
    charger = await db.fetchrow(_CHARGER_METER, session["identity"])
    session["charger_meter"] = dict(charger) if charger is not None else None
    session["readings"] = [
        dict(reading) for reading in await db.fetch(_READINGS, session["session_id"])
    ]
    session["evidence"] = {
        "meter_class": session["meter_class"],
        "signed_values": await db.fetchval(_SIGNED_VALUES, session["session_id"]),
    }
    session["assessments"] = [dict(r) for r in await db.fetch(_ASSESSMENTS, session["session_id"])]
    session["statement_lines"] = [dict(r) for r in await db.fetch(_STATED, session["session_id"])]
    if args.json:
        stdout.write(_JSON.encode(session).decode() + "\n")
    else:
        _print_session(session, stdout)


_JSON = msgspec.json.Encoder(decimal_format="number")


def _print_list(sessions: list[dict[str, Any]], as_json: bool, stdout: TextIO) -> None:
    if as_json:
        stdout.write(_JSON.encode(sessions).decode() + "\n")
        return
    header = (
        "SESSION",
        "CHARGER",
        "TRANSACTION",
        "CONNECTOR",
        "STATUS",
        "STARTED (UTC)",
        "STOPPED (UTC)",
        "KWH",
        "METER CLASS",
    )
    rows = [
        (
            s["session_id"],
            s["identity"],
            s["transaction_id"],
            _connector(s),
            s["status"],
            _time(s["started_at"]),
            _time(s["stopped_at"]),
            _kwh(s["energy_wh"]),
            s["meter_class"],
        )
        for s in sessions
    ]
    print_table(header, rows, stdout)


def _print_session(s: dict[str, Any], stdout: TextIO) -> None:
    status = s["status"] + (f" ({s['stop_reason']})" if s["stop_reason"] else "")
    energy = (
        "-"
        if s["energy_wh"] is None
        else f"{_kwh(s['energy_wh'])} kWh ({_plain(s['energy_wh'])} Wh, from {s['energy_source']})"
    )
    meter = s["charger_meter"]
    declared = (
        "-"
        if meter is None
        else (
            f"{meter['vendor']} {meter['model']}, meter {cell(meter['meter_type'])} serial {cell(meter['meter_serial'])}"
        )
    )
    source = s["source"]
    if s["source_partner_id"] is not None:
        source += f" from partner {s['source_partner_id']}, their id {s['source_ref']!r}"
    fields = (
        ("session", s["session_id"]),
        ("source", source),
        ("duplicate of", s["duplicate_of"]),
        ("charger", s["identity"]),
        ("transaction", s["transaction_id"]),
        ("connector", _connector(s)),
        ("id tag", s["id_tag"]),
        ("status", status),
        ("started", _time(s["started_at"], utc=True)),
        ("stopped", _time(s["stopped_at"], utc=True)),
        ("energy", energy),
        ("meter class", s["meter_class"]),
        ("signed values", s["evidence"]["signed_values"]),
        ("charger meter", declared),
        ("meter start", _wh(s["meter_start_wh"])),
        ("meter stop", _wh(s["meter_stop_wh"])),
        ("signed", _span(_wh(s["signed_start_wh"]), _wh(s["signed_stop_wh"]))),
        ("readings", _readings(s)),
        ("updated", _time(s["updated_at"], utc=True)),
    )
    for name, value in fields:
        print(f"{name + ':':<15}{cell(value)}", file=stdout)
    readings = s["readings"]
    print(
        f"\nmeter samples ({'none' if not readings else sum(r['samples'] for r in readings)}):",
        file=stdout,
    )
    if readings:
        header = (
            "MEASURAND",
            "PHASE",
            "LOCATION",
            "SAMPLES",
            "VALID",
            "SIGNED",
            "FIRST",
            "LAST",
            "MIN",
            "MAX",
            "FROM (UTC)",
            "TO (UTC)",
        )
        rows = [
            (
                r["measurand"],
                r["phase"],
                r["location"],
                r["samples"],
                r["valid"],
                r["signed"],
                _plain(r["first_value"]),
                _plain(r["last_value"]),
                _plain(r["min_value"]),
                _plain(r["max_value"]),
                _time(r["first_at"]),
                _time(r["last_at"]),
            )
            for r in readings
        ]
        print_table(header, rows, stdout)
        if len(readings) == MAX_MEASURAND_ROWS:
            print(f"(the first {MAX_MEASURAND_ROWS} groups; --json gives the same)", file=stdout)
    _print_accounting(s, stdout)


def _print_accounting(s: dict[str, Any], stdout: TextIO) -> None:
    """The closes' assessments of the session and the statement lines that counted it."""
    assessed = s["assessments"]
    if not assessed:
        print("\nassessments: none (no close has looked at it)", file=stdout)
    else:
        print(f"\nassessments ({len(assessed)}):", file=stdout)
        header = ("QUARTER", "REVISION", "ELIGIBILITY", "REASON", "KWH", "ASSESSED (UTC)", "DETAIL")
        rows = [
            (
                a["quarter"],
                a["revision"],
                a["eligibility"],
                a["reason"],
                _plain(a["kwh"]),
                _time(a["assessed_at"]),
                a["detail"] or None,
            )
            for a in assessed
        ]
        print_table(header, rows, stdout)
    stated = s["statement_lines"]
    if not stated:
        print("\nstatement lines: none", file=stdout)
        return
    print(f"\nstatement lines ({len(stated)}):", file=stdout)
    lines_header = ("QUARTER", "REVISION", "KIND", "DELIVERY QUARTER", "KWH")
    lines = [
        (
            line["quarter"],
            f"{line['revision']}" + ("" if line["state"] == "closed" else f" ({line['state']})"),
            line["kind"],
            line["delivery_quarter"],
            _plain(line["kwh"]),
        )
        for line in stated
    ]
    print_table(lines_header, lines, stdout)


def _readings(s: dict[str, Any]) -> str | None:
    """When the session's meter readings came and the last one, or None without readings."""
    if s["first_reading_at"] is None:
        return None
    first, last = _time(s["first_reading_at"], utc=True), _time(s["last_reading_at"], utc=True)
    return f"{first} .. {last}, last {cell(_wh(s['last_reading_wh']))}"


def _span(first: str | None, last: str | None) -> str | None:
    """ "first .. last", or None when neither is known."""
    return None if first is None and last is None else f"{cell(first)} .. {cell(last)}"


def _connector(session: dict[str, Any]) -> str:
    if session["evse_id"] is not None:
        return f"evse {session['evse_id']}/{cell(session['connector_id'])}"
    return cell(session["connector_id"])


def _time(moment: datetime | None, utc: bool = False) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if utc else "")


def _plain(value: Decimal | None) -> str | None:
    """An exact decimal without exponent or trailing zeros (12.50 -> 12.5, 1E+3 -> 1000)."""
    if value is None:
        return None
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _wh(value: Decimal | None) -> str | None:
    return None if value is None else f"{_plain(value)} Wh"


def _kwh(value: Decimal | None) -> str | None:
    return None if value is None else _plain(value / 1000)
