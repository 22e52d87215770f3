"""Which quarters may be closed or reopened, and the rules a close applies (frozen with it).

`request_close` queues the close of a quarter (the `close` job of `proxy.ere.jobs.closing`) in
the caller's transaction; `reopen` marks a closed quarter's revision `reopened` (audited). The
rules, checked by `check_can_close` when the close is requested and again when its job starts:

- only a quarter that has ended, and whose grace period for late data (`[ere]
  close_grace_days` after its end, Dutch time) has passed, can be closed: never the current
  quarter, never the future;
- quarters close in order: a quarter closes only once the one before it is closed (unless no
  quarter was ever closed), never after a later one, and not while another is still closing;
- reopening is refused once the quarter was paid out or a later quarter is closed, and it only
  reopens: it never queues a close. The next `quarter close` closes the quarter as a new
  revision, under the rules above.

`CloseRules` are the settings a close applies (fee step per active referral, the clock
tolerances and the max-power margin of the eligibility checks, the grace period); they travel
in the job's arguments and are stored on the close (`quarter_closes.rules`), so a close's
figures can be recomputed years later with what it used, whatever the configuration says then.

Errors: `CloseRefused` (a ValueError) with a message saying why and what to do instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from proxy.ere.core.quarters import Quarter
from proxy.ere.jobs.queue import enqueue
from proxy.runtime.config import EreSettings
from proxy.store.connection import Connection

__all__ = ["CloseRefused", "CloseRules", "check_can_close", "reopen", "request_close"]


class CloseRefused(ValueError):
    """A close or reopen that the rules in the module docstring forbid."""


@dataclass(frozen=True, slots=True)
class CloseRules:
    """The settings one close applies; see the module docstring."""

    shards: int
    grace: timedelta
    referral_step: Decimal
    clock_ahead: timedelta
    max_clock_lag: timedelta
    margin_wh: Decimal

    @classmethod
    def from_settings(cls, settings: EreSettings) -> CloseRules:
        return cls(
            shards=settings.close_shards,
            grace=timedelta(days=settings.close_grace_days),
            referral_step=Decimal(settings.referral_step),
            clock_ahead=timedelta(seconds=settings.clock_ahead_seconds),
            max_clock_lag=timedelta(days=settings.max_clock_lag_days),
            margin_wh=Decimal(settings.max_power_margin_wh),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "shards": self.shards,
            "grace_seconds": self.grace.total_seconds(),
            "referral_step": str(self.referral_step),
            "clock_ahead_seconds": self.clock_ahead.total_seconds(),
            "max_clock_lag_seconds": self.max_clock_lag.total_seconds(),
            "max_power_margin_wh": str(self.margin_wh),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CloseRules:
        return cls(
            shards=int(data["shards"]),
            grace=timedelta(seconds=float(data["grace_seconds"])),
            referral_step=Decimal(data["referral_step"]),
            clock_ahead=timedelta(seconds=float(data["clock_ahead_seconds"])),
            max_clock_lag=timedelta(seconds=float(data["max_clock_lag_seconds"])),
            margin_wh=Decimal(data["max_power_margin_wh"]),
        )


async def check_can_close(
    conn: Connection, quarter: Quarter, now: datetime, grace: timedelta
) -> None:
    """Raise CloseRefused unless `quarter` may be closed at `now` (see the module docstring)."""
    closable_from = quarter.end + grace
    if now < closable_from:
        when = "has not ended yet" if now < quarter.end else "is in its grace period for late data"
        raise CloseRefused(
            f"{quarter} {when}: it can be closed from {closable_from.isoformat()}"
            f" ({quarter} ends {quarter.end.isoformat()}, plus {grace.days} days of late data)"
        )
    rows = await conn.fetch("SELECT quarter, state FROM quarter_closes WHERE state <> 'reopened'")
    current = {Quarter.parse(row[0]): row[1] for row in rows}
    if quarter in current:
        raise CloseRefused(f"{quarter} is already {current[quarter]}")
    later = sorted(q for q in current if q > quarter)
    if later:
        raise CloseRefused(
            f"{later[0]} is already {current[later[0]]}, so {quarter} can no longer be closed"
        )
    if current and quarter.previous() not in current:
        raise CloseRefused(f"{quarter.previous()} must be closed first (quarters close in order)")
    unfinished = [str(q) for q, state in current.items() if state != "closed"]
    if unfinished:
        raise CloseRefused(f"{', '.join(unfinished)} is still closing")


async def request_close(
    conn: Connection, quarter: Quarter, settings: EreSettings, now: datetime | None = None
) -> bool:
    """Queue the close of `quarter` (in the caller's transaction); False if already queued.

    `now` is the moment of the request (default: the system clock); the close's job checks the
    rules again at that moment, so a queued close never depends on when a worker picks it up.
    """
    moment = now if now is not None else datetime.now(UTC)
    rules = CloseRules.from_settings(settings)
    await check_can_close(conn, quarter, moment, rules.grace)
    latest = await conn.fetchval(
        "SELECT max(revision) FROM quarter_closes WHERE quarter = $1", str(quarter)
    )
    revision = (latest or 0) + 1
    return await enqueue(
        conn,
        "close",
        f"{quarter}/r{revision}",
        {
            "quarter": str(quarter),
            "shards": rules.shards,
            "requested_at": moment.isoformat(),
            "rules": rules.as_json(),
        },
    )


async def reopen(conn: Connection, quarter: Quarter, actor: str, reason: str) -> int:
    """Mark the closed revision of `quarter` reopened (audited); returns that revision.

    Nothing is queued: the quarter closes again, as the next revision, with `quarter close`.
    """
    row = await conn.fetchrow(
        "SELECT revision, state FROM quarter_closes WHERE quarter = $1 AND state <> 'reopened' FOR UPDATE",
        str(quarter),
    )
    if row is None or row[1] != "closed":
        raise CloseRefused(f"{quarter} is not closed" + (f" (it is {row[1]})" if row else ""))
    later = await conn.fetchval(
        "SELECT min(quarter) FROM quarter_closes WHERE quarter > $1 AND state <> 'reopened'",
        str(quarter),
    )
    if later is not None:
        raise CloseRefused(
            f"{later} is closed after {quarter}: correct {quarter} through adjustments instead"
        )
    if await conn.fetchval("SELECT count(*) FROM payout_runs WHERE quarter = $1", str(quarter)):
        raise CloseRefused(
            f"{quarter} was paid out: its corrections go into the next quarter as adjustments"
        )
    if not reason.strip():
        raise CloseRefused("a reopen needs a reason (it is kept in the audit log)")
    await conn.execute(
        "UPDATE quarter_closes SET state = 'reopened' WHERE quarter = $1 AND revision = $2",
        str(quarter),
        row[0],
    )
    await conn.execute(
        "INSERT INTO ere_audit_log (actor, action, subject, reason, details) VALUES ($1, 'reopen', $2, $3, $4::jsonb)",
        actor,
        str(quarter),
        reason,
        json.dumps({"revision": row[0]}),
    )
    revision: int = row[0]
    return revision
