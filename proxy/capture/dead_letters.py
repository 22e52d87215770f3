"""Dead letters: capture records that cannot be stored as events, kept whole with the reason.

An event becomes a dead letter when it cannot be encoded for the spill log or the store process
(stage "encode"), when a spilled or sent record cannot be read back (stage "decode", e.g. written
by an incompatible version), or when the database refuses it on its own while it answers
everything else (stage "store", found by bisecting its batch: see `proxy.capture.database_store`). The
letter travels like an event (spill log, store process) and lands in `capture_dead_letters`
(migration 008), never deleted: the payload is the event's JSON, its Python repr when even JSON
fails, or the undecodable record's bytes, in a bytea column that holds any byte.

Building a letter never raises: every field is plain text, made safe for msgpack (no lone
surrogates) and cut to a bounded length; the columns get NUL replaced (`pg_text`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from proxy.capture.events import Event

log = logging.getLogger("proxy.dead_letters")

ENCODE, DECODE, STORE = "encode", "decode", "store"
_ERROR_LIMIT = 2000
_FIELD_LIMIT = 100


class DeadLetter(msgspec.Struct, frozen=True, tag_field="kind", tag="dead_letter"):
    """An event (or an unreadable record) kept aside; `payload` is in `format` (json, repr, msgpack)."""

    event_id: str
    identity: str
    event_kind: str
    at: float
    stage: str
    error: str
    format: str
    payload: bytes


class Note(msgspec.Struct, frozen=True, array_like=True):
    """What the journal logs and counts about a dead letter (the payload stays in the database)."""

    identity: str
    event_id: str
    kind: str
    stage: str
    error: str

    @classmethod
    def of(cls, letter: DeadLetter) -> Note:
        return cls(letter.identity, letter.event_id, letter.event_kind, letter.stage, letter.error)


_json = msgspec.json.Encoder()


def _safe(text: Any, limit: int) -> str:
    """`text` as a str msgpack can encode (lone surrogates escaped), at most `limit` characters."""
    try:
        value = text if isinstance(text, str) else str(text)
    except Exception:
        value = "<unprintable>"
    return value[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def describe(exc: BaseException) -> str:
    """The error of a dead letter: its type and message, bounded."""
    try:
        message = str(exc)
    except Exception:
        message = ""
    return _safe(
        f"{type(exc).__name__}: {message}" if message else type(exc).__name__, _ERROR_LIMIT
    )


def kind_of(event: Any) -> str:
    """The event's kind tag ("unknown" for something that is not an event)."""
    config = getattr(type(event), "__struct_config__", None)
    tag = getattr(config, "tag", None)
    return tag if isinstance(tag, str) else "unknown"


def dead_letter(event: Event, stage: str, error: str) -> DeadLetter:
    """A letter for `event`: its JSON as payload, or its repr when the JSON cannot be made."""
    try:
        payload, form = _json.encode(event), "json"
    except Exception:
        try:
            payload, form = repr(event).encode("utf-8", "backslashreplace"), "repr"
        except Exception as exc:
            payload, form = f"<repr failed: {describe(exc)}>".encode(), "repr"
    at = getattr(event, "at", 0.0)
    event_id = (
        _safe(getattr(event, "event_id", ""), _FIELD_LIMIT)
        or "sha256:" + hashlib.sha256(payload).hexdigest()
    )
    return DeadLetter(
        event_id,
        _safe(getattr(event, "identity", ""), _FIELD_LIMIT),
        _safe(kind_of(event), _FIELD_LIMIT),
        at if isinstance(at, float) else 0.0,
        stage,
        _safe(error, _ERROR_LIMIT),
        form,
        payload,
    )


def unreadable(record: bytes, error: str) -> DeadLetter:
    """A letter for a record that could not be decoded: its bytes as they are."""
    digest = "sha256:" + hashlib.sha256(record).hexdigest()
    return DeadLetter(
        digest, "", "unknown", 0.0, DECODE, _safe(error, _ERROR_LIMIT), "msgpack", bytes(record)
    )


def pg_text(text: str) -> str:
    """`text` as PostgreSQL text can hold it: each NUL becomes U+FFFD (the replacement character)."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _received_at(at: float) -> datetime:
    try:
        return datetime.fromtimestamp(at, UTC) if at > 0 else datetime.now(UTC)
    except (ValueError, OverflowError, OSError):
        return datetime.now(UTC)


_INSERT = """
INSERT INTO capture_dead_letters (event_id, identity, kind, received_at, stage, error, format, payload)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[],
                     $8::bytea[])
ON CONFLICT (event_id) DO NOTHING
"""


async def store_dead_letters(conn: Any, letters: Sequence[DeadLetter]) -> None:
    """Insert `letters` (idempotently: a letter replayed twice is kept once) in the caller's transaction."""
    if not letters:
        return
    await conn.execute(
        _INSERT,
        [pg_text(letter.event_id)[:_FIELD_LIMIT] for letter in letters],
        [pg_text(letter.identity) for letter in letters],
        [pg_text(letter.event_kind) for letter in letters],
        [_received_at(letter.at) for letter in letters],
        [letter.stage if letter.stage in (ENCODE, DECODE, STORE) else STORE for letter in letters],
        [pg_text(letter.error) for letter in letters],
        [
            letter.format if letter.format in ("json", "repr", "msgpack") else "repr"
            for letter in letters
        ],
        [letter.payload for letter in letters],
    )
