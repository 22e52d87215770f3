"""When a failed webhook delivery is tried again, sans-IO: exponential back-off with jitter.

After the n-th failed attempt the next one is due `first * 2**(n-1)` seconds later, at most
`cap`, shortened by up to `jitter` of itself (so deliveries that failed together spread out);
after `attempts` failed attempts the delivery is given up ('failed', replayable through the API).
The defaults (30 s doubling to 6 h, 15 attempts) keep trying for about a day and a half.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    first: float = 30.0
    cap: float = 6 * 3600.0
    attempts: int = 15
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not (0 < self.first <= self.cap and self.attempts >= 1 and 0 <= self.jitter < 1):
            raise ValueError("back-off: need 0 < first <= cap, attempts >= 1, 0 <= jitter < 1")

    def delay(self, failures: int, draw: float) -> float | None:
        """Seconds from the `failures`-th failed attempt to the next one, or None to give up;
        `draw` (in [0, 1), e.g. `random.random()`) picks the jitter."""
        if failures >= self.attempts:
            return None
        doublings = min(max(failures - 1, 0), 62)
        base = min(self.first * 2.0**doublings, self.cap)
        return base * (1.0 - self.jitter * min(max(draw, 0.0), 1.0))
