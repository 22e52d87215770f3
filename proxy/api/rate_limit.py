"""Token buckets by name, sans-IO: how many requests a key (or an address) may make, and when.

Each name has a bucket of `Limit.burst` tokens, refilled at `Limit.per_second`; a request
takes one token (one that costs more, as many as it costs: `take(name, count)`), and is
refused while fewer are left. Time comes from the `clock` given (monotonic seconds), so tests
drive it; a clock that goes back counts as no time passing.

Memory is bounded: a bucket that has filled up again is the same as none and is dropped, and
at most `max_names` buckets are kept; past that the least recently used one is forgotten (that
name starts again with a full bucket: a flood of distinct names costs memory for `max_names`
of them, never more, at the price of leniency towards the names it pushes out). Nothing here
blocks or awaits, so under Trio every call is atomic.

Errors: `ValueError` for a limit that is not positive.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Limit", "TokenBuckets", "Verdict"]


@dataclass(frozen=True, slots=True)
class Limit:
    """`burst` requests at once, then `per_second` on average."""

    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.per_second > 0 and math.isfinite(self.per_second)):
            raise ValueError(f"a rate limit needs a positive rate, got {self.per_second}")
        if self.burst < 1:
            raise ValueError(f"a rate limit needs a burst of at least 1, got {self.burst}")


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a request may go; the whole tokens left after it; when to retry (seconds,
    at least 1) if it may not, else 0."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: int


class TokenBuckets:
    """Buckets by name under one `Limit` (see the module docstring)."""

    def __init__(
        self, limit: Limit, clock: Callable[[], float], *, max_names: int = 10_000
    ) -> None:
        if max_names < 1:
            raise ValueError(f"max_names must be at least 1, got {max_names}")
        self.limit, self._clock, self._max_names = limit, clock, max_names
        # name -> (tokens, when they were counted); least recently used first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, name: str, count: int = 1) -> Verdict:
        """Take `count` tokens (1 to the burst) for a request of `name`'s, if that many are
        left; a refusal takes none."""
        if not 1 <= count <= self.limit.burst:
            raise ValueError(f"a request takes 1 to {self.limit.burst} tokens, not {count}")
        return self._visit(name, take=True, count=count)

    def peek(self, name: str) -> Verdict:
        """Whether `name` has a token left, taking none."""
        return self._visit(name, take=False)

    def _visit(self, name: str, *, take: bool, count: int = 1) -> Verdict:
        now = self._clock()
        tokens = self._tokens(name, now)
        allowed = tokens >= count
        if allowed and take:
            tokens -= count
        if tokens >= self.limit.burst:
            self._buckets.pop(name, None)  # full again: the same as no bucket
        elif take or name in self._buckets:
            self._buckets[name] = (tokens, now)
            self._buckets.move_to_end(name)
        self._evict(now)
        retry_after = 0 if allowed else max(1, math.ceil((count - tokens) / self.limit.per_second))
        return Verdict(allowed, self.limit.burst, int(tokens), retry_after)

    def _tokens(self, name: str, now: float) -> float:
        if name not in self._buckets:
            return float(self.limit.burst)
        tokens, then = self._buckets[name]
        refilled = tokens + max(0.0, now - then) * self.limit.per_second
        return min(float(self.limit.burst), refilled)

    def _evict(self, now: float) -> None:
        """Drop the least recently used buckets while they are full again, then any over the
        cap; each bucket is dropped once, so this costs no more than the takes that made them."""
        while self._buckets:
            oldest = next(iter(self._buckets))
            if len(self._buckets) <= self._max_names and self._tokens(oldest, now) < (
                self.limit.burst
            ):
                break
            self._buckets.popitem(last=False)
