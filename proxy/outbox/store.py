"""The outbox in PostgreSQL: what `outbox.py` decides, made durable for any worker to replay.

Why PostgreSQL and not a worker's disk: a charger may reconnect to any worker (SO_REUSEPORT) or
any node behind the balancer, and its outbox must be replayed in order by whichever link holds it
next; the database is the one place they all share (and it is backed up with the sessions).
When the database is down as well, the proxy cannot keep its promise and closes the charger
(1001), whose own offline queue then takes over.

Ownership: `claim` bumps the charger's epoch and loads its outbox; every `write` names the epoch
it claimed and is refused (`Fenced`) once another link has claimed the charger since. A link that
forwards takes the charger over too (`own`: the epoch bumped, nothing loaded), so the newest link
of a charger holds the highest epoch on any node; `superseded` tells a process which of the
epochs its links hold have been overtaken since (another node took the charger over while the
old link still looked open), and the server closes those links. After a first look that
compares every held epoch, it reads only the takeovers stamped since the look before
(`taken_at`, less `TAKEN_MARGIN` for claims that commit late). Claims, `own`s and
`look_up`s (at every handshake: is there an outbox to honour, and the verifier of the credential
the back-office last accepted) are answered in batches (one statement for up to 512 chargers): an
outage sends every link to its relay at once, and a reconnect storm looks every charger up. Writes from
all links are grouped into one transaction (group commit): a link awaits its write, which costs
one commit shared with every link that wrote meanwhile. `remember` (authorisations and answered
StartTransactions seen while forwarding, and credential verifiers) is not awaited: it is a cache, dropped when the queue is
full or the database fails.

Errors: `write`, `claim` and `look_up` raise `StoreUnavailable` when the database fails
(the cause is chained) and `write` raises `Fenced`; nothing is half-written (one transaction per
group). Cancelling a waiting `write` does not cancel the group: it may still commit. Every
database call ends by `call_timeout` (a stalled database counts as failed), and so does waiting
for it: a stalled database never holds up the links' forwarding or the shutdown.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
import trio

from proxy.outbox.entries import Budget, Entry, Transaction
from proxy.outbox.learned import AuthorizationCache
from proxy.outbox.policy import ChargerOutbox
from proxy.runtime.config import OutboxSettings
from proxy.store.connection import Connection

log = logging.getLogger("proxy.outbox")

_GROUP = 512  # writes per transaction at most
_REMEMBER_QUEUE = 10_000


class Database(Protocol):
    def transaction(self) -> Any: ...
    def connection(self) -> Any: ...
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...
    async def fetchrow(self, query: str, *args: Any) -> Any: ...


class StoreUnavailable(Exception):
    """The outbox could not be read or written (the database failed); see `__cause__`."""


class Fenced(Exception):
    """Another link has claimed this charger's outbox since ours: this link must stop."""


class OutboxWriter(Protocol):
    """What a relay needs of a store: durable writes under its claim (`write`, raising `Fenced`
    once another link claimed the charger, `StoreUnavailable` when it cannot be written) and the
    cache of what links learned (`remember`, never waiting). `OutboxStore` is the PostgreSQL one."""

    async def write(self, write: Write) -> None: ...

    def remember(self, identity: str, learned: Iterable[tuple[str, str, Any]]) -> None: ...


@dataclass(frozen=True)
class Claim:
    """A charger's outbox, claimed by one link: its writes go to `store` under `epoch`."""

    store: OutboxWriter
    epoch: int
    outbox: ChargerOutbox


@dataclass
class Write:
    """Changes to one charger's outbox, applied atomically (in this order) under `epoch`."""

    identity: str
    epoch: int
    append: list[Entry] = field(default_factory=list)
    transactions: list[Transaction] = field(default_factory=list)
    attempts: list[Entry] = field(default_factory=list)
    dead: list[tuple[Entry, str]] = field(default_factory=list)
    sending: list[int] = field(default_factory=list)  # 1.6 StartTransactions about to be replayed
    delete: list[int] = field(default_factory=list)
    next_seq: int | None = None


@dataclass
class _Pending:
    write: Write
    done: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _bytes_or_none(value: bytes | None) -> bytes | None:
    return None if value is None else bytes(value)


# Claims and lookups come in bursts (an outage sends every link to its relay at once; a
# reconnect storm looks up every charger): each runs for a batch of chargers in one statement.
_CLAIM = """
INSERT INTO outbox_chargers (identity, epoch, taken_at) SELECT unnest($1::text[]), 1, clock_timestamp()
ON CONFLICT (identity) DO UPDATE
    SET epoch = outbox_chargers.epoch + 1, updated_at = now(), taken_at = clock_timestamp()
RETURNING identity, epoch, next_seq
"""
# The first look: the held chargers whose epoch is newer; later looks: every charger taken over
# since the last one (few), compared with the held epochs here. Each gives the database's clock.
_SUPERSEDED = """
SELECT clock_timestamp(), array_agg(c.identity), array_agg(c.epoch)
FROM outbox_chargers c JOIN unnest($1::text[], $2::bigint[]) AS k(identity, epoch)
    ON c.identity = k.identity AND c.epoch > k.epoch
"""
_TAKEN_SINCE = """
SELECT clock_timestamp(), array_agg(identity), array_agg(epoch) FROM outbox_chargers WHERE taken_at > $1
"""
# A takeover's `taken_at` is stamped before it commits: a later look goes back this far, so one
# that committed after the last look with an earlier stamp is still seen (claims take seconds).
TAKEN_MARGIN = timedelta(seconds=60)
_ENTRIES = """
SELECT identity, seq, action, payload, extract(epoch FROM received_at), attempts, proof, sent_at IS NOT NULL,
       captured
FROM outbox_entries
WHERE identity = ANY($1::text[]) AND dead_reason IS NULL ORDER BY identity, seq
"""
_TRANSACTIONS = """
SELECT identity, provisional, start_key, real_id, ended, in_doubt FROM outbox_transactions
WHERE identity = ANY($1::text[])
"""
_STARTS = (
    "SELECT identity, start_key, transaction_id FROM outbox_starts WHERE identity = ANY($1::text[])"
)
_AUTHORIZATIONS = (
    "SELECT identity, id_tag, info FROM outbox_authorizations WHERE identity = ANY($1::text[])"
)
_LOOKUP = """
SELECT k.identity,
       EXISTS (SELECT 1 FROM outbox_entries e WHERE e.identity = k.identity AND e.dead_reason IS NULL)
       OR EXISTS (SELECT 1 FROM outbox_transactions t WHERE t.identity = k.identity AND NOT t.ended),
       v.digest, v.key_id
FROM unnest($1::text[]) AS k(identity) LEFT JOIN charger_verifiers v ON v.identity = k.identity
"""
_TOTALS = "SELECT count(*), coalesce(sum(length(payload)), 0) FROM outbox_entries WHERE dead_reason IS NULL"

_OWNED = """
SELECT c.identity FROM outbox_chargers c JOIN unnest($1::text[], $2::bigint[]) AS k(identity, epoch)
    ON c.identity = k.identity AND c.epoch = k.epoch
ORDER BY c.identity FOR UPDATE OF c
"""
_APPEND = """
INSERT INTO outbox_entries (identity, seq, action, payload, received_at, proof, captured)
SELECT * FROM unnest(
    $1::text[], $2::bigint[], $3::text[], $4::bytea[], $5::timestamptz[], $6::text[], $7::bytea[]
)
"""
_UPSERT_TRANSACTIONS = """
INSERT INTO outbox_transactions (identity, provisional, start_key, real_id, ended, in_doubt)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[], $5::boolean[], $6::boolean[])
ON CONFLICT (identity, provisional) DO UPDATE SET
    real_id = EXCLUDED.real_id, ended = EXCLUDED.ended, in_doubt = EXCLUDED.in_doubt, updated_at = now()
"""
_ATTEMPTS = """
UPDATE outbox_entries e SET attempts = k.attempts, sent_at = NULL
FROM unnest($1::text[], $2::bigint[], $3::integer[]) AS k(identity, seq, attempts)
WHERE e.identity = k.identity AND e.seq = k.seq
"""
_DEAD = """
UPDATE outbox_entries e SET dead_reason = k.reason, dead_at = now(), attempts = k.attempts
FROM unnest($1::text[], $2::bigint[], $3::text[], $4::integer[]) AS k(identity, seq, reason, attempts)
WHERE e.identity = k.identity AND e.seq = k.seq
"""
_SENDING = """
UPDATE outbox_entries e SET sent_at = now()
FROM unnest($1::text[], $2::bigint[]) AS k(identity, seq) WHERE e.identity = k.identity AND e.seq = k.seq
"""
_DELETE = """
DELETE FROM outbox_entries e USING unnest($1::text[], $2::bigint[]) AS k(identity, seq)
WHERE e.identity = k.identity AND e.seq = k.seq
"""
_NEXT_SEQ = """
UPDATE outbox_chargers c SET next_seq = GREATEST(c.next_seq, k.next_seq), updated_at = now()
FROM unnest($1::text[], $2::bigint[]) AS k(identity, next_seq) WHERE c.identity = k.identity
"""
_REMEMBER_STARTS = """
INSERT INTO outbox_starts (identity, start_key, transaction_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
ON CONFLICT (identity, start_key) DO UPDATE SET transaction_id = EXCLUDED.transaction_id, seen_at = now()
"""
_REMEMBER_VERIFIERS = """
INSERT INTO charger_verifiers (identity, digest, key_id)
SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[])
ON CONFLICT (identity) DO UPDATE SET digest = EXCLUDED.digest, key_id = EXCLUDED.key_id, updated_at = now()
"""
_REMEMBER_AUTHORIZATIONS = """
INSERT INTO outbox_authorizations (identity, id_tag, info)
SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[])
ON CONFLICT (identity, id_tag) DO UPDATE SET info = EXCLUDED.info, updated_at = now()
"""


class OutboxStore:
    """Claims, group-committed writes and the cache of earlier answers; see the module docstring.

    `budget` is shared by the links of this process; `run` refreshes it from the database every
    `refresh_interval` seconds, so the total bound holds across workers to within that window.
    """

    def __init__(
        self, db: Database, settings: OutboxSettings, refresh_interval: float = 10.0
    ) -> None:
        self.db = db
        self.settings = settings
        self.budget = Budget(settings.max_entries_total, settings.max_bytes_total)
        self._refresh_interval = refresh_interval
        # Every database call of the store ends by this deadline (a stalled database then counts
        # as failed: chargers waiting on it are closed, their own queues take over).
        self._deadline = settings.call_timeout
        self._send, self._receive = trio.open_memory_channel[_Pending](math.inf)
        self._claims = _Batches(self._claim_batch, self._deadline)
        self._lookups = _Batches(self._lookup_batch, self._deadline)
        self._owns = _Batches(self._own_batch, self._deadline)
        self._remembered: deque[tuple[str, str, str, Any]] = deque()
        self._wake = trio.Event()
        self.groups = 0  # transactions committed (for metrics)
        self.failures = 0  # groups that failed

    # -- reading ---------------------------------------------------------------------------------
    async def look_up(self, identity: str) -> Lookup:
        """What admitting the charger needs to know: its outbox to honour, its stored verifier."""
        lookup: Lookup = await self._lookups.get(identity)
        return lookup

    async def claim(self, identity: str, version: str) -> Claim:
        """Take the charger's outbox over (fencing off earlier links)."""
        claimed: _Claimed = await self._claims.get(identity)
        outbox = ChargerOutbox(
            identity,
            version,
            self.settings,
            self.budget,
            entries=deque(
                Entry(r[1], r[2], bytes(r[3]), float(r[4]), r[5], r[6], r[7], _bytes_or_none(r[8]))
                for r in claimed.entries
            ),
            transactions={
                r[1]: Transaction(r[1], r[2], r[3], r[4], r[5]) for r in claimed.transactions
            },
            next_seq=claimed.next_seq,
            auth=AuthorizationCache({r[1]: orjson.loads(r[2]) for r in claimed.authorizations}),
            starts={r[1]: r[2] for r in claimed.starts},
        )
        return Claim(self, claimed.epoch, outbox)

    async def own(self, identity: str) -> int:
        """Take the charger over for a forwarding link (fencing off earlier links); its epoch."""
        epoch: int = await self._owns.get(identity)
        return epoch

    async def _own_batch(self, identities: list[str]) -> dict[str, int]:
        return {row[0]: row[1] for row in await self.db.fetch(_CLAIM, identities)}

    async def superseded(
        self, held: dict[str, int], since: datetime | None = None
    ) -> tuple[set[str], datetime]:
        """The chargers of `held` (identity: epoch a link of ours holds) taken over by a newer
        link, and the `since` for the next look. With `since` None, every held charger is
        compared; with the `since` an earlier look gave, only the takeovers after it are read
        (the cost follows the takeovers, not the chargers held). Raises StoreUnavailable."""
        try:
            with trio.fail_after(self._deadline):
                if since is None:
                    row = await self.db.fetchrow(_SUPERSEDED, list(held), list(held.values()))
                else:
                    row = await self.db.fetchrow(_TAKEN_SINCE, since)
        except Exception as exc:
            raise StoreUnavailable(str(exc)) from exc
        at, identities, epochs = row
        taken = {
            identity
            for identity, epoch in zip(identities or (), epochs or (), strict=True)
            if epoch > held.get(identity, epoch)
        }
        return taken, at - TAKEN_MARGIN

    async def _claim_batch(self, identities: list[str]) -> dict[str, _Claimed]:
        claimed: dict[str, _Claimed] = {}
        async with self.db.transaction() as conn:
            for identity, epoch, next_seq in await conn.fetch(_CLAIM, identities):
                claimed[identity] = _Claimed(epoch, next_seq)
            for row in await conn.fetch(_ENTRIES, identities):
                claimed[row[0]].entries.append(row)
            for row in await conn.fetch(_TRANSACTIONS, identities):
                claimed[row[0]].transactions.append(row)
            for row in await conn.fetch(_STARTS, identities):
                claimed[row[0]].starts.append(row)
            for row in await conn.fetch(_AUTHORIZATIONS, identities):
                claimed[row[0]].authorizations.append(row)
        return claimed

    async def _lookup_batch(self, identities: list[str]) -> dict[str, Lookup]:
        rows = await self.db.fetch(_LOOKUP, identities)
        return {
            row[0]: Lookup(bool(row[1]), (bytes(row[2]), row[3]) if row[2] is not None else None)
            for row in rows
        }

    async def totals(self) -> tuple[int, int]:
        """Pending entries and their payload bytes over all chargers."""
        row = await self.db.fetchrow(_TOTALS)
        return int(row[0]), int(row[1])

    # -- writing ---------------------------------------------------------------------------------
    async def write(self, write: Write) -> None:
        """Apply `write` durably (see the module docstring for errors and cancellation)."""
        pending = _Pending(write)
        self._send.send_nowait(pending)
        with trio.move_on_after(2 * self._deadline):  # its group's turn, then its group's deadline
            await pending.done.wait()
        if not pending.done.is_set():
            raise StoreUnavailable("outbox write timed out")  # it may still commit
        if pending.error is not None:
            raise pending.error

    def remember_verifier(self, identity: str, verifier: tuple[bytes, str]) -> None:
        """Queue the digest of the header the back-office just accepted (see `auth.CredentialVerifier`)."""
        self.remember(identity, [("verifier", verifier[1], verifier[0])])

    def remember(self, identity: str, learned: Iterable[tuple[str, str, Any]]) -> None:
        """Queue what a link learned (`LiveObserver.on_answer`) for storing; never blocks."""
        for kind, key, value in learned:
            if len(self._remembered) < _REMEMBER_QUEUE:
                self._remembered.append((identity, kind, key, value))
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit queued writes until cancelled; also keeps the shared budget current."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._refresh_budget)
            nursery.start_soon(self._store_remembered)
            nursery.start_soon(self._claims.run)
            nursery.start_soon(self._lookups.run)
            nursery.start_soon(self._owns.run)
            task_status.started()
            while True:
                try:
                    # A connection of its own: claims and lookups queueing for the pool must
                    # never hold up the writes that chargers are waiting on.
                    async with self.db.connection() as conn:
                        await self._write_groups(conn)
                except Exception as exc:  # connecting failed; the failed group was answered
                    log.warning("outbox writer reconnecting", extra={"error": str(exc)})
                    await trio.sleep(1)

    async def _write_groups(self, conn: Connection) -> None:
        async for first in self._receive:
            group = [first]
            while len(group) < _GROUP:
                try:
                    group.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            if not await self._commit(conn, group):
                return  # the connection may be broken: take a fresh one

    async def _commit(self, conn: Connection, group: list[_Pending]) -> bool:
        """One transaction for the group: shielded (the chargers wait for it), with a deadline."""
        writes = [p.write for p in group]
        try:
            with trio.CancelScope(shield=True), trio.fail_after(self._deadline):
                async with conn.transaction():
                    owned = await self._apply(conn, writes)
            self.groups += 1
        except Exception as exc:
            self.failures += 1
            log.warning("outbox write failed", extra={"error": str(exc), "writes": len(group)})
            error = StoreUnavailable(str(exc))
            error.__cause__ = exc
            for pending in group:
                pending.error = error
                pending.done.set()
            return False
        for pending in group:
            if pending.write.identity not in owned:
                pending.error = Fenced(pending.write.identity)
            pending.done.set()
        return True

    @staticmethod
    async def _apply(conn: Connection, writes: list[Write]) -> set[str]:
        identities = sorted({(w.identity, w.epoch) for w in writes})
        owned = {
            row[0]
            for row in await conn.fetch(
                _OWNED, [i for i, _ in identities], [e for _, e in identities]
            )
        }
        writes = [w for w in writes if w.identity in owned]
        append = [(w.identity, e) for w in writes for e in w.append]
        if append:
            await conn.execute(
                _APPEND,
                *_columns(
                    [
                        (i, e.seq, e.action, e.payload, _ts(e.received_at), e.proof, e.captured)
                        for i, e in append
                    ],
                    7,
                ),
            )
        transactions = {(w.identity, t.provisional): t for w in writes for t in w.transactions}
        if transactions:
            await conn.execute(
                _UPSERT_TRANSACTIONS,
                *_columns(
                    [
                        (i, p, t.key, t.real, t.ended, t.in_doubt)
                        for (i, p), t in transactions.items()
                    ],
                    6,
                ),
            )
        attempts = [(w.identity, e.seq, e.attempts) for w in writes for e in w.attempts]
        if attempts:
            await conn.execute(_ATTEMPTS, *_columns(attempts, 3))
        dead = [(w.identity, e.seq, reason, e.attempts) for w in writes for e, reason in w.dead]
        if dead:
            await conn.execute(_DEAD, *_columns(dead, 4))
        sending = [(w.identity, seq) for w in writes for seq in w.sending]
        if sending:
            await conn.execute(_SENDING, *_columns(sending, 2))
        delete = [(w.identity, seq) for w in writes for seq in w.delete]
        if delete:
            await conn.execute(_DELETE, *_columns(delete, 2))
        next_seq = [(w.identity, w.next_seq) for w in writes if w.next_seq is not None]
        if next_seq:
            await conn.execute(_NEXT_SEQ, *_columns(next_seq, 2))
        return owned

    async def _store_remembered(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await trio.sleep(0.05)  # gather a little
            batch = list(self._remembered)
            self._remembered.clear()
            starts = [(i, k, v) for i, kind, k, v in batch if kind == "start"]
            auths = {(i, k): orjson.dumps(v).decode() for i, kind, k, v in batch if kind == "auth"}
            verifiers = {i: (v, k) for i, kind, k, v in batch if kind == "verifier"}
            try:
                with trio.fail_after(self._deadline):
                    await self._store_learned(starts, auths, verifiers)
            except Exception as exc:
                log.warning(
                    "could not store learned answers",
                    extra={"error": str(exc), "items": len(batch)},
                )

    async def _store_learned(
        self,
        starts: list[tuple[str, str, Any]],
        auths: dict[tuple[str, str], str],
        verifiers: dict[str, tuple[bytes, str]],
    ) -> None:
        async with self.db.transaction() as conn:
            if verifiers:
                await conn.execute(
                    _REMEMBER_VERIFIERS,
                    *_columns(
                        [(i, digest, key_id) for i, (digest, key_id) in verifiers.items()], 3
                    ),
                )
            if starts:
                latest = {(i, k): v for i, k, v in starts}
                await conn.execute(
                    _REMEMBER_STARTS, *_columns([(*ik, v) for ik, v in latest.items()], 3)
                )
            if auths:
                await conn.execute(
                    _REMEMBER_AUTHORIZATIONS, *_columns([(*ik, v) for ik, v in auths.items()], 3)
                )

    async def _refresh_budget(self) -> None:
        while True:
            try:
                with trio.fail_after(self._deadline):
                    self.budget.entries, self.budget.bytes = await self.totals()
            except Exception as exc:
                log.warning("could not read outbox totals", extra={"error": str(exc)})
            await trio.sleep(self._refresh_interval)


@dataclass(frozen=True)
class Lookup:
    """A charger's standing at its handshake: an outbox to honour (entries or open offline
    transactions), and the verifier of the credential its back-office last accepted (or None)."""

    needs_outbox: bool
    verifier: tuple[bytes, str] | None


@dataclass
class _Claimed:
    """What one charger's claim read: its new epoch, next sequence number and stored rows."""

    epoch: int
    next_seq: int
    entries: list[Any] = field(default_factory=list)
    transactions: list[Any] = field(default_factory=list)
    starts: list[Any] = field(default_factory=list)
    authorizations: list[Any] = field(default_factory=list)


@dataclass
class _Request:
    identity: str
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None


class _Batches:
    """Per-charger requests answered in batches: `get` waits for the batch its request joined.

    A batch holds each charger at most once (a second request waits for the next batch, so two
    claims of one charger are ordered). A failed batch fails each of its requests with
    `StoreUnavailable`. Cancelling `get` leaves the batch running (a claim may still happen).
    """

    def __init__(
        self, run_batch: Callable[[list[str]], Awaitable[dict[str, Any]]], deadline: float
    ) -> None:
        self._run_batch = run_batch
        self._deadline = deadline
        self._send, self._receive = trio.open_memory_channel[_Request](math.inf)
        self._deferred: deque[_Request] = deque()

    async def get(self, identity: str) -> Any:
        request = _Request(identity)
        self._send.send_nowait(request)
        with trio.move_on_after(2 * self._deadline):  # its batch's turn, then its batch's deadline
            await request.done.wait()
        if not request.done.is_set():
            raise StoreUnavailable("outbox lookup timed out")
        if request.error is not None:
            raise request.error
        return request.result

    async def run(self) -> None:
        while True:
            batch = await self._next_batch()
            try:
                with trio.fail_after(self._deadline):
                    results = await self._run_batch(sorted(batch))  # one lock order for every batch
            except Exception as exc:
                log.warning(
                    "outbox lookup failed", extra={"error": str(exc), "chargers": len(batch)}
                )
                for request in batch.values():
                    request.error = StoreUnavailable(str(exc))
                    request.error.__cause__ = exc
                    request.done.set()
                continue
            for identity, request in batch.items():
                request.result = results[identity]
                request.done.set()

    async def _next_batch(self) -> dict[str, _Request]:
        first = self._deferred.popleft() if self._deferred else await self._receive.receive()
        batch = {first.identity: first}
        waiting, self._deferred = self._deferred, deque()
        while len(batch) < _GROUP:
            if waiting:
                request = waiting.popleft()
            else:
                try:
                    request = self._receive.receive_nowait()
                except trio.WouldBlock:
                    break
            if request.identity in batch:
                self._deferred.append(request)
            else:
                batch[request.identity] = request
        self._deferred.extend(waiting)
        return batch


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as `width` column lists (for unnest)."""
    return [list(column) for column in zip(*rows)] if rows else [[] for _ in range(width)]
