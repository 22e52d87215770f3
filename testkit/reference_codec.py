"""A pure-Python reference of the native codec (`proxy._codec`): the differential tests' oracle.

It reads and writes RFC 6455 frames and peeks OCPP-J envelopes with the same semantics as the
Rust implementation (`codec_rs/README.md`): `ReferenceFrameReader`, `ReferenceMessage`,
`reference_encode_frame`, `reference_encode_close` and `peek_envelope`. Differential tests feed
both implementations the same bytes and require identical results, so the reference depends on
the native module only for `ProtocolError` (errors then compare directly) and the constants.
Tests and raw test peers use it; the proxy itself never does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from proxy._codec import (
    BINARY,
    CALL,
    CALLRESULT,
    CLOSE,
    NOT_OCPP,
    PING,
    PONG,
    SEND,
    TEXT,
    ProtocolError,
)

# Opcode of the frames that carry the second and later fragments of a data message.
CONTINUATION = 0

# Close codes a peer may put on the wire (RFC 6455 section 7.4 plus the IANA registry:
# 1004-1006 and 1015 are reserved or local-only, 1016-2999 unassigned, 3000-4999 registered or
# private).
_VALID_CLOSE_CODES = (range(1000, 1004), range(1007, 1015), range(3000, 5000))

PROTOCOL_ERROR = 1002
INVALID_PAYLOAD = 1007
MESSAGE_TOO_BIG = 1009

MAX_CONTROL_PAYLOAD = 125


def is_valid_close_code(code: int) -> bool:
    """True if `code` may appear in a close frame on the wire."""
    return any(code in allowed for allowed in _VALID_CLOSE_CODES)


def _xor_mask(payload: bytes, key: bytes) -> bytes:
    """(Un)mask `payload` with the 4-byte `key` (the operation is its own inverse)."""
    n = len(payload)
    if n == 0:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    # One big-integer XOR keeps this linear and far faster than a per-byte loop.
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keystream, "big")).to_bytes(n, "big")


def _is_utf8(data: bytes) -> bool:
    """Strict UTF-8 check (no surrogates, no overlong forms), as RFC 6455 requires."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# OCPP-J envelope peek
# --------------------------------------------------------------------------------------------

MAX_JSON_DEPTH = 64

_JSON_WHITESPACE = b" \t\n\r"
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# A run of string bytes that need no attention: anything but the quote, the backslash and the
# control characters U+0000-U+001F (which must be escaped inside JSON strings).
_PLAIN_STRING_RUN = re.compile(rb'[^"\\\x00-\x1f]*')
_SIMPLE_ESCAPES = {
    ord('"'): '"',
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")

# (message_type, unique_id, action, error_code, payload_start, payload_end)
Envelope = tuple[int, str | None, str | None, str | None, int, int]
_NOT_OCPP_ENVELOPE: Envelope = (NOT_OCPP, None, None, None, 0, 0)


class _NotJson(Exception):
    """The text breaks the strict JSON grammar (internal; peek turns it into NOT_OCPP)."""


class _JsonScanner:
    """Validates strict RFC 8259 JSON over bytes, one value at a time, without building it."""

    def __init__(self, text: bytes) -> None:
        self.text = text
        self.pos = 0

    def skip_whitespace(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in _JSON_WHITESPACE:
            pos += 1
        self.pos = pos

    def peek_byte(self) -> int:
        """The byte at the cursor, or -1 at the end of the text."""
        return self.text[self.pos] if self.pos < len(self.text) else -1

    def expect(self, byte: bytes) -> None:
        if not self.text.startswith(byte, self.pos):
            raise _NotJson
        self.pos += len(byte)

    def value(self, depth: int) -> None:
        """Scan one value; `depth` counts the arrays/objects already open around it."""
        first = self.peek_byte()
        if first == ord("["):
            self.array(depth + 1)
        elif first == ord("{"):
            self.object(depth + 1)
        elif first == ord('"'):
            self.string()
        elif first == ord("t"):
            self.expect(b"true")
        elif first == ord("f"):
            self.expect(b"false")
        elif first == ord("n"):
            self.expect(b"null")
        else:
            self.number()

    def number(self) -> None:
        match = _NUMBER.match(self.text, self.pos)
        if match is None:
            raise _NotJson
        self.pos = match.end()

    def string(self) -> tuple[int, int]:
        """Scan a string; return the span of its raw contents (between the quotes).

        Besides the grammar, every `\\u` escape of a surrogate must be a high surrogate directly
        followed by a low-surrogate escape: a lone surrogate, anywhere in the text, makes it
        unusable (it cannot be decoded to a string).
        """
        text = self.text
        self.expect(b'"')
        start = pos = self.pos
        while True:
            run = _PLAIN_STRING_RUN.match(text, pos)
            assert run is not None  # the pattern also matches the empty run
            pos = run.end()
            if pos >= len(text):
                raise _NotJson  # unterminated
            byte = text[pos]
            if byte == ord('"'):
                self.pos = pos + 1
                return start, pos
            if byte != ord("\\"):
                raise _NotJson  # raw control character
            escape = text[pos + 1] if pos + 1 < len(text) else -1
            if escape in _SIMPLE_ESCAPES:
                pos += 2
                continue
            if escape != ord("u"):
                raise _NotJson
            unit = _hex_unit_at(text, pos)
            pos += 6
            if 0xDC00 <= unit <= 0xDFFF:
                raise _NotJson  # low surrogate without a high one before it
            if 0xD800 <= unit <= 0xDBFF:
                if not 0xDC00 <= _hex_unit_at(text, pos) <= 0xDFFF:
                    raise _NotJson  # high surrogate not followed by a low one
                pos += 6

    def array(self, depth: int) -> list[tuple[int, int]]:
        """Scan an array at nesting `depth`; return the byte span of each element."""
        if depth > MAX_JSON_DEPTH:
            raise _NotJson
        self.expect(b"[")
        spans: list[tuple[int, int]] = []
        self.skip_whitespace()
        if self.peek_byte() == ord("]"):
            self.pos += 1
            return spans
        while True:
            self.skip_whitespace()
            start = self.pos
            self.value(depth)
            spans.append((start, self.pos))
            self.skip_whitespace()
            if self.peek_byte() == ord(","):
                self.pos += 1
            else:
                self.expect(b"]")
                return spans

    def object(self, depth: int) -> None:
        """Scan an object at nesting `depth` (duplicate keys are allowed by the grammar)."""
        if depth > MAX_JSON_DEPTH:
            raise _NotJson
        self.expect(b"{")
        self.skip_whitespace()
        if self.peek_byte() == ord("}"):
            self.pos += 1
            return
        while True:
            self.skip_whitespace()
            self.string()
            self.skip_whitespace()
            self.expect(b":")
            self.skip_whitespace()
            self.value(depth)
            self.skip_whitespace()
            if self.peek_byte() == ord(","):
                self.pos += 1
            else:
                self.expect(b"}")
                return


def _hex_unit_at(text: bytes, pos: int) -> int:
    """The code unit of the `\\uXXXX` escape at `pos`; raises _NotJson if there is none."""
    digits = text[pos + 2 : pos + 6]
    if text[pos : pos + 2] != b"\\u" or len(digits) != 4:
        raise _NotJson
    if not all(d in _HEX_DIGITS for d in digits):
        raise _NotJson
    return int(digits, 16)


def _decode_string(raw: bytes) -> str | None:
    """Resolve the escapes of raw string contents the scanner has validated.

    Surrogate escapes come in pairs there, so only invalid UTF-8 in the raw bytes (possible
    when `peek_envelope` is given arbitrary bytes) returns None.
    """
    parts: list[str] = []
    pos = 0
    while True:
        backslash = raw.find(b"\\", pos)
        end = len(raw) if backslash < 0 else backslash
        try:
            parts.append(raw[pos:end].decode("utf-8"))
        except UnicodeDecodeError:
            return None
        if backslash < 0:
            return "".join(parts)
        escape = raw[backslash + 1]
        if escape != ord("u"):
            parts.append(_SIMPLE_ESCAPES[escape])
            pos = backslash + 2
            continue
        unit = int(raw[backslash + 2 : backslash + 6], 16)
        pos = backslash + 6
        if 0xD800 <= unit <= 0xDBFF:
            low = int(raw[pos + 2 : pos + 6], 16)
            unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
            pos += 6
        parts.append(chr(unit))


def peek_envelope(text: bytes) -> Envelope:
    """Classify a text message as an OCPP-J CALL, CALLRESULT or CALLERROR (or OCPP 2.1's SEND and
    CALLRESULTERROR, shaped like CALL and CALLERROR), or NOT_OCPP.

    Returns (message_type, unique_id, action, error_code, payload_start, payload_end); the span
    is a byte range of `text`. Never raises: anything that is not a well-formed OCPP-J frame
    (invalid JSON included) gives (NOT_OCPP, None, None, None, 0, 0).
    """
    try:
        return _peek(bytes(text))
    except _NotJson:
        return _NOT_OCPP_ENVELOPE


def _peek(text: bytes) -> Envelope:
    scanner = _JsonScanner(text)
    scanner.skip_whitespace()
    if scanner.peek_byte() != ord("["):
        return _NOT_OCPP_ENVELOPE  # not an array (whether valid JSON or not)
    elements = scanner.array(1)
    scanner.skip_whitespace()
    if scanner.pos != len(text):
        return _NOT_OCPP_ENVELOPE  # trailing garbage or a second value

    def token(index: int) -> bytes:
        start, end = elements[index]
        return text[start:end]

    def string_at(index: int) -> str | None:
        """The decoded string element at `index`, or None if it is no (decodable) string."""
        start, end = elements[index]
        if text[start] != ord('"'):
            return None
        return _decode_string(text[start + 1 : end - 1])

    arity = {b"2": 4, b"3": 3, b"4": 5, b"5": 5, b"6": 4}.get(token(0)) if elements else None
    if arity is None or len(elements) != arity:
        return _NOT_OCPP_ENVELOPE
    message_type = int(token(0))
    unique_id = string_at(1)
    if unique_id is None:
        return _NOT_OCPP_ENVELOPE
    if message_type in (CALL, SEND):
        action = string_at(2)
        if action is None:
            return _NOT_OCPP_ENVELOPE
        return (message_type, unique_id, action, None, *elements[3])
    if message_type == CALLRESULT:
        return (CALLRESULT, unique_id, None, None, *elements[2])
    # CALLERROR, CALLRESULTERROR: the description must be a string; only its type matters.
    error_code = string_at(2)
    if error_code is None or text[elements[3][0]] != ord('"'):
        return _NOT_OCPP_ENVELOPE
    return (message_type, unique_id, None, error_code, *elements[4])


# --------------------------------------------------------------------------------------------
# Frame reader
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReferenceMessage:
    """One complete message; same attributes (and meaning) as the native `Message`."""

    opcode: int
    data: bytes
    message_type: int = NOT_OCPP
    unique_id: str | None = None
    action: str | None = None
    error_code: str | None = None
    payload_start: int = 0
    payload_end: int = 0
    close_code: int | None = None
    close_reason: str | None = None


@dataclass(frozen=True)
class _FrameHeader:
    fin: bool
    opcode: int
    length: int
    mask_key: bytes | None
    size: int  # bytes taken by the header on the wire


class ReferenceFrameReader:
    """Pure-Python twin of the native `FrameReader` (see codec_rs/README.md)."""

    def __init__(self, *, from_client: bool, max_message_size: int = 1048576) -> None:
        if max_message_size < 0:
            raise ValueError("max_message_size must be >= 0")
        self._from_client = from_client
        self._max_message_size = max_message_size
        # Bytes fed but not yet parsed; between calls this is at most a partial frame header,
        # because payload bytes move to `_payload` as soon as they arrive.
        self._pending = bytearray()
        self._header: _FrameHeader | None = None  # frame whose payload is being read
        self._payload = bytearray()  # payload of that frame so far, still masked
        self._message_opcode: int | None = None  # TEXT/BINARY while a data message is open
        self._fragments = bytearray()  # unmasked payload of the open data message so far
        self._closed = False
        self._error: tuple[int, str] | None = None

    @property
    def at_frame_boundary(self) -> bool:
        """True when everything fed so far forms whole frames (never after an error)."""
        return self._error is None and self._header is None and not self._pending

    @property
    def at_message_boundary(self) -> bool:
        """True at a frame boundary with no fragmented data message open."""
        return self.at_frame_boundary and self._message_opcode is None

    @property
    def closed(self) -> bool:
        """True once a (valid) close frame has been read."""
        return self._closed

    def feed(self, data: bytes) -> list[ReferenceMessage]:
        """Consume `data` (split anywhere); return the messages it completed, in order."""
        if not isinstance(data, bytes):
            raise TypeError(f"feed() needs bytes, not {type(data).__name__}")
        if self._error is not None:
            raise ProtocolError(*self._error)
        try:
            return self._consume(data)
        except ProtocolError as exc:
            self._error = (exc.close_code, exc.reason)
            raise

    def _consume(self, data: bytes) -> list[ReferenceMessage]:
        pending = self._pending
        pending += data
        pos = 0
        messages: list[ReferenceMessage] = []
        while True:
            if self._header is None:
                header = self._parse_header(pending, pos)
                if header is None:
                    break  # need more header bytes
                self._header = header
                pos += header.size
            missing = self._header.length - len(self._payload)
            take = min(missing, len(pending) - pos)
            self._payload += pending[pos : pos + take]
            pos += take
            if take < missing:
                break  # need more payload bytes
            message = self._finish_frame()
            if message is not None:
                messages.append(message)
        del pending[:pos]
        return messages

    def _parse_header(self, buf: bytearray, pos: int) -> _FrameHeader | None:
        """Check and decode the header at `buf[pos:]`; None while it is incomplete.

        The checks run in the README's order, each as soon as its bytes are there: the first two
        bytes decide the flag, opcode, mask and fragmentation checks; the length checks (control
        payload size, 64-bit top bit, message size) and the after-close check wait for the
        extended length.
        """
        available = len(buf) - pos
        if available < 2:
            return None
        first, second = buf[pos], buf[pos + 1]
        fin = bool(first & 0x80)
        opcode = first & 0x0F
        masked = bool(second & 0x80)
        short_length = second & 0x7F
        is_control = opcode >= 8

        if first & 0x70:
            raise ProtocolError(PROTOCOL_ERROR, "reserved bits set")
        if opcode not in (CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG):
            raise ProtocolError(PROTOCOL_ERROR, f"reserved opcode {opcode}")
        if masked != self._from_client:
            reason = "client frame not masked" if self._from_client else "server frame masked"
            raise ProtocolError(PROTOCOL_ERROR, reason)
        if is_control and not fin:
            raise ProtocolError(PROTOCOL_ERROR, "fragmented control frame")
        if opcode == CONTINUATION and self._message_opcode is None:
            raise ProtocolError(PROTOCOL_ERROR, "continuation frame with no message in progress")
        if opcode in (TEXT, BINARY) and self._message_opcode is not None:
            raise ProtocolError(
                PROTOCOL_ERROR, "new data message while a fragmented one is in progress"
            )

        extended = {126: 2, 127: 8}.get(short_length, 0)
        if available < 2 + extended:
            return None
        if extended:
            length = int.from_bytes(buf[pos + 2 : pos + 2 + extended], "big")
        else:
            length = short_length
        # A control frame's length is judged by its value, so a non-minimal 16-bit encoding of a
        # short length is fine; 126 or more needs the extended length to decide.
        if is_control and length > MAX_CONTROL_PAYLOAD:
            raise ProtocolError(PROTOCOL_ERROR, "control frame payload longer than 125 bytes")
        if length >> 63:
            raise ProtocolError(PROTOCOL_ERROR, "64-bit payload length with the top bit set")
        if not is_control and len(self._fragments) + length > self._max_message_size:
            raise ProtocolError(MESSAGE_TOO_BIG, "message too big")
        if self._closed:
            raise ProtocolError(PROTOCOL_ERROR, "frame after close frame")

        size = 2 + extended + (4 if masked else 0)
        if available < size:
            return None
        mask_key = bytes(buf[pos + size - 4 : pos + size]) if masked else None
        return _FrameHeader(fin=fin, opcode=opcode, length=length, mask_key=mask_key, size=size)

    def _finish_frame(self) -> ReferenceMessage | None:
        """Handle the frame whose payload just completed; return the message it completes."""
        header = self._header
        assert header is not None
        payload = bytes(self._payload)
        if header.mask_key is not None:
            payload = _xor_mask(payload, header.mask_key)
        self._header = None
        self._payload = bytearray()

        if header.opcode == CLOSE:
            return self._close_message(payload)
        if header.opcode in (PING, PONG):
            return ReferenceMessage(opcode=header.opcode, data=payload)

        if header.opcode != CONTINUATION:
            self._message_opcode = header.opcode
        self._fragments += payload
        if not header.fin:
            return None
        opcode, data = self._message_opcode, bytes(self._fragments)
        self._message_opcode = None
        self._fragments = bytearray()
        if opcode == BINARY:
            return ReferenceMessage(opcode=BINARY, data=data)
        if not _is_utf8(data):
            raise ProtocolError(INVALID_PAYLOAD, "text message is not valid UTF-8")
        message_type, unique_id, action, error_code, start, end = peek_envelope(data)
        return ReferenceMessage(
            opcode=TEXT,
            data=data,
            message_type=message_type,
            unique_id=unique_id,
            action=action,
            error_code=error_code,
            payload_start=start,
            payload_end=end,
        )

    def _close_message(self, payload: bytes) -> ReferenceMessage:
        if not payload:
            code, reason = None, ""
        else:
            if len(payload) == 1:
                raise ProtocolError(PROTOCOL_ERROR, "close payload of one byte")
            code = int.from_bytes(payload[:2], "big")
            if not is_valid_close_code(code):
                raise ProtocolError(PROTOCOL_ERROR, f"invalid close code {code}")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(INVALID_PAYLOAD, "close reason is not valid UTF-8") from None
        self._closed = True
        return ReferenceMessage(opcode=CLOSE, data=payload, close_code=code, close_reason=reason)


# --------------------------------------------------------------------------------------------
# Frame writer
# --------------------------------------------------------------------------------------------


def reference_encode_frame(opcode: int, payload: bytes, *, mask: bool, fin: bool = True) -> bytes:
    """One frame with the minimal length encoding; `mask=True` masks with a random key.

    Raises ValueError for a frame RFC 6455 forbids: an unknown opcode, or a control frame that
    is fragmented or carries more than 125 bytes.
    """
    payload = bytes(payload)
    length = len(payload)
    if opcode not in (CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG):
        raise ValueError(f"invalid opcode {opcode}")
    if opcode >= 8 and not fin:
        raise ValueError("control frames cannot be fragmented")
    if opcode >= 8 and length > MAX_CONTROL_PAYLOAD:
        raise ValueError("control frame payload longer than 125 bytes")
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask else 0
    if length < 126:
        header = bytes([first, mask_bit | length])
    elif length < 1 << 16:
        header = bytes([first, mask_bit | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([first, mask_bit | 127]) + length.to_bytes(8, "big")
    if not mask:
        return header + payload
    key = os.urandom(4)
    return header + key + _xor_mask(payload, key)


def reference_encode_close(code: int | None = None, reason: str = "", *, mask: bool) -> bytes:
    """A close frame; `code=None` gives an empty payload. Raises ValueError on invalid input."""
    if code is None:
        if reason:
            raise ValueError("a close reason needs a close code")
        return reference_encode_frame(CLOSE, b"", mask=mask)
    if not is_valid_close_code(code):
        raise ValueError(f"invalid close code {code}")
    payload = code.to_bytes(2, "big") + reason.encode("utf-8")  # lone surrogates: ValueError
    if len(payload) > 125:
        raise ValueError("close payload longer than 125 bytes")
    return reference_encode_frame(CLOSE, payload, mask=mask)
