"""`ere-proxy outbox status|dead-letters|requeue`: what the outboxes hold, for operators.

Dead letters (replayed CALLs the upstream refused with CALLERRORs after every retry) are never
dropped by the proxy; they stay in the database until an operator requeues them (they are then
sent on the charger's next replay, ahead of anything newer) or deletes them in SQL.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from proxy.outbox.policy import IN_DOUBT, WAITS_FOR_START
from proxy.runtime.config import Config
from proxy.store import StoreError, open_database

_STATUS = """
SELECT identity, count(*) FILTER (WHERE dead_reason IS NULL) AS queued,
       count(*) FILTER (WHERE dead_reason IS NOT NULL) AS dead,
       min(received_at) FILTER (WHERE dead_reason IS NULL) AS oldest
FROM outbox_entries GROUP BY identity ORDER BY identity
"""
_DEAD = """
SELECT identity, seq, action, attempts, dead_at, dead_reason, convert_from(payload, 'UTF8') AS payload
FROM outbox_entries WHERE dead_reason IS NOT NULL AND ($1::text IS NULL OR identity = $1) ORDER BY identity, seq
"""
# Requeueing is an operator's word: an entry queued without proof of the charger's identity is
# then replayed, and a StartTransaction parked in doubt is sent again (it may start twice: the
# operator checked the back-office first), with the later messages of its transaction.
_REQUEUE = """
UPDATE outbox_entries SET dead_reason = NULL, dead_at = NULL, attempts = 0, sent_at = NULL,
    proof = CASE WHEN proof = 'unknown' THEN 'operator' ELSE proof END
WHERE identity = $1 AND dead_reason IS NOT NULL
  AND (seq = $2 OR ($3::bool AND dead_reason = $4))
RETURNING seq
"""
_START_IN_DOUBT = """
SELECT 1 FROM outbox_entries WHERE identity = $1 AND seq = $2 AND dead_reason = $3
"""
_TRUST_AGAIN = "UPDATE outbox_transactions SET in_doubt = false WHERE identity = $1 AND in_doubt"


def add_outbox_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    outbox = sub.add_parser(
        "outbox", help="inspect the outboxes (CALLs kept while upstreams were unreachable)"
    )
    actions = outbox.add_subparsers(dest="action", required=True)
    actions.add_parser(
        "status", parents=[common], help="queued and dead-lettered entries per charger"
    )
    dead = actions.add_parser(
        "dead-letters", parents=[common], help="list dead letters with their reasons"
    )
    dead.add_argument("--identity", help="only this charger")
    requeue = actions.add_parser(
        "requeue", parents=[common], help="put a dead letter back for the next replay"
    )
    requeue.add_argument("identity")
    requeue.add_argument("seq", type=int)


async def outbox_command(
    config: Config,
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run one `ere-proxy outbox` action; returns the exit code (0 ok, 1 not found or database error)."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    try:
        async with open_database(config.database) as db:
            if args.action == "status":
                rows = await db.fetch(_STATUS)
                print(f"{'identity':<40} {'queued':>8} {'dead':>6}  oldest", file=stdout)
                for row in rows:
                    oldest = row["oldest"].isoformat() if row["oldest"] else "-"
                    print(
                        f"{row['identity']:<40} {row['queued']:>8} {row['dead']:>6}  {oldest}",
                        file=stdout,
                    )
            elif args.action == "dead-letters":
                for row in await db.fetch(_DEAD, args.identity):
                    print(
                        f"{row['identity']} #{row['seq']} {row['action']} after {row['attempts']} attempts "
                        f"at {row['dead_at'].isoformat()}: {row['dead_reason']}\n  {row['payload']}",
                        file=stdout,
                    )
            else:
                async with db.transaction() as conn:
                    in_doubt = (
                        await conn.fetchval(_START_IN_DOUBT, args.identity, args.seq, IN_DOUBT)
                        is not None
                    )
                    rows = await conn.fetch(
                        _REQUEUE, args.identity, args.seq, in_doubt, WAITS_FOR_START
                    )
                    if in_doubt:
                        await conn.execute(_TRUST_AGAIN, args.identity)
                if not rows:
                    print(f"ere-proxy: no dead letter {args.identity} #{args.seq}", file=stderr)
                    return 1
                requeued = ", ".join(
                    f"#{row['seq']}" for row in sorted(rows, key=lambda row: row["seq"])
                )
                print(f"requeued {args.identity} {requeued}", file=stdout)
    except StoreError as exc:
        print(f"ere-proxy: {exc}", file=stderr)
        return 1
    return 0
