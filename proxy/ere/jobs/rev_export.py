"""The annual REV export from the database: what closed quarters stated, as files for the NEa.

`ere-proxy rev export 2026` runs `export_rev`. It reads, per EAN, the kWh that closed quarters
stated for delivery year 2026 (the lines of `closed` revisions, adjustments included; an EAN
whose total is not above zero is left out) with the customer's address and the year's mandate,
and the sessions behind them with their meter evidence: the signed meter values and the raw
OCPP frames the charger sent during each session. The delivery period of an EAN runs from the
Dutch date of its first session's start to that of its last session's end.

It builds the XML and the CSV (`proxy.ere.core.rev_booking`; both refuse the whole export
before anything is written) and writes into the output directory `rev-<year>.xml`,
`rev-<year>.csv` and one audit pack per EAN, `audit-<year>/<ean>.json`, each whole or not at
all (`write_audit_pack`). Running the export again rewrites the same files.

The files are written in a worker thread (`trio.to_thread.run_sync`), so the event loop runs on
while they are synced to disk. Cancellation: the thread is not abandoned; it checks for
cancellation before each file, so a cancel lets the file under way finish, writes no further
file and then raises `trio.Cancelled`. The files written before it stay, each whole.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import date
from functools import partial
from pathlib import Path

import trio

from proxy.ere.core.quarters import local_date
from proxy.ere.core.rev_booking import (
    AuditSession,
    RevBookingRow,
    RevProvider,
    audit_pack,
    to_csv,
    to_xml,
)
from proxy.ere.jobs.files import write_atomically
from proxy.store.connection import Connection

__all__ = ["export_rev", "write_audit_pack"]

_REV_ROWS = """
SELECT l.ean, trim_scale(sum(l.kwh)), c.name, c.address, c.postcode, c.city, c.grid_operator,
       m.issued_on, m.valid_from, m.valid_until
FROM statement_lines l
JOIN quarter_closes q ON (q.quarter, q.revision) = (l.quarter, l.revision)
JOIN customers c USING (customer_id)
JOIN mandates m ON m.ean = l.ean AND m.year = $1
WHERE q.state = 'closed' AND left(l.delivery_quarter, 4) = $2
GROUP BY 1, 3, 4, 5, 6, 7, 8, 9, 10 HAVING sum(l.kwh) > 0 ORDER BY 1
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
_RAW_FRAMES = """
SELECT body::text FROM charger_events WHERE identity = $1 AND received_at BETWEEN $2 AND $3 ORDER BY received_at
"""


async def export_rev(
    db: Connection, year: int, provider: RevProvider, out_dir: Path
) -> list[RevBookingRow]:
    """Write the REV export of delivery year `year` into `out_dir`; returns the rows booked.

    Raises `RevExportError` for bookings the XML or CSV refuses, a year without any among them
    (nothing is written then), or for evidence an audit pack refuses (the packs before it stay
    written), and `OSError` if writing fails.
    """
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
        frames = tuple(row[0] for row in await db.fetch(_RAW_FRAMES, identity, started, ended))
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
                frames,
            )
        )
        days = period.setdefault(ean, [local_date(ended), local_date(ended)])
        days[0], days[1] = min(days[0], local_date(started)), max(days[1], local_date(ended))
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
        )
        for ean, kwh, name, address, postcode, city, grid, issued, valid_from, valid_until in await db.fetch(
            _REV_ROWS, year, str(year)
        )
    ]
    # both validate before anything is written
    xml, csv = to_xml(rows, year, provider), to_csv(rows)
    await trio.to_thread.run_sync(
        partial(
            _write_export,
            out_dir,
            year,
            xml,
            csv,
            rows,
            sessions,
            checkpoint=trio.from_thread.check_cancelled,
        )
    )
    return rows


def write_audit_pack(directory: Path, ean: str, sessions: Sequence[AuditSession]) -> Path:
    """Write `<directory>/<ean>.json`, the EAN's `audit_pack`, atomically; returns its path.

    The file replaces an earlier pack for the EAN; the directory is created if needed. Raises
    what `audit_pack` raises for bad input (nothing is written then) and `OSError` if writing
    fails (an earlier pack is kept).
    """
    data = audit_pack(ean, sessions)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{ean}.json"
    write_atomically(path, data)
    return path


def _write_export(
    out_dir: Path,
    year: int,
    xml: bytes,
    csv: str,
    rows: Sequence[RevBookingRow],
    sessions: dict[str, list[AuditSession]],
    *,
    checkpoint: Callable[[], None],
) -> None:
    """Write the export's files in order, calling `checkpoint` before each one (blocks)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint()
    write_atomically(out_dir / f"rev-{year}.xml", xml)
    checkpoint()
    write_atomically(out_dir / f"rev-{year}.csv", csv.encode())
    packs = out_dir / f"audit-{year}"
    packs.mkdir(exist_ok=True)
    for row in rows:
        checkpoint()
        write_audit_pack(packs, row.ean, sessions[row.ean])
