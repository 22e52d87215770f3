"""WebSocket plumbing shared by the fake CSMS, the bench's chargers and raw test peers.

Frames are read and written with the project codec (`proxy.wire.codec`, the native Rust module). Until
that module is built (`maturin develop --release`), a slower adapter over wsproto's frame parser
takes its place so the bench still runs; `CODEC` names the implementation in use.

The HTTP upgrade is done with h11 (sans-IO) and a few lines of RFC 6455 on top; after the 101 the
socket carries raw frames only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import h11
import orjson
import trio

# RFC 6455 opcodes and OCPP-J message types (protocol constants, identical in every codec).
TEXT, BINARY, CLOSE, PING, PONG = 1, 2, 8, 9, 10
NOT_OCPP, CALL, CALLRESULT, CALLERROR = 0, 2, 3, 4

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class MessageLike(Protocol):
    """What the bench reads from a decoded message (a subset of `proxy._codec.Message`)."""

    opcode: int
    data: bytes
    message_type: int
    unique_id: str | None
    action: str | None


class ReaderLike(Protocol):
    """The part of `proxy._codec.FrameReader` the bench uses."""

    def feed(self, data: bytes) -> Sequence[MessageLike]: ...


class CodecError(Exception):
    """The peer sent bytes that are not valid WebSocket frames."""


def _load_codec() -> tuple[
    str, Callable[..., ReaderLike], Callable[..., bytes], type[BaseException]
]:
    """Pick the frame codec: the project's native one when built, else the wsproto fallback."""
    try:
        from proxy.wire.codec import FrameReader, ProtocolError, encode_frame  # needs proxy._codec
    except ImportError:
        return (
            "wsproto fallback (native codec not built)",
            _WsprotoReader,
            _encode_frame_py,
            CodecError,
        )
    return "native proxy._codec", FrameReader, encode_frame, ProtocolError


@dataclass(slots=True)
class _Message:
    opcode: int
    data: bytes
    message_type: int = NOT_OCPP
    unique_id: str | None = None
    action: str | None = None


def _peek_ocpp(message: _Message) -> None:
    """Fill the OCPP-J envelope fields of a TEXT message (fallback only; strict enough here)."""
    try:
        value = orjson.loads(message.data)
    except orjson.JSONDecodeError:
        return
    if not (isinstance(value, list) and len(value) >= 3 and type(value[0]) is int):
        return
    kind, uid = value[0], value[1]
    if not isinstance(uid, str):
        return
    if kind == CALL and len(value) == 4 and isinstance(value[2], str):
        message.action = value[2]
    elif not ((kind == CALLRESULT and len(value) == 3) or (kind == CALLERROR and len(value) == 5)):
        return
    message.message_type, message.unique_id = kind, uid


class _WsprotoReader:
    """Fallback with the `FrameReader` interface, built on wsproto's frame parser."""

    def __init__(self, *, from_client: bool, max_message_size: int = 1 << 20) -> None:
        from wsproto.frame_protocol import FrameProtocol

        # wsproto names the side that *receives*: a server reads masked client frames.
        self._proto = FrameProtocol(client=not from_client, extensions=[])
        self._parts: list[bytes] = []
        self._opcode = 0

    def feed(self, data: bytes) -> list[_Message]:
        from wsproto.frame_protocol import ParseFailed

        self._proto.receive_bytes(data)
        out: list[_Message] = []
        try:
            for frame in self._proto.received_frames():
                opcode = int(frame.opcode)
                payload = frame.payload
                if isinstance(payload, tuple):  # CLOSE: (code, reason)
                    code, reason = payload
                    body = b"" if code is None else struct.pack("!H", int(code)) + reason.encode()
                    out.append(_Message(CLOSE, body))
                elif opcode in (PING, PONG):
                    out.append(
                        _Message(
                            opcode, bytes(payload, "utf-8") if isinstance(payload, str) else payload
                        )
                    )
                else:
                    if opcode != 0:
                        self._opcode = opcode
                    self._parts.append(payload.encode() if isinstance(payload, str) else payload)
                    if frame.message_finished:
                        message = _Message(self._opcode, b"".join(self._parts))
                        self._parts.clear()
                        if message.opcode == TEXT:
                            _peek_ocpp(message)
                        out.append(message)
        except ParseFailed as exc:
            raise CodecError(str(exc)) from exc
        return out


def _encode_frame_py(opcode: int, payload: bytes, *, mask: bool, fin: bool = True) -> bytes:
    """Fallback frame writer: minimal length encoding, masking with a random key when asked."""
    n = len(payload)
    head = bytearray([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head.append(bit | n)
    elif n < 1 << 16:
        head += struct.pack("!BH", bit | 126, n)
    else:
        head += struct.pack("!BQ", bit | 127, n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    repeated = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")
    return bytes(head) + key + masked


CODEC, FrameReader, encode_frame, ProtocolError = _load_codec()


def close_frame(code: int = 1000, *, mask: bool) -> bytes:
    """A CLOSE frame carrying `code`."""
    return encode_frame(CLOSE, struct.pack("!H", code), mask=mask)


class HandshakeError(Exception):
    """The HTTP upgrade to WebSocket failed."""


def _accept_token(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())


async def _next_event(conn: h11.Connection, stream: trio.abc.Stream) -> object:
    """Next h11 event, reading from `stream` as needed."""
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        conn.receive_data(bytes(await stream.receive_some(8192)))


async def client_handshake(
    stream: trio.abc.Stream,
    host: str,
    target: str,
    subprotocols: list[str],
    authorization: bytes | None = None,
) -> tuple[str | None, bytes]:
    """Upgrade `stream` as a client; return (subprotocol chosen by the server, bytes after 101)."""
    key = base64.b64encode(os.urandom(16))
    headers: list[tuple[bytes, bytes]] = [
        (b"Host", host.encode()),
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Key", key),
        (b"Sec-WebSocket-Version", b"13"),
    ]
    if subprotocols:
        headers.append((b"Sec-WebSocket-Protocol", ", ".join(subprotocols).encode()))
    if authorization is not None:
        headers.append((b"Authorization", authorization))
    conn = h11.Connection(h11.CLIENT)
    request = conn.send(h11.Request(method="GET", target=target, headers=headers))
    await stream.send_all(request + conn.send(h11.EndOfMessage()))
    try:
        event = await _next_event(conn, stream)
    except h11.RemoteProtocolError as exc:
        raise HandshakeError(f"bad HTTP response: {exc}") from exc
    if not isinstance(event, h11.InformationalResponse | h11.Response):
        raise HandshakeError("connection closed during the handshake")
    if event.status_code != 101:
        raise HandshakeError(f"HTTP {event.status_code} instead of 101")
    fields = dict(event.headers)  # h11 lower-cases header names
    if fields.get(b"sec-websocket-accept") != _accept_token(key):
        raise HandshakeError("wrong Sec-WebSocket-Accept")
    chosen = fields.get(b"sec-websocket-protocol")
    return (chosen.decode() if chosen else None), conn.trailing_data[0]


async def server_handshake(
    stream: trio.abc.Stream, path_prefix: str, supported: tuple[str, ...]
) -> tuple[str, str | None, bytes] | None:
    """Accept an upgrade on `stream` as a server.

    Only targets under `path_prefix` are accepted; the subprotocol is the first one the client
    offers that is in `supported` (none offered: none chosen). Returns (target, subprotocol, bytes
    received after the request), or None after answering a non-WebSocket request with an error.
    """
    conn = h11.Connection(h11.SERVER)
    try:
        request = await _next_event(conn, stream)
        if not isinstance(request, h11.Request):
            return None
        while not isinstance(event := await _next_event(conn, stream), h11.EndOfMessage):
            if isinstance(event, h11.ConnectionClosed):
                return None
    except h11.RemoteProtocolError:
        return None
    target = request.target.decode()
    fields: dict[bytes, list[bytes]] = {}
    for name, value in request.headers:
        fields.setdefault(name, []).append(value)
    key = (fields.get(b"sec-websocket-key") or [b""])[0]
    if (
        not target.startswith(path_prefix)
        or not key
        or conn.their_state is not h11.MIGHT_SWITCH_PROTOCOL
    ):
        status = 404 if key else 426
        data = conn.send(h11.Response(status_code=status, headers=[("Content-Length", "0")]))
        await stream.send_all(data + conn.send(h11.EndOfMessage()))
        return None
    offered = [
        p.strip() for v in fields.get(b"sec-websocket-protocol", []) for p in v.decode().split(",")
    ]
    chosen = next((p for p in offered if p in supported), None)
    headers = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", _accept_token(key)),
    ]
    if chosen:
        headers.append((b"Sec-WebSocket-Protocol", chosen.encode()))
    await stream.send_all(conn.send(h11.InformationalResponse(status_code=101, headers=headers)))
    return target, chosen, conn.trailing_data[0]
