"""The audit log of API writes: who (the key, or the dashboard user, and so the partner), when
(the database's clock), what (action, object) and the object before and after, in the writing
transaction."""

from __future__ import annotations

import json
from typing import Any

from proxy.api.key_store import Caller
from proxy.store.connection import Connection

__all__ = ["record_write"]


async def record_write(
    tx: Connection,
    caller: Caller,
    action: str,
    object_type: str,
    object_id: str,
    *,
    before: Any = None,
    after: Any = None,
) -> None:
    await tx.execute(
        "INSERT INTO api_audit_log (partner_id, key_id, user_id, action, object_type, object_id, "
        "before, after) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb)",
        caller.partner_id,
        caller.api_key_id,
        caller.user_id,
        action,
        object_type,
        object_id,
        None if before is None else json.dumps(before),
        None if after is None else json.dumps(after),
    )
