"""WebSocket frame streams written by hand for the codec's tests (Hypothesis): valid ones with
every length form, fragmentation and control frames in between, corrupted variants, streams split
at any offsets, and what a reader returned as comparable tuples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from proxy.wire.codec import BINARY, CLOSE, PING, PONG, TEXT
from testkit.ocpp_texts import any_texts, encode_text

CONTINUATION = 0


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c for c in cuts if 0 <= c <= len(data))})
    return [data[a:b] for a, b in zip(points, points[1:])] or [b""]


def as_tuple(message: Any) -> tuple[Any, ...]:
    """A decoded message (native or reference) as the tuple of its fields, to compare readers."""
    return (
        message.opcode,
        bytes(message.data),
        message.message_type,
        message.unique_id,
        message.action,
        message.error_code,
        message.payload_start,
        message.payload_end,
        message.close_code,
        message.close_reason,
    )


@dataclass
class StreamBuilder:
    """Writes frames by hand, recording where each header sits for later corruption."""

    draw: Any
    from_client: bool
    data: bytearray = field(default_factory=bytearray)
    headers: list[tuple[int, int]] = field(default_factory=list)  # (offset, size)
    boundaries: list[int] = field(default_factory=lambda: [0])

    def frame(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        draw = self.draw
        length = len(payload)
        forms = [None] if length > 0xFFFF else [None, None, None, 16, 64]
        form = draw(st.sampled_from(forms))
        if form is None:
            form = 7 if length < 126 else 16 if length < 1 << 16 else 64
        if form == 7:
            second, extended = length, b""
        elif form == 16:
            second, extended = 126, length.to_bytes(2, "big")
        else:
            second, extended = 127, length.to_bytes(8, "big")
        header = bytes([(0x80 if fin else 0) | opcode, (0x80 if self.from_client else 0) | second])
        header += extended
        if self.from_client:
            key = draw(st.binary(min_size=4, max_size=4))
            header += key
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        self.headers.append((len(self.data), len(header)))
        self.data += header + payload
        self.boundaries.append(len(self.data))

    def controls(self) -> None:
        """Zero to two ping/pong frames (allowed anywhere, also between fragments)."""
        for _ in range(self.draw(st.integers(0, 2))):
            opcode = self.draw(st.sampled_from([PING, PONG]))
            self.frame(opcode, self.draw(st.binary(max_size=125)))

    def data_message(self, opcode: int, payload: bytes) -> None:
        cuts = sorted(self.draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
        for index, piece in enumerate(pieces):
            if index:
                self.controls()
            self.frame(opcode if index == 0 else CONTINUATION, piece, fin=index == len(pieces) - 1)

    def close(self) -> None:
        draw = self.draw
        kind = draw(st.sampled_from(["code", "code", "code", "empty", "one-byte", "bad-reason"]))
        if kind == "empty":
            payload = b""
        elif kind == "one-byte":
            payload = draw(st.binary(min_size=1, max_size=1))
        else:
            code = draw(
                st.sampled_from([1000, 1001, 1003, 1008, 1011, 1014, 3000, 4999])
                | st.integers(0, 0xFFFF)
            )
            reason = draw(st.text(max_size=20)).encode()[:60]
            if kind == "bad-reason":
                reason += draw(st.sampled_from(INVALID_UTF8))
            payload = code.to_bytes(2, "big") + reason
        self.frame(CLOSE, payload)


@st.composite
def valid_streams(draw: Any, *, from_client: bool) -> StreamBuilder:
    """Well-formed frames; message-level rules may still break (close codes and reasons,
    frames after a close, message size limits), which both readers must report alike."""
    builder = StreamBuilder(draw, from_client)
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["text", "text", "binary", "control", "close"]))
        if kind == "text":
            builder.data_message(TEXT, encode_text(draw(any_texts)))
        elif kind == "binary":
            builder.data_message(BINARY, draw(st.binary(max_size=300)))
        elif kind == "control":
            builder.controls()
        else:
            builder.close()  # anything after it is an error: still worth comparing
    return builder


INVALID_UTF8 = [b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ok\xe2\x82"]

CORRUPTIONS = [
    "flip-header-bit",
    "set-rsv",
    "bad-opcode",
    "toggle-mask",
    "huge-length",
    "invalid-utf8-text",
    "truncate",
    "insert-random",
    "interleave-data",
]


def corrupt(draw: Any, builder: StreamBuilder) -> bytes:
    data = bytearray(builder.data)
    kind = draw(st.sampled_from(CORRUPTIONS))
    mask_bit = 0x80 if builder.from_client else 0
    # After an earlier corruption some recorded positions may be stale: keep those in range.
    boundary = draw(st.sampled_from([b for b in builder.boundaries if b <= len(data)] or [0]))
    headers = [(o, n) for o, n in builder.headers if o + n <= len(data)]
    if kind in ("flip-header-bit", "set-rsv", "bad-opcode", "toggle-mask") and headers:
        offset, size = draw(st.sampled_from(headers))
        if kind == "flip-header-bit":
            data[offset + draw(st.integers(0, size - 1))] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set-rsv":
            data[offset] |= draw(st.sampled_from([0x10, 0x20, 0x40, 0x70]))
        elif kind == "bad-opcode":
            opcode = draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]))
            data[offset] = (data[offset] & 0xF0) | opcode
        else:
            data[offset + 1] ^= 0x80
    elif kind == "huge-length":
        opcode = draw(st.sampled_from([TEXT, BINARY, PING, CONTINUATION]))
        length = draw(
            st.sampled_from([126, 1 << 16, 1 << 20, (1 << 20) + 1, 1 << 40, 1 << 63, (1 << 64) - 1])
        )
        header = bytes([0x80 | opcode, mask_bit | 127]) + length.to_bytes(8, "big")
        data[boundary:boundary] = header + b"\x00" * draw(st.integers(0, 8))
    elif kind == "invalid-utf8-text":
        bad = draw(st.sampled_from(INVALID_UTF8))
        key = b"\x00\x00\x00\x00"
        header = bytes([0x81, mask_bit | len(bad)]) + (key if mask_bit else b"")
        data[boundary:boundary] = header + bad
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data))) :]
    elif kind == "insert-random":
        position = draw(st.integers(0, len(data)))
        data[position:position] = draw(st.binary(min_size=1, max_size=12))
    else:  # a new data frame in the middle of whatever is there (maybe a fragmented message)
        opcode = draw(st.sampled_from([TEXT, BINARY, CONTINUATION]))
        fin = draw(st.booleans())
        header = bytes([(0x80 if fin else 0) | opcode, mask_bit | 1])
        header += b"\x01\x02\x03\x04" if mask_bit else b""
        data[boundary:boundary] = header + b"a"
    return bytes(data)
