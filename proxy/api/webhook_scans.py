"""Webhook events of what other roles write, found by a periodic scan in the api role.

The capture store completes sessions and the ERE workers issue statements and write payout
runs; none of them knows about webhooks, and the forwarding path never waits on them. Every
`interval` seconds one api process (a transaction-level advisory lock; the others skip that
round) looks for what happened and records the events (`proxy.api.webhook_events.emit`):

- `session.completed`: completed sessions of chargers whose link period at the session's end
  belongs to the partner's customer (as `/v1/sessions` assigns them), by when the session row
  was last written;
- `statement.issued`: rows of `payout_statements` (a customer's statement delivered);
- `payout.sent`: written payout runs with transfers to the partner or its customers;
- `mandate.expiring`: unrevoked mandates ending within `EXPIRING_DAYS` of today (Dutch date)
  with no mandate of the same customer for the next year.

Only partners with an active endpoint subscribed to the type are looked at, and only what
happened since their first such endpoint was made (no history is replayed to a new endpoint).
The unique key of events makes every scan idempotent: what has an event is skipped. Sources
read by write time keep a mark (`webhook_scan_marks`, the database's clock) and reread a margin
before it, for writers whose transactions committed late; at most `batch` events per source a
round.

Errors: `run_scans` logs a round that fails (a database outage) and tries again next round.
A round that worked is counted in `metrics` (`proxy.api.metrics`), if given: its events by type
and its time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import trio

from proxy.api.metrics import ApiMetrics
from proxy.api.numbers import kwh, plain
from proxy.api.session_data import END
from proxy.api.webhook_events import NewEvent, emit
from proxy.ere.core.quarters import local_date
from proxy.ere.jobs.payout_statements import statement_id
from proxy.store.connection import Connection

__all__ = ["EXPIRING_DAYS", "run_scans", "scan_once"]

log = logging.getLogger("proxy.api.webhooks")

EXPIRING_DAYS = 30


def _subscribed(event_type: str) -> str:
    """A CTE: partners with an active endpoint for `event_type`, and since when."""
    return f"""
    subscribed AS (
        SELECT partner_id, min(created_at) AS since FROM webhook_endpoints
        WHERE disabled_at IS NULL AND '{event_type}' = ANY (events) GROUP BY partner_id
    )"""


def _unsent(event_type: str, object_id: str) -> str:
    return f"""NOT EXISTS (
        SELECT 1 FROM webhook_events e
        WHERE e.partner_id = p.partner_id AND e.type = '{event_type}' AND e.object_id = {object_id}
    )"""


# The queries' parameters: the mark minus the margin (NULL: none yet) or today, if they read
# by write time or by date, then how many at most.
_SESSIONS = f"""
WITH {_subscribed("session.completed")}
SELECT p.partner_id, s.session_id, s.identity, s.transaction_id, s.started_at,
       {END} AS ended_at, s.energy_wh, l.customer_id, s.updated_at AS written_at
FROM sessions s
JOIN charger_links l ON l.identity = s.identity AND l.valid_from <= {END}
     AND (l.valid_until IS NULL OR {END} < l.valid_until)
JOIN customers c ON c.customer_id = l.customer_id
JOIN subscribed p ON p.partner_id = c.partner_id
WHERE s.status = 'completed' AND ($1::timestamptz IS NULL OR s.updated_at >= $1)
  AND s.updated_at >= p.since AND {_unsent("session.completed", "s.session_id::text")}
ORDER BY s.updated_at, s.session_id LIMIT $2
"""
_STATEMENTS = f"""
WITH {_subscribed("statement.issued")}
SELECT p.partner_id, t.run_id, r.quarter, t.customer_id, t.delivered_at AS written_at
FROM payout_statements t
JOIN payout_runs r ON r.run_id = t.run_id
JOIN customers c ON c.customer_id = t.customer_id
JOIN subscribed p ON p.partner_id = c.partner_id
WHERE ($1::timestamptz IS NULL OR t.delivered_at >= $1) AND t.delivered_at >= p.since
  AND {_unsent("statement.issued", "t.run_id || '/' || t.customer_id")}
ORDER BY t.delivered_at, t.run_id, t.customer_id LIMIT $2
"""
_PAYOUTS = f"""
WITH {_subscribed("payout.sent")},
paid AS (
    SELECT r.run_id, r.quarter, r.execution_date, r.created_at, t.amount,
           CASE WHEN t.payee_kind = 'partner' THEN t.payee_id ELSE c.partner_id END AS partner_id
    FROM payout_runs r
    JOIN payout_transfers t ON t.run_id = r.run_id
    LEFT JOIN customers c ON t.payee_kind = 'customer' AND c.customer_id = t.payee_id
    WHERE r.state = 'written'
)
SELECT p.partner_id, x.run_id, x.quarter, x.execution_date, sum(x.amount) AS amount,
       count(*) AS transfers
FROM paid x JOIN subscribed p ON p.partner_id = x.partner_id
WHERE x.created_at >= p.since AND {_unsent("payout.sent", "x.run_id")}
GROUP BY p.partner_id, x.run_id, x.quarter, x.execution_date
ORDER BY x.run_id, p.partner_id LIMIT $1
"""
_MANDATES = f"""
WITH {_subscribed("mandate.expiring")}
SELECT p.partner_id, m.customer_id, m.ean, m.year, m.valid_until
FROM subscribed p
JOIN customers c ON c.partner_id = p.partner_id
JOIN mandates m ON m.ean = c.ean AND m.customer_id = c.customer_id
WHERE m.year IN (extract(year FROM $1::date)::int, extract(year FROM $1::date)::int + 1)
  AND m.revoked_at IS NULL AND m.valid_until BETWEEN $1::date AND $1::date + {EXPIRING_DAYS}
  AND NOT EXISTS (
      SELECT 1 FROM mandates n
      WHERE n.ean = m.ean AND n.year = m.year + 1 AND n.customer_id = m.customer_id
        AND n.revoked_at IS NULL)
  AND {_unsent("mandate.expiring", "m.ean || '/' || m.year")}
ORDER BY m.valid_until, m.ean LIMIT $2
"""


def _session(row: Any) -> NewEvent:
    data = {
        "session_id": row["session_id"],
        "charger": row["identity"],
        "transaction_id": row["transaction_id"],
        "customer_id": row["customer_id"],
        "started_at": row["started_at"],
        "ended_at": row["ended_at"],
        "energy_kwh": kwh(row["energy_wh"]),
    }
    return NewEvent(row["partner_id"], "session.completed", str(row["session_id"]), data)


def _statement(row: Any) -> NewEvent:
    data = {
        "statement_id": statement_id(row["quarter"], row["customer_id"]),
        "run_id": row["run_id"],
        "quarter": row["quarter"],
        "customer_id": row["customer_id"],
        "issued_at": row["written_at"],
    }
    object_id = f"{row['run_id']}/{row['customer_id']}"
    return NewEvent(row["partner_id"], "statement.issued", object_id, data)


def _payout(row: Any) -> NewEvent:
    data = {
        "run_id": row["run_id"],
        "quarter": row["quarter"],
        "execution_date": row["execution_date"],
        "amount_eur": plain(row["amount"]),
        "transfers": row["transfers"],
    }
    return NewEvent(row["partner_id"], "payout.sent", row["run_id"], data)


def _mandate(row: Any) -> NewEvent:
    data = {
        "customer_id": row["customer_id"],
        "ean": row["ean"],
        "year": row["year"],
        "valid_until": row["valid_until"],
    }
    object_id = f"{row['ean']}/{row['year']}"
    return NewEvent(row["partner_id"], "mandate.expiring", object_id, data)


@dataclass(frozen=True, slots=True)
class _Source:
    type: str
    query: str
    event: Callable[[Any], NewEvent]
    reads: Literal["written", "today", "all"]
    margin: timedelta = timedelta(0)  # reread before the mark (by write time)


_SOURCES = (
    _Source("session.completed", _SESSIONS, _session, "written", timedelta(minutes=15)),
    _Source("statement.issued", _STATEMENTS, _statement, "written", timedelta(days=1)),
    _Source("payout.sent", _PAYOUTS, _payout, "all"),
    _Source("mandate.expiring", _MANDATES, _mandate, "today"),
)


async def _scan(tx: Connection, source: _Source, today: date, started: datetime, batch: int) -> int:
    args: tuple[object, ...] = (batch,)
    if source.reads == "today":
        args = (today, batch)
    elif source.reads == "written":
        mark = await tx.fetchval(
            "SELECT scanned_to FROM webhook_scan_marks WHERE source = $1", source.type
        )
        args = (None if mark is None else mark - source.margin, batch)
    rows = await tx.fetch(source.query, *args)
    await emit(tx, [source.event(row) for row in rows])
    if source.reads == "written":
        to = rows[-1]["written_at"] if len(rows) >= batch else started
        await tx.execute(
            "INSERT INTO webhook_scan_marks (source, scanned_to) VALUES ($1, $2) "
            "ON CONFLICT (source) DO UPDATE SET scanned_to = greatest("
            "webhook_scan_marks.scanned_to, excluded.scanned_to)",
            source.type,
            to,
        )
    return len(rows)


async def scan_once(db: Connection, now: datetime, *, batch: int = 5000) -> dict[str, int]:
    """One round (see the module docstring): the events recorded, by type; empty if another
    process holds the round. `now` gives today's date for `mandate.expiring`."""
    today = local_date(now)
    async with db.transaction() as tx:
        if not await tx.fetchval(
            "SELECT pg_try_advisory_xact_lock(hashtextextended('webhook-scan', 0))"
        ):
            return {}
        started: datetime = await tx.fetchval("SELECT now()")
        return {source.type: await _scan(tx, source, today, started, batch) for source in _SOURCES}


def _wall_clock() -> datetime:
    return datetime.now(UTC)


async def run_scans(
    db: Connection,
    stop: trio.Event,
    *,
    interval: float = 60.0,
    clock: Callable[[], datetime] = _wall_clock,
    metrics: ApiMetrics | None = None,
) -> None:
    """Scan every `interval` seconds until `stop` is set."""
    while not stop.is_set():
        try:
            found = await scan_once(db, clock())
        except Exception as error:  # a database outage: the next round tries again
            log.warning("webhook scan failed", exc_info=error)
        else:
            if metrics is not None:
                metrics.scan_round(found)
            if any(found.values()):
                log.info("webhook events found", extra={"events": found})
        with trio.move_on_after(interval):
            await stop.wait()
