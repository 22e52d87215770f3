"""What an API process remembers of the credentials it verified a moment ago, sans-IO.

A busy key would otherwise cost a database lookup on every request. `AuthCache.get` gives the
`Caller` a credential (a key or an access token) was verified as less than `ttl` seconds ago,
else None; `put` remembers one just verified. Entries are keyed by the SHA-256 of the
credential, never the credential itself, and at most `max_entries` are kept (past that the
longest-remembered goes first). Only successes are remembered; a failure is looked up every time
(and rate limited). Whatever happened to a credential since it was verified (revoked, rotated
out, expired) is seen at its next lookup: within `ttl` (0: every request is looked up).

`stamp_due(key_id)` tells whether this process should stamp the key's `last_used_at` now: once a
minute per key at most (the database's own condition keeps it so across processes), never a
round trip per request. Time comes from `clock` (monotonic seconds), so tests drive it.

Errors: `ValueError` for a negative `ttl` or fewer than one entry.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from proxy.api.key_store import Caller

K = TypeVar("K")
V = TypeVar("V")

__all__ = ["STAMP_SECONDS", "AuthCache"]

# A key's last_used_at is stamped at most this often (the database condition's interval).
STAMP_SECONDS = 60.0


class AuthCache:
    """Credentials verified in the last `ttl` seconds, and when keys were last stamped."""

    def __init__(
        self,
        ttl: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 0 or max_entries < 1:
            raise ValueError("an auth cache needs ttl >= 0 and max_entries >= 1")
        self.ttl, self._max, self._clock = ttl, max_entries, clock
        # SHA-256 of the credential -> (its caller, until when); oldest first
        self._callers: OrderedDict[bytes, tuple[Caller, float]] = OrderedDict()
        # key id -> when this process last stamped it; oldest first
        self._stamped: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._callers)

    def get(self, credential: str) -> Caller | None:
        """The caller `credential` was verified as within the last `ttl` seconds, else None."""
        if not self._callers:
            return None
        digest = _digest(credential)
        entry = self._callers.get(digest)
        if entry is None:
            return None
        caller, until = entry
        if self._clock() < until:
            return caller
        del self._callers[digest]
        return None

    def put(self, credential: str, caller: Caller) -> None:
        """Remember that `credential` was just verified as `caller`."""
        if self.ttl <= 0:
            return
        digest = _digest(credential)
        self._callers.pop(digest, None)
        self._callers[digest] = (caller, self._clock() + self.ttl)
        _trim(self._callers, self._max)

    def stamp_due(self, key_id: str) -> bool:
        """Whether `key_id`'s last use should be stamped now; if so, counts it as stamped."""
        now = self._clock()
        last = self._stamped.get(key_id)
        if last is not None and now - last < STAMP_SECONDS:
            return False
        self._stamped.pop(key_id, None)
        self._stamped[key_id] = now
        _trim(self._stamped, self._max)
        return True


def _digest(credential: str) -> bytes:
    return hashlib.sha256(credential.encode()).digest()


def _trim(entries: OrderedDict[K, V], most: int) -> None:
    while len(entries) > most:
        entries.popitem(last=False)
