"""Storing the journal's records in PostgreSQL: one transaction per batch, bisected on refusal.

The journal encodes each event on its own into a record (msgpack of the event, tagged by its
kind; `encode_event`), so one event that cannot be encoded never fails its batch: it becomes a
`DeadLetter` record instead (`proxy.dead_letters`). Records are what the spill log holds and what
the store process receives, and `DatabaseStore.store(records)` is where they are decoded and
written: events with `proxy.sessions.store_events`, dead letters into `capture_dead_letters`.

Bisection: a batch whose transaction fails while the database answers a trivial query holds a
record the database refuses (or that storing cannot handle). It is split in two halves, each
stored (and split again if it fails) in order, so a batch of n records with k refused ones costs
about 2·k·log2(n) transactions instead of n; a single record that fails alone is tried once more
(a deadlock or serialization failure passes) and then kept in `capture_dead_letters` with the
error. Only a dead letter the database refuses as well is lost: logged at error level with its
payload and reported in the outcome. A record that cannot be decoded becomes a dead letter too
(stage "decode", its bytes as they are).

Errors and cancellation: when the database stops answering (a failure and then a failed probe),
`store` raises; what it committed so far stays, which is harmless because storing is idempotent
and the caller keeps the batch to retry it whole. Cancellation (the journal's deadline) leaves it
the same way. `answers` never raises and gives up after `probe_timeout`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeAlias

import msgspec
import trio

from proxy.dead_letters import DECODE, STORE, DeadLetter, Note, dead_letter, describe, store_dead_letters, unreadable
from proxy.events import AnyEvent, Event
from proxy.sessions import Connection, store_events

log = logging.getLogger("proxy.capture_store")

Record: TypeAlias = AnyEvent | DeadLetter

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Record)
_PAYLOAD_LOG_LIMIT = 64 * 1024


def encode_event(event: Event) -> tuple[bytes, DeadLetter | None]:
    """The record of `event`; if it cannot be encoded, that of a dead letter for it (also returned).

    Raises only if even the dead letter cannot be encoded, which its plain fields rule out.
    """
    try:
        return _encoder.encode(event), None
    except Exception as exc:  # noqa: BLE001 - e.g. an integer beyond 64 bits, a lone surrogate
        letter = dead_letter(event, "encode", describe(exc))
        return _encoder.encode(letter), letter


def decode_record(record: bytes) -> Record:
    """A record back as an event or a dead letter; one that cannot be read becomes a dead letter."""
    try:
        return _decoder.decode(record)
    except Exception as exc:  # noqa: BLE001 - DecodeError, or anything a hostile record provokes
        return unreadable(record, describe(exc))


class StoreOutcome(msgspec.Struct, frozen=True):
    """What storing a batch of records did (all of them are accounted for unless it raised).

    `stored`: events stored (or found stored already); `kept`: dead-letter records stored;
    `dead_letters`: the dead letters this call made (records refused alone, or unreadable);
    `lost`: dead letters refused as well.
    """

    stored: int = 0
    kept: int = 0
    dead_letters: list[Note] = []
    lost: list[Note] = []


class Database(Protocol):
    def transaction(self) -> AbstractAsyncContextManager[Connection]: ...


class DatabaseUnresponsive(Exception):
    """Storing failed and the database no longer answers: retry the whole batch later."""


class DatabaseStore:
    """Records stored from this process, one transaction per batch, bisected on refusal."""

    def __init__(self, db: Database, *, probe_timeout: float = 5.0) -> None:
        self._db = db
        self._probe_timeout = probe_timeout

    async def store(self, records: Sequence[bytes]) -> StoreOutcome:
        """Store `records` (see the module docstring); raises when the database stops answering."""
        tally = _Tally()
        items = [decode_record(record) for record in records]
        tally.dead_letters += [Note.of(item) for item in items if isinstance(item, DeadLetter) and item.stage == DECODE]
        await self._store(items, tally)
        return StoreOutcome(tally.stored, tally.kept, tally.dead_letters, tally.lost)

    async def answers(self) -> bool:
        """Whether the database answers a trivial query within `probe_timeout` (never raises)."""
        try:
            with trio.fail_after(self._probe_timeout):
                async with self._db.transaction() as conn:
                    await conn.fetch("SELECT 1")
        except Exception:  # noqa: BLE001 - any failure means "no"
            return False
        return True

    async def _store(self, items: list[Record], tally: _Tally) -> None:
        try:
            await self._transaction(items)
        except Exception as exc:  # noqa: BLE001 - refusal or outage: the probe tells them apart
            if not await self.answers():
                raise DatabaseUnresponsive(describe(exc)) from exc
            if len(items) > 1:
                middle = len(items) // 2
                await self._store(items[:middle], tally)
                await self._store(items[middle:], tally)
            else:
                await self._refused(items[0], exc, tally)
            return
        tally.add(items)

    async def _transaction(self, items: Sequence[Record]) -> None:
        events = [item for item in items if not isinstance(item, DeadLetter)]
        letters = [item for item in items if isinstance(item, DeadLetter)]
        async with self._db.transaction() as conn:
            await store_events(conn, events)
            await store_dead_letters(conn, letters)

    async def _refused(self, item: Record, exc: Exception, tally: _Tally) -> None:
        """A record failed alone: try it once more, then keep it as a dead letter."""
        if not isinstance(item, DeadLetter):
            try:
                await self._transaction([item])
            except Exception as again:  # noqa: BLE001
                if not await self.answers():
                    raise DatabaseUnresponsive(describe(again)) from again
                exc = again
            else:
                tally.add([item])
                return
            letter = dead_letter(item, STORE, describe(exc))
            try:
                await self._transaction([letter])
            except Exception as failed:  # noqa: BLE001
                if not await self.answers():
                    raise DatabaseUnresponsive(describe(failed)) from failed
                self._lose(letter, failed, tally)
            else:
                tally.dead_letters.append(Note.of(letter))
            return
        self._lose(item, exc, tally)

    @staticmethod
    def _lose(letter: DeadLetter, exc: Exception, tally: _Tally) -> None:
        """The last resort: the log keeps the payload, the outcome reports the loss."""
        tally.lost.append(Note.of(letter))
        log.error(
            "dead letter refused by the database: event lost; its payload follows",
            extra={"identity": letter.identity, "event_id": letter.event_id, "kind": letter.event_kind,
                   "stage": letter.stage, "error": letter.error, "refusal": describe(exc), "format": letter.format,
                   "payload": letter.payload[:_PAYLOAD_LOG_LIMIT].decode("utf-8", "backslashreplace"),
                   "payload_length": len(letter.payload)},
        )  # fmt: skip


class _Tally:
    def __init__(self) -> None:
        self.stored = 0
        self.kept = 0
        self.dead_letters: list[Note] = []
        self.lost: list[Note] = []

    def add(self, items: Sequence[Record]) -> None:
        kept = sum(isinstance(item, DeadLetter) for item in items)
        self.kept += kept
        self.stored += len(items) - kept
