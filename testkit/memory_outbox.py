"""An outbox store in memory: the `OutboxWriter` a relay needs, without PostgreSQL.

It keeps what `proxy.outbox.store.OutboxStore` keeps (entries in order, offline transactions,
dead letters, the next sequence number, learned answers) and applies a `Write` the same way: all
of it or none, under the epoch of the claim that made it. A claim bumps the charger's epoch, so
an older claim's writes raise `Fenced`; `failing` makes every write raise `StoreUnavailable`,
as a database that is down does. Writes take one checkpoint (a real store awaits a commit);
while `appends_wait` is set, a write that appends entries waits for it first (a slow commit).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import trio

from proxy.outbox.entries import Budget, Entry, Transaction
from proxy.outbox.learned import AuthorizationCache
from proxy.outbox.policy import ChargerOutbox
from proxy.outbox.store import Claim, Fenced, StoreUnavailable, Write
from proxy.runtime.config import OutboxSettings


@dataclass
class StoredOutbox:
    """One charger's rows."""

    epoch: int = 0
    next_seq: int = 1
    entries: dict[int, Entry] = field(default_factory=dict)
    transactions: dict[int, Transaction] = field(default_factory=dict)
    dead: list[tuple[Entry, str]] = field(default_factory=list)
    starts: dict[str, int] = field(default_factory=dict)
    authorizations: dict[str, Any] = field(default_factory=dict)


class MemoryOutboxStore:
    """See the module docstring. `writes` lists every write applied, in order."""

    def __init__(self, settings: OutboxSettings) -> None:
        self.settings = settings
        self.budget = Budget(settings.max_entries_total, settings.max_bytes_total)
        self.chargers: dict[str, StoredOutbox] = {}
        self.writes: list[Write] = []
        self.failing = False
        self.appends_wait: trio.Event | None = None
        self._written = trio.Event()

    def stored(self, identity: str) -> StoredOutbox:
        return self.chargers.setdefault(identity, StoredOutbox())

    async def claim(self, identity: str, version: str) -> Claim:
        """Take the charger's outbox over: a new epoch, and its rows as a `ChargerOutbox`."""
        await trio.lowlevel.checkpoint()
        if self.failing:
            raise StoreUnavailable("the store is failing")
        stored = self.stored(identity)
        stored.epoch += 1
        outbox = ChargerOutbox(
            identity,
            version,
            self.settings,
            self.budget,
            entries=deque(replace(stored.entries[seq]) for seq in sorted(stored.entries)),
            transactions={p: replace(t) for p, t in stored.transactions.items()},
            next_seq=stored.next_seq,
            auth=AuthorizationCache(dict(stored.authorizations)),
            starts=dict(stored.starts),
        )
        return Claim(self, stored.epoch, outbox)

    async def write(self, write: Write) -> None:
        await trio.lowlevel.checkpoint()
        if write.append and self.appends_wait is not None:
            await self.appends_wait.wait()
        if self.failing:
            raise StoreUnavailable("the store is failing")
        stored = self.stored(write.identity)
        if write.epoch != stored.epoch:
            raise Fenced(write.identity)
        for entry in write.append:
            stored.entries[entry.seq] = replace(entry)
        for transaction in write.transactions:
            stored.transactions[transaction.provisional] = replace(transaction)
        for entry in write.attempts:
            stored.entries[entry.seq].attempts = entry.attempts
        for entry, reason in write.dead:
            del stored.entries[entry.seq]
            stored.dead.append((replace(entry), reason))
        for seq in write.sending:
            stored.entries[seq].sent = True
        for seq in write.delete:
            del stored.entries[seq]
        if write.next_seq is not None:
            stored.next_seq = write.next_seq
        self.writes.append(write)
        self._written.set()

    async def until(self, condition: Callable[[], object]) -> None:
        """Wait until `condition()` holds (checked now and after every write)."""
        while not condition():
            self._written = trio.Event()
            await self._written.wait()

    def remember(self, identity: str, learned: Iterable[tuple[str, str, Any]]) -> None:
        stored = self.stored(identity)
        for kind, key, value in learned:
            if kind == "start":
                stored.starts[key] = value
            elif kind == "auth":
                stored.authorizations[key] = value
