"""A partner's own keys, as the partner itself may change them: rotation of the calling key;
and, for the dashboard's admins, listing, making, rotating and revoking any key of the partner.

`KeyData.rotate` replaces the key the call was made with by a new one (same partner, same
scopes) and lets the old one work for the grace period asked for, in one transaction with the
audit entry and the idempotent answer. The new key is shown in the answer only; the answer kept
for the `Idempotency-Key` leaves it out. A repeat of the request therefore cannot show the same
key again: while the new key has never been used (its first showing was lost on the way), the
repeat gives it a fresh secret and shows that; once it has been used, the repeat is a 409.

`list_keys`, `create`, `rotate_key` and `revoke` work on the partner's keys by id (another
partner's key does not exist for them: 404), through `proxy.api.key_store`, each write with its
audit entry in one transaction; a new key is returned once and never stored in the clear.

Errors: `Problem` 403 for a call made with an access token (only the key itself may rotate
it, or a narrower token could obtain a key with every scope), 404 for a key that is not the
partner's, 409 for a key replaced, revoked or expired already or a repeat whose key is in use,
422 for a grace period out of range; database errors pass through.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from proxy.api.audit import record_write
from proxy.api.idempotency import StoredAnswer, claim, remember
from proxy.api.key_store import (
    MAX_GRACE,
    Caller,
    create_key,
    list_keys,
    reissue_secret,
    revoke_key,
    rotate_key,
)
from proxy.api.keys import NewKey
from proxy.api.problems import Problem
from proxy.ere.admin.validation import AdminInputError
from proxy.store.connection import Connection

__all__ = ["KeyData"]

_KEY_ROTATED = "urn:ere-proxy:problem:key-rotated"
_KEY_ID = re.compile(r"[a-z0-9]{12}")


class KeyData:
    """The keys of one partner (see the module docstring)."""

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

    async def list_keys(self) -> list[dict[str, Any]]:
        """The partner's keys, oldest first, without secrets."""
        try:
            return await list_keys(self._db, self.caller.partner_id)
        except AdminInputError:
            raise Problem(404, "no such partner") from None

    async def create(self, scopes: tuple[str, ...]) -> NewKey:
        """A new key of the partner with `scopes` (valid scopes, checked by the caller)."""
        async with self._db.transaction() as tx:
            key = await create_key(tx, self.caller.partner_id, scopes)
            await record_write(
                tx,
                self.caller,
                "key.create",
                "api_key",
                key.key_id,
                after={"key_id": key.key_id, "scopes": list(scopes)},
            )
        return key

    async def rotate_key(self, key_id: str, grace: timedelta) -> tuple[NewKey, dict[str, Any]]:
        """(the successor, the old key as it is now) of one of the partner's keys, the old one
        working for `grace` more (see `proxy.api.key_store.rotate_key`)."""
        if not timedelta(0) <= grace <= MAX_GRACE:
            hours = MAX_GRACE // timedelta(hours=1)
            raise Problem(422, f"grace: between 0 and {hours} hours")
        async with self._db.transaction() as tx:
            await self._own(tx, key_id)
            try:
                key, old = await rotate_key(tx, key_id, grace)
            except AdminInputError as error:
                message = str(error).removeprefix("key id: ")
                raise Problem(409, message, title="Key replaced", type_=_KEY_ROTATED) from None
            await record_write(
                tx,
                self.caller,
                "key.rotate",
                "api_key",
                key_id,
                before={"key_id": key_id, "expires_at": None, "replaced_by": None},
                after={
                    "key_id": key_id,
                    "expires_at": old["expires_at"].isoformat(),
                    "replaced_by": key.key_id,
                },
            )
        return key, old

    async def revoke(self, key_id: str) -> dict[str, Any]:
        """Revoke one of the partner's keys from now on; the key as it is now."""
        async with self._db.transaction() as tx:
            await self._own(tx, key_id)
            try:
                revoked = await revoke_key(tx, key_id)
            except AdminInputError as error:
                message = str(error).removeprefix("key id: ")
                raise Problem(409, message, title="Key revoked", type_=_KEY_ROTATED) from None
            await record_write(
                tx,
                self.caller,
                "key.revoke",
                "api_key",
                key_id,
                before={"key_id": key_id, "revoked_at": None},
                after={"key_id": key_id, "revoked_at": revoked["revoked_at"].isoformat()},
            )
        return revoked

    async def _own(self, tx: Connection, key_id: str) -> None:
        """Lock the key if it is the partner's; 404 otherwise."""
        if not _KEY_ID.fullmatch(key_id) or not await tx.fetchval(
            "SELECT 1 FROM partner_api_keys WHERE key_id = $1 AND partner_id = $2 FOR UPDATE",
            key_id,
            self.caller.partner_id,
        ):
            raise Problem(404, "no such key")
