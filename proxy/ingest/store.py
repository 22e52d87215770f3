"""Storing supplied sessions: `record_sessions(tx, sessions)`, inside the caller's transaction.

Each `ExternalSession` gets an outcome, in order (`IngestResult.outcomes`):

- `invalid`: it breaks a rule of `proxy.ingest.records` (the error says which);
- `refused`: its charger is not one of its partner's (registered by it, granted to it, or
  linked to its customers: `proxy.api.charger_data.PARTNER_CHARGERS`), checked in this
  transaction; nothing about the charger is told;
- `unchanged`: its partner supplied this id (`source_ref`) from this source before, or earlier
  in the same call, with the same content (`records.fingerprint`): nothing is written;
- `conflict`: that id is stored with other content: refused, never applied (the outcome names
  the stored session);
- `inserted`: a new row of `sessions` (`source`, `source_ref`, the partner), status
  `completed`, its energy as reported (or from its signed readings), its meter class from
  `proxy.ingest.evidence`, and what the source supplied kept in `session_source_records`;
- `duplicate`: inserted too, as evidence, but it is the same charging event as a session that
  counts instead (`proxy.ingest.dedup`): `duplicate_of` names that one, and a close never counts
  it. A new session that outranks an earlier one of the same partner (signed where that one was
  not) makes that one its duplicate; no other partner's row, and no captured session, is
  changed.

Idempotent by (partner, source, source_ref): supplying a batch again changes nothing, and two
transactions supplying one id wait for each other (the unique index), the second one getting
`unchanged` or `conflict`. Set-based: a call costs a fixed number of statements, whatever its
size (callers with very large batches call it in chunks within one transaction).

Errors: database errors propagate (the caller's transaction rolls back). Cancellation: as for
any statement of the transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Literal

from proxy.api.charger_data import PARTNER_CHARGERS
from proxy.ingest.dedup import Charge, find_duplicates
from proxy.ingest.evidence import Evidence, weigh
from proxy.ingest.records import ExternalSession, RecordError, check, fingerprint
from proxy.store.connection import Connection

__all__ = ["NOT_THE_PARTNERS", "IngestResult", "ItemOutcome", "Outcome", "record_sessions"]

Outcome = Literal["inserted", "duplicate", "unchanged", "conflict", "refused", "invalid"]


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What became of one supplied session: `session_id` is the stored session (for a conflict,
    the one stored under its id); `error` says why for `invalid` and `refused`."""

    outcome: Outcome
    session_id: int | None = None
    duplicate_of: int | None = None
    error: RecordError | None = None


@dataclass(frozen=True, slots=True)
class IngestResult:
    outcomes: tuple[ItemOutcome, ...]

    def count(self, outcome: Outcome) -> int:
        return sum(1 for item in self.outcomes if item.outcome == outcome)

    @property
    def inserted(self) -> int:
        """New sessions that count (duplicates are counted apart)."""
        return self.count("inserted")

    @property
    def duplicates(self) -> int:
        return self.count("duplicate")

    @property
    def unchanged(self) -> int:
        return self.count("unchanged")

    @property
    def conflicts(self) -> int:
        return self.count("conflict")

    @property
    def refused(self) -> int:
        return self.count("refused")

    @property
    def invalid(self) -> int:
        return self.count("invalid")


NOT_THE_PARTNERS = "is not one of the partner's chargers (register, grant or link it first)"

_OWNED = f"SELECT p.identity FROM ({PARTNER_CHARGERS}) p WHERE p.identity = ANY($2::text[])"
_STORED = """
SELECT s.source_ref, s.session_id, r.fingerprint, s.duplicate_of
FROM sessions s JOIN session_source_records r USING (session_id)
WHERE s.source_partner_id = $1 AND s.source = $2 AND s.source_ref = ANY($3::text[])
"""
_FACTS = """
SELECT i.identity, b.meter_type, b.meter_serial, k.public_key
FROM unnest($1::text[]) AS i(identity)
LEFT JOIN charger_boots b USING (identity) LEFT JOIN meter_keys k USING (identity)
"""
_INSERT = """
INSERT INTO sessions (identity, started_at, stopped_at, meter_start_wh, meter_stop_wh, status,
                      meter_class, signed_start_wh, signed_stop_wh, source, source_ref,
                      source_partner_id, reported_energy_wh)
SELECT i.identity, i.started_at, i.stopped_at, i.meter_start_wh, i.meter_stop_wh, 'completed',
       i.meter_class, i.signed_start_wh, i.signed_stop_wh, i.source, i.source_ref, i.partner_id,
       i.energy_wh
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::numeric[], $5::numeric[],
            $6::text[], $7::numeric[], $8::numeric[], $9::text[], $10::text[], $11::text[],
            $12::numeric[])
     AS i(identity, started_at, stopped_at, meter_start_wh, meter_stop_wh, meter_class,
          signed_start_wh, signed_stop_wh, source, source_ref, partner_id, energy_wh)
ON CONFLICT (source_partner_id, source, source_ref) WHERE source <> 'ocpp' DO NOTHING
RETURNING session_id, source_partner_id, source, source_ref
"""
_RECORDS = """
INSERT INTO session_source_records (session_id, transaction_id, signed_data, evidence, fingerprint)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
"""
# Finished sessions of the same chargers whose times meet the new ones' (the new ones included),
# each window read from the (identity, stopped_at) index: those ending from its start to
# `NEIGHBOUR_REACH` after its end, and orphans (no stop; their last reading ends them). A twin
# ending later still is left to the close, which compares all of a charger's sessions.
NEIGHBOUR_REACH = "7 days"
_NEIGHBOURS = f"""
SELECT DISTINCT x.session_id, x.identity, x.source, x.started_at,
       coalesce(x.stopped_at, x.last_reading_at) AS ended_at, x.energy_wh, x.meter_class,
       x.duplicate_of, x.source_partner_id
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS n(identity, started_at, stopped_at)
CROSS JOIN LATERAL (
    SELECT * FROM sessions s
    WHERE s.identity = n.identity AND s.stopped_at >= n.started_at
      AND s.stopped_at <= n.stopped_at + interval '{NEIGHBOUR_REACH}' AND s.started_at <= n.stopped_at
    UNION ALL
    SELECT * FROM sessions s
    WHERE s.identity = n.identity AND s.stopped_at IS NULL AND s.status = 'orphaned'
      AND s.started_at <= n.stopped_at AND s.last_reading_at >= n.started_at
) x
WHERE x.status <> 'rejected' AND x.energy_wh IS NOT NULL
"""
_MARK = """
UPDATE sessions s SET duplicate_of = m.kept, updated_at = now()
FROM unnest($1::bigint[], $2::bigint[]) AS m(session_id, kept)
WHERE s.session_id = m.session_id AND s.duplicate_of IS NULL
"""

_Key = tuple[str, str, str]  # partner, source, source_ref


async def record_sessions(tx: Connection, sessions: Sequence[ExternalSession]) -> IngestResult:
    """Store `sessions` in the caller's transaction `tx` (see the module docstring)."""
    outcomes: list[ItemOutcome | None] = [None] * len(sessions)
    if not sessions:
        return IngestResult(())
    now: datetime = await tx.fetchval("SELECT now()")
    for i, session in enumerate(sessions):
        try:
            check(session, now)
        except RecordError as error:
            outcomes[i] = ItemOutcome("invalid", error=error)
    await _refuse_others_chargers(tx, sessions, outcomes)
    marks = {i: fingerprint(s) for i, s in enumerate(sessions) if outcomes[i] is None}
    stored = await _stored(tx, sessions, marks)
    new: dict[_Key, int] = {}  # the first session of each id not stored yet
    for i in marks:
        key = _key(sessions[i])
        if key not in stored and key not in new:
            new[key] = i
    inserted = await _insert(tx, sessions, list(new.values()), marks)
    missed = [i for key, i in new.items() if key not in inserted]
    if missed:  # another transaction stored them meanwhile: compare with what it stored
        stored |= await _stored(tx, sessions, {i: marks[i] for i in missed})
    duplicates = await _deduplicate(tx, {sessions[new[k]]: v for k, v in inserted.items()})
    for key, session_id in inserted.items():
        kept = duplicates.get(session_id)
        outcomes[new[key]] = ItemOutcome(
            "inserted" if kept is None else "duplicate", session_id, kept
        )
        stored[key] = (session_id, marks[new[key]], kept)
    for i, mark in marks.items():  # what was stored before, or earlier in this call
        if outcomes[i] is None:
            session_id, stored_mark, duplicate_of = stored[_key(sessions[i])]
            same = stored_mark == mark
            outcomes[i] = ItemOutcome("unchanged" if same else "conflict", session_id, duplicate_of)
    return IngestResult(tuple(o for o in outcomes if o is not None))


def _key(session: ExternalSession) -> _Key:
    return (session.partner_id, session.source, session.source_ref)


async def _refuse_others_chargers(
    tx: Connection, sessions: Sequence[ExternalSession], outcomes: list[ItemOutcome | None]
) -> None:
    wanted: dict[str, set[str]] = defaultdict(set)
    for i, session in enumerate(sessions):
        if outcomes[i] is None:
            wanted[session.partner_id].add(session.identity)
    owned = {
        (partner, row[0])
        for partner, identities in wanted.items()
        for row in await tx.fetch(_OWNED, partner, sorted(identities))
    }
    for i, session in enumerate(sessions):
        if outcomes[i] is None and (session.partner_id, session.identity) not in owned:
            outcomes[i] = ItemOutcome("refused", error=RecordError("identity", NOT_THE_PARTNERS))


async def _stored(
    tx: Connection, sessions: Sequence[ExternalSession], marks: dict[int, str]
) -> dict[_Key, tuple[int, str, int | None]]:
    """(session id, fingerprint, duplicate_of) of the ids among `marks` stored already."""
    refs: dict[tuple[str, str], set[str]] = defaultdict(set)
    for i in marks:
        refs[sessions[i].partner_id, sessions[i].source].add(sessions[i].source_ref)
    found = {}
    for (partner, source), wanted in refs.items():
        for row in await tx.fetch(_STORED, partner, source, sorted(wanted)):
            found[partner, source, row[0]] = (row[1], row[2], row[3])
    return found


async def _insert(
    tx: Connection, sessions: Sequence[ExternalSession], chosen: list[int], marks: dict[int, str]
) -> dict[_Key, int]:
    """Insert the `chosen` sessions with their evidence; {key: session id} of those inserted."""
    if not chosen:
        return {}
    evidence = await _evidence(tx, [sessions[i] for i in chosen])
    rows = [(sessions[i], evidence[n]) for n, i in enumerate(chosen)]
    columns: list[list[object]] = [
        [s.identity for s, _ in rows],
        [s.started_at for s, _ in rows],
        [s.stopped_at for s, _ in rows],
        [_plain(s.meter_start_wh) for s, _ in rows],
        [_plain(s.meter_stop_wh) for s, _ in rows],
        [e.meter_class.value for _, e in rows],
        [e.signed_start_wh for _, e in rows],
        [e.signed_stop_wh for _, e in rows],
        [s.source for s, _ in rows],
        [s.source_ref for s, _ in rows],
        [s.partner_id for s, _ in rows],
        [_plain(s.energy_wh) for s, _ in rows],
    ]
    inserted = {(r[1], r[2], r[3]): r[0] for r in await tx.fetch(_INSERT, *columns)}
    position = {_key(sessions[i]): n for n, i in enumerate(chosen)}
    written = [(session_id, position[key]) for key, session_id in inserted.items()]
    await tx.execute(
        _RECORDS,
        [session_id for session_id, _ in written],
        [rows[n][0].transaction_id for _, n in written],
        [rows[n][0].signed_data for _, n in written],
        [rows[n][1].detail for _, n in written],
        [marks[chosen[n]] for _, n in written],
    )
    return inserted


def _plain(wh: Decimal | None) -> Decimal | None:
    """A Wh figure without trailing zeros (7.5 kWh given is 7500 Wh, not 7500.0), as the
    registers captured over OCPP are stored; figures are bounded by `records.check`."""
    if wh is None:
        return None
    normal = wh.normalize()
    exponent = normal.as_tuple().exponent
    return normal.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else normal


async def _evidence(tx: Connection, sessions: list[ExternalSession]) -> list[Evidence]:
    """Each session's evidence, with its charger's boot facts and pinned key."""
    identities = sorted({s.identity for s in sessions})
    facts = {row[0]: (row[1], row[2], row[3]) for row in await tx.fetch(_FACTS, identities)}
    unsigned: dict[str, Evidence] = {}
    weighed = []
    for session in sessions:
        meter_type, meter_serial, key = facts.get(session.identity, (None, None, None))
        if session.signed_data is None:
            if session.identity not in unsigned:
                unsigned[session.identity] = weigh(
                    None, pinned_key=key, meter_type=meter_type, meter_serial=meter_serial
                )
            weighed.append(unsigned[session.identity])
        else:
            weighed.append(
                weigh(
                    session.signed_data,
                    pinned_key=key,
                    meter_type=meter_type,
                    meter_serial=meter_serial,
                )
            )
    return weighed


async def _deduplicate(tx: Connection, inserted: dict[ExternalSession, int]) -> dict[int, int]:
    """Mark the duplicates among the new sessions and their neighbours; {new duplicate: kept}."""
    if not inserted:
        return {}
    by_id = {session_id: session.partner_id for session, session_id in inserted.items()}
    windows = list(inserted)
    rows = await tx.fetch(
        _NEIGHBOURS,
        [s.identity for s in windows],
        [s.started_at for s in windows],
        [s.stopped_at for s in windows],
    )
    partner_of = {row["session_id"]: row["source_partner_id"] for row in rows}
    marked = {row["session_id"] for row in rows if row["duplicate_of"] is not None}
    charges = [
        Charge(
            row["session_id"],
            row["identity"],
            row["source"],
            row["started_at"],
            row["ended_at"],
            Decimal(row["energy_wh"]),
            row["meter_class"],
        )
        for row in rows
        if (row["ended_at"] >= row["started_at"] and row["session_id"] not in marked)
        or row["session_id"] in by_id
    ]
    found = find_duplicates(charges)
    changes = {}
    for duplicate, kept in found.items():
        if duplicate in by_id:
            changes[duplicate] = kept
        elif kept in by_id and partner_of.get(duplicate) == by_id[kept]:
            changes[duplicate] = kept  # an earlier session of the partner's, outranked
    if changes:
        await tx.execute(_MARK, list(changes), list(changes.values()))
    return {d: k for d, k in changes.items() if d in by_id}
