"""What a quarter's close reads and how it assesses it: link periods, mandates, sessions.

`load_close_data` reads, for a set of customers, the link periods of their chargers (all
periods of those chargers, with the shard of each period's customer), their mandates (ending at
a revocation), the sessions of those chargers that started before the quarter's end (shard 0
also those of chargers never linked) and everything already stated for the customers.
`assess_all` assesses each session the caller is responsible for (see `proxy.ere.jobs.closing`
on attribution) with `core.eligibility.assess`, and returns each assessment with the inputs it
was based on, the record kept with it.

Duplicates: a session stored as the duplicate of another (`duplicate_of`) is one; so is a
session the rule of `proxy.ingest.dedup` finds among the sessions read (a partner's record of a
charging event whose OCPP session arrived after it), so an event counts once whichever source
reached the books first.

Errors: database errors propagate (the close job's transaction rolls back).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from proxy.ere.core.ean import Ean
from proxy.ere.core.eligibility import (
    Assessment,
    ChargerLink,
    Mandate,
    SessionContext,
    SessionRecord,
    SessionStatus,
    assess,
)
from proxy.ere.core.quarters import Quarter
from proxy.ere.jobs.close_requests import CloseRules
from proxy.ingest.dedup import Charge, find_duplicates
from proxy.store.connection import Connection

__all__ = ["CloseData", "LinkPeriod", "assess_all", "load_close_data", "with_duplicates"]


@dataclass(frozen=True, slots=True)
class LinkPeriod:
    """One row of `charger_links`: a charger on a customer's connection for a while."""

    customer_id: str
    max_power_w: Decimal
    valid_from: datetime
    valid_until: datetime | None
    shard: int  # the shard of its customer

    def covers(self, instant: datetime) -> bool:
        return self.valid_from <= instant and (
            self.valid_until is None or instant < self.valid_until
        )


class CloseData:
    """What a shard (or the referral count) reads: its customers, the link periods of their
    chargers, mandates, sessions and earlier statements. `shard` None: only sessions a period
    gives to one of `eans`' customers are assessed."""

    def __init__(self, eans: dict[str, Ean], shard: int | None) -> None:
        self.eans = eans
        self.shard = shard
        self.periods: dict[str, list[LinkPeriod]] = defaultdict(list)  # by identity, by start
        self.mandates: dict[str, list[Mandate]] = defaultdict(list)  # customer -> mandates
        self.sessions: list[SessionRecord] = []
        self.closed_lines: list[Any] = []
        self.closed_sessions: list[Any] = []


_PERIODS = """
SELECT identity, customer_id, max_power_w, valid_from, valid_until, mod(abs(hashtext(customer_id)), $2)
FROM charger_links WHERE identity IN (SELECT identity FROM charger_links WHERE customer_id = ANY($1::text[]))
ORDER BY identity, valid_from
"""
_MANDATES = """
SELECT customer_id, ean, valid_from, least(valid_until, revoked_effective) FROM mandates
WHERE customer_id = ANY($1::text[]) AND coalesce(revoked_effective >= valid_from, true)
"""
_SESSIONS = """
SELECT s.session_id, s.identity, s.transaction_id, s.connector_id, s.evse_id, s.started_at, s.stopped_at,
       s.meter_start_wh, s.meter_stop_wh, s.last_reading_at, s.last_reading_wh, s.energy_wh, s.meter_class,
       s.status, coalesce(x.exported, 0), s.start_received_at, s.stop_received_at, s.source,
       s.duplicate_of
FROM sessions s
LEFT JOIN LATERAL (
    SELECT max(m.value) - min(m.value) AS exported FROM meter_samples m JOIN measurands d ON d.code = m.measurand
    WHERE m.session_id = s.session_id AND d.name = 'Energy.Active.Export.Register'
) x ON true
WHERE s.started_at < $2 AND (s.identity = ANY($1::text[]) OR ($3 AND s.identity NOT IN (SELECT identity FROM charger_links)))
"""
_CLOSED_LINES = """
SELECT l.quarter, l.customer_id, l.ean, l.delivery_quarter, l.kind, l.kwh, l.ere, l.eur_per_ere, l.gross,
       l.fee_rate, l.fee, l.fee_vat, l.net
FROM statement_lines l JOIN quarter_closes c ON (c.quarter, c.revision) = (l.quarter, l.revision)
WHERE c.state = 'closed' AND l.customer_id = ANY($1::text[])
"""
_CLOSED_SESSIONS = """
SELECT s.quarter, s.customer_id, s.ean, s.delivery_quarter, s.kind, s.session_id, s.kwh
FROM statement_sessions s JOIN quarter_closes c ON (c.quarter, c.revision) = (s.quarter, s.revision)
WHERE c.state = 'closed' AND s.customer_id = ANY($1::text[])
"""


async def load_close_data(
    conn: Connection, quarter: Quarter, eans: dict[str, Ean], shard: int | None, shards: int = 1
) -> CloseData:
    data = CloseData(eans, shard)
    ids = list(eans)
    for identity, customer_id, max_power, valid_from, valid_until, owner in await conn.fetch(
        _PERIODS, ids, shards
    ):
        data.periods[identity].append(
            LinkPeriod(customer_id, max_power, valid_from, valid_until, owner)
        )
    for customer_id, ean, valid_from, valid_until in await conn.fetch(_MANDATES, ids):
        data.mandates[customer_id].append(Mandate(customer_id, Ean(ean), valid_from, valid_until))
    rows = await conn.fetch(_SESSIONS, list(data.periods), quarter.end, shard == 0)
    data.sessions = with_duplicates([_record(row) for row in rows])
    data.closed_lines = await conn.fetch(_CLOSED_LINES, ids)
    data.closed_sessions = await conn.fetch(_CLOSED_SESSIONS, ids)
    return data


def _record(row: Sequence[Any]) -> SessionRecord:
    (
        session_id,
        identity,
        transaction_id,
        connector_id,
        evse_id,
        started_at,
        stopped_at,
        meter_start,
        meter_stop,
        last_at,
        last_wh,
        energy,
        meter_class,
        status,
        exported,
        start_received_at,
        stop_received_at,
        source,
        duplicate_of,
    ) = row
    return SessionRecord(
        session_id,
        identity,
        transaction_id,
        connector_id,
        started_at,
        stopped_at,
        meter_start,
        meter_stop,
        last_at,
        last_wh,
        energy,
        meter_class,
        status,
        exported_wh=Decimal(exported),
        evse_id=evse_id,
        start_received_at=start_received_at,
        stop_received_at=stop_received_at,
        source=source,
        duplicate_of=duplicate_of,
    )


def with_duplicates(sessions: list[SessionRecord]) -> list[SessionRecord]:
    """`sessions`, each that `proxy.ingest.dedup` finds to be the same charging event as a
    better-ranked one marked as its duplicate (a stored mark stays); sessions marked already,
    and those without a start, an end or an energy figure, are not compared."""
    charges = [
        Charge(
            s.session_id,
            s.identity,
            s.source,
            s.started_at,
            s.ended_at,
            s.energy_wh,
            str(s.meter_class),
        )
        for s in sessions
        if s.duplicate_of is None
        and s.status is not SessionStatus.REJECTED
        and s.started_at is not None
        and s.ended_at is not None
        and s.ended_at >= s.started_at
        and s.energy_wh is not None
    ]
    found = find_duplicates(charges)
    if not found:
        return sessions
    return [
        replace(s, duplicate_of=found[s.session_id]) if s.session_id in found else s
        for s in sessions
    ]


def _period_of(data: CloseData, session: SessionRecord) -> tuple[bool, LinkPeriod | None]:
    """Whether this close assesses `session`, and the link period it belongs to (if any)."""
    periods = data.periods.get(session.identity, [])
    instant = session.ended_at or session.started_at
    period = next((p for p in periods if instant is not None and p.covers(instant)), None)
    if period is not None:
        return period.customer_id in data.eans, period
    if data.shard is None:
        return False, None
    owner = periods[0].shard if periods else 0
    return owner == data.shard, None


def assess_all(data: CloseData, rules: CloseRules) -> list[tuple[Assessment, dict[str, Any]]]:
    """Assess every session this close is responsible for, each with the inputs it used."""
    by_connector: dict[tuple[str, int | None, int | None], list[SessionRecord]] = defaultdict(list)
    for session in data.sessions:
        by_connector[session.identity, session.evse_id, session.connector_id].append(session)
    assessed = []
    for sessions in by_connector.values():
        for session, neighbours in _with_overlap_candidates(sessions):
            ours, period = _period_of(data, session)
            if not ours:
                continue
            link = (
                ChargerLink(period.customer_id, data.eans[period.customer_id]) if period else None
            )
            mandates = (
                tuple(m for m in data.mandates.get(link.customer_id, ()) if m.ean == link.ean)
                if link
                else ()
            )
            context = SessionContext(
                link,
                period.max_power_w if period else Decimal(1),
                mandates,
                neighbours,
                margin_wh=rules.margin_wh,
                clock_ahead=rules.clock_ahead,
                max_clock_lag=rules.max_clock_lag,
            )
            assessed.append((assess(session, context), _inputs(session, period, mandates)))
    return assessed


def _inputs(
    session: SessionRecord, period: LinkPeriod | None, mandates: tuple[Mandate, ...]
) -> dict[str, Any]:
    """What an assessment was based on, as kept with it."""

    def text(value: Any) -> str | None:
        return (
            None
            if value is None
            else value.isoformat()
            if hasattr(value, "isoformat")
            else str(value)
        )

    marks = {
        name: value
        for name, value in (("source", session.source), ("duplicate_of", session.duplicate_of))
        if value is not None and value != "ocpp"
    }
    return marks | {
        "status": str(session.status),
        "meter_class": str(session.meter_class),
        "started_at": text(session.started_at),
        "ended_at": text(session.ended_at),
        "start_received_at": text(session.start_received_at),
        "stop_received_at": text(session.stop_received_at),
        "energy_wh": text(session.energy_wh),
        "exported_wh": text(session.exported_wh),
        "link": None
        if period is None
        else {
            "customer_id": period.customer_id,
            "valid_from": text(period.valid_from),
            "valid_until": text(period.valid_until),
            "max_power_w": text(period.max_power_w),
        },
        "mandates": [[text(m.valid_from), text(m.valid_until)] for m in mandates],
    }


def _with_overlap_candidates(
    sessions: list[SessionRecord],
) -> Iterable[tuple[SessionRecord, tuple[SessionRecord, ...]]]:
    """Each session with the sessions of its connector that could overlap it (by start and end).

    Sorting by start keeps this near-linear: only sessions starting before this one ends, and
    not ending before it starts, can overlap (the longest session bounds how far back to look).
    """
    dated = sorted(
        ((s.started_at, s) for s in sessions if s.started_at is not None), key=lambda pair: pair[0]
    )
    starts = [start for start, _ in dated]
    longest = max(((s.ended_at or start) - start for start, s in dated), default=timedelta(0))
    for session in sessions:
        start = session.started_at
        if start is None:
            yield session, ()
            continue
        end = max(session.ended_at or start, start)
        low = bisect.bisect_left(starts, start - longest)
        high = bisect.bisect_right(starts, end)
        yield session, tuple(other for _, other in dated[low:high] if other is not session)
