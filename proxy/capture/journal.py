"""The journal: session events from the links into PostgreSQL, never holding up forwarding.

Links call `submit(events)` on the forwarding path; it never awaits and never raises. Events go
into a bounded in-memory channel, and a writer task stores them in batches through an
`EventStore`: `proxy.capture.store_process.StoreProcess` in a process of its own (so that decoding,
building the statements and talking to the database never stall this process's links), or
`proxy.capture.database_store.DatabaseStore` in this process. When the channel is full, the database
fails, or older events are still waiting on disk, events are appended to the spill log instead
(`proxy.capture.spill`, fsync'd every `flush_interval` by a worker thread) and a replayer moves them into
the database, oldest first, once it answers again; only then does the writer go direct again, so
the database sees each link's events in the order they happened. Event ids are deterministic and
storing is idempotent, so a batch stored twice (a crash between commit and acknowledgement)
changes nothing.

Order matters (a transaction's rename must come after its start), so going to disk is a hand-over:
events submitted while the writer still holds older ones (its batch in a transaction, the
channel) wait in memory until the writer has put its batch, if not stored, and then the channel on
disk; only then are they appended, and only then does the replayer start.

Records: each event is encoded on its own (`proxy.capture.database_store.encode_event`), and the same
bytes go to the store process or to the spill log. An event that cannot be encoded (it would
take an integer beyond 64 bits, say) becomes a dead letter at once: counted, logged with the
charger, event id, kind and error, and stored in `capture_dead_letters` like any record.

Refused events: the store bisects a batch the database refuses while it answers, and keeps each
event refused alone in `capture_dead_letters`, whole (see `proxy.capture.database_store`): the rest of
the batch, and everything behind it, is stored without going through the spill log. The journal
counts and logs what the store reports. Any other failure to store (database down, a timeout, the
store process gone) counts as a database error: the events are kept on disk and retried, after a
probe says the database answers again; a replay batch that fails while it does is halved each
time (down to one event, doubling again after `_GROW_AFTER` batches in a row pass), so a batch
that cannot be bisected within `store_timeout` still gets through.

Failures of the machinery itself never end the process and never stop forwarding: a spill log
that cannot be written (disk full, I/O errors) keeps its records in memory, bounded by the spill
log's `max_buffered_bytes`, and the flusher retries with back-off (up to `MAX_BACKOFF`) until
space returns; the replayer waits for it the same way. Every such failure is counted by stage in
`stats.failures` (`ere_proxy_capture_failures_total{stage}`) and logged. A task that fails for
any other reason (a bug) is logged, counted as "internal", and started again after a back-off;
its batch, if any, goes to the spill log first.

What can still be lost, loudly (`ere_proxy_journal_events_lost_total` and an error log): events
beyond the spill log's bounds (disk or memory), dead letters the database refuses as well (the
log has their payload), and the events neither stored nor on disk when the process is killed
(those in memory on their way to the store process, seconds of them when it lags under load, or
the spill log's last `flush_interval`) or when it stops on a disk that stays full. The events of
CALLs answered offline are kept with their outbox entries too, and survive such a kill (see
`proxy.forward.relay`).

Cancellation: `run` ends by spilling what the writer had not stored yet (its batch, the channel,
what waited for the hand-over, in that order) and flushing the spill log, so on a clean shutdown
nothing that reached `submit` is lost: it is replayed at the next start.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Protocol

import trio

from proxy.capture.database_store import DatabaseStore, StoreOutcome, encode_event
from proxy.capture.dead_letters import Note, describe
from proxy.capture.events import Event
from proxy.capture.spill import SpillFull, SpillLog

__all__ = [
    "FAILURE_STAGES",
    "DatabaseStore",
    "EventStore",
    "Journal",
    "JournalStats",
    "StoreOutcome",
]

log = logging.getLogger("proxy.journal")

# Where the capture machinery can fail; each is a label of ere_proxy_capture_failures_total.
FAILURE_STAGES: Final = (
    "encode",
    "spill_write",
    "spill_read",
    "spill_ack",
    "dead_letter",
    "internal",
)
MAX_BACKOFF: Final = 5.0  # seconds between retries of a failing spill log or a restarted task
# How long a short batch waits for more. Per batch the store pays a handful of round trips and
# a commit: at 2,000 events/s, 100 ms (batches of ~200) cost PostgreSQL and the store process
# about a quarter less per event than 20 ms did (bench/RESULTS.md, fixed-load), for events that
# reach the database up to 80 ms later.
LINGER = 0.1
_GROW_AFTER = 8  # replay batches stored in a row before a halved batch size doubles again
_LOG_FIRST = 10  # log lines per kind of trouble before only every _LOG_EVERY-th is logged
_LOG_EVERY = 1000


class EventStore(Protocol):
    """Where the journal stores records (events or dead letters, each msgpack-encoded)."""

    async def store(self, records: Sequence[bytes]) -> StoreOutcome:
        """Store `records` (idempotently), bisecting refusals; raises when the database is unavailable."""

    async def answers(self) -> bool:
        """Whether the database answers a trivial query now (never raises)."""


class JournalStats:
    """Counters the metrics endpoint reads (plain ints: the forwarding path only adds to them)."""

    def __init__(self) -> None:
        self.submitted = 0
        self.stored = 0
        self.spilled = 0
        self.replayed = 0
        self.lost = 0
        self.database_errors = 0
        self.dead_letters = 0
        self.failures = dict.fromkeys(FAILURE_STAGES, 0)


class _Backoff:
    """Doubling delays from `first` up to MAX_BACKOFF; `reset` after a success."""

    def __init__(self, first: float) -> None:
        self.first = self.delay = first

    async def sleep(self) -> None:
        await trio.sleep(self.delay)
        self.delay = min(self.delay * 2, max(MAX_BACKOFF, self.first))

    def reset(self) -> None:
        self.delay = self.first


class Journal:
    """One worker's capture journal: `submit` from the links, `run` in a nursery (module docstring)."""

    def __init__(
        self,
        spill: SpillLog,
        *,
        capacity: int = 10_000,
        batch_size: int = 1_000,
        flush_interval: float = 0.1,
        retry_interval: float = 1.0,
        linger: float = LINGER,
        store_timeout: float = 10.0,
    ) -> None:
        self._spill = spill
        self._send, self._receive = trio.open_memory_channel[list[Event]](capacity)
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._retry_interval = retry_interval
        self._linger = linger
        # Every store call fails after this long: what waits for the hand-over stays bounded.
        self._store_timeout = store_timeout
        # True while events go to disk: the database is down, or older events wait there.
        self._spilling = spill.records_pending > 0
        # Between deciding to spill and the writer's hand-over: new events wait in `_waiting`.
        self._handing_over = False
        self._waiting: list[Event] = []
        self._in_flight: list[bytes] = []  # the writer's batch, encoded, until it is stored
        self._spill_waiting = trio.Event()
        if self._spilling:
            self._spill_waiting.set()
        self._flush_failing = False
        self._troubles: dict[str, int] = {}  # log lines per kind of trouble (rate limit)
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
    def spill_failing(self) -> bool:
        """True from a failed flush of the spill log until the next one that succeeds."""
        return self._flush_failing

    @property
    def queued(self) -> int:
        """Event batches in the channel, not yet taken by the writer."""
        return self._receive.statistics().current_buffer_used

    # -- the forwarding path ---------------------------------------------------------------------

    def submit(self, events: list[Event]) -> None:
        """Hand events over from the forwarding path: no await, no exception, no waiting."""
        try:
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
                self._to_spill(self._encode(events))
        except Exception as exc:
            self._failed("internal", "journal submit failed; events lost", exc, lost=len(events))

    def _start_spilling(self, why: str) -> None:
        """From now on events go to disk, after what the writer still holds (see `_hand_over`)."""
        if not self._spilling:
            log.warning("journal spilling to disk", extra={"reason": why})
            self._spilling = True
            self._handing_over = True

    def _hand_over(self) -> None:
        """Spill, oldest first, the writer's unstored batch, the channel and what waited; then replay."""
        records, self._in_flight = self._in_flight, []
        while True:
            try:
                records += self._encode(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        waiting, self._waiting, self._handing_over = self._waiting, [], False
        records += self._encode(waiting)
        if records:
            self._to_spill(records)
        self._spill_waiting.set()

    def _encode(self, events: Sequence[Event]) -> list[bytes]:
        """Each event's record; one that cannot be encoded becomes a dead letter (counted, logged)."""
        records = []
        for event in events:
            try:
                record, letter = encode_event(event)
            except Exception as exc:
                self._failed(
                    "encode",
                    "event cannot be encoded, not even as a dead letter; lost",
                    exc,
                    lost=1,
                    identity=getattr(event, "identity", None),
                    event_id=getattr(event, "event_id", None),
                )
                continue
            if letter is not None:
                self.stats.failures["encode"] += 1
                self._dead_letter(Note.of(letter))
            records.append(record)
        return records

    def _to_spill(self, records: list[bytes]) -> None:
        try:
            self._spill.append(records)
        except SpillFull as full:
            self.stats.lost += full.dropped
            self.stats.spilled += full.accepted
            if self._trouble(f"spill full ({full.bound})"):
                message = (
                    "spill log full"
                    if full.bound == "disk"
                    else "spill log's memory buffer full (disk failing)"
                )
                log.error(
                    message + ": events lost",
                    extra={"lost": full.dropped, "lost_total": self.stats.lost},
                )
        except Exception as exc:
            self._failed("internal", "events could not be spilled; lost", exc, lost=len(records))
        else:
            self.stats.spilled += len(records)

    # -- the tasks -------------------------------------------------------------------------------

    async def run(
        self, store: EventStore, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write, flush and replay until cancelled; then spill what is left and flush it.

        Never raises but for cancellation: each task is restarted after a failure (see the
        module docstring), and what cannot be flushed at the end is counted as lost and logged.
        """
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_running, "writer", self._write, store)
                nursery.start_soon(self._keep_running, "flusher", self._flush_periodically)
                nursery.start_soon(self._keep_running, "replayer", self._replay, store)
                task_status.started()
        finally:
            try:
                self._hand_over()
            except Exception as exc:
                self._failed("internal", "journal hand-over at shutdown failed", exc)
            with trio.CancelScope(shield=True):
                if not await self._flush():
                    lost = self._spill.records_buffered
                    self.stats.lost += lost
                    log.error(
                        "spill log cannot be written at shutdown: events lost", extra={"lost": lost}
                    )

    async def _keep_running(
        self, name: str, task: Callable[..., Awaitable[None]], *args: object
    ) -> None:
        """Run `task` until cancelled, starting it again after any exception (logged, counted)."""
        backoff = _Backoff(self._flush_interval)
        while True:
            try:
                await task(*args)
                return
            except Exception as exc:
                self._failed(
                    "internal", f"journal {name} failed; restarting it", exc, exc_info=True
                )
            if name == "writer" and (self._in_flight or self._handing_over):
                self._start_spilling(f"journal {name} failed")
                self._hand_over()  # the writer's batch and the channel go to disk, in order
            await backoff.sleep()

    async def _write(self, store: EventStore) -> None:
        async for first in self._receive:
            self._in_flight = records = self._encode(first)
            if len(records) < self._batch_size:
                # let a batch gather: one transaction per event is costly
                await trio.sleep(self._linger)
            while len(records) < self._batch_size:
                try:
                    records += self._encode(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            if not self._spilling:
                try:
                    with trio.fail_after(self._store_timeout):
                        outcome = await store.store(records)
                except Exception as exc:
                    self.stats.database_errors += 1
                    self._start_spilling(f"database error: {describe(exc)}")
                else:
                    self._in_flight = []
                    self.stats.stored += outcome.stored
                    self._note(outcome)
            if self._spilling:
                self._hand_over()

    async def _flush_periodically(self) -> None:
        backoff = _Backoff(self._flush_interval)
        while True:
            await backoff.sleep()
            if self._spill.records_buffered:
                if await self._flush():
                    backoff.reset()
            else:
                backoff.reset()

    async def _flush(self) -> bool:
        """Flush the spill log in a worker thread; False when it fails (counted, logged, kept in memory)."""
        try:
            await trio.to_thread.run_sync(self._spill.flush)
        except Exception as exc:
            self.stats.failures["spill_write"] += 1
            if not self._flush_failing or self._trouble("spill_write"):
                log.error(
                    "spill log cannot be written; events wait in memory and flushing is retried",
                    extra={"error": describe(exc), "buffered": self._spill.records_buffered},
                )
            self._flush_failing = True
            return False
        if self._flush_failing:
            self._flush_failing = False
            log.warning("spill log written again", extra={"buffered": self._spill.records_buffered})
        return True

    async def _replay(self, store: EventStore) -> None:
        """Move spilled events into the database, oldest first; then let the writer go direct.

        After a failure it probes the database with a trivial query before reading the next batch
        again, so an outage costs one round trip per `retry_interval`, not a batch of work. The
        records go to the store as they were spilled (no decoding here). A batch that fails while
        the database answers is halved for the next attempt (see the module docstring).
        """
        failing = False
        # records per batch; batches stored in a row at that size
        limit, passed = self._batch_size, 0
        disk = _Backoff(self._flush_interval)
        while True:
            await self._spill_waiting.wait()
            if failing:
                if not await self._answers(store):
                    await trio.sleep(self._retry_interval)
                    continue
                failing = False
            flushed = await self._flush()
            try:
                batch = await trio.to_thread.run_sync(self._spill.read_batch, limit)
            except Exception as exc:
                self.stats.failures["spill_read"] += 1
                if self._trouble("spill_read"):
                    log.error("spill log cannot be read", extra={"error": describe(exc)})
                await disk.sleep()
                continue
            if batch is None:
                if not flushed:  # the disk is full, or failing: wait for it, then flush again
                    await disk.sleep()
                elif not self._spill.records_buffered and not self._spill.records_pending:
                    # No await since these were read, and nothing was flushed after the read.
                    self._spilling = False
                    self._spill_waiting = trio.Event()
                continue
            disk.reset()
            try:
                with trio.fail_after(self._store_timeout):
                    outcome = await store.store(batch.payloads)
            except Exception as exc:
                self.stats.database_errors += 1
                failing = not await self._answers(store)
                if not failing:  # refusals are bisected by the store: this batch was too slow
                    limit, passed = max(1, len(batch.payloads) // 2), 0
                log.warning(
                    "database still unavailable",
                    extra={"error": describe(exc), "batch": len(batch.payloads)},
                )
                await trio.sleep(self._retry_interval)
                continue
            passed += 1
            if passed == _GROW_AFTER:
                limit, passed = min(self._batch_size, limit * 2), 0
            self.stats.replayed += outcome.stored
            self._note(outcome)
            try:
                await trio.to_thread.run_sync(self._spill.acknowledge, batch.end)
            except Exception as exc:
                self.stats.failures["spill_ack"] += 1
                if self._trouble("spill_ack"):
                    log.error("spill log position cannot be saved", extra={"error": describe(exc)})

    async def _answers(self, store: EventStore) -> bool:
        with trio.move_on_after(self._store_timeout):
            try:
                return await store.answers()
            except Exception:
                return False
        return False

    # -- counting and logging --------------------------------------------------------------------

    def _note(self, outcome: StoreOutcome) -> None:
        """Count and log the dead letters and losses the store reports."""
        for note in outcome.dead_letters:
            self._dead_letter(note)
        for note in outcome.lost:
            self.stats.lost += 1
            self.stats.failures["dead_letter"] += 1
            if self._trouble("dead_letter"):
                log.error(
                    "dead letter refused by the database: event lost (the store process log has it)",
                    extra=_fields(note),
                )

    def _dead_letter(self, note: Note) -> None:
        self.stats.dead_letters += 1
        if self._trouble("dead letter"):
            log.error("event kept in the dead-letter table", extra=_fields(note))

    def _failed(
        self,
        stage: str,
        message: str,
        exc: BaseException,
        *,
        lost: int = 0,
        exc_info: bool = False,
        **extra: object,
    ) -> None:
        self.stats.failures[stage] += 1
        self.stats.lost += lost
        if self._trouble(stage):
            log.error(
                message,
                exc_info=exc if exc_info else None,
                extra={"error": describe(exc), "lost": lost, **extra},
            )

    def _trouble(self, kind: str) -> bool:
        """Whether to log this occurrence of `kind`: the first few, then every _LOG_EVERY-th."""
        count = self._troubles[kind] = self._troubles.get(kind, 0) + 1
        return count <= _LOG_FIRST or count % _LOG_EVERY == 0


def _fields(note: Note) -> dict[str, str]:
    return {
        "identity": note.identity,
        "event_id": note.event_id,
        "kind": note.kind,
        "stage": note.stage,
        "error": note.error,
    }
