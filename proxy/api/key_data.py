"""The calling partner key, as the partner itself may change it: rotation.

`KeyData.rotate` replaces the key the call was made with by a new one (same partner, same
scopes) and lets the old one work for the grace period asked for, in one transaction with the
audit entry and the idempotent answer. The new key is shown in the answer only; the answer kept
for the `Idempotency-Key` leaves it out. A repeat of the request therefore cannot show the same
key again: while the new key has never been used (its first showing was lost on the way), the
repeat gives it a fresh secret and shows that; once it has been used, the repeat is a 409.

Errors: `Problem` 403 for a call made with an access token (only the key itself may rotate
it, or a narrower token could obtain a key with every scope), 409 for a key replaced already or
a repeat whose key is in use; database errors pass through.
"""

from __future__ import annotations

from datetime import timedelta

from proxy.api.audit import record_write
from proxy.api.idempotency import StoredAnswer, claim, remember
from proxy.api.key_store import Caller, reissue_secret, rotate_key
from proxy.api.problems import Problem
from proxy.ere.admin.validation import AdminInputError
from proxy.store.connection import Connection

__all__ = ["KeyData"]

_KEY_ROTATED = "urn:ere-proxy:problem:key-rotated"


class KeyData:
    """The calling key of one partner (see the module docstring)."""

    def __init__(self, db: Connection, caller: Caller) -> None:
        self._db, self.caller = db, caller

    async def rotate(self, grace_hours: int, idem_key: str, digest: str) -> StoredAnswer:
        """Rotate the calling key; the answer with the new key (see the module docstring)."""
        if self.caller.by_token:
            raise Problem(403, "an access token cannot rotate its key; call with the key itself")
        partner_id = self.caller.partner_id
        async with self._db.transaction() as tx:
            stored = await claim(tx, partner_id, idem_key, digest)
            if stored is not None:
                return await self._shown_again(tx, stored)
            try:
                key, old = await rotate_key(tx, self.caller.key_id, timedelta(hours=grace_hours))
            except AdminInputError as error:
                message = str(error).removeprefix("key id: ")
                raise Problem(409, message, title="Key replaced", type_=_KEY_ROTATED) from None
            body = {
                "key_id": key.key_id,
                "scopes": list(old["scopes"]),
                "replaces": old["key_id"],
                "replaced_key_expires_at": old["expires_at"].isoformat(),
            }
            await record_write(
                tx,
                self.caller,
                "key.rotate",
                "api_key",
                old["key_id"],
                before={"key_id": old["key_id"], "expires_at": None, "replaced_by": None},
                after={
                    "key_id": old["key_id"],
                    "expires_at": body["replaced_key_expires_at"],
                    "replaced_by": key.key_id,
                },
            )
            answer = StoredAnswer(201, {}, body)
            await remember(tx, partner_id, idem_key, digest, answer)
        return StoredAnswer(answer.status, answer.headers, {"key": key.key} | body)

    async def _shown_again(self, tx: Connection, stored: StoredAnswer) -> StoredAnswer:
        if stored.status != 201:
            return stored
        key = await reissue_secret(tx, stored.body["key_id"])
        if key is None:
            raise Problem(
                409,
                f"this request made the key {stored.body['key_id']}, which has been used or "
                "revoked since; a key is shown only once",
                title="Key shown already",
                type_=_KEY_ROTATED,
            )
        return StoredAnswer(stored.status, stored.headers, {"key": key.key} | stored.body)
