"""The partner API role's housekeeping: what the API keeps only for a while is deleted.

- Answers kept for an `Idempotency-Key` (`api_idempotency`) older than `[api]
  idempotency_hours`: a POST repeated after that is processed as a new one (it then meets the
  same conflicts a new one would: an EAN enrolled, an identity registered).
- Access tokens past their expiry (`api_access_tokens`): they authenticate nothing any more.

Each round deletes in batches (`batch` rows per statement), so no statement holds its locks
long and the API keeps answering. Several api processes may run it at once: a transaction-level
advisory lock lets one round run and the others skip it.

Errors: a round that fails (a database outage) is logged and tried again at the next one.
What a round deleted is counted in `metrics` (`proxy.api.metrics`), if given.
Cancellation: a batch cut short rolls back; nothing is half deleted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from proxy.api.metrics import ApiMetrics
from proxy.store.connection import Connection

__all__ = ["Purged", "purge_once", "run_housekeeping"]

log = logging.getLogger("proxy.api.housekeeping")

_LOCK = "SELECT pg_try_advisory_xact_lock(hashtextextended('ere-proxy:api-housekeeping', 0))"
_IDEMPOTENCY = """
DELETE FROM api_idempotency WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM api_idempotency
    WHERE created_at < now() - make_interval(hours => $1) ORDER BY created_at LIMIT $2))
"""
_TOKENS = """
DELETE FROM api_access_tokens WHERE ctid = ANY(ARRAY(
    SELECT ctid FROM api_access_tokens WHERE expires_at <= now() ORDER BY expires_at LIMIT $1))
"""


@dataclass(frozen=True, slots=True)
class Purged:
    idempotency_keys: int
    access_tokens: int


def _count(status: str) -> int:
    return int(status.split()[-1])


async def purge_once(db: Connection, idempotency_hours: int, *, batch: int = 1000) -> Purged | None:
    """One round: delete what has expired, in batches; None if another process holds the round."""
    keys = tokens = 0
    while True:
        async with db.transaction() as tx:
            if not await tx.fetchval(_LOCK):
                return None
            deleted_keys = _count(await tx.execute(_IDEMPOTENCY, idempotency_hours, batch))
            deleted_tokens = _count(await tx.execute(_TOKENS, batch))
        keys, tokens = keys + deleted_keys, tokens + deleted_tokens
        if deleted_keys < batch and deleted_tokens < batch:
            return Purged(keys, tokens)


async def run_housekeeping(
    db: Connection,
    idempotency_hours: int,
    stop: trio.Event,
    *,
    interval: float = 3600.0,
    metrics: ApiMetrics | None = None,
) -> None:
    """A round at once and then every `interval` seconds, until `stop` is set."""
    while not stop.is_set():
        try:
            purged = await purge_once(db, idempotency_hours)
        except Exception as error:  # a database outage: the next round tries again
            log.warning("API housekeeping failed", exc_info=error)
        else:
            if purged is not None and metrics is not None:
                metrics.housekeeping_round(purged.idempotency_keys, purged.access_tokens)
            if purged is not None and (purged.idempotency_keys or purged.access_tokens):
                log.info(
                    "API housekeeping",
                    extra={
                        "idempotency_keys": purged.idempotency_keys,
                        "access_tokens": purged.access_tokens,
                    },
                )
        with trio.move_on_after(interval):
            await stop.wait()
