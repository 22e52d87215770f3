"""The WebSocket frame codec and OCPP-J envelope peek, as the application imports it.

These names are the native module `proxy._codec` (Rust, `codec_rs`; its contract is
`proxy/_codec.pyi`). A readable pure-Python reference of the same semantics, the oracle of the
differential tests, lives with the tests (`testkit/reference_codec.py`).
"""

from __future__ import annotations

from proxy._codec import (
    BINARY,
    CALL,
    CALLERROR,
    CALLRESULT,
    CALLRESULTERROR,
    CLOSE,
    NOT_OCPP,
    PING,
    PONG,
    SEND,
    TEXT,
    FrameReader,
    Message,
    ProtocolError,
    encode_close,
    encode_frame,
    text_message,
)

__all__ = [
    "BINARY",
    "CALL",
    "CALLERROR",
    "CALLRESULT",
    "CALLRESULTERROR",
    "CLOSE",
    "NOT_OCPP",
    "PING",
    "PONG",
    "SEND",
    "TEXT",
    "FrameReader",
    "Message",
    "ProtocolError",
    "encode_close",
    "encode_frame",
    "text_message",
]
