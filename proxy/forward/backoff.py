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
"""

from __future__ import annotations

import random


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
