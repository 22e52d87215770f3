"""The annual REV export from the database: what closed quarters stated, as files for the NEa.

`ere-proxy rev export 2026` runs `export_rev`. The final export of a delivery year is refused
(`RevExportRefused`, before anything is read or written) until all four quarters of the year are
closed (the current revision of each) and the provider's KvK number and NEa account are known;
`draft=True` writes a draft instead, marked as one in every file name (`-DRAFT`) and document.

It reads, per EAN, the kWh that closed quarters stated for the delivery year (the lines of
`closed` revisions, adjustments included; an EAN whose total is not above zero is left out)
with the customer's address and the year's mandate (valid to its effective end: for a revoked
mandate the last day it still covers, `least(valid_until, revoked_effective)` as the close uses,
with when it was revoked), and the sessions behind them with their
meter evidence: the signed meter values and every raw frame of the session. Frames are the
charger's events of the session's transaction (`charger_events`, found by charger identity and
transaction id through an index, never by the charger's clock): the start (1.6 StartTransaction
carries the transaction id of its answer), meter values and stop, and for a 1.6 transaction
started offline also the events under its provisional id and the assignment of the real one.
A frame is the event's exact JSON (`original`) when the database had to alter it, else its body
made whole again (`capture_event_body`: the envelope and the samples its row keeps apart).
The delivery period of an EAN runs from the Dutch date of its first session's start to that of
its last session's end.

It builds the XML, the CSV and the audit packs (`proxy.ere.core.rev_booking`; each refuses the
whole export before anything is written) and writes into the output directory `rev-<year>.xml`,
`rev-<year>.csv` and one audit pack per EAN, `audit-<year>/<ean>.json` (a draft:
`rev-<year>-DRAFT.xml` and so on), each whole or not at all. Each export is recorded in
`rev_exports` (year, final or draft, the files and their SHA-256); running it again rewrites
the same files and records it again.

The files are written in a worker thread (`trio.to_thread.run_sync`), so the event loop runs on
while they are synced to disk. Cancellation: the thread is not abandoned; it checks for
cancellation before each file, so a cancel lets the file under way finish, writes no further
file and then raises `trio.Cancelled`. The files written before it stay, each whole, and the
export is not recorded.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import partial
from pathlib import Path

import trio

from proxy.ere.core.quarters import DUTCH_TIME, local_date
from proxy.ere.core.rev_booking import (
    DRAFT,
    AuditSession,
    RevBookingRow,
    RevProvider,
    audit_pack,
    to_csv,
    to_xml,
)
from proxy.ere.jobs.files import write_atomically
from proxy.store.connection import Connection

__all__ = [
    "RevExport",
    "RevExportRefused",
    "export_rev",
    "parse_year",
    "raw_frames",
    "rev_deadline",
    "write_audit_pack",
]


class RevExportRefused(ValueError):
    """The final export may not run yet; the message names the field and what is missing."""


@dataclass(frozen=True, slots=True)
class RevExport:
    """What an export wrote: its bookings and each file (relative name, SHA-256)."""

    rows: list[RevBookingRow]
    files: list[tuple[str, str]]
    draft: bool


_CLOSED_QUARTERS = """
SELECT quarter FROM quarter_closes WHERE state = 'closed' AND quarter LIKE $1 || 'Q_'
"""
_REV_ROWS = """
SELECT l.ean, trim_scale(sum(l.kwh)), c.name, c.address, c.postcode, c.city, c.grid_operator,
       m.issued_on, m.valid_from, least(m.valid_until, m.revoked_effective), m.revoked_at
FROM statement_lines l
JOIN quarter_closes q ON (q.quarter, q.revision) = (l.quarter, l.revision)
JOIN customers c USING (customer_id)
JOIN mandates m ON m.ean = l.ean AND m.year = $1
WHERE q.state = 'closed' AND left(l.delivery_quarter, 4) = $2
GROUP BY 1, 3, 4, 5, 6, 7, 8, 9, 10, 11 HAVING sum(l.kwh) > 0 ORDER BY 1
"""
_REV_SESSIONS = """
SELECT l.ean, x.session_id, x.identity, x.transaction_id, x.started_at, coalesce(x.stopped_at, x.last_reading_at),
       s.kwh, x.meter_start_wh, x.meter_stop_wh, b.meter_type, b.meter_serial,
       coalesce((SELECT array_agg(m.signed_data ORDER BY m.sampled_at) FROM meter_samples m
                 WHERE m.session_id = x.session_id AND m.signed_data IS NOT NULL), '{}')
FROM statement_sessions s
JOIN statement_lines l USING (quarter, revision, customer_id, ean, delivery_quarter, kind)
JOIN quarter_closes q ON (q.quarter, q.revision) = (l.quarter, l.revision)
JOIN sessions x ON x.session_id = s.session_id
LEFT JOIN charger_boots b ON b.identity = x.identity
WHERE q.state = 'closed' AND left(l.delivery_quarter, 4) = $1 AND s.kwh <> 0
ORDER BY 1, 5
"""
# Provisional ids of a 1.6 transaction started offline (index charger_events_assigned_ids).
_PROVISIONAL_IDS = """
SELECT body->>'provisional_id' FROM charger_events
WHERE identity = $1 AND kind = 'transaction_id_assigned' AND body->>'real_id' = $2
"""
# The transaction's events (index charger_events_transaction) and the assignments of its id,
# each with its whole body: the samples its row keeps by reference are those of its session.
RAW_FRAMES = """
WITH frames AS (
    SELECT event_id, identity, kind, received_at, body, original FROM charger_events
    WHERE identity = $1 AND body->>'transaction_id' IS NOT NULL AND body->>'transaction_id' = ANY($2::text[])
    UNION ALL
    SELECT event_id, identity, kind, received_at, body, original FROM charger_events
    WHERE identity = $1 AND kind = 'transaction_id_assigned' AND body->>'real_id' = $3
), samples AS (
    SELECT m.event_id,
           jsonb_agg(capture_sample_body(m.sampled_at, d.name, m.value, m.phase, m.location, m.context,
                                         m.signed_data, m.detail) ORDER BY m.ordinal) AS samples
    FROM meter_samples m JOIN measurands d ON d.code = m.measurand
    WHERE m.session_id IN (SELECT session_id FROM sessions WHERE identity = $1 AND transaction_id = ANY($2::text[]))
      AND m.ordinal IS NOT NULL
    GROUP BY m.event_id
)
SELECT capture_event_body(f.body, f.event_id, f.identity, f.kind, s.samples)::text, f.original,
       f.received_at, f.event_id
FROM frames f LEFT JOIN samples s USING (event_id)
ORDER BY 3, 4
"""
_RECORD = "INSERT INTO rev_exports (year, final, files) VALUES ($1, $2, $3::jsonb)"


def parse_year(text: str) -> int:
    """A delivery year as typed; `RevExportRefused` ("year: ...") for anything but 2000..2100."""
    if len(text) == 4 and text.isascii() and text.isdigit() and 2000 <= int(text) <= 2100:
        return int(text)
    shown = text if len(text) <= 20 else text[:20] + "…"
    raise RevExportRefused(f"year: {shown!r} is out of range (a delivery year 2000..2100)")


def rev_deadline(year: int) -> datetime:
    """When the REV export of delivery year `year` is due at the NEa: 1 March of the next year."""
    return datetime(year + 1, 3, 1, tzinfo=DUTCH_TIME)


async def export_rev(
    db: Connection, year: int, provider: RevProvider, out_dir: Path, *, draft: bool = False
) -> RevExport:
    """Write (and record) the REV export of delivery year `year` into `out_dir`.

    Raises `RevExportRefused` for a provider without a name, a final export of a year not wholly closed or without the
    provider's KvK number and NEa account (nothing is read or written then), `RevExportError`
    for bookings or evidence the documents refuse, or a year without any bookings (nothing is
    written then), and `OSError` if writing fails.
    """
    if not provider.name:
        raise RevExportRefused("ere.provider_name: not configured; every REV export carries it")
    if not draft:
        await _check_final(db, year, provider)
    sessions, period = await _sessions(db, year)
    rows = [
        RevBookingRow(
            ean,
            kwh,
            period[ean][0],
            period[ean][1],
            name,
            address,
            postcode,
            city,
            grid,
            issued,
            valid_from,
            valid_until,
            revoked_at,
        )
        for (
            ean,
            kwh,
            name,
            address,
            postcode,
            city,
            grid,
            issued,
            valid_from,
            valid_until,
            revoked_at,
        ) in await db.fetch(_REV_ROWS, year, str(year))
    ]
    # every document is built, and so validated, before anything is written
    stem = f"{year}-{DRAFT}" if draft else str(year)
    documents = [
        (f"rev-{stem}.xml", to_xml(rows, year, provider, draft=draft)),
        (f"rev-{stem}.csv", to_csv(rows, draft=draft).encode()),
        *(
            (f"audit-{stem}/{row.ean}.json", audit_pack(row.ean, sessions[row.ean], draft=draft))
            for row in rows
        ),
    ]
    await trio.to_thread.run_sync(
        partial(_write_files, out_dir, documents, checkpoint=trio.from_thread.check_cancelled)
    )
    files = [(name, hashlib.sha256(data).hexdigest()) for name, data in documents]
    record = [{"name": name, "sha256": digest} for name, digest in files]
    await db.execute(_RECORD, year, not draft, json.dumps(record))
    return RevExport(rows, files, draft)


async def _check_final(db: Connection, year: int, provider: RevProvider) -> None:
    closed = {row[0] for row in await db.fetch(_CLOSED_QUARTERS, str(year))}
    still_open = [f"{year}Q{q}" for q in range(1, 5) if f"{year}Q{q}" not in closed]
    if still_open:
        raise RevExportRefused(
            f"year: {', '.join(still_open)} not closed; the final REV export of {year} needs all"
            " four quarters closed (write a --draft meanwhile)"
        )
    for value, setting in (
        (provider.kvk_number, "ere.provider_kvk"),
        (provider.nea_account_id, "ere.provider_nea_account"),
    ):
        if not value:
            raise RevExportRefused(
                f"{setting}: not configured; the final REV export carries it (write a --draft meanwhile)"
            )


async def _sessions(
    db: Connection, year: int
) -> tuple[dict[str, list[AuditSession]], dict[str, list[date]]]:
    """The sessions behind each EAN's booking with their evidence, and each EAN's delivery days."""
    sessions: dict[str, list[AuditSession]] = defaultdict(list)
    period: dict[str, list[date]] = {}
    for (
        ean,
        session_id,
        identity,
        transaction_id,
        started,
        ended,
        kwh,
        meter_start,
        meter_stop,
        meter_type,
        meter_serial,
        signed,
    ) in await db.fetch(_REV_SESSIONS, str(year)):
        sessions[ean].append(
            AuditSession(
                str(session_id),
                identity,
                transaction_id,
                started,
                ended,
                kwh,
                meter_start,
                meter_stop,
                meter_type,
                meter_serial,
                tuple(signed),
                await raw_frames(db, identity, transaction_id),
            )
        )
        days = period.setdefault(ean, [local_date(ended), local_date(ended)])
        days[0], days[1] = min(days[0], local_date(started)), max(days[1], local_date(ended))
    return sessions, period


async def raw_frames(db: Connection, identity: str, transaction_id: str) -> tuple[str, ...]:
    """Every event of the charger's transaction as received, oldest first (see the module doc)."""
    ids = [
        transaction_id,
        *(row[0] for row in await db.fetch(_PROVISIONAL_IDS, identity, transaction_id)),
    ]
    rows = await db.fetch(RAW_FRAMES, identity, ids, transaction_id)
    return tuple(bytes(original).decode() if original else body for body, original, *_ in rows)


def write_audit_pack(
    directory: Path, ean: str, sessions: Sequence[AuditSession], *, draft: bool = False
) -> Path:
    """Write `<directory>/<ean>.json`, the EAN's `audit_pack`, atomically; returns its path.

    The file replaces an earlier pack for the EAN; the directory is created if needed. Raises
    what `audit_pack` raises for bad input (nothing is written then) and `OSError` if writing
    fails (an earlier pack is kept).
    """
    data = audit_pack(ean, sessions, draft=draft)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{ean}.json"
    write_atomically(path, data)
    return path


def _write_files(
    out_dir: Path, documents: Sequence[tuple[str, bytes]], *, checkpoint: Callable[[], None]
) -> None:
    """Write each (relative name, bytes) atomically, calling `checkpoint` before each (blocks)."""
    for name, data in documents:
        checkpoint()
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, data)
