"""Writing tracker events into PostgreSQL: the event log, charger boots, sessions, meter samples.

`store_events(conn, events)` runs inside the caller's transaction. It makes the monthly partitions
the batch needs (`proxy.store.partitions`), inserts every event into `charger_events` unless it is
kept already, and applies to the other tables only the events that were new, so storing the same
events twice (a replay from the spill log, a charger resending its queue) changes nothing. An
event is kept already when a row has its id and the same receive time (a replay), or its id and a
receive time at most `DUPLICATE_WINDOW` before the batch's earliest (a charger resending after a
reconnect): event ids are unique per month partition only, and looking in every month ever kept
would cost an index probe per partition per event. Within a batch, events are applied in the order
given, which is the order the proxy received them per link.

Storage shape (`proxy.capture.stored_shape`): an event row keeps a compact body; the samples of an
event with a session are rows of `meter_samples` only, written with COPY (binary) in one go per
batch. Each session is upserted once per batch, all of them in one statement (its start facts,
earliest and latest readings folded in Python with the rules of the SQL below, so the result is
that of applying the events one by one), besides one update per stop and per signed reading.

Session rules:
- a session is one (identity, transaction_id); 1.6 starts that the back-office did not accept
  are kept with status `rejected`;
- the meter start is StartTransaction's meterStart (1.6) or the earliest energy register reading
  (2.x); the last reading is the latest energy register reading seen; StopTransaction's meterStop
  or the reading in TransactionEvent Ended completes the session;
- `energy_wh` comes from the best source (the table computes it): the signed begin and end
  readings (OCMF), else stop − start, else last reading − start for a session still running;
- receive times: `start_received_at` and `stop_received_at` are when the events that carried the
  charger's start and stop timestamps reached the proxy (the event's received_at), kept with the
  timestamp they belong to (the earliest start, the stop); a replayed event changes neither, nor
  does the same start or stop resent as a new frame (same charger timestamp, later receipt: the
  first receive time stays), so they show a charger clock that is off;
- meter class: a session starts with its charger's class (`declared` or `unknown` from the boot
  facts and the MID meter list); signed readings make it `signed-verified` when they verify with
  the charger's pinned key (the first public key it sent: trust on first sight) and
  `signed-unverified` otherwise, and one unverified reading taints the session for good;
- the energy register is `Energy.Active.Import.Register` without a phase, measured at the outlet
  (or with no location given); invalid readings (no value) are stored as samples but never used.

Charger timestamps that cannot be read (or that fall outside what a UTC timestamp holds once
their offset is applied) fall back to the time the proxy received the frame.

What PostgreSQL cannot hold is dealt with here, before it gets there: text and jsonb refuse NUL
(`\u0000`), which JSON allows in any string a charger sends. Such an event is stored with every
NUL replaced by U+FFFD in every column and in `body`, and its exact JSON goes to
`charger_events.original` (bytea); its event id stays the one of the original. Numbers are bounded
by the tracker, and lone surrogates never get this far (see `proxy.capture.tracker`). Anything else the
database refuses fails the transaction: the caller bisects the batch (`proxy.capture.database_store`).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import msgspec

from proxy.capture.events import (
    AnyEvent,
    ChargerBooted,
    Event,
    MeterValuesReported,
    Sample,
    SignedValue,
    TransactionEvent,
    TransactionIdAssigned,
    TransactionStarted,
    TransactionStopped,
)
from proxy.capture.evidence import EvidenceError, classify, parse_signed_meter_value
from proxy.capture.stored_shape import compact_body, sample_detail, samples_by_reference
from proxy.store.partitions import ensure_months

log = logging.getLogger("proxy.sessions")

ENERGY_REGISTER = "Energy.Active.Import.Register"
DUPLICATE_WINDOW = timedelta(days=92)  # how far back a resent event is looked for (see above)


class Connection(Protocol):
    """The part of an asyncpg connection this module uses."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...
    async def fetchval(self, query: str, *args: Any) -> Any: ...
    async def execute(self, query: str, *args: Any) -> str: ...
    async def executemany(self, query: str, args: Iterable[Sequence[Any]]) -> None: ...
    async def copy_records_to_table(
        self, table: str, *, records: Iterable[Sequence[Any]], columns: Sequence[str]
    ) -> str: ...


def parse_timestamp(text: str | None, fallback: float) -> datetime:
    """A charger's ISO 8601 timestamp in UTC, or `fallback` (Unix seconds) when it cannot be read.

    Year 1 with a positive offset (or 9999 with a negative one) is no UTC time Python can hold:
    it falls back too, rather than failing the batch in the database driver.
    """
    if text and (parsed := _utc(text)) is not None:
        return parsed
    return datetime.fromtimestamp(fallback, UTC)


@functools.lru_cache(maxsize=4096)
def _utc(text: str) -> datetime | None:
    """`text` as a UTC time, or None. Remembered: a batch reads each sample's time three times,
    and chargers reporting in the same second share it. A charger's timestamps are at most 255
    characters (`proxy.capture.payloads.Text`), so the memory holds at most ~1 MB."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def energy_reading(
    samples: Sequence[Sample], fallback: float, *, earliest: bool = False
) -> tuple[datetime, Decimal] | None:
    """The latest (or earliest) valid energy register reading among `samples`, with its time."""
    best: tuple[datetime, Decimal] | None = None
    for sample in samples:
        if (
            sample.measurand == ENERGY_REGISTER
            and sample.value is not None
            and sample.phase is None
            and sample.location in (None, "Outlet")
        ):
            at = parse_timestamp(sample.timestamp, fallback)
            if best is None or (at < best[0] if earliest else at >= best[0]):
                best = (at, sample.value)
    return best


_INSERT_EVENTS = """
INSERT INTO charger_events (event_id, identity, kind, received_at, body, original)
SELECT n.* FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[], $6::bytea[])
    AS n(event_id, identity, kind, received_at, body, original)
WHERE NOT EXISTS (SELECT 1 FROM charger_events e WHERE e.event_id = n.event_id AND e.received_at >= $7)
ON CONFLICT DO NOTHING
RETURNING event_id::text
"""

_UPSERT_BOOT = """
INSERT INTO charger_boots (identity, vendor, model, serial, firmware, meter_type, meter_serial, booted_at, meter_class)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (identity) DO UPDATE SET
    vendor = EXCLUDED.vendor, model = EXCLUDED.model, serial = EXCLUDED.serial,
    firmware = EXCLUDED.firmware, meter_type = EXCLUDED.meter_type,
    meter_serial = EXCLUDED.meter_serial, booted_at = EXCLUDED.booted_at,
    meter_class = CASE WHEN charger_boots.meter_class LIKE 'signed-%' THEN charger_boots.meter_class
                       ELSE EXCLUDED.meter_class END
WHERE charger_boots.booted_at <= EXCLUDED.booted_at
"""

_PIN_KEY = """
WITH pinned AS (
    INSERT INTO meter_keys (identity, public_key) VALUES ($1, $2)
    ON CONFLICT (identity) DO NOTHING RETURNING public_key
)
SELECT public_key FROM pinned UNION ALL SELECT public_key FROM meter_keys WHERE identity = $1
"""

# A signed reading: its class (an unverified one taints the session for good) and begin/end.
_SIGNED = """
UPDATE sessions SET
    meter_class = CASE WHEN meter_class = 'signed-unverified' THEN meter_class ELSE $3 END,
    signed_start_wh = COALESCE(signed_start_wh, $4),
    signed_stop_wh = COALESCE($5, signed_stop_wh),
    updated_at = now()
WHERE identity = $1 AND transaction_id = $2
"""

_SIGNED_CHARGER = """
UPDATE charger_boots SET meter_class = CASE WHEN meter_class = 'signed-unverified' THEN meter_class ELSE $2 END
WHERE identity = $1
"""

# Opens (or finds) a session; start facts fill in what is still unknown, a later reading is the last.
# One statement for every session of a batch (one executor start-up, not one per session: with a
# reading per session per batch, that was one per event). The keys are unique within a batch.
_OPEN_SESSIONS = """
INSERT INTO sessions (identity, transaction_id, connector_id, evse_id, id_tag, started_at, meter_start_wh,
                      first_reading_at, status, start_received_at, last_reading_at, last_reading_wh, meter_class)
SELECT n.*, COALESCE((SELECT meter_class FROM charger_boots b WHERE b.identity = n.identity), 'unknown')
FROM unnest($1::text[], $2::text[], $3::integer[], $4::integer[], $5::text[], $6::timestamptz[],
            $7::numeric[], $8::timestamptz[], $9::text[], $10::timestamptz[], $11::timestamptz[],
            $12::numeric[])
    AS n(identity, transaction_id, connector_id, evse_id, id_tag, started_at, meter_start_wh,
         first_reading_at, status, start_received_at, last_reading_at, last_reading_wh)
ON CONFLICT (identity, transaction_id) DO UPDATE SET
    connector_id = COALESCE(sessions.connector_id, EXCLUDED.connector_id),
    evse_id = COALESCE(sessions.evse_id, EXCLUDED.evse_id),
    id_tag = COALESCE(sessions.id_tag, EXCLUDED.id_tag),
    started_at = LEAST(sessions.started_at, EXCLUDED.started_at),
    start_received_at = CASE
        WHEN EXCLUDED.started_at < sessions.started_at OR sessions.started_at IS NULL
            THEN EXCLUDED.start_received_at
        WHEN EXCLUDED.started_at = sessions.started_at
            THEN COALESCE(sessions.start_received_at, EXCLUDED.start_received_at)
        ELSE sessions.start_received_at END,
    meter_start_wh = CASE
        WHEN EXCLUDED.meter_start_wh IS NULL THEN sessions.meter_start_wh
        WHEN sessions.meter_start_wh IS NULL OR EXCLUDED.first_reading_at < sessions.first_reading_at
            THEN EXCLUDED.meter_start_wh
        ELSE sessions.meter_start_wh END,
    first_reading_at = LEAST(sessions.first_reading_at, EXCLUDED.first_reading_at),
    status = CASE WHEN EXCLUDED.status = 'rejected' THEN 'rejected' ELSE sessions.status END,
    last_reading_wh = CASE
        WHEN EXCLUDED.last_reading_at IS NOT NULL
             AND (sessions.last_reading_at IS NULL OR EXCLUDED.last_reading_at >= sessions.last_reading_at)
            THEN EXCLUDED.last_reading_wh
        ELSE sessions.last_reading_wh END,
    last_reading_at = GREATEST(sessions.last_reading_at, EXCLUDED.last_reading_at),
    updated_at = now()
RETURNING session_id, identity, transaction_id
"""

# The same stop again (a resent frame, a new event) keeps the receive time of the first one.
_STOP = """
UPDATE sessions SET
    stopped_at = $3, meter_stop_wh = $4, stop_reason = $5,
    stop_received_at = CASE WHEN stopped_at IS NOT DISTINCT FROM $3
                            THEN COALESCE(stop_received_at, $6) ELSE $6 END,
    status = CASE WHEN status = 'rejected' THEN 'rejected' ELSE 'completed' END,
    updated_at = now()
WHERE identity = $1 AND transaction_id = $2
"""

_MEASURAND_CODES = "SELECT code, name FROM measurands WHERE name = ANY($1::text[])"

# Only names not there yet: an INSERT that conflicts still uses up an identity value.
_ADD_MEASURANDS = """
INSERT INTO measurands (name)
SELECT name FROM unnest($1::text[]) AS new(name) WHERE NOT EXISTS (SELECT 1 FROM measurands m WHERE m.name = new.name)
ON CONFLICT (name) DO NOTHING
"""

_SESSION_IDS = """
SELECT s.session_id, s.identity, s.transaction_id
FROM sessions s JOIN unnest($1::text[], $2::text[]) AS k(identity, transaction_id) USING (identity, transaction_id)
"""

_SAMPLE_COLUMNS = (
    "session_id",
    "received_at",
    "sampled_at",
    "event_id",
    "measurand",
    "ordinal",
    "value",
    "phase",
    "location",
    "context",
    "signed_data",
    "detail",
)

_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(AnyEvent)
_NUL = b"\\u0000"  # how msgspec writes NUL in a JSON string
_ESCAPES = re.compile(rb"\\\\|\\u0000")  # an escaped backslash (skipped), or a NUL


def _without_nul(body: bytes) -> bytes:
    return _ESCAPES.sub(lambda m: m[0] if m[0] == b"\\\\" else b"\\ufffd", body)


def _storable(events: Sequence[Event]) -> tuple[list[Event], list[bytes], list[bytes | None]]:
    """Events as PostgreSQL can hold them, their JSON bodies, and the original JSON of those changed."""
    bodies = [_encoder.encode(e) for e in events]
    if not any(_NUL in body for body in bodies):
        return list(events), bodies, [None] * len(bodies)  # the common case: one scan per body
    stored = list(events)
    originals: list[bytes | None] = [None] * len(bodies)
    for i, body in enumerate(bodies):
        if _NUL in body and (clean := _without_nul(body)) != body:
            stored[i], bodies[i], originals[i] = _event_decoder.decode(clean), clean, body
    return stored, bodies, originals


async def store_events(conn: Connection, events: Sequence[Event]) -> int:
    """Store `events` (idempotently); returns how many were new.

    Set-based: a batch costs a handful of round trips (one statement, one pipelined executemany
    or one COPY per table), not several per event; signed readings are handled one by one.
    """
    if not events:
        return 0
    events = _first_of_each(events)
    events, _, originals = _storable(events)
    received = [datetime.fromtimestamp(e.at, UTC) for e in events]
    await ensure_months(conn, received)
    new_ids = {
        row[0]
        for row in await conn.fetch(
            _INSERT_EVENTS,
            [e.event_id for e in events],
            [e.identity for e in events],
            [type(e).__struct_config__.tag for e in events],
            received,
            [compact_body(e).decode() for e in events],
            originals,
            min(received) - DUPLICATE_WINDOW,
        )
    }
    plan = _Plan()
    stored = 0
    for event in events:
        if event.event_id not in new_ids:
            continue
        if isinstance(event, TransactionIdAssigned):
            # Statements are grouped per kind, so a rename is a barrier: what came before it is
            # applied first, what comes after it finds the session under its real id.
            await plan.apply(conn)
            stored += plan.events + 1
            plan = _Plan()
            await _assign_transaction_id(conn, event)
        else:
            plan.add(event)
    await plan.apply(conn)
    return stored + plan.events


def _first_of_each(events: Sequence[Event]) -> list[Event]:
    """`events` without repeats of an event id (a batch may hold the same event twice)."""
    seen: set[str] = set()
    unique = []
    for event in events:
        if event.event_id not in seen:
            seen.add(event.event_id)
            unique.append(event)
    return unique


# A session known by a provisional id takes the real one; if a session already has the real id,
# the provisional one is merged into it (its samples move, the earliest start and any stop win).
_RENAME_SESSION = """
UPDATE sessions SET transaction_id = $3, updated_at = now()
WHERE identity = $1 AND transaction_id = $2
  AND NOT EXISTS (SELECT 1 FROM sessions WHERE identity = $1 AND transaction_id = $3)
"""
_MERGE_SESSION = """
UPDATE sessions s SET
    connector_id = COALESCE(s.connector_id, p.connector_id),
    evse_id = COALESCE(s.evse_id, p.evse_id),
    id_tag = COALESCE(s.id_tag, p.id_tag),
    started_at = LEAST(s.started_at, p.started_at),
    start_received_at = CASE WHEN p.started_at < s.started_at OR s.started_at IS NULL
                             THEN p.start_received_at ELSE s.start_received_at END,
    meter_start_wh = CASE WHEN s.meter_start_wh IS NULL OR p.first_reading_at < s.first_reading_at
                          THEN COALESCE(p.meter_start_wh, s.meter_start_wh) ELSE s.meter_start_wh END,
    first_reading_at = LEAST(s.first_reading_at, p.first_reading_at),
    last_reading_wh = CASE WHEN s.last_reading_at IS NULL OR p.last_reading_at > s.last_reading_at
                           THEN p.last_reading_wh ELSE s.last_reading_wh END,
    last_reading_at = GREATEST(s.last_reading_at, p.last_reading_at),
    stopped_at = COALESCE(s.stopped_at, p.stopped_at),
    stop_received_at = CASE WHEN s.stopped_at IS NULL THEN p.stop_received_at ELSE s.stop_received_at END,
    meter_stop_wh = COALESCE(s.meter_stop_wh, p.meter_stop_wh),
    stop_reason = COALESCE(s.stop_reason, p.stop_reason),
    status = CASE WHEN 'rejected' IN (s.status, p.status) THEN 'rejected'
                  WHEN 'completed' IN (s.status, p.status) THEN 'completed' ELSE s.status END,
    updated_at = now()
FROM sessions p
WHERE s.identity = $1 AND s.transaction_id = $3 AND p.identity = $1 AND p.transaction_id = $2
"""
_MOVE_SAMPLES = """
UPDATE meter_samples SET session_id = (SELECT session_id FROM sessions WHERE identity = $1 AND transaction_id = $3)
WHERE session_id = (SELECT session_id FROM sessions WHERE identity = $1 AND transaction_id = $2)
"""
_DROP_SESSION = "DELETE FROM sessions WHERE identity = $1 AND transaction_id = $2"


async def _assign_transaction_id(conn: Connection, event: TransactionIdAssigned) -> None:
    args = (event.identity, event.provisional_id, event.real_id)
    status = await conn.execute(_RENAME_SESSION, *args)
    if status.endswith(" 0"):
        await conn.execute(_MERGE_SESSION, *args)
        await conn.execute(_MOVE_SAMPLES, *args)
        await conn.execute(_DROP_SESSION, *args[:2])


@dataclass
class _SessionFacts:
    """What a batch says about one session, folded in the order given (one `_OPEN_SESSIONS` row).

    Each fold applies the rule its column has in `_OPEN_SESSIONS` (first non-null; earliest start
    with its receive time, ties keeping the first known; earliest reading as the meter start,
    ties keeping the first; latest reading, ties going to the later; rejected once rejected), so
    one upsert of the folded facts leaves the row as upserting each event's facts in turn would.
    """

    connector_id: int | None = None
    evse_id: int | None = None
    id_tag: str | None = None
    started_at: datetime | None = None
    start_received_at: datetime | None = None
    meter_start_wh: Decimal | None = None
    first_reading_at: datetime | None = None
    status: str = "active"
    last_reading_at: datetime | None = None
    last_reading_wh: Decimal | None = None
    opened: bool = False

    def fold(
        self,
        connector_id: int | None,
        evse_id: int | None,
        id_tag: str | None,
        started: datetime | None,
        start_received: datetime | None,
        first: tuple[datetime, Decimal] | None,
        status: str,
        last: tuple[datetime, Decimal] | None,
    ) -> None:
        if not self.opened:  # the first facts are the row as it would be inserted
            self.opened = True
            self.connector_id, self.evse_id, self.id_tag = connector_id, evse_id, id_tag
            self.started_at, self.start_received_at = started, start_received
            if first is not None:
                self.first_reading_at, self.meter_start_wh = first
            self.status = status
            if last is not None:
                self.last_reading_at, self.last_reading_wh = last
            return
        self.connector_id = _first(self.connector_id, connector_id)
        self.evse_id = _first(self.evse_id, evse_id)
        self.id_tag = _first(self.id_tag, id_tag)
        if started is not None and (self.started_at is None or started < self.started_at):
            self.started_at, self.start_received_at = started, start_received
        elif started is not None and started == self.started_at:
            self.start_received_at = _first(self.start_received_at, start_received)
        elif started is None and self.started_at is None:
            self.start_received_at = start_received
        if first is not None:
            at, wh = first
            if self.meter_start_wh is None or (
                self.first_reading_at is not None and at < self.first_reading_at
            ):
                self.meter_start_wh = wh
            self.first_reading_at = (
                at if self.first_reading_at is None else min(self.first_reading_at, at)
            )
        if status == "rejected":
            self.status = status
        if last is not None and (self.last_reading_at is None or last[0] >= self.last_reading_at):
            self.last_reading_at, self.last_reading_wh = last


def _first(known: Any, new: Any) -> Any:
    return new if known is None else known


class _Plan:
    """What a batch of new events does to the tables, gathered per statement.

    Every session update is order-insensitive (LEAST/GREATEST/COALESCE), so applying the
    batch statement by statement gives the same tables as applying it event by event.
    """

    def __init__(self) -> None:
        self.events = 0
        self.boots: list[tuple[Any, ...]] = []
        self.sessions: dict[tuple[str, str], _SessionFacts] = {}
        self.stops: list[tuple[Any, ...]] = []
        self.signed: list[tuple[str, str, SignedValue]] = []
        self.samples: list[tuple[str, str, Event]] = []

    def add(self, event: Event) -> None:
        self.events += 1
        at = event.at
        if isinstance(event, ChargerBooted):
            self.boots.append(
                (
                    event.identity,
                    event.vendor,
                    event.model,
                    event.serial or event.charge_box_serial,
                    event.firmware,
                    event.meter_type,
                    event.meter_serial,
                    datetime.fromtimestamp(at, UTC),
                    classify(event.meter_type, event.meter_serial).value,
                )
            )
        elif isinstance(event, TransactionStarted):
            if event.transaction_id is None:
                return  # no id to hang a session on; the event itself is kept in charger_events
            started = parse_timestamp(event.timestamp, at)
            status = "active" if event.status == "Accepted" else "rejected"
            self._facts(event.identity, event.transaction_id).fold(
                event.connector_id,
                None,
                event.id_tag,
                started,
                datetime.fromtimestamp(at, UTC),
                (started, event.meter_start),
                status,
                None,
            )
        elif isinstance(event, MeterValuesReported):
            if event.transaction_id is not None:
                self._session(
                    event, event.transaction_id, event.connector_id, event.evse_id, None, None
                )
        elif isinstance(event, TransactionStopped):
            self._session(event, event.transaction_id, None, None, event.id_tag, None)
            self.stops.append(
                (
                    event.identity,
                    event.transaction_id,
                    parse_timestamp(event.timestamp, at),
                    event.meter_stop,
                    event.reason or "Local",
                    datetime.fromtimestamp(at, UTC),
                )
            )
        elif isinstance(event, TransactionEvent):
            began = parse_timestamp(event.timestamp, at) if event.event_type == "Started" else None
            self._session(
                event,
                event.transaction_id,
                event.connector_id,
                event.evse_id,
                event.id_token,
                began,
            )
            if event.event_type == "Ended":
                reading = energy_reading(event.samples, at)
                self.stops.append(
                    (
                        event.identity,
                        event.transaction_id,
                        parse_timestamp(event.timestamp, at),
                        reading[1] if reading else None,
                        event.stopped_reason,
                        datetime.fromtimestamp(at, UTC),
                    )
                )

    def _facts(self, identity: str, transaction_id: str) -> _SessionFacts:
        key = (identity, transaction_id)
        facts = self.sessions.get(key)
        if facts is None:
            facts = self.sessions[key] = _SessionFacts()
        return facts

    def _session(
        self,
        event: MeterValuesReported | TransactionStopped | TransactionEvent,
        transaction_id: str,
        connector_id: int | None,
        evse_id: int | None,
        id_tag: str | None,
        started: datetime | None,
    ) -> None:
        """Open (or find) the session; its earliest energy reading may set the meter start."""
        at, identity = event.at, event.identity
        self._facts(identity, transaction_id).fold(
            connector_id,
            evse_id,
            id_tag,
            started,
            None if started is None else datetime.fromtimestamp(at, UTC),
            energy_reading(event.samples, at, earliest=True),
            "active",
            energy_reading(event.samples, at),
        )
        if event.samples:
            self.samples.append((identity, transaction_id, event))
        for sample in event.samples:
            if sample.signed is not None:
                self.signed.append((identity, transaction_id, sample.signed))

    async def apply(self, conn: Connection) -> None:
        if self.boots:
            await conn.executemany(_UPSERT_BOOT, self.boots)
        session_ids: dict[tuple[str, str], int] = {}
        if self.sessions:
            keys, facts = self.sessions.keys(), self.sessions.values()
            rows = await conn.fetch(
                _OPEN_SESSIONS,
                [identity for identity, _ in keys],
                [transaction_id for _, transaction_id in keys],
                [f.connector_id for f in facts],
                [f.evse_id for f in facts],
                [f.id_tag for f in facts],
                [f.started_at for f in facts],
                [f.meter_start_wh for f in facts],
                [f.first_reading_at for f in facts],
                [f.status for f in facts],
                [f.start_received_at for f in facts],
                [f.last_reading_at for f in facts],
                [f.last_reading_wh for f in facts],
            )
            session_ids = {(row[1], row[2]): row[0] for row in rows}
        if self.stops:
            await conn.executemany(_STOP, self.stops)
        for identity, transaction_id, signed in self.signed:
            await _signed(conn, identity, transaction_id, signed)
        if self.samples:
            await self._copy_samples(conn, session_ids)

    async def _copy_samples(self, conn: Connection, sessions: dict[tuple[str, str], int]) -> None:
        """All the batch's samples in one COPY, each with its event's id and its place in it.

        `sessions` holds the ids the upsert returned; those of sessions only stopped are read."""
        keys = sorted({(i, t) for i, t, _ in self.samples if (i, t) not in sessions})
        if keys:
            rows = await conn.fetch(_SESSION_IDS, [k[0] for k in keys], [k[1] for k in keys])
            sessions.update(((row[1], row[2]), row[0]) for row in rows)
        names = sorted({s.measurand for *_, event in self.samples for s in _samples(event)})
        codes = await _measurand_codes(conn, names)
        rows = []
        for identity, transaction_id, event in self.samples:
            session_id = sessions[identity, transaction_id]
            received = datetime.fromtimestamp(event.at, UTC)
            for ordinal, sample in enumerate(_samples(event)):
                sampled_at = parse_timestamp(sample.timestamp, event.at)
                rows.append(
                    (
                        session_id,
                        received,
                        sampled_at,
                        event.event_id,
                        codes[sample.measurand],
                        ordinal,
                        sample.value,
                        sample.phase,
                        sample.location,
                        sample.context,
                        sample.signed.signed_meter_data if sample.signed else None,
                        sample_detail(sample, sampled_at),
                    )
                )
        await conn.copy_records_to_table("meter_samples", records=rows, columns=_SAMPLE_COLUMNS)


def _samples(event: Event) -> tuple[Sample, ...]:
    assert isinstance(event, (MeterValuesReported, TransactionStopped, TransactionEvent))
    assert samples_by_reference(event)
    return event.samples


async def _measurand_codes(conn: Connection, names: list[str]) -> dict[str, int]:
    """Codes of measurand names, adding the few never seen before (the common case costs one read)."""
    codes = {row[1]: row[0] for row in await conn.fetch(_MEASURAND_CODES, names)}
    missing = [name for name in names if name not in codes]
    if missing:
        await conn.execute(_ADD_MEASURANDS, missing)
        codes = {row[1]: row[0] for row in await conn.fetch(_MEASURAND_CODES, names)}
    return codes


_END_EVENTS = frozenset("ELRAP")  # OCMF TX values that end a transaction


async def _signed(
    conn: Connection, identity: str, transaction_id: str, signed: SignedValue
) -> None:
    """Classify a signed reading against the charger's pinned key; keep its begin/end energy."""
    try:
        if signed.encoding_method is None and signed.public_key is None:
            data = parse_signed_meter_value(signed.signed_meter_data)  # 1.6: the blob as sent
        else:
            data = parse_signed_meter_value(
                {
                    "signedMeterData": signed.signed_meter_data,
                    "signingMethod": signed.signing_method or "",
                    "encodingMethod": signed.encoding_method or "OCMF",
                    "publicKey": signed.public_key or "",
                }
            )
    except EvidenceError as exc:
        log.info(
            "unreadable signed meter value", extra={"identity": identity, "reason": exc.reason}
        )
        return
    pinned = None
    if data.public_key:
        rows = await conn.fetch(_PIN_KEY, identity, data.public_key)
        pinned = rows[0][0] if rows else None
    else:
        rows = await conn.fetch("SELECT public_key FROM meter_keys WHERE identity = $1", identity)
        pinned = rows[0][0] if rows else None
    meter_class = classify(None, None, [data], known_key=pinned).value
    readings = [r for r in data.record.readings if r.wh is not None]
    begin = next((r.wh for r in readings if r.event == "B"), None)
    end = next((r.wh for r in reversed(readings) if r.event in _END_EVENTS), None)
    await conn.execute(_SIGNED, identity, transaction_id, meter_class, begin, end)
    await conn.execute(_SIGNED_CHARGER, identity, meter_class)
