"""JSON structured logs, one object per line on stderr.

Fields given with `extra=` become keys of the object. Headers and credentials are never passed
to the logger anywhere in the proxy; as a second line of defence, keys that name secrets are
dropped here.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_SECRET_KEYS = frozenset(
    {"authorization", "password", "upstream_password", "password_hash", "credentials"}
)


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: int | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self._worker is not None:
            entry["worker"] = self._worker
        for key, value in vars(record).items():
            if key not in _STANDARD and key.lower() not in _SECRET_KEYS:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def setup_logging(level: str, worker: int | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(worker))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet_accept_errors()


class AcceptErrorBudget(logging.Filter):
    """Trio's `serve_listeners` (the loop hypercorn serves the partner API with) logs every accept
    that fails for want of descriptors with a traceback, ten a second for as long as it lasts:
    lines anyone can cause by holding connections open. This lets a few through, then one every
    10 s, without the traceback and with how many were left out (`suppressed`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._budget = LogBudget(per_second=0.1, burst=3)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._budget.allow(self._clock()):
            return False
        record.exc_info, record.exc_text = None, None
        record.suppressed = self._budget.suppressed()
        return True


def quiet_accept_errors() -> None:
    """Put `AcceptErrorBudget` on Trio's `serve_listeners` logger (once)."""
    logger = logging.getLogger("trio.serve_listeners")
    if not any(isinstance(f, AcceptErrorBudget) for f in logger.filters):
        logger.addFilter(AcceptErrorBudget())


class LogBudget:
    """At most `burst` log lines at once and `per_second` after that; the rest are counted.

    For lines anyone on the network can cause (a refused handshake): logging each one would let
    a flood fill the disk and drown what matters. `allow(now)` says whether to log a line now;
    `suppressed()` gives (and resets) how many were left out since the last one logged, to be
    put on that line.
    """

    def __init__(self, per_second: float = 10.0, burst: float = 20.0) -> None:
        self.per_second = per_second
        self.burst = burst
        self._tokens = burst
        self._at: float | None = None
        self._suppressed = 0

    def allow(self, now: float) -> bool:
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self._suppressed += 1
        return False

    def suppressed(self) -> int:
        count, self._suppressed = self._suppressed, 0
        return count
