"""Checking a managed charger's password at the handshake, also under attack (Trio shell over `auth.py`).

A password is checked against its scrypt hash, which costs ~40 ms of CPU on purpose; a flood of
wrong passwords must neither buy an attacker many guesses nor lock out the chargers that know
theirs. One attempt goes through, in order:

1. a recent success with the same identity, password and hash (`PasswordCache`): admitted at
   once, without hashing and whatever the limits below say;
2. failure budgets (`TokenBuckets`): an attempt takes a token from its client address's and its
   identity's budget (a success gives them back); with none left it is refused without hashing
   (`RATE_LIMITED`, with the seconds until it may retry). Taking the token first means a flood
   of concurrent guesses from one address reaches the hashing queue no more often than the
   budget allows;
3. the hashing queue: `threads` hashes at a time, in threads of their own (a flood cannot starve
   the DNS lookups that share Trio's default thread limiter). Attempts for identities that proved
   their password recently (`RecentSuccesses`) wait in a lane of their own that goes first; the
   other lane holds at most `max_waiting` attempts, and one more is refused at once (`BUSY`);
4. the hash.

Cancellation: an attempt cancelled while it waits leaves the queue (its turn passes on); one
cancelled while it hashes finishes the hash first (a thread cannot be interrupted).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

import trio

from proxy.auth import PasswordCache, RecentSuccesses, TokenBuckets, verify_password


class Verdict(enum.Enum):
    ADMITTED = "admitted"
    WRONG = "wrong"  # 401
    RATE_LIMITED = "rate_limited"  # 429 with Retry-After
    BUSY = "busy"  # 503 with Retry-After


@dataclass(frozen=True)
class Check:
    """The verdict on one attempt; `retry_after` (seconds) for RATE_LIMITED and BUSY."""

    verdict: Verdict
    retry_after: float = 0.0
    hashed: bool = False  # a hash was computed for it (for metrics)


class QueueFull(Exception):
    """The normal lane of the hashing queue holds `max_waiting` attempts already."""


class HashingQueue:
    """`threads` slots; waiters with priority are served before the others (each lane FIFO)."""

    def __init__(self, threads: int, max_waiting: int) -> None:
        self.limiter = trio.CapacityLimiter(threads)  # for trio.to_thread: as many threads as slots
        self._free = threads
        self._max_waiting = max_waiting
        self._lanes: tuple[deque[trio.Event], deque[trio.Event]] = (deque(), deque())  # priority, normal

    @property
    def waiting(self) -> int:
        return len(self._lanes[0]) + len(self._lanes[1])

    async def acquire(self, priority: bool) -> None:
        """Wait for a slot; raises QueueFull at once when the normal lane is full."""
        if self._free > 0 and not self.waiting:
            self._free -= 1
            await trio.lowlevel.checkpoint()
            return
        lane = self._lanes[0 if priority else 1]
        if not priority and len(lane) >= self._max_waiting:
            raise QueueFull
        turn = trio.Event()
        lane.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():  # handed a slot as we were cancelled: pass it on
                self.release()
            else:
                lane.remove(turn)
            raise

    def release(self) -> None:
        for lane in self._lanes:
            if lane:
                lane.popleft().set()  # the slot goes straight to the next waiter
                return
        self._free += 1


class PasswordGate:
    """See the module docstring. `now` is the clock for budgets and recent successes."""

    def __init__(
        self,
        *,
        threads: int = 2,
        max_waiting: int = 32,
        address_failures: TokenBuckets | None = None,
        identity_failures: TokenBuckets | None = None,
        recent_window: float = 24 * 3600.0,
    ) -> None:
        self.queue = HashingQueue(threads, max_waiting)
        self.cache = PasswordCache()
        self.recent = RecentSuccesses(recent_window)
        if address_failures is None:  # 20 wrong passwords at once per client address, then 10 a minute
            address_failures = TokenBuckets(capacity=20, refill_per_second=10 / 60)
        if identity_failures is None:  # 10 at once per identity, then 2 a minute
            identity_failures = TokenBuckets(capacity=10, refill_per_second=2 / 60)
        self.by_address, self.by_identity = address_failures, identity_failures

    async def check(self, identity: str, password: str, encoded: str, address: str) -> Check:
        """The verdict on `password` for `identity` from client `address` (see the module docstring)."""
        triple = (identity, password, encoded)
        now = trio.current_time()
        if triple in self.cache:
            self.recent.add(identity, now)
            return Check(Verdict.ADMITTED)
        budgets = ((self.by_address, address), (self.by_identity, identity))
        for buckets, key in budgets:
            if not buckets.allows(key, now):
                return Check(Verdict.RATE_LIMITED, buckets.retry_after(key, now))
        for buckets, key in budgets:
            buckets.take(key, now)
        refund = True  # the tokens go back unless a wrong password was tried
        try:
            try:
                await self.queue.acquire(priority=self.recent(identity, now))
            except QueueFull:
                return Check(Verdict.BUSY, 1.0 + self.queue.waiting * 0.05)
            try:
                verified = await trio.to_thread.run_sync(
                    verify_password, password, encoded, limiter=self.queue.limiter)
            finally:
                self.queue.release()
            refund = verified
        finally:
            if refund:
                for buckets, key in budgets:
                    buckets.give(key, trio.current_time())
        if not verified:
            return Check(Verdict.WRONG, hashed=True)
        self.cache.add(triple)
        self.recent.add(identity, trio.current_time())
        return Check(Verdict.ADMITTED, hashed=True)
