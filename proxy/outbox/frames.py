"""OCPP-J frames the outbox builds and reads: a CALL around a payload kept as the charger sent it,
a message's payload bytes, and JSON that may not parse (sans-IO)."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.wire.codec import Message


def call_frame(unique_id: str, action: str, payload: bytes) -> bytes:
    """An OCPP-J CALL with `payload` (JSON bytes) inserted as it is."""
    return b"[2," + orjson.dumps(unique_id) + b"," + orjson.dumps(action) + b"," + payload + b"]"


def payload_of(message: Message) -> bytes:
    """The payload of a CALL, CALLRESULT or CALLERROR, as its bytes."""
    return message.data[message.payload_start : message.payload_end]


def loads_or_none(payload: bytes) -> Any:
    """The JSON value, or None when it does not parse."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
