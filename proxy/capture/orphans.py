"""Closing sessions whose end never came: a charger that died or lost its queue never sends
StopTransaction (or TransactionEvent Ended), so an active session without news for
`capture.orphan_after` seconds becomes `orphaned`; its energy stays the last known reading.

A stop that arrives later still completes the session (see `proxy.capture.sessions`). Several processes
may run this at once: the UPDATE is idempotent. Database errors are logged and retried at the
next round; they never end the process, nor does any other failure of a round (logged with its
traceback: it shares the capture nursery with the journal, and forwarding must go on).
"""

from __future__ import annotations

import logging

import trio

from proxy.capture.sessions import Connection

log = logging.getLogger("proxy.orphans")

_CLOSE_ORPHANS = """
UPDATE sessions SET status = 'orphaned', updated_at = now()
WHERE status = 'active' AND updated_at < now() - make_interval(secs => $1)
RETURNING identity, transaction_id
"""


async def close_orphans(conn: Connection, after: float) -> int:
    """Mark active sessions silent for `after` seconds as orphaned; returns how many."""
    rows = await conn.fetch(_CLOSE_ORPHANS, after)
    for identity, transaction_id in rows:
        log.info("session orphaned", extra={"identity": identity, "transaction_id": transaction_id})
    return len(rows)


async def close_orphans_periodically(
    conn: Connection,
    after: float,
    database_errors: tuple[type[BaseException], ...],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `close_orphans` every `after / 10` seconds (at most hourly) until cancelled."""
    task_status.started()
    while True:
        await trio.sleep(min(after / 10, 3600.0))
        try:
            await close_orphans(conn, after)
        except database_errors as exc:
            log.warning("closing orphaned sessions failed", extra={"error": repr(exc)})
        except Exception:  # a bug must not end the worker
            log.exception("closing orphaned sessions failed unexpectedly")
