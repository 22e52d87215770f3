"""Pacing redials of a lost upstream (sans-IO: the caller passes `now` and sleeps).

A back-office that is down, or one that accepts connections and drops them at once, must not be
dialled in a tight loop by every charger it serves. Two rules, both applied to every redial:

- per charger connection (`RedialBackoff`): after every failed dial *and every lost
  connection*, the next dial waits `delay` (with ±20 % jitter), and `delay` doubles up to
  `maximum`. It only starts again from `minimum` after a connection that stayed up for
  `maximum` seconds, so a back-office that accepts and drops at once is dialled a handful of
  times a minute per charger, not hundreds of times a second;
- per upstream host (`DialPacer`): at most `burst` dials at once and `rate` per second after
  that, for all chargers of the process together, so an outage of a back-office with thousands
  of chargers is not followed by a storm of dials the moment it is back.

A mirror back-office that cannot be reached is one outage for every charger mirrored to it, not
one per charger: `SharedRedial` probes it with one dial at a time, after one back-off for them
all, while the others wait for the outcome.
"""

from __future__ import annotations

import math
import random
from typing import Literal


class RedialBackoff:
    """When one charger connection may dial its upstream again; see the module docstring."""

    def __init__(self, minimum: float, maximum: float, jitter: float = 0.2) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.jitter = jitter
        self.delay = minimum
        self.next_dial_at = 0.0

    def _wait(self, now: float) -> None:
        self.next_dial_at = now + self.delay * random.uniform(1 - self.jitter, 1 + self.jitter)
        self.delay = min(self.delay * 2, self.maximum)

    def dial_failed(self, now: float) -> None:
        self._wait(now)

    def connection_lost(self, now: float, connected_for: float) -> None:
        """A connection that was up for `connected_for` seconds ended."""
        if connected_for >= self.maximum:
            self.delay = self.minimum
        self._wait(now)


class DialPacer:
    """Dials per upstream host: `burst` at once, then `rate` per second (reservations in order)."""

    def __init__(self, rate: float, burst: float, max_hosts: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_hosts = max_hosts
        self._free_at: dict[str, float] = {}  # host → when its bucket is full again

    def reserve(self, host: str, now: float) -> float:
        """Book a dial to `host`; returns how many seconds to wait before making it."""
        interval = 1.0 / self.rate
        # The bucket is modelled by the time it is full again: each dial pushes that `interval` later.
        free_at = max(self._free_at.pop(host, now), now) + interval
        if len(self._free_at) >= self.max_hosts:
            del self._free_at[next(iter(self._free_at))]
        self._free_at[host] = free_at
        return max(0.0, free_at - now - self.burst * interval)


class SharedRedial:
    """Dials to one host shared by all the connections to it in a process (sans-IO).

    While the host is reachable every connection dials it when it likes (`turn` says "dial").
    Once a dial fails for want of the host (refused, unreachable, timed out: `failed`), it is
    down: one connection at a time probes it ("probe") when the back-off is over, the others
    "wait" (until `next_probe_at`, or until an outcome). A failed probe doubles the back-off; a
    dial that reaches the host, probe or not (`reached`), ends the outage for all. Failures of
    dials that were under way before the outage was known change nothing. A probe given up
    (its connection ended) lets the next one go (`abandoned`).
    """

    def __init__(self, minimum: float, maximum: float, jitter: float = 0.2) -> None:
        self._backoff = RedialBackoff(minimum, maximum, jitter)
        self.down = False
        self.probing = False

    @property
    def next_probe_at(self) -> float:
        """When a connection waiting for its turn should ask again (inf: at the next outcome)."""
        return math.inf if self.probing or not self.down else self._backoff.next_dial_at

    def turn(self, now: float) -> Literal["dial", "probe", "wait"]:
        if not self.down:
            return "dial"
        if self.probing or now < self._backoff.next_dial_at:
            return "wait"
        self.probing = True
        return "probe"

    def failed(self, now: float, probe: bool) -> None:
        """A dial did not reach the host."""
        if probe:
            self.probing = False
        if probe or not self.down:
            self.down = True
            self._backoff.dial_failed(now)

    def reached(self, probe: bool) -> None:
        """A dial reached the host (whatever it answered)."""
        if probe:
            self.probing = False
        self.down = False
        self._backoff.delay = self._backoff.minimum

    def abandoned(self) -> None:
        """The probe under way was given up before its outcome."""
        self.probing = False
