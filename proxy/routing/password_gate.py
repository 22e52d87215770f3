"""Checking a managed charger's password at the handshake, also under attack (Trio shell over `auth.py`).

A password is checked against its scrypt hash, which costs ~40 ms of CPU on purpose; a flood of
wrong passwords must neither buy an attacker many guesses, nor lock out the chargers that know
theirs, nor take the CPU that forwarding needs. One attempt goes through, in order:

1. a recent success with the same identity, password and hash (`PasswordCache`): admitted at
   once, without hashing and whatever the limits below say;
2. failure budgets (`TokenBuckets`): a client address with too many recent failures, or an
   identity with too many recent failures from addresses it has not succeeded from, is refused
   without hashing (`RATE_LIMITED`, with the seconds until it may retry). A charger that proved
   its password from an address is not locked out by failures for its identity elsewhere;
3. the client address's own line: at most `per_address` of its attempts are hashed or queued at
   once (so a flood from one address cannot spend more than that before its failures count);
   the others wait in line, and beyond 32 of them an attempt is refused (`BUSY`);
4. the hashing queue: `threads` hashes at a time. Attempts for identities that proved their
   password recently (`RecentSuccesses`) wait in a lane of their own that goes first; each lane
   holds at most `max_waiting` attempts, and one more is refused at once (`BUSY`);
5. the hash, in threads of their own at a lower CPU priority (`HashingThreads`): when a flood
   keeps them busy, forwarding and the handshakes of other chargers still get the CPU first.

A wrong password then takes a token from its address's and its identity's budget.

A generated password's hash (`auth.is_fast_hash`) costs microseconds: it is checked at once,
in the event loop, before any budget (a right one cannot be a guess, so a charger that knows its
password gets in whatever the flood around it); a wrong one is then refused by, or counted in,
the budgets like any other.

Cancellation: an attempt cancelled while it waits leaves its line or queue (a turn handed to it
passes on); one cancelled while it hashes lets the thread finish (a thread cannot be
interrupted) and its result is dropped.
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from proxy.routing.auth import (
    PasswordCache,
    RecentSuccesses,
    TokenBuckets,
    is_fast_hash,
    verify_password,
)

log = logging.getLogger("proxy.admission")


_ADDRESS_LINE = 32  # attempts of one client address waiting for their turn, at most


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
    hashed: bool = False  # a slow (scrypt) hash was computed for it (for metrics)


class QueueFull(Exception):
    """A bounded line of waiting attempts is full."""


@dataclass(eq=False)
class _Call:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    deliver: Callable[[Any], None]
    abandoned: bool = False  # its caller was cancelled before a thread took it: skipped


_SKIPPED = object()


class HashingThreads:
    """`count` daemon threads of their own, at `niceness` (Linux: per thread), that run slow hashes.

    `run(function, *args)` hands the call to a thread and waits for its result. The threads are
    started on first use and live as long as the process. A caller cancelled while its call waits
    for a thread has the call skipped; one cancelled while a thread runs it waits (shielded) for
    that one call to end and drops its result, so no more calls are ever under way than callers
    let in, and no hash is computed for a caller that has gone.
    """

    def __init__(self, count: int = 2, niceness: int = 10) -> None:
        self.count = count
        self.niceness = niceness
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._started = False
        self.computed = 0  # calls run (for tests and metrics)

    def _work(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.niceness)
        except (AttributeError, OSError) as exc:  # another system: full priority, still correct
            log.warning("hashing threads run at normal priority", extra={"error": str(exc)})
        while True:
            call = self._calls.get()
            if call.abandoned:
                call.deliver(_SKIPPED)
                continue
            self.computed += 1
            try:
                outcome: Any = call.function(*call.args)
            except BaseException as exc:  # handed to the caller
                outcome = exc
            call.deliver(outcome)

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        if not self._started:
            self._started = True
            for index in range(self.count):
                threading.Thread(target=self._work, name=f"hashing-{index}", daemon=True).start()
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[Any] = []

        def deliver(outcome: Any) -> None:
            box.append(outcome)
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass  # the caller's run is over: nobody waits for this any more

        call = _Call(function, args, deliver)
        self._calls.put(call)
        try:
            await done.wait()
        except BaseException:
            call.abandoned = True
            with trio.CancelScope(shield=True):
                await done.wait()  # skipped at once, or the one call under way ends
            raise
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]


class HashingQueue:
    """`threads` slots; waiters with priority are served before the others (each lane FIFO and
    bounded by `max_waiting`)."""

    def __init__(self, threads: int, max_waiting: int) -> None:
        self._free = threads
        self._max_waiting = max_waiting
        # priority, normal
        self._lanes: tuple[deque[trio.Event], deque[trio.Event]] = (deque(), deque())

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
        if len(lane) >= self._max_waiting:  # the priority lane too: a client names the identity
            raise QueueFull
        await _wait_turn(lane, self.release)

    def release(self) -> None:
        for lane in self._lanes:
            if lane:
                lane.popleft().set()  # the slot goes straight to the next waiter
                return
        self._free += 1


async def _wait_turn(line: deque[trio.Event], release: Callable[[], None]) -> None:
    """Wait in `line` until a turn is handed over; cancelled, leave it (or pass a turn on)."""
    turn = trio.Event()
    line.append(turn)
    try:
        await turn.wait()
    except BaseException:
        if turn.is_set():  # handed a turn as we were cancelled: pass it on
            release()
        else:
            line.remove(turn)
        raise


@dataclass
class _Line:
    in_flight: int = 0
    waiting: deque[trio.Event] = field(default_factory=deque)


class AddressLines:
    """At most `per_address` attempts of one client address at once; the rest wait, boundedly."""

    def __init__(self, per_address: int, max_waiting: int) -> None:
        self.per_address = per_address
        self.max_waiting = max_waiting
        self._lines: dict[str, _Line] = {}

    def __len__(self) -> int:
        return len(self._lines)

    async def acquire(self, address: str) -> None:
        """Wait for one of the address's turns; raises QueueFull when too many wait already."""
        line = self._lines.setdefault(address, _Line())
        if line.in_flight < self.per_address and not line.waiting:
            line.in_flight += 1
            await trio.lowlevel.checkpoint()
            return
        if len(line.waiting) >= self.max_waiting:
            raise QueueFull
        try:
            await _wait_turn(line.waiting, lambda: self.release(address))
        finally:
            self._forget_if_idle(address, line)

    def release(self, address: str) -> None:
        line = self._lines[address]
        if line.waiting:
            line.waiting.popleft().set()  # the turn goes straight to the next in line
            return
        line.in_flight -= 1
        self._forget_if_idle(address, line)

    def _forget_if_idle(self, address: str, line: _Line) -> None:
        if not line.in_flight and not line.waiting and self._lines.get(address) is line:
            del self._lines[address]


class PasswordGate:
    """See the module docstring; the clock for budgets and recent successes is Trio's."""

    def __init__(
        self,
        *,
        threads: int = 2,
        max_waiting: int = 128,
        per_address: int = 4,
        address_failures: TokenBuckets | None = None,
        identity_failures: TokenBuckets | None = None,
        recent_window: float = 24 * 3600.0,
        hashing: HashingThreads | None = None,
    ) -> None:
        self.queue = HashingQueue(threads, max_waiting)
        self.lines = AddressLines(per_address, _ADDRESS_LINE)
        self.hashing = hashing or HashingThreads(threads)
        self.cache = PasswordCache()
        self.recent = RecentSuccesses(recent_window)  # identities (the hashing queue's priority)
        # identity and address (budget exemption)
        self.recent_pairs = RecentSuccesses(recent_window)
        # 20 wrong passwords at once per client address, then 10 a minute
        if address_failures is None:
            address_failures = TokenBuckets(capacity=20, refill_per_second=10 / 60)
        if identity_failures is None:  # 10 at once per identity, then 2 a minute
            identity_failures = TokenBuckets(capacity=10, refill_per_second=2 / 60)
        self.by_address, self.by_identity = address_failures, identity_failures

    async def check(self, identity: str, password: str, encoded: str, address: str) -> Check:
        """The verdict on `password` for `identity` from client `address` (see the module docstring)."""
        now = trio.current_time()
        if (identity, password, encoded) in self.cache:
            self._succeeded(identity, address, now)
            return Check(Verdict.ADMITTED)
        budgets = [(self.by_address, address)]
        if not self.recent_pairs(f"{identity}\0{address}", now):
            budgets.append((self.by_identity, identity))
        if is_fast_hash(encoded):
            return self._check_at_once(identity, password, encoded, address, budgets, now)
        if limited := _over_budget(budgets, now):
            return limited
        try:
            await self.lines.acquire(address)
        except QueueFull:
            return Check(Verdict.BUSY, 2.0)
        try:
            # failures of those ahead in line
            if limited := _over_budget(budgets, trio.current_time()):
                return limited
            try:
                await self.queue.acquire(priority=self.recent(identity, now))
            except QueueFull:
                return Check(Verdict.BUSY, 1.0 + self.queue.waiting * 0.05)
            try:
                verified = await self.hashing.run(verify_password, password, encoded)
            finally:
                self.queue.release()
        finally:
            self.lines.release(address)
        now = trio.current_time()
        if not verified:
            for buckets, key in budgets:
                buckets.take(key, now)
            return Check(Verdict.WRONG, hashed=True)
        self.cache.add((identity, password, encoded))
        self._succeeded(identity, address, now)
        return Check(Verdict.ADMITTED, hashed=True)

    def _check_at_once(
        self,
        identity: str,
        password: str,
        encoded: str,
        address: str,
        budgets: list[tuple[TokenBuckets, str]],
        now: float,
    ) -> Check:
        """A generated password's check: no queue, no thread (see the module docstring)."""
        if verify_password(password, encoded):
            self._succeeded(identity, address, now)
            return Check(Verdict.ADMITTED)
        if limited := _over_budget(budgets, now):
            return limited
        for buckets, key in budgets:
            buckets.take(key, now)
        return Check(Verdict.WRONG)

    def _succeeded(self, identity: str, address: str, now: float) -> None:
        self.recent.add(identity, now)
        self.recent_pairs.add(f"{identity}\0{address}", now)


def _over_budget(budgets: list[tuple[TokenBuckets, str]], now: float) -> Check | None:
    for buckets, key in budgets:
        if not buckets.allows(key, now):
            return Check(Verdict.RATE_LIMITED, buckets.retry_after(key, now))
    return None
