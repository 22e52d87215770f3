"""The journal: session events from the links into PostgreSQL, never holding up forwarding.

Links call `submit(events)` on the forwarding path; it never awaits and never raises. Events go
into a bounded in-memory channel, and a writer task stores them in batches (one transaction per
batch, `proxy.sessions.store_events`, through an `EventStore`: `DatabaseStore` in this process, or
`proxy.store_process.StoreProcess` in a process of its own, so that building and encoding a batch
never stalls this process's links). When the channel is full, the database fails, or older
events are still waiting on disk, events are appended to the spill log instead (`proxy.spill`,
fsync'd every `flush_interval` by a worker thread) and a replayer moves them into the database,
oldest first, once it answers again; only then does the writer go direct again, so the database
sees each link's events in the order they happened. Event ids are deterministic and storing is
idempotent, so a batch stored twice (a crash between commit and acknowledgement) changes nothing.

Order matters (a transaction's rename must come after its start), so going to disk is a hand-over:
events submitted while the writer still holds older ones (its batch in a transaction, the
channel) wait in memory until the writer has put its batch, if not stored, and then the channel on
disk; only then are they appended, and only then does the replayer start.

Any exception from storing a batch counts as a database failure at first: the events are kept on
disk and retried (it shows in `ere_proxy_journal_database_errors_total` and the log). If the
database answers meanwhile, the batch is stored event by event, so an event the database refuses
(or that storing cannot handle) is set aside instead of holding up everything behind it.

What can still be lost, loudly (`ere_proxy_journal_events_lost_total` and an error log): events
that do not fit under the spill log's size bound, events set aside that way, and the last
`flush_interval` of spilled events if the process is killed.

Cancellation: `run` ends by spilling what the writer had not stored yet (its batch, the channel,
what waited for the hand-over, in that order) and flushing the spill log, so on a clean shutdown
nothing that reached `submit` is lost: it is replayed at the next start.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import msgspec
import trio

from proxy.events import AnyEvent, Event
from proxy.sessions import Connection, store_events
from proxy.spill import SpillFull, SpillLog

log = logging.getLogger("proxy.journal")


class Database(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Connection]: ...


class EventStore(Protocol):
    """Where the journal stores events."""

    async def store(self, events: Sequence[Event]) -> None:
        """Store `events` (idempotently) in one transaction; raises on any failure."""

    async def answers(self) -> bool:
        """Whether the database answers a trivial query now (never raises)."""


class DatabaseStore:
    """Events stored from this process, one transaction per batch."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def store(self, events: Sequence[Event]) -> None:
        async with self._db.transaction() as conn:
            await store_events(conn, events)

    async def answers(self) -> bool:
        try:
            async with self._db.transaction() as conn:
                await conn.fetch("SELECT 1")
        except Exception:
            return False
        return True


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyEvent)


class JournalStats:
    """Counters the metrics endpoint reads (plain ints: the forwarding path only adds to them)."""

    def __init__(self) -> None:
        self.submitted = 0
        self.stored = 0
        self.spilled = 0
        self.replayed = 0
        self.lost = 0
        self.database_errors = 0


class Journal:
    def __init__(
        self,
        spill: SpillLog,
        *,
        capacity: int = 10_000,
        batch_size: int = 1_000,
        flush_interval: float = 0.1,
        retry_interval: float = 1.0,
        linger: float = 0.02,
        store_timeout: float = 10.0,
    ) -> None:
        self._spill = spill
        self._send, self._receive = trio.open_memory_channel[list[Event]](capacity)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._retry_interval = retry_interval
        self._linger = linger
        # A writer's transaction that hangs this long fails: what waits for the hand-over is in memory.
        self._store_timeout = store_timeout
        # True while events go to disk: the database is down, or older events wait there.
        self._spilling = spill.records_pending > 0
        # Between deciding to spill and the writer's hand-over: new events wait in `_waiting`.
        self._handing_over = False
        self._waiting: list[Event] = []
        self._in_flight: list[Event] = []  # the writer's batch until it is stored
        self._spill_waiting = trio.Event()
        if self._spilling:
            self._spill_waiting.set()
        self.stats = JournalStats()

    @property
    def spilling(self) -> bool:
        return self._spilling

    @property
    def spill_bytes(self) -> int:
        return self._spill.bytes_on_disk

    @property
    def spill_unflushed(self) -> int:
        return self._spill.records_buffered

    @property
    def queued(self) -> int:
        """Event batches in the channel, not yet taken by the writer."""
        return self._receive.statistics().current_buffer_used

    def submit(self, events: list[Event]) -> None:
        """Hand events over from the forwarding path: no await, no exception, no waiting."""
        self.stats.submitted += len(events)
        if not self._spilling:
            try:
                self._send.send_nowait(events)
                return
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                self._start_spilling("journal channel full")
        if self._handing_over:
            self._waiting += events
        else:
            self._to_spill(events)

    def _start_spilling(self, why: str) -> None:
        """From now on events go to disk, after what the writer still holds (see `_hand_over`)."""
        if not self._spilling:
            log.warning("journal spilling to disk", extra={"reason": why})
            self._spilling = True
            self._handing_over = True

    def _hand_over(self) -> None:
        """Spill, oldest first, the writer's unstored batch, the channel and what waited; then replay."""
        events = self._in_flight
        while True:
            try:
                events += self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        events += self._waiting
        self._in_flight, self._waiting, self._handing_over = [], [], False
        if events:
            self._to_spill(events)
        self._spill_waiting.set()

    def _to_spill(self, events: list[Event]) -> None:
        try:
            self._spill.append([_encoder.encode(event) for event in events])
        except SpillFull as full:
            self.stats.lost += full.dropped
            log.error("spill log full: events lost", extra={"lost": full.dropped})
            self.stats.spilled += full.accepted
        else:
            self.stats.spilled += len(events)

    async def run(self, store: EventStore, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write, flush and replay until cancelled; then spill what is left and flush it."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, store)
                nursery.start_soon(self._flush_periodically)
                nursery.start_soon(self._replay, store)
                task_status.started()
        finally:
            self._hand_over()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._spill.flush)

    async def _write(self, store: EventStore) -> None:
        async for first in self._receive:
            self._in_flight = batch = list(first)
            if len(batch) < self._batch_size:
                await trio.sleep(self._linger)  # let a batch gather: one transaction per event is costly
            while len(batch) < self._batch_size:
                try:
                    batch += self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
            if not self._spilling:
                try:
                    with trio.fail_after(self._store_timeout):
                        await store.store(batch)
                except Exception as exc:  # any failure to store: keep the events on disk, retry later
                    self.stats.database_errors += 1
                    self._start_spilling(f"database error: {exc!r}")
                else:
                    self.stats.stored += len(batch)
                    self._in_flight = []
            if self._spilling:
                self._hand_over()

    async def _flush_periodically(self) -> None:
        while True:
            await trio.sleep(self._flush_interval)
            if self._spill.records_buffered:
                await trio.to_thread.run_sync(self._spill.flush)

    async def _replay(self, store: EventStore) -> None:
        """Move spilled events into the database, oldest first; then let the writer go direct.

        After a failure it probes the database with a trivial query before reading and decoding
        the next batch again, so an outage costs one round trip a second, not a batch of garbage.
        A batch that fails while the database answers the probe holds an event the database
        refuses (or that storing cannot handle): it is stored event by event, and what fails alone
        is set aside, loudly, so one bad event does not hold up every charger's events behind it.
        """
        failing = False
        while True:
            await self._spill_waiting.wait()
            if failing:
                if not await store.answers():
                    await trio.sleep(self._retry_interval)
                    continue
                failing = False
            batch = await trio.to_thread.run_sync(self._flush_and_read)
            if batch is None:
                if not self._spill.records_buffered:  # no await since the read: nothing slipped in
                    self._spilling = False
                    self._spill_waiting = trio.Event()
                continue
            events = []
            for payload in batch.payloads:
                try:
                    events.append(_decoder.decode(payload))
                except msgspec.DecodeError:  # written by an incompatible version: cannot be stored
                    self.stats.lost += 1
                    log.error("spilled event unreadable; skipped")
            try:
                await store.store(events)
            except Exception as exc:
                self.stats.database_errors += 1
                if not (await store.answers() and await self._store_one_by_one(store, events)):
                    log.warning("database still unavailable", extra={"error": repr(exc)})
                    failing = True
                    await trio.sleep(self._retry_interval)
                    continue
            await trio.to_thread.run_sync(self._spill.acknowledge, batch.end)
            self.stats.replayed += len(events)

    async def _store_one_by_one(self, store: EventStore, events: list[Event]) -> bool:
        """Store each event alone, setting aside those that fail while the database answers.

        False when the database stops answering meanwhile (the batch is then retried whole;
        storing is idempotent).
        """
        for event in events:
            try:
                await store.store([event])
            except Exception as exc:
                if not await store.answers():
                    return False
                self.stats.lost += 1
                log.error(
                    "event refused by the database; set aside",
                    extra={"identity": event.identity, "event_id": event.event_id,
                           "kind": type(event).__struct_config__.tag, "error": repr(exc)},
                )  # fmt: skip
        return True

    def _flush_and_read(self) -> Any:
        self._spill.flush()
        return self._spill.read_batch(self._batch_size)

