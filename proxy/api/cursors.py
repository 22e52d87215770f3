"""Opaque page cursors, sans-IO: where the next page of a list starts.

A cursor is the (created_at, id) of the last item of a page, or for lists ordered by a key
alone that key (`encode_key_cursor`), as base64url JSON with a version tag; partners treat it
as opaque. Errors: the decoders raise ValueError for anything they did not make (malformed,
another version or kind, a bad time).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

__all__ = ["decode_cursor", "decode_key_cursor", "encode_cursor", "encode_key_cursor"]

_VERSION = 1
_KEY_VERSION = 2
_MAX_CHARS = 512


def encode_cursor(created_at: datetime, object_id: str) -> str:
    raw = json.dumps([_VERSION, created_at.isoformat(), object_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) after which the page starts; ValueError if `cursor` is not ours."""
    if len(cursor) > _MAX_CHARS:
        raise ValueError("cursor too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, moment, object_id = json.loads(raw)
    except (binascii.Error, UnicodeDecodeError, TypeError, ValueError):
        raise ValueError("not a cursor of this API") from None
    if version != _VERSION or not isinstance(moment, str) or not isinstance(object_id, str):
        raise ValueError("not a cursor of this API")
    created_at = datetime.fromisoformat(moment)
    if created_at.utcoffset() is None:
        raise ValueError("not a cursor of this API")
    return created_at, object_id


def encode_key_cursor(key: str) -> str:
    raw = json.dumps([_KEY_VERSION, key], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def decode_key_cursor(cursor: str) -> str:
    """The key after which the page starts; ValueError if `cursor` is not ours."""
    if len(cursor) > _MAX_CHARS:
        raise ValueError("cursor too long")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, key = json.loads(raw)
    except (binascii.Error, UnicodeDecodeError, TypeError, ValueError):
        raise ValueError("not a cursor of this API") from None
    if version != _KEY_VERSION or not isinstance(key, str):
        raise ValueError("not a cursor of this API")
    return key
