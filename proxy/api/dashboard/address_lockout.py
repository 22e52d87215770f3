"""Failed dashboard log-ins per client address: past a number of them, the address is locked out.

An address may fail `FAILURES` log-ins; then every log-in from it is refused (without checking
the password) until its allowance refills, one attempt per `REFILL_SECONDS`. This stops one
address from guessing the passwords of many users, which the per-user lock
(`proxy.api.dashboard.users`) cannot. Counted per API process in bounded memory
(`proxy.api.rate_limit.TokenBuckets`); the address is the one the API's throttle sees
(`forwarded_for_hops`; an IPv6 address by its /64). Sans-IO: the clock is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from proxy.api.rate_limit import Limit, TokenBuckets

__all__ = ["FAILURES", "REFILL_SECONDS", "AddressLockout"]

FAILURES = 20
REFILL_SECONDS = 60.0


class AddressLockout:
    """Failed log-ins by address (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._failures = TokenBuckets(Limit(1 / REFILL_SECONDS, FAILURES), clock)

    def retry_after(self, address: str) -> int:
        """Seconds until `address` may try again (0: it may now)."""
        verdict = self._failures.peek(address)
        return 0 if verdict.allowed else verdict.retry_after

    def failed(self, address: str) -> None:
        """Count a failed log-in from `address`."""
        self._failures.take(address)
