"""The job queue of the ERE workers, in PostgreSQL (`ere_jobs`).

A job is a row: a kind, a key unique within its kind (enqueueing the same work twice adds
nothing), JSON arguments, and a state. A worker runs one job in one transaction:

    BEGIN; SELECT … FOR UPDATE SKIP LOCKED (the oldest due job); <the handler's work>;
    UPDATE … SET state = 'done'; COMMIT

so the row lock is the lease. Two workers never run one job (the second skips the locked row),
and a worker killed half-way leaves nothing: its connection drops, PostgreSQL rolls the
transaction back and the job is due again at once for the next worker. Handlers write what they
produce in that same transaction, under unique keys, so a job that runs again produces the same
rows once. Work outside the database (a payout file, an e-mail) must be repeatable: files are
written whole under a deterministic name and content, e-mails are recorded as sent.

A handler that raises rolls its transaction back; the failure is then recorded in a transaction
of its own: `attempts` + 1, `last_error`, and the job is due again after `retry_base × 2^(n-1)`
seconds, or `failed` after `max_attempts` attempts (visible in metrics and `ere-proxy jobs`).
A `Retry` exception postpones a job without counting an attempt (e.g. a close waiting for data).

Cancellation: a job being run is rolled back (the transaction is not committed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from proxy.store.connection import Connection

log = logging.getLogger("proxy.ere.jobs")


@dataclass(frozen=True)
class Job:
    job_id: int
    kind: str
    key: str
    args: dict[str, Any]
    attempts: int


Handler = Callable[[Connection, Job], Awaitable[None]]


class Retry(Exception):
    """Raised by a handler: not now (no attempt counted); due again after `after` seconds."""

    def __init__(self, reason: str, after: float) -> None:
        super().__init__(reason)
        self.after = after


_ENQUEUE = """
INSERT INTO ere_jobs (kind, job_key, args) VALUES ($1, $2, $3::jsonb)
ON CONFLICT (kind, job_key) DO NOTHING RETURNING job_id
"""
_CLAIM = """
SELECT job_id, kind, job_key, args, attempts FROM ere_jobs
WHERE state = 'queued' AND run_after <= now() AND kind = ANY($1::text[])
ORDER BY run_after, job_id LIMIT 1 FOR UPDATE SKIP LOCKED
"""
_DONE = (
    "UPDATE ere_jobs SET state = 'done', finished_at = now(), last_error = NULL WHERE job_id = $1"
)
_FAILED = """
UPDATE ere_jobs SET attempts = attempts + 1, last_error = $2,
    state = CASE WHEN attempts + 1 >= $3 THEN 'failed' ELSE 'queued' END,
    finished_at = CASE WHEN attempts + 1 >= $3 THEN now() END,
    run_after = now() + make_interval(secs => $4 * 2 ^ attempts)
WHERE job_id = $1 RETURNING state
"""
_POSTPONED = "UPDATE ere_jobs SET run_after = now() + make_interval(secs => $2), last_error = $3 WHERE job_id = $1"


async def enqueue(
    conn: Connection, kind: str, key: str, args: Mapping[str, Any] | None = None
) -> bool:
    """Queue a job (in the caller's transaction); False if one of this kind and key exists."""
    return await conn.fetchval(_ENQUEUE, kind, key, json.dumps(dict(args or {}))) is not None


@dataclass
class Outcome:
    """What `run_one` did: `job` None when nothing was due; `state` done, queued (retry), failed."""

    job: Job | None
    state: str = ""
    error: str = ""


async def run_one(
    db: Any,
    handlers: Mapping[str, Handler],
    *,
    retry_base: float,
    max_attempts: int,
    claimed: Callable[[Job], None] | None = None,
) -> Outcome:
    """Claim the oldest due job of a kind in `handlers` and run it (see the module docstring);
    `claimed` hears of the job once it is claimed, before it runs."""
    job: Job | None = None
    try:
        async with db.transaction() as conn:
            row = await conn.fetchrow(_CLAIM, list(handlers))
            if row is None:
                return Outcome(None)
            job = Job(row[0], row[1], row[2], json.loads(row[3]), row[4])
            if claimed is not None:
                claimed(job)
            await handlers[job.kind](conn, job)
            await conn.execute(_DONE, job.job_id)
        return Outcome(job, "done")
    except Retry as retry:
        assert job is not None
        async with db.transaction() as conn:
            await conn.execute(_POSTPONED, job.job_id, retry.after, str(retry))
        return Outcome(job, "queued", str(retry))
    except Exception as exc:
        if job is None:
            raise  # claiming failed: the database is unavailable, nothing to record
        error = f"{type(exc).__name__}: {exc}"[:2000]
        log.warning(
            "job failed",
            extra={"job": job.job_id, "kind": job.kind, "key": job.key, "error": error},
        )
        async with db.transaction() as conn:
            state = await conn.fetchval(_FAILED, job.job_id, error, max_attempts, retry_base)
        return Outcome(job, state, error)
