"""Example-based tests of the frame codec semantics (codec_rs/README.md).

Every reader/encoder test runs against both the native module and the pure-Python reference
(fixture `impl`), so this table doubles as the specification both must meet. Frames are built
here by hand (`frame`) so that the readers are never tested only with their own encoders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import testkit.reference_codec as ref
from proxy.wire import codec
from proxy.wire.codec import (
    BINARY,
    CALL,
    CALLERROR,
    CALLRESULT,
    CLOSE,
    NOT_OCPP,
    PING,
    PONG,
    TEXT,
    ProtocolError,
)
from testkit.frame_streams import as_tuple
from testkit.reference_codec import peek_envelope

CONTINUATION = 0
KEY = b"\x37\xfa\x21\x3d"

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Impl:
    name: str
    reader: Callable[..., Any]
    encode_frame: Callable[..., bytes]
    encode_close: Callable[..., bytes]


IMPLS = {
    "native": Impl("native", codec.FrameReader, codec.encode_frame, codec.encode_close),
    "reference": Impl(
        "reference",
        ref.ReferenceFrameReader,
        ref.reference_encode_frame,
        ref.reference_encode_close,
    ),
}


@pytest.fixture(params=sorted(IMPLS))
def impl(request: pytest.FixtureRequest) -> Impl:
    return IMPLS[request.param]


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    masked: bool = False,
    key: bytes = KEY,
    length_form: int | None = None,
    declared_length: int | None = None,
) -> bytes:
    """Build one frame; `length_form` 7/16/64 forces a length encoding (None: minimal)."""
    length = len(payload) if declared_length is None else declared_length
    if length_form is None:
        length_form = 7 if length < 126 else 16 if length < 1 << 16 else 64
    if length_form == 7:
        second, extended = length, b""
    elif length_form == 16:
        second, extended = 126, length.to_bytes(2, "big")
    else:
        second, extended = 127, length.to_bytes(8, "big")
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    header = bytes([first, (0x80 if masked else 0) | second]) + extended
    if masked:
        return header + key + mask_bytes(payload, key)
    return header + payload


def cframe(opcode: int, payload: bytes = b"", **kwargs: Any) -> bytes:
    """A frame as a client sends it (masked)."""
    return frame(opcode, payload, masked=True, **kwargs)


def plain(opcode: int, data: bytes) -> tuple[Any, ...]:
    """Expected tuple of a non-OCPP, non-close message."""
    return (opcode, data, NOT_OCPP, None, None, None, 0, 0, None, None)


def feed_all(reader: Any, chunks: list[bytes]) -> list[tuple[Any, ...]]:
    return [as_tuple(m) for chunk in chunks for m in reader.feed(chunk)]


# --------------------------------------------------------------------------------------------
# reading valid streams
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("from_client", [False, True])
def test_single_frames_of_every_kind(impl: Impl, from_client: bool) -> None:
    reader = impl.reader(from_client=from_client)
    stream = b"".join(
        frame(opcode, payload, masked=from_client)
        for opcode, payload in [
            (TEXT, b"hello"),
            (BINARY, b"\x00\xff\x80"),
            (PING, b"p"),
            (PONG, b""),
            (TEXT, b""),
            (BINARY, b""),
        ]
    )
    assert feed_all(reader, [stream]) == [
        plain(TEXT, b"hello"),
        plain(BINARY, b"\x00\xff\x80"),
        plain(PING, b"p"),
        plain(PONG, b""),
        plain(TEXT, b""),
        plain(BINARY, b""),
    ]
    assert reader.at_frame_boundary
    assert not reader.closed


def test_fresh_reader_state_and_empty_feed(impl: Impl) -> None:
    reader = impl.reader(from_client=True)
    assert reader.at_frame_boundary
    assert not reader.closed
    assert reader.feed(b"") == []
    assert reader.at_frame_boundary


@pytest.mark.parametrize("from_client", [False, True])
def test_fragmented_message_with_interleaved_controls(impl: Impl, from_client: bool) -> None:
    text = b'[2,"42","Heartbeat",{}]'
    stream = (
        frame(TEXT, text[:5], fin=False, masked=from_client)
        + frame(PING, b"are you there", masked=from_client)
        + frame(CONTINUATION, b"", fin=False, masked=from_client)
        + frame(CONTINUATION, text[5:12], fin=False, masked=from_client)
        + frame(PONG, b"yes", masked=from_client)
        + frame(CONTINUATION, text[12:], masked=from_client)
    )
    reader = impl.reader(from_client=from_client)
    assert feed_all(reader, [stream]) == [
        plain(PING, b"are you there"),
        plain(PONG, b"yes"),
        (TEXT, text, CALL, "42", "Heartbeat", None, 20, 22, None, None),
    ]


def test_fragmented_binary_message(impl: Impl) -> None:
    stream = frame(BINARY, b"ab", fin=False) + frame(CONTINUATION, b"cd", fin=False)
    reader = impl.reader(from_client=False)
    assert reader.feed(stream) == []
    assert reader.at_frame_boundary  # between fragments is still a frame boundary
    assert feed_all(reader, [frame(CONTINUATION, b"ef")]) == [plain(BINARY, b"abcdef")]


def test_utf8_sequence_split_across_fragments_is_valid(impl: Impl) -> None:
    euro = "€".encode()
    stream = frame(TEXT, b"a" + euro[:1], fin=False) + frame(CONTINUATION, euro[1:])
    assert feed_all(impl.reader(from_client=False), [stream]) == [plain(TEXT, b"a" + euro)]


@pytest.mark.parametrize(
    ("length", "header_size"),
    [(0, 2), (125, 2), (126, 4), (127, 4), (65535, 4), (65536, 10), (70000, 10)],
)
@pytest.mark.parametrize("from_client", [False, True])
def test_minimal_length_encodings(
    impl: Impl, length: int, header_size: int, from_client: bool
) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(range(length % 256))
    data = frame(BINARY, payload, masked=from_client)
    assert len(data) == header_size + (4 if from_client else 0) + length
    reader = impl.reader(from_client=from_client)
    # Split inside the extended length, inside the key and inside the payload.
    cuts = sorted({0, 1, 2, 3, 5, 9, 11, len(data) // 2, len(data) - 1, len(data)})
    chunks = [data[a:b] for a, b in zip(cuts, cuts[1:])]
    assert feed_all(reader, chunks) == [plain(BINARY, payload)]
    assert reader.at_frame_boundary


@pytest.mark.parametrize("length_form", [16, 64])
@pytest.mark.parametrize("length", [0, 5, 125])
def test_non_minimal_length_encodings_are_accepted(
    impl: Impl, length_form: int, length: int
) -> None:
    payload = b"x" * length
    # Control frames too: their limit is on the length value, not on its encoding.
    stream = (
        frame(TEXT, payload, length_form=length_form)
        + frame(PING, payload, length_form=length_form)
        + frame(PONG, payload, length_form=length_form)
        + frame(CLOSE, b"\x03\xe8" + payload[2:], length_form=length_form)
    )
    reader = impl.reader(from_client=False)
    close_payload = b"\x03\xe8" + payload[2:] if length >= 2 else b"\x03\xe8"
    assert feed_all(reader, [stream]) == [
        plain(TEXT, payload),
        plain(PING, payload),
        plain(PONG, payload),
        (CLOSE, close_payload, NOT_OCPP, None, None, None, 0, 0, 1000, close_payload[2:].decode()),
    ]


def _mixed_stream(from_client: bool) -> tuple[bytes, list[int], list[tuple[Any, ...]]]:
    """A stream of varied frames, the offsets of its frame boundaries and its messages."""
    parts = [
        (frame(TEXT, b'[3,"a",', fin=False, masked=from_client), None),
        (frame(PING, b"", masked=from_client), plain(PING, b"")),
        (
            frame(CONTINUATION, b'{"k":[1,2]}]', masked=from_client),
            (TEXT, b'[3,"a",{"k":[1,2]}]', CALLRESULT, "a", None, None, 7, 18, None, None),
        ),
        (frame(BINARY, bytes(range(200)), masked=from_client), plain(BINARY, bytes(range(200)))),
        (frame(PONG, b"12345", masked=from_client), plain(PONG, b"12345")),
        (frame(TEXT, b"", masked=from_client, length_form=64), plain(TEXT, b"")),
        (
            frame(CLOSE, b"\x03\xe8bye", masked=from_client),
            (CLOSE, b"\x03\xe8bye", NOT_OCPP, None, None, None, 0, 0, 1000, "bye"),
        ),
    ]
    stream = b""
    boundaries = [0]
    messages = []
    for data, message in parts:
        stream += data
        boundaries.append(len(stream))
        if message is not None:
            messages.append(message)
    return stream, boundaries, messages


@pytest.mark.parametrize("from_client", [False, True])
def test_split_at_every_offset(impl: Impl, from_client: bool) -> None:
    stream, _, expected = _mixed_stream(from_client)
    for cut in range(len(stream) + 1):
        reader = impl.reader(from_client=from_client)
        assert feed_all(reader, [stream[:cut], stream[cut:]]) == expected, cut
        assert reader.closed


@pytest.mark.parametrize("from_client", [False, True])
def test_byte_by_byte_boundary_and_closed_tracking(impl: Impl, from_client: bool) -> None:
    stream, boundaries, expected = _mixed_stream(from_client)
    reader = impl.reader(from_client=from_client)
    got = []
    for offset in range(len(stream)):
        got += [as_tuple(m) for m in reader.feed(stream[offset : offset + 1])]
        assert reader.at_frame_boundary == (offset + 1 in boundaries), offset
        assert reader.closed == (offset + 1 == len(stream)), offset
    assert got == expected


def test_large_message_in_small_chunks(impl: Impl) -> None:
    payload = bytes(range(256)) * 1024  # 256 KiB, 64-bit length
    stream = frame(BINARY, payload, fin=False, masked=True) + frame(
        CONTINUATION, payload, masked=True
    )
    reader = impl.reader(from_client=True)
    chunks = [stream[i : i + 97] for i in range(0, len(stream), 97)]
    assert feed_all(reader, chunks) == [plain(BINARY, payload + payload)]


def test_message_of_exactly_max_size_is_accepted(impl: Impl) -> None:
    reader = impl.reader(from_client=False, max_message_size=100)
    stream = frame(TEXT, b"a" * 60, fin=False) + frame(CONTINUATION, b"b" * 40)
    assert feed_all(reader, [stream]) == [plain(TEXT, b"a" * 60 + b"b" * 40)]
    # Control frames do not count towards the data message size.
    assert feed_all(reader, [frame(PING, b"p" * 125)]) == [plain(PING, b"p" * 125)]


# --------------------------------------------------------------------------------------------
# close frames
# --------------------------------------------------------------------------------------------

VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014]
VALID_CLOSE_CODES += [3000, 3999, 4000, 4999]
INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]


@pytest.mark.parametrize(
    ("payload", "code", "reason"),
    [
        (b"", None, ""),
        (b"\x03\xe8", 1000, ""),
        (b"\x03\xe9going away", 1001, "going away"),
        (b"\x0f\xa0" + "ünïcødé ✓".encode(), 4000, "ünïcødé ✓"),
        (b"\x03\xf3" + b"r" * 123, 1011, "r" * 123),
    ],
)
@pytest.mark.parametrize("from_client", [False, True])
def test_close_parsing(
    impl: Impl, payload: bytes, code: int | None, reason: str, from_client: bool
) -> None:
    reader = impl.reader(from_client=from_client)
    data = frame(CLOSE, payload, masked=from_client)
    assert feed_all(reader, [data[:-1]]) == []
    assert not reader.closed
    assert feed_all(reader, [data[-1:]]) == [
        (CLOSE, payload, NOT_OCPP, None, None, None, 0, 0, code, reason)
    ]
    assert reader.closed
    assert reader.at_frame_boundary


@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
def test_valid_close_codes(impl: Impl, code: int) -> None:
    reader = impl.reader(from_client=False)
    [message] = reader.feed(frame(CLOSE, code.to_bytes(2, "big")))
    assert (message.close_code, message.close_reason) == (code, "")


@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
def test_invalid_close_codes(impl: Impl, code: int) -> None:
    reader = impl.reader(from_client=False)
    with pytest.raises(ProtocolError) as info:
        reader.feed(frame(CLOSE, code.to_bytes(2, "big") + b"why"))
    assert info.value.close_code == 1002


def test_control_frames_between_fragments_after_close_is_read(impl: Impl) -> None:
    # A close frame may interrupt a fragmented message; the message then never completes.
    reader = impl.reader(from_client=False)
    stream = frame(TEXT, b"part", fin=False) + frame(CLOSE, b"\x03\xe8")
    assert feed_all(reader, [stream]) == [(CLOSE, b"\x03\xe8", 0, None, None, None, 0, 0, 1000, "")]
    assert reader.closed
    with pytest.raises(ProtocolError) as info:
        reader.feed(frame(CONTINUATION, b"rest"))
    assert info.value.close_code == 1002


# --------------------------------------------------------------------------------------------
# protocol errors (one row per README table row, plus ordering between rows)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCase:
    id: str
    prefix: bytes  # accepted first
    trigger: bytes  # fed byte by byte; the error must come exactly with its last byte
    code: int
    from_client: bool = False
    max_message_size: int = 1048576


def _server_close(code: int = 1000) -> bytes:
    return frame(CLOSE, code.to_bytes(2, "big"))


ERROR_CASES = [
    # any RSV bit set
    ErrorCase("rsv1", b"", frame(TEXT, b"hi", rsv=4)[:2], 1002),
    ErrorCase("rsv2", b"", frame(BINARY, b"hi", rsv=2)[:2], 1002),
    ErrorCase("rsv3", b"", frame(PING, b"hi", rsv=1)[:2], 1002),
    ErrorCase("rsv-on-continuation", frame(TEXT, b"a", fin=False), frame(0, b"b", rsv=4)[:2], 1002),
    # reserved opcodes
    *[ErrorCase(f"opcode-{op}", b"", bytes([0x80 | op, 0]), 1002) for op in (3, 4, 5, 6, 7)],
    *[ErrorCase(f"opcode-{op}", b"", bytes([0x80 | op, 0]), 1002) for op in (11, 12, 13, 14, 15)],
    # masking
    ErrorCase("client-unmasked", b"", frame(TEXT, b"hi")[:2], 1002, from_client=True),
    ErrorCase("server-masked", b"", frame(TEXT, b"hi", masked=True)[:2], 1002),
    ErrorCase(
        "client-unmasked-after-masked",
        cframe(PING, b"ok"),
        frame(PONG, b"")[:2],
        1002,
        from_client=True,
    ),
    # control frames
    ErrorCase("ping-not-fin", b"", frame(PING, b"", fin=False)[:2], 1002),
    ErrorCase("pong-not-fin", b"", frame(PONG, b"x", fin=False)[:2], 1002),
    ErrorCase("close-not-fin", b"", frame(CLOSE, b"", fin=False)[:2], 1002),
    # (the control payload length is judged by its value: it needs the extended length)
    ErrorCase("ping-126", b"", frame(PING, b"p" * 126)[:4], 1002),
    ErrorCase("pong-16bit-200", b"", frame(PONG, declared_length=200)[:4], 1002),
    ErrorCase("close-64bit-126", b"", frame(CLOSE, declared_length=126, length_form=64)[:10], 1002),
    ErrorCase("ping-64bit-huge", b"", frame(PING, declared_length=1 << 40)[:10], 1002),
    ErrorCase(
        "ping-126-client", b"", cframe(PING, declared_length=126)[:4], 1002, from_client=True
    ),
    # fragmentation
    ErrorCase("continuation-first", b"", frame(CONTINUATION, b"x")[:2], 1002),
    ErrorCase("continuation-not-fin-first", b"", frame(CONTINUATION, b"x", fin=False)[:2], 1002),
    ErrorCase(
        "continuation-after-complete-message",
        frame(TEXT, b"a", fin=False) + frame(CONTINUATION, b"b"),
        frame(CONTINUATION, b"c")[:2],
        1002,
    ),
    ErrorCase("text-in-text", frame(TEXT, b"a", fin=False), frame(TEXT, b"b")[:2], 1002),
    ErrorCase("binary-in-text", frame(TEXT, b"a", fin=False), frame(BINARY, b"b")[:2], 1002),
    ErrorCase(
        "text-in-binary-after-ping",
        frame(BINARY, b"a", fin=False) + frame(PING, b""),
        frame(TEXT, b"b", fin=False)[:2],
        1002,
    ),
    # 64-bit length with the most significant bit set
    ErrorCase("length-msb", b"", bytes([0x82, 127]) + (1 << 63).to_bytes(8, "big"), 1002),
    ErrorCase("length-all-ones", b"", bytes([0x81, 127]) + b"\xff" * 8, 1002),
    # data message too big
    ErrorCase(
        "too-big-7bit", b"", frame(TEXT, declared_length=101)[:2], 1009, max_message_size=100
    ),
    ErrorCase(
        "too-big-16bit", b"", frame(BINARY, declared_length=1001)[:4], 1009, max_message_size=1000
    ),
    ErrorCase(
        "too-big-64bit-form",
        b"",
        frame(BINARY, declared_length=101, length_form=64)[:10],
        1009,
        max_message_size=100,
    ),
    ErrorCase(
        "too-big-over-fragments",
        frame(TEXT, b"a" * 60, fin=False) + frame(PING, b"") + frame(CONTINUATION, b"", fin=False),
        frame(CONTINUATION, declared_length=41)[:2],
        1009,
        max_message_size=100,
    ),
    ErrorCase(
        "too-big-client",
        b"",
        cframe(BINARY, declared_length=70000)[:10],
        1009,
        from_client=True,
        max_message_size=65536,
    ),
    ErrorCase(
        "too-big-default-limit", b"", frame(BINARY, declared_length=(1 << 20) + 1)[:10], 1009
    ),
    # any frame after a close frame
    ErrorCase("ping-after-close", _server_close(), frame(PING, b"")[:2], 1002),
    ErrorCase("text-after-close", _server_close(), frame(TEXT, b"hello")[:2], 1002),
    ErrorCase("close-after-close", _server_close(), _server_close()[:2], 1002),
    # (this row comes after the length rows, so it waits for the extended length)
    ErrorCase("binary-16bit-after-close", _server_close(), frame(BINARY, b"b" * 200)[:4], 1002),
    ErrorCase(
        "text-64bit-after-close", _server_close(), frame(TEXT, b"", length_form=64)[:10], 1002
    ),
    ErrorCase("empty-close-after-close", frame(CLOSE), frame(CLOSE)[:2], 1002),
    ErrorCase(
        "continuation-after-close",
        frame(BINARY, b"a", fin=False) + _server_close(),
        frame(CONTINUATION, b"b")[:2],
        1002,
    ),
    # close payload of one byte (decided when the frame is complete)
    ErrorCase("close-one-byte", b"", frame(CLOSE, b"\x03"), 1002),
    ErrorCase("close-one-byte-client", b"", cframe(CLOSE, b"\x03"), 1002, from_client=True),
    # close codes
    *[
        ErrorCase(f"close-code-{code}", b"", frame(CLOSE, code.to_bytes(2, "big") + b"x"), 1002)
        for code in INVALID_CLOSE_CODES
    ],
    # close reason not UTF-8
    ErrorCase("close-reason-ff", b"", frame(CLOSE, b"\x03\xe8\xff"), 1007),
    ErrorCase("close-reason-surrogate", b"", frame(CLOSE, b"\x03\xe8\xed\xa0\x80"), 1007),
    ErrorCase("close-reason-truncated", b"", frame(CLOSE, b"\x03\xe8ok\xe2\x82"), 1007),
    ErrorCase(
        "close-reason-client", b"", cframe(CLOSE, b"\x03\xe8\xc0\xaf"), 1007, from_client=True
    ),
    # text message not UTF-8 (decided when the message is complete)
    ErrorCase("text-ff", b"", frame(TEXT, b"\xff"), 1007),
    ErrorCase("text-overlong", b"", frame(TEXT, b"\xc0\xaf"), 1007),
    ErrorCase("text-surrogate", b"", frame(TEXT, b'"\xed\xa0\x80"'), 1007),
    ErrorCase("text-above-max-code-point", b"", frame(TEXT, b"\xf4\x90\x80\x80"), 1007),
    ErrorCase("text-truncated-at-end", b"", frame(TEXT, b"ok\xe2\x82"), 1007),
    ErrorCase(
        "text-invalid-only-when-complete",
        frame(TEXT, b"\xe2", fin=False) + frame(PING, b""),
        frame(CONTINUATION, b"\x82"),
        1007,
    ),
    ErrorCase(
        "text-invalid-in-first-fragment",
        frame(TEXT, b"\xff", fin=False),
        frame(CONTINUATION, b"fine"),
        1007,
    ),
    ErrorCase("text-client", b"", cframe(TEXT, b"\x80abc"), 1007, from_client=True),
    # ordering: the earlier table row wins when several apply
    ErrorCase(
        "unmasked-before-too-big",
        b"",
        frame(BINARY, declared_length=1000)[:2],
        1002,
        from_client=True,
        max_message_size=10,
    ),
    ErrorCase("rsv-before-after-close", _server_close(), frame(BINARY, b"", rsv=4)[:2], 1002),
    ErrorCase(
        "msb-before-too-big",
        b"",
        bytes([0x82, 127]) + (1 << 63 | 5).to_bytes(8, "big"),
        1002,
        max_message_size=10,
    ),
    ErrorCase(
        "too-big-before-after-close",
        _server_close(),
        frame(BINARY, declared_length=11)[:2],
        1009,
        max_message_size=10,
    ),
]


@pytest.mark.parametrize("case", ERROR_CASES, ids=[case.id for case in ERROR_CASES])
def test_error_fires_exactly_when_decidable(impl: Impl, case: ErrorCase) -> None:
    reader = impl.reader(from_client=case.from_client, max_message_size=case.max_message_size)
    reader.feed(case.prefix)
    for byte in case.trigger[:-1]:
        assert reader.feed(bytes([byte])) == []
    with pytest.raises(ProtocolError) as info:
        reader.feed(case.trigger[-1:])
    assert info.value.close_code == case.code
    # The reader stays failed with the same error, whatever comes next.
    for later in (b"", frame(PING, b"", masked=case.from_client), b"\x00" * 20):
        with pytest.raises(ProtocolError) as again:
            reader.feed(later)
        assert again.value.close_code == case.code
        assert again.value.reason == info.value.reason


@pytest.mark.parametrize("case", ERROR_CASES, ids=[case.id for case in ERROR_CASES])
def test_error_in_one_feed_loses_earlier_messages(impl: Impl, case: ErrorCase) -> None:
    reader = impl.reader(from_client=case.from_client, max_message_size=case.max_message_size)
    valid = frame(PONG, b"lost", masked=case.from_client)
    with pytest.raises(ProtocolError) as info:
        reader.feed(valid + case.prefix + case.trigger + b"\x00" * 16)
    assert info.value.close_code == case.code


@pytest.mark.parametrize("data", ["text", 3, None])
def test_feed_takes_only_bytes(impl: Impl, data: Any) -> None:
    reader = impl.reader(from_client=False)
    with pytest.raises(TypeError):
        reader.feed(data)
    assert reader.feed(frame(PING)) != []  # a wrong argument does not fail the reader


def test_negative_max_message_size_is_rejected(impl: Impl) -> None:
    with pytest.raises(ValueError):
        impl.reader(from_client=False, max_message_size=-1)


def test_zero_max_message_size_allows_only_empty_data(impl: Impl) -> None:
    reader = impl.reader(from_client=False, max_message_size=0)
    assert feed_all(reader, [frame(BINARY) + frame(PING, b"ok")]) == [
        plain(BINARY, b""),
        plain(PING, b"ok"),
    ]
    with pytest.raises(ProtocolError) as info:
        reader.feed(frame(TEXT, b"x")[:2])
    assert info.value.close_code == 1009


def test_reference_message_mirrors_native_message() -> None:
    [native] = codec.FrameReader(from_client=False).feed(frame(PING))
    native_attributes = {name for name in dir(native) if not name.startswith("_")}
    assert native_attributes == set(ref.ReferenceMessage.__dataclass_fields__)
    message = ref.ReferenceMessage(opcode=PING, data=b"")
    with pytest.raises(AttributeError):
        message.opcode = PONG  # type: ignore[misc]


def test_protocol_error_carries_code_and_reason() -> None:
    error = ProtocolError(1009, "message too big")
    assert (error.close_code, error.reason) == (1009, "message too big")
    assert isinstance(error, Exception)


# --------------------------------------------------------------------------------------------
# OCPP-J envelope peek
# --------------------------------------------------------------------------------------------

NOT = None  # expected result: NOT_OCPP

PEEK_CASES: list[tuple[str, bytes, tuple[int, str, str | None, str | None, bytes] | None]] = [
    # valid envelopes: (message_type, unique_id, action, error_code, payload text)
    (
        "call",
        b'[2,"19223201","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]',
        (
            CALL,
            "19223201",
            "BootNotification",
            None,
            b'{"chargePointVendor":"V","chargePointModel":"M"}',
        ),
    ),
    (
        "call-whitespace",
        b' \t\r\n[ 2 ,\n"id" ,\t"Heartbeat" , { } ]\r\n ',
        (CALL, "id", "Heartbeat", None, b"{ }"),
    ),
    (
        "callresult",
        b'[3,"id",{"status":"Accepted"}]',
        (CALLRESULT, "id", None, None, b'{"status":"Accepted"}'),
    ),
    ("callresult-null", b'[3,"",null]', (CALLRESULT, "", None, None, b"null")),
    ("callresult-number", b'[3,"x",-12.5e+3]', (CALLRESULT, "x", None, None, b"-12.5e+3")),
    ("callresult-string", b'[3,"x","s\\"]"]', (CALLRESULT, "x", None, None, b'"s\\"]"')),
    ("callresult-array", b'[3,"x",[1,[2,{}],[]]]', (CALLRESULT, "x", None, None, b"[1,[2,{}],[]]")),
    ("callresult-true", b'[3,"x",true]', (CALLRESULT, "x", None, None, b"true")),
    (
        "callerror",
        b'[4,"id","NotImplemented","Unknown action",{"detail":1}]',
        (CALLERROR, "id", None, "NotImplemented", b'{"detail":1}'),
    ),
    (
        "callerror-whitespace",
        b'[4, "id", "GenericError", "", { } ] ',
        (CALLERROR, "id", None, "GenericError", b"{ }"),
    ),
    ("callerror-details-false", b'[4,"i","E","d",false]', (CALLERROR, "i", None, "E", b"false")),
    # numbers that are valid in payloads
    (
        "payload-numbers",
        b'[3,"x",[0,-0,1.5,0.5e-3,1E+2,2e10,-9]]',
        (CALLRESULT, "x", None, None, b"[0,-0,1.5,0.5e-3,1E+2,2e10,-9]"),
    ),
    # first element must be exactly the token 2, 3 or 4
    ("type-2.0", b'[2.0,"id","A",{}]', NOT),
    ("type-string", b'["2","id","A",{}]', NOT),
    ("type-02", b'[02,"id","A",{}]', NOT),
    ("type-neg", b'[-2,"id","A",{}]', NOT),
    ("type-exp", b'[2e0,"id","A",{}]', NOT),
    ("type-20", b'[20,"id","A",{}]', NOT),
    ("type-1", b'[1,"id","A",{}]', NOT),
    ("type-5", b'[5,"id","A",{}]', NOT),
    ("type-0", b'[0,"id",{}]', NOT),
    ("type-null", b'[null,"id",{}]', NOT),
    # arity
    ("call-3", b'[2,"id","A"]', NOT),
    ("call-5", b'[2,"id","A",{},{}]', NOT),
    ("callresult-2", b'[3,"id"]', NOT),
    ("callresult-4", b'[3,"id",{},{}]', NOT),
    ("callerror-4", b'[4,"id","E","d"]', NOT),
    ("callerror-6", b'[4,"id","E","d",{},{}]', NOT),
    ("empty-array", b"[]", NOT),
    ("type-only", b"[2]", NOT),
    # element types
    ("id-number", b'[2,1,"A",{}]', NOT),
    ("id-null", b"[3,null,{}]", NOT),
    ("id-array", b'[3,["x"],{}]', NOT),
    ("action-number", b'[2,"id",1,{}]', NOT),
    ("action-object", b'[2,"id",{},{}]', NOT),
    ("errorcode-number", b'[4,"id",1,"d",{}]', NOT),
    ("description-null", b'[4,"id","E",null,{}]', NOT),
    ("description-object", b'[4,"id","E",{},{}]', NOT),
    # escapes and Unicode in strings
    (
        "simple-escapes",
        b'[3,"a\\"b\\\\c\\/d\\be\\ff\\ng\\rh\\ti",0]',
        (CALLRESULT, 'a"b\\c/d\be\ff\ng\rh\ti', None, None, b"0"),
    ),
    (
        "unicode-escape",
        b'[2,"\\u0041\\u00e9\\u20AC","\\u0000x",1]',
        (CALL, "Aé€", "\x00x", None, b"1"),
    ),
    ("raw-utf8", '[2,"ïd","Äctiön ✓",{}]'.encode(), (CALL, "ïd", "Äctiön ✓", None, b"{}")),
    ("raw-del-allowed", b'[3,"a\x7fb",0]', (CALLRESULT, "a\x7fb", None, None, b"0")),
    ("surrogate-pair", b'[3,"\\ud83d\\ude00",0]', (CALLRESULT, "\U0001f600", None, None, b"0")),
    (
        "surrogate-pair-upper",
        b'[3,"x\\uD83D\\uDE00y",0]',
        (CALLRESULT, "x\U0001f600y", None, None, b"0"),
    ),
    (
        "surrogate-pair-edges",
        b'[3,"\\udbff\\udfff\\ud800\\udc00",0]',
        (CALLRESULT, "\U0010ffff\U00010000", None, None, b"0"),
    ),
    ("raw-astral", '[3,"😀",0]'.encode(), (CALLRESULT, "😀", None, None, b"0")),
    ("lone-high", b'[3,"\\ud83d",0]', NOT),
    ("lone-high-then-char", b'[3,"\\ud83dx",0]', NOT),
    ("lone-high-then-escape", b'[3,"\\ud83d\\u0041",0]', NOT),
    ("high-high-low", b'[3,"\\ud83d\\ud83d\\ude00",0]', NOT),
    ("high-then-simple-escape", b'[3,"\\ud83d\\n",0]', NOT),
    ("lone-low", b'[3,"\\ude00",0]', NOT),
    ("reversed-pair", b'[3,"\\ude00\\ud83d",0]', NOT),
    ("lone-in-action", b'[2,"id","\\udc00",{}]', NOT),
    # any string in the text counts, not only the decoded envelope strings
    ("lone-in-description", b'[4,"id","E","\\ud800",{}]', NOT),
    ("lone-in-payload-value", b'[2,"id","A",{"k":"\\ud800"}]', NOT),
    ("lone-in-payload-key", b'[3,"id",{"\\udfff":1}]', NOT),
    ("lone-in-payload-string", b'[3,"id","x\\udbff"]', NOT),
    (
        "pair-in-payload",
        b'[3,"id",{"\\ud83d\\ude00":"\\ud83d\\ude00"}]',
        (CALLRESULT, "id", None, None, b'{"\\ud83d\\ude00":"\\ud83d\\ude00"}'),
    ),
    ("lone-in-error-code", b'[4,"id","\\ud800","d",{}]', NOT),
    ("bad-escape-x", b'[3,"\\x41",0]', NOT),
    ("bad-escape-quote", b'[3,"\\\'",0]', NOT),
    ("bad-escape-short-u", b'[3,"\\u12",0]', NOT),
    ("bad-escape-nonhex-u", b'[3,"\\u12G4",0]', NOT),
    ("bad-escape-upper-U", b'[3,"\\U0041",0]', NOT),
    ("raw-tab-in-string", b'[3,"a\tb",0]', NOT),
    ("raw-newline-in-string", b'[3,"a\nb",0]', NOT),
    ("raw-nul-in-string", b'[3,"a\x00b",0]', NOT),
    ("raw-control-in-payload", b'[3,"a",{"k":"\x1f"}]', NOT),
    ("bad-escape-in-payload", b'[3,"a",{"k":"\\a"}]', NOT),
    ("unterminated-string", b'[3,"a,0]', NOT),
    # nesting depth: the envelope array counts as level 1
    (
        "depth-64-arrays",
        b'[3,"d",' + b"[" * 63 + b"]" * 63 + b"]",
        (CALLRESULT, "d", None, None, b"[" * 63 + b"]" * 63),
    ),
    ("depth-65-arrays", b'[3,"d",' + b"[" * 64 + b"]" * 64 + b"]", NOT),
    (
        "depth-64-objects",
        b'[2,"d","A",' + b'{"k":' * 63 + b"0" + b"}" * 63 + b"]",
        (CALL, "d", "A", None, b'{"k":' * 63 + b"0" + b"}" * 63),
    ),
    ("depth-65-objects", b'[2,"d","A",' + b'{"k":' * 64 + b"0" + b"}" * 64 + b"]", NOT),
    ("depth-65-mixed", b'[3,"d",' + b'[{"k":' * 32 + b"null" + b"}]" * 32 + b"]", NOT),
    ("depth-65-in-description-position", b'[4,"d","E","x",' + b"[" * 64 + b"]" * 64 + b"]", NOT),
    ("depth-1000", b'[3,"d",' + b"[" * 1000 + b"]" * 1000 + b"]", NOT),
    # non-JSON numbers and literals
    ("nan", b'[3,"x",NaN]', NOT),
    ("infinity", b'[3,"x",Infinity]', NOT),
    ("neg-infinity", b'[3,"x",-Infinity]', NOT),
    ("plus-sign", b'[3,"x",+1]', NOT),
    ("leading-dot", b'[3,"x",.5]', NOT),
    ("trailing-dot", b'[3,"x",1.]', NOT),
    ("bare-exponent", b'[3,"x",1e]', NOT),
    ("leading-zero", b'[3,"x",01]', NOT),
    ("lone-minus", b'[3,"x",-]', NOT),
    ("hex-number", b'[3,"x",0x10]', NOT),
    ("capital-true", b'[3,"x",True]', NOT),
    ("truncated-null", b'[3,"x",nul]', NOT),
    ("null-suffix", b'[3,"x",nulls]', NOT),
    ("undefined", b'[3,"x",undefined]', NOT),
    # structural garbage
    ("trailing-garbage", b'[2,"id","A",{}]x', NOT),
    ("extra-bracket", b'[2,"id","A",{}]]', NOT),
    ("two-values", b'[3,"a",1] [3,"b",2]', NOT),
    ("unclosed", b'[2,"id","A",{}', NOT),
    ("trailing-comma", b'[2,"id","A",{},]', NOT),
    ("leading-comma", b'[,2,"id","A",{}]', NOT),
    ("double-comma", b'[2,"id",,"A",{}]', NOT),
    ("object-trailing-comma", b'[2,"id","A",{"a":1,}]', NOT),
    ("object-missing-colon", b'[2,"id","A",{"a" 1}]', NOT),
    ("object-number-key", b'[2,"id","A",{1:2}]', NOT),
    ("object-bare-key", b'[2,"id","A",{a:2}]', NOT),
    ("single-quotes", b"[2,'id','A',{}]", NOT),
    ("comment", b'[2,"id","A",{}] // c', NOT),
    # whitespace other than space, tab, LF, CR
    ("vertical-tab", b'\x0b[3,"x",0]', NOT),
    ("form-feed", b'[3,\x0c"x",0]', NOT),
    ("nbsp", '[3,"x",\u00a00]'.encode(), NOT),
    ("bom", '\ufeff[3,"x",0]'.encode(), NOT),
    # not an array
    ("empty", b"", NOT),
    ("only-whitespace", b" \n\t\r", NOT),
    ("number", b"2", NOT),
    ("string", b'"[2,\\"id\\",\\"A\\",{}]"', NOT),
    ("object", b'{"2":"id"}', NOT),
    ("plain-text", b"hello world", NOT),
]


def _peek_through_reader(impl: Impl, text: bytes) -> tuple[Any, ...]:
    reader = impl.reader(from_client=False)
    [message] = reader.feed(frame(TEXT, text))
    assert (message.opcode, bytes(message.data)) == (TEXT, text)
    assert (message.close_code, message.close_reason) == (None, None)
    return (
        message.message_type,
        message.unique_id,
        message.action,
        message.error_code,
        message.payload_start,
        message.payload_end,
    )


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in PEEK_CASES], ids=[c[0] for c in PEEK_CASES]
)
def test_envelope_peek(impl: Impl, text: bytes, expected: tuple[Any, ...] | None) -> None:
    got = _peek_through_reader(impl, text)
    if impl.name == "reference":
        assert peek_envelope(text) == got
    if expected is None:
        assert got == (NOT_OCPP, None, None, None, 0, 0)
        return
    message_type, unique_id, action, error_code, payload = expected
    start, end = got[4], got[5]
    assert got[:4] == (message_type, unique_id, action, error_code)
    assert text[start:end] == payload
    # The payload is the last element: only the closing bracket and whitespace follow it.
    assert start == text.rfind(payload)
    assert text[end:].strip(b" \t\r\n") == b"]"


def test_peek_on_fragmented_text_uses_offsets_into_joined_data(impl: Impl) -> None:
    text = b'[2,"abc","MeterValues",{"v":[1,2,3]}]'
    stream = b"".join(
        frame(TEXT if i == 0 else CONTINUATION, text[i : i + 4], fin=i + 4 >= len(text))
        for i in range(0, len(text), 4)
    )
    [message] = impl.reader(from_client=False).feed(stream)
    assert bytes(message.data)[message.payload_start : message.payload_end] == b'{"v":[1,2,3]}'
    assert (message.message_type, message.unique_id, message.action) == (CALL, "abc", "MeterValues")


def test_binary_and_control_messages_are_never_peeked(impl: Impl) -> None:
    text = b'[3,"id",{}]'
    stream = frame(BINARY, text) + frame(PING, text) + frame(PONG, text)
    assert feed_all(impl.reader(from_client=False), [stream]) == [
        plain(BINARY, text),
        plain(PING, text),
        plain(PONG, text),
    ]


@pytest.mark.parametrize(
    "text",
    [b"\xff", b'[3,"\xed\xa0\x80",0]', b"\x80", b'[3,"\xc3",0]'],
)
def test_peek_on_arbitrary_bytes_never_raises(text: bytes) -> None:
    # The reader only peeks valid UTF-8, but the reference peek must be total over bytes.
    assert peek_envelope(text) == (NOT_OCPP, None, None, None, 0, 0)


# --------------------------------------------------------------------------------------------
# encoders
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "header_size"), [(0, 2), (1, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)]
)
def test_encode_frame_minimal_header(impl: Impl, length: int, header_size: int) -> None:
    payload = bytes(i % 251 for i in range(length))
    data = impl.encode_frame(BINARY, payload, mask=False)
    assert data == frame(BINARY, payload)
    assert len(data) == header_size + length
    masked = impl.encode_frame(BINARY, payload, mask=True)
    assert len(masked) == header_size + 4 + length
    assert masked[0] == data[0] and masked[1] == data[1] | 0x80
    assert masked[2:header_size] == data[2:header_size]
    key = masked[header_size : header_size + 4]
    assert mask_bytes(masked[header_size + 4 :], key) == payload


@pytest.mark.parametrize("opcode", [TEXT, BINARY, PING, PONG, CLOSE])
def test_encode_frame_flags(impl: Impl, opcode: int) -> None:
    payload = b"\x03\xe8" if opcode == CLOSE else b"abc"
    assert impl.encode_frame(opcode, payload, mask=False)[0] == 0x80 | opcode
    if opcode in (TEXT, BINARY):
        assert impl.encode_frame(opcode, payload, mask=False, fin=False)[0] == opcode
        assert impl.encode_frame(CONTINUATION, payload, mask=False, fin=False)[0] == 0
        assert impl.encode_frame(CONTINUATION, payload, mask=False)[0] == 0x80


def test_masking_keys_are_fresh(impl: Impl) -> None:
    keys = {impl.encode_frame(BINARY, b"same", mask=True)[2:6] for _ in range(8)}
    assert len(keys) > 1


@pytest.mark.parametrize("writer", sorted(IMPLS))
@pytest.mark.parametrize("mask", [False, True])
def test_encoders_round_trip_through_readers(impl: Impl, writer: str, mask: bool) -> None:
    encode_frame = IMPLS[writer].encode_frame
    encode_close = IMPLS[writer].encode_close
    text = '[2,"1","Authorize",{"idTag":"ABC€"}]'.encode()
    stream = (
        encode_frame(TEXT, text[:10], mask=mask, fin=False)
        + encode_frame(PING, b"ping", mask=mask)
        + encode_frame(CONTINUATION, text[10:], mask=mask)
        + encode_frame(BINARY, b"\x00" * 70000, mask=mask)
        + encode_frame(PONG, b"", mask=mask)
        + encode_close(1001, "bye ✓", mask=mask)
    )
    reader = impl.reader(from_client=mask)
    assert feed_all(reader, [stream]) == [
        plain(PING, b"ping"),
        (TEXT, text, CALL, "1", "Authorize", None, 19, len(text) - 1, None, None),
        plain(BINARY, b"\x00" * 70000),
        plain(PONG, b""),
        (CLOSE, b"\x03\xe9bye \xe2\x9c\x93", NOT_OCPP, None, None, None, 0, 0, 1001, "bye ✓"),
    ]
    assert reader.closed


@pytest.mark.parametrize(
    ("code", "reason", "payload"),
    [
        (None, "", b""),
        (1000, "", b"\x03\xe8"),
        (1011, "internal", b"\x03\xf3internal"),
        (4999, "é" * 61 + "x", b"\x13\x87" + ("é" * 61 + "x").encode()),  # 125-byte payload
        (3000, "r" * 123, b"\x0b\xb8" + b"r" * 123),
    ],
)
def test_encode_close(impl: Impl, code: int | None, reason: str, payload: bytes) -> None:
    assert impl.encode_close(code, reason, mask=False) == frame(CLOSE, payload)
    masked = impl.encode_close(code, reason, mask=True)
    assert masked[:2] == bytes([0x88, 0x80 | len(payload)])
    assert mask_bytes(masked[6:], masked[2:6]) == payload


def test_encode_close_defaults(impl: Impl) -> None:
    assert impl.encode_close(mask=False) == b"\x88\x00"
    assert impl.encode_close(1000, mask=False) == b"\x88\x02\x03\xe8"


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (None, "reason without code"),
        (1000, "r" * 124),  # 126-byte payload
        (1000, "é" * 62),  # 126 bytes once encoded
        (1000, "\ud800"),  # not encodable as UTF-8
        (1005, ""),
        (1006, ""),
        (999, ""),
        (5000, ""),
        (0, ""),
    ],
)
def test_encode_close_rejects_invalid_input(impl: Impl, code: int | None, reason: str) -> None:
    with pytest.raises(ValueError):
        impl.encode_close(code, reason, mask=False)


@pytest.mark.parametrize(
    ("opcode", "payload", "fin"),
    [
        (3, b"", True),
        (7, b"x", True),
        (11, b"", True),
        (15, b"", True),
        (16, b"", True),
        (PING, b"", False),
        (CLOSE, b"\x03\xe8", False),
        (PING, b"p" * 126, True),
        (PONG, b"p" * 70000, True),
        (CLOSE, b"\x03\xe8" + b"r" * 124, True),
    ],
)
def test_encode_frame_rejects_frames_rfc6455_forbids(
    impl: Impl, opcode: int, payload: bytes, fin: bool
) -> None:
    with pytest.raises(ValueError):
        impl.encode_frame(opcode, payload, mask=False, fin=fin)
