"""Accepting through a shortage of descriptors: a listener that waits it out instead of failing.

Out of file descriptors (or kernel memory) on accept, `AcceptGuard` reports the error's name
(the charger listener counts it in `ere_proxy_accept_errors_total{error}`), logs one line without
a traceback (rate-limited: the first few, then one every 10 s with how many were left out) and
retries after `ACCEPT_RETRY` seconds: the connections wait in the kernel's backlog meanwhile,
nothing is lost silently and the server never stops accepting. Trio's own `serve_listeners`
retries too, but logs a traceback every time (ten a second for as long as it lasts). Other errors
are raised as they come; cancellation interrupts the wait; closing closes the inner listener.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

import trio

from proxy.runtime.logs import LogBudget
from proxy.runtime.metrics import ACCEPT_ERRORS

ACCEPT_RETRY = 0.1  # seconds between accepts while out of descriptors
_CAPACITY_ERRORS: frozenset[int] = frozenset(getattr(errno, name) for name in ACCEPT_ERRORS)


class AcceptGuard(trio.abc.Listener[trio.SocketStream]):
    """See the module docstring. `what` names who cannot get in, in the log line."""

    def __init__(
        self,
        inner: trio.SocketListener,
        *,
        what: str,
        logger: logging.Logger,
        count: Callable[[str], None] | None = None,
    ) -> None:
        self.inner = inner
        self._what = what
        self._logger = logger
        self._count = count
        self._log = LogBudget(per_second=0.1, burst=3)  # a line every 10 s while it lasts

    @property
    def socket(self) -> trio.socket.SocketType:
        return self.inner.socket

    async def accept(self) -> trio.SocketStream:
        while True:
            try:
                return await self.inner.accept()
            except OSError as exc:
                if exc.errno not in _CAPACITY_ERRORS:
                    raise
                name = errno.errorcode[exc.errno]
                if self._count is not None:
                    self._count(name)
                if self._log.allow(trio.current_time()):
                    self._logger.error(
                        f"cannot accept {self._what}: out of file descriptors or memory",
                        extra={"error": name, "suppressed": self._log.suppressed()},
                    )
                await trio.sleep(ACCEPT_RETRY)

    async def aclose(self) -> None:
        await self.inner.aclose()
