"""Idempotent POSTs: an `Idempotency-Key` and the answer kept for it, per partner.

Inside the transaction that writes, `claim` takes a transaction-scoped advisory lock on (partner,
key), so two requests with one key run one after the other, then returns the answer stored for
that key, if any: the same request gets it again, another request under the same key is a 409
problem. `remember` stores the answer of the write, in the same transaction, so either both the
write and its answer are kept or neither. Failed requests (4xx) are not kept: a retry with the
same key and a corrected body is processed.

Errors: `Problem` (400 for a missing or malformed key, 409 for a key reused with another request).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from proxy.api.problems import Problem
from proxy.store.connection import Connection

__all__ = ["StoredAnswer", "check_key", "claim", "remember", "request_digest"]

_MAX_KEY = 255


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    status: int
    headers: dict[str, str]
    body: Any


def check_key(key: str | None) -> str:
    """The `Idempotency-Key` header's value: required, 1-255 printable ASCII characters."""
    if key is None:
        raise Problem(
            400,
            "every POST needs an Idempotency-Key header (a unique value per operation, e.g. a UUID)",
            title="Idempotency-Key required",
            type_="urn:ere-proxy:problem:idempotency-key",
            errors=[{"field": "Idempotency-Key", "detail": "is required"}],
        )
    if not 1 <= len(key) <= _MAX_KEY or not all(" " < ch <= "~" for ch in key):
        raise Problem(
            400,
            "Idempotency-Key must be 1-255 printable ASCII characters without spaces",
            title="Idempotency-Key malformed",
            type_="urn:ere-proxy:problem:idempotency-key",
            errors=[{"field": "Idempotency-Key", "detail": "1-255 printable ASCII characters"}],
        )
    return key


def request_digest(method: str, path: str, body: Any) -> str:
    """SHA-256 of a request: method, path and its body as canonical JSON."""
    canonical = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def claim(tx: Connection, partner_id: str, key: str, digest: str) -> StoredAnswer | None:
    """Lock (partner, key) for this transaction; the answer kept for it, if any (see above)."""
    await tx.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 0))", partner_id, key
    )
    row = await tx.fetchrow(
        "SELECT request_sha256, status, headers::text AS headers, body::text AS body "
        "FROM api_idempotency WHERE partner_id = $1 AND idem_key = $2",
        partner_id,
        key,
    )
    if row is None:
        return None
    if row["request_sha256"] != digest:
        raise Problem(
            409,
            "this Idempotency-Key was used with another request; use a new key for a new operation",
            title="Idempotency-Key reused",
            type_="urn:ere-proxy:problem:idempotency-key-reused",
        )
    return StoredAnswer(row["status"], json.loads(row["headers"]), json.loads(row["body"]))


async def remember(
    tx: Connection, partner_id: str, key: str, digest: str, answer: StoredAnswer
) -> None:
    await tx.execute(
        "INSERT INTO api_idempotency (partner_id, idem_key, request_sha256, status, headers, body) "
        "VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)",
        partner_id,
        key,
        digest,
        answer.status,
        json.dumps(answer.headers),
        json.dumps(answer.body),
    )
