"""Storing the journal's records in PostgreSQL: one transaction per batch, bisected on refusal.

The journal encodes each event on its own into a record (msgpack of the event, tagged by its
kind; `encode_event`), so one event that cannot be encoded never fails its batch: it becomes a
`DeadLetter` record instead (`proxy.capture.dead_letters`). Records are what the spill log holds and what
the store process receives, and `DatabaseStore.store(records)` is where they are decoded and
written: events with `proxy.capture.sessions.store_events`, dead letters into `capture_dead_letters`.

Bisection: a batch whose transaction fails is judged by the error. The database refused its
records (an error about the data, a constraint, a trigger, a limit, or an exception from the code
storing them): the batch is split in two halves, each stored (and split again if it fails) in
order, so a batch of n records with k refused ones costs about 2·k·log2(n/k) transactions
instead of n, and every good record is stored (bench poison-drain: 3,000 events with 1 % refused
drain in about a fifth of the time that storing them one by one took; only past about a quarter
refused would one by one be cheaper, by at most half). A deadlock or serialization failure, or a
lost connection while the database still answers a trivial query, is tried once more first. A
record refused alone is kept in `capture_dead_letters` with the error. A dead letter refused for
its data is the only loss: logged at error level with its payload and reported in the outcome;
refused for any other reason (no privilege, a read-only server, no such table), the whole batch
is retried later instead. A record that cannot be decoded becomes a dead letter too (stage
"decode", its bytes as they are).

Errors and cancellation: when the database does not answer (a server-side or connection failure,
then a failed probe) or cannot keep a dead letter, `store` raises `DatabaseUnresponsive`; what it
committed so far stays, which is harmless because storing is idempotent and the caller keeps the
batch to retry it whole. Cancellation (the journal's deadline) leaves it the same way. `answers`
never raises and gives up after `probe_timeout`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeAlias

import asyncpg
import msgspec
import trio

from proxy.capture.dead_letters import (
    DECODE,
    STORE,
    DeadLetter,
    Note,
    dead_letter,
    describe,
    store_dead_letters,
    unreadable,
)
from proxy.capture.events import AnyEvent, Event
from proxy.capture.sessions import Connection, store_events
from proxy.store.db import DATABASE_ERRORS

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
    except Exception as exc:
        letter = dead_letter(event, "encode", describe(exc))
        return _encoder.encode(letter), letter


def decode_record(record: bytes) -> Record:
    """A record back as an event or a dead letter; one that cannot be read becomes a dead letter."""
    try:
        return _decoder.decode(record)
    except Exception as exc:
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
    """The database cannot take these records now (it does not answer, or cannot write even a dead
    letter): retry the whole batch later."""


# What a failed transaction means for its records (see `DatabaseStore._judge`).
_TRANSIENT, _REFUSED = "transient", "refused"
# The server is in trouble, not these records: shutting down, cancelling, out of disk or memory,
# read-only, or an internal error. Their failures are judged by a probe, never as a refusal.
_SERVER_TROUBLE: tuple[type[BaseException], ...] = (
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.PostgresConnectionError,
    asyncpg.InvalidTransactionStateError,
    asyncpg.InternalServerError,
    asyncpg.ObjectNotInPrerequisiteStateError,
    asyncpg.PostgresSystemError,
)
# Errors of what the records hold (bad data, a constraint, a trigger, a limit): a dead letter
# refused with one of these is lost (logged with its payload); with any other the batch waits.
_DATA_REFUSALS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.PLPGSQLError,
    asyncpg.ProgramLimitExceededError,
)


def _unencodable(exc: BaseException) -> bool:
    """asyncpg's own DataError: a value the driver cannot encode for its column (an InterfaceError)."""
    return isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)


class DatabaseStore:
    """Records stored from this process, one transaction per batch, bisected on refusal."""

    def __init__(self, db: Database, *, probe_timeout: float = 5.0) -> None:
        self._db = db
        self._probe_timeout = probe_timeout

    async def store(self, records: Sequence[bytes]) -> StoreOutcome:
        """Store `records` (see the module docstring); raises when the database cannot take them."""
        tally = _Tally()
        items = [decode_record(record) for record in records]
        tally.dead_letters += [
            Note.of(item) for item in items if isinstance(item, DeadLetter) and item.stage == DECODE
        ]
        await self._store(items, tally)
        return StoreOutcome(tally.stored, tally.kept, tally.dead_letters, tally.lost)

    async def answers(self) -> bool:
        """Whether the database answers a trivial query within `probe_timeout` (never raises)."""
        try:
            with trio.fail_after(self._probe_timeout):
                async with self._db.transaction() as conn:
                    await conn.fetch("SELECT 1")
        except Exception:
            return False
        return True

    async def _store(self, items: list[Record], tally: _Tally, *, again: bool = False) -> None:
        """Store `items` in one transaction; on refusal halve them, down to single records."""
        try:
            await self._transaction(items)
        except Exception as exc:
            verdict = await self._judge(exc)
            if verdict == _TRANSIENT and not again:
                await self._store(items, tally, again=True)
            elif len(items) > 1:
                middle = len(items) // 2
                await self._store(items[:middle], tally)
                await self._store(items[middle:], tally)
            else:
                await self._keep_aside(items[0], exc, tally)
        else:
            tally.add(items)

    async def _judge(self, exc: Exception) -> str:
        """Whether the failed records were refused (bad data, a constraint, a bug in storing them) or
        the failure was transient (a deadlock, a broken connection while the database answers);
        raises DatabaseUnresponsive when the database does not answer at all."""
        if isinstance(exc, asyncpg.TransactionRollbackError):
            return _TRANSIENT  # serialization failure, deadlock
        if (
            isinstance(exc, asyncpg.PostgresError) and not isinstance(exc, _SERVER_TROUBLE)
        ) or _unencodable(exc):
            return _REFUSED  # the server answered: it will not take these (or the driver cannot send them)
        if not isinstance(exc, (*DATABASE_ERRORS, trio.TooSlowError)):
            return _REFUSED  # raised by the code storing these records
        if not await self.answers():
            raise DatabaseUnresponsive(describe(exc)) from exc
        return _TRANSIENT

    async def _transaction(self, items: Sequence[Record]) -> None:
        events = [item for item in items if not isinstance(item, DeadLetter)]
        letters = [item for item in items if isinstance(item, DeadLetter)]
        async with self._db.transaction() as conn:
            await store_events(conn, events)
            await store_dead_letters(conn, letters)

    async def _keep_aside(self, item: Record, exc: Exception, tally: _Tally) -> None:
        """A record refused alone becomes a dead letter; a dead letter refused is the last resort."""
        if isinstance(item, DeadLetter):
            letter, refusal = item, exc
        else:
            letter = dead_letter(item, STORE, describe(exc))
            try:
                await self._transaction([letter])
            except Exception as failed:
                refusal = failed
            else:
                tally.dead_letters.append(Note.of(letter))
                return
        # it cannot write now: not lost
        if not isinstance(refusal, _DATA_REFUSALS) and not _unencodable(refusal):
            await self._judge(refusal)
            raise DatabaseUnresponsive(
                f"cannot keep a dead letter now: {describe(refusal)}"
            ) from refusal
        tally.lost.append(Note.of(letter))
        log.error(
            "dead letter refused by the database: event lost; its payload follows",
            extra={
                "identity": letter.identity,
                "event_id": letter.event_id,
                "kind": letter.event_kind,
                "stage": letter.stage,
                "error": letter.error,
                "refusal": describe(refusal),
                "format": letter.format,
                "payload_length": len(letter.payload),
                "payload": letter.payload[:_PAYLOAD_LOG_LIMIT].decode("utf-8", "backslashreplace"),
            },
        )


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
