"""Property-based fuzzing of the native frame reader through `proxy.wire.codec`.

test_codec_differential.py already feeds the native and the reference reader the same
hypothesis-built streams and requires identical results. This file checks what a comparison
cannot: properties of the native reader on its own, judged independently of the reference.

* Whatever it is fed (random bytes, mutated frame streams, split anywhere, up to a megabyte),
  `feed` returns messages or raises `ProtocolError` with close code 1002, 1007 or 1009; a failed
  reader keeps failing with the same error.
* Every message it returns is consistent: opcode, sizes, close fields, and for OCPP-J text the
  envelope agrees with Python's own JSON parser (the reference shares the reader's design, so
  it is no independent judge of the envelope).
* Memory is bounded by `max_message_size`: the reader exposes no buffer size, so this checks
  the structural guarantee behind it, that a data message is refused with 1009 as soon as a
  frame header declares more than the limit, before any byte of that payload is taken. (The
  buffers themselves are checked in the Rust property tests, codec_rs/src/ws/proptests.rs.)
"""

from __future__ import annotations

import json
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    FrameReader,
    Message,
    ProtocolError,
    encode_frame,
)
from testkit.frame_streams import corrupt, split, valid_streams
from testkit.ocpp_texts import encode_text, ocpp_texts
from testkit.reference_codec import is_valid_close_code

# Modest budgets keep this file at a few seconds; raise max_examples locally to explore.
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CONTINUATION = 0
ERROR_CODES = {1002, 1007, 1009}


def check_message(message: Message, max_message_size: int) -> None:
    """What the reader promises about each message, checked against the message's own bytes."""
    data = message.data
    assert isinstance(data, bytes)
    assert message.opcode in (TEXT, BINARY, CLOSE, PING, PONG)
    if message.opcode in (TEXT, BINARY):
        assert len(data) <= max_message_size
    else:
        assert len(data) <= 125
    if message.opcode == CLOSE:
        if data:
            assert message.close_code == int.from_bytes(data[:2], "big")
            assert message.close_code is not None and is_valid_close_code(message.close_code)
            assert message.close_reason == data[2:].decode("utf-8")
        else:
            assert (message.close_code, message.close_reason) == (None, "")
    else:
        assert message.close_code is None and message.close_reason is None
    check_envelope(message)


def check_envelope(message: Message) -> None:
    """The envelope fields of a message, judged with Python's JSON parser."""
    fields = (
        message.unique_id,
        message.action,
        message.error_code,
        message.payload_start,
        message.payload_end,
    )
    if message.message_type == NOT_OCPP:
        assert fields == (None, None, None, 0, 0)
        return
    assert message.opcode == TEXT
    data = message.data
    start, end = message.payload_start, message.payload_end
    assert 0 < start < end < len(data)
    frame = json.loads(data)  # the reader's grammar is stricter than json's, never looser
    assert isinstance(frame, list) and frame[0] == message.message_type and type(frame[0]) is int
    assert frame[1] == message.unique_id
    assert json.loads(data[start:end]) == frame[-1]
    if message.message_type == CALL:
        assert len(frame) == 4 and frame[2] == message.action and message.error_code is None
    elif message.message_type == CALLRESULT:
        assert len(frame) == 3 and message.action is None and message.error_code is None
    else:
        assert message.message_type == CALLERROR
        assert len(frame) == 5 and frame[2] == message.error_code and isinstance(frame[3], str)
        assert message.action is None


def run(
    chunks: list[bytes], *, from_client: bool, max_message_size: int
) -> tuple[list[Message], ProtocolError | None]:
    """Feed every chunk, checking each result; after an error, every later feed must raise
    the same error."""
    reader = FrameReader(from_client=from_client, max_message_size=max_message_size)
    messages: list[Message] = []
    error: ProtocolError | None = None
    for chunk in [*chunks, b""]:
        closed = reader.closed
        try:
            got = reader.feed(chunk)
        except ProtocolError as exc:
            assert exc.close_code in ERROR_CODES and exc.reason
            if error is not None:
                assert (exc.close_code, exc.reason) == (error.close_code, error.reason)
                assert reader.closed == closed
            error = exc
            assert not reader.at_frame_boundary and not reader.at_message_boundary
            continue
        assert error is None, "a failed reader accepted more bytes"
        for message in got:
            check_message(message, max_message_size)
        messages += got
        assert reader.closed == (closed or any(m.opcode == CLOSE for m in got))
    return messages, error


@st.composite
def streams(draw: Any) -> tuple[bytes, bool, int]:
    """(bytes, from_client, max_message_size): valid, corrupted or random streams."""
    from_client = draw(st.booleans())
    max_message_size = draw(st.sampled_from([0, 64, 200, 1 << 20]))
    source = draw(st.sampled_from(["valid", "corrupted", "corrupted", "random", "random-long"]))
    if source == "random":
        return draw(st.binary(max_size=200)), from_client, max_message_size
    if source == "random-long":
        return (
            draw(st.binary(min_size=1, max_size=16)) * draw(st.integers(1, 300)),
            from_client,
            max_message_size,
        )
    builder = draw(valid_streams(from_client=from_client))
    data = bytes(builder.data)
    if source == "corrupted":
        data = corrupt(draw, builder)
    return data, from_client, max_message_size


@FUZZ
@given(streams(), st.data())
def test_any_stream_gives_consistent_messages_or_a_protocol_error(
    stream: tuple[bytes, bool, int], data: st.DataObject
) -> None:
    raw, from_client, max_message_size = stream
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=10))
    run(split(raw, cuts), from_client=from_client, max_message_size=max_message_size)


@FUZZ
@given(ocpp_texts(), st.booleans())
def test_ocpp_frames_are_recognised_as_python_reads_them(text: str, from_client: bool) -> None:
    """The converse of the envelope check: a frame that Python's JSON reads as OCPP-J is
    recognised, unless it holds a lone surrogate escape (which the reader's grammar refuses)."""
    payload = encode_text(text)
    [message], error = run(
        [encode_frame(TEXT, payload, mask=from_client)],
        from_client=from_client,
        max_message_size=1 << 20,
    )
    assert error is None
    value = json.loads(payload)
    if _surrogates(value):
        assert message.message_type == NOT_OCPP
        return
    assert message.message_type == value[0] and message.unique_id == value[1]
    assert (
        message.data[message.payload_start : message.payload_end].strip()
        == message.data[message.payload_start : message.payload_end]
    )


def _surrogates(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return any(_surrogates(v) for v in value)
    if isinstance(value, dict):
        return any(_surrogates(k) or _surrogates(v) for k, v in value.items())
    return False


def header(opcode: int, length: int, *, fin: bool, mask: bool) -> bytes:
    """A frame header declaring `length` (extended length as needed), no payload."""
    first = (0x80 if fin else 0) | opcode
    bit = 0x80 if mask else 0
    if length < 126:
        head = bytes([first, bit | length])
    elif length < 1 << 16:
        head = bytes([first, bit | 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([first, bit | 127]) + length.to_bytes(8, "big")
    return head + (b"\x01\x02\x03\x04" if mask else b"")


@FUZZ
@given(
    st.sampled_from([0, 1, 125, 4096, 1 << 20]),
    st.lists(st.integers(0, 3000), min_size=1, max_size=6),
    st.integers(1, (1 << 63) - 1),
    st.booleans(),
    st.sampled_from([TEXT, BINARY]),
)
def test_a_message_over_the_limit_is_refused_at_the_header_before_its_payload(
    max_message_size: int, fragments: list[int], last: int, from_client: bool, opcode: int
) -> None:
    """Fragments are fed header and payload separately; the frame that takes the message over
    the limit is refused on its header, so the reader never holds more than the limit."""
    reader = FrameReader(from_client=from_client, max_message_size=max_message_size)
    held = 0
    sizes = [*fragments, last]
    for index, size in enumerate(sizes):
        frame_opcode = opcode if index == 0 else CONTINUATION
        fin = index == len(sizes) - 1
        if held + size > max_message_size:
            try:
                reader.feed(header(frame_opcode, size, fin=fin, mask=from_client))
            except ProtocolError as exc:
                assert exc.close_code == 1009
            else:
                raise AssertionError("an oversized frame header was accepted")
            return
        got = reader.feed(header(frame_opcode, size, fin=fin, mask=from_client))
        assert got == [] or size == 0  # an empty frame is complete with its header
        payload = b"a" * size
        got += reader.feed(payload if not from_client else _mask(payload))
        held += size
        if fin:
            assert [len(m.data) for m in got] == [held]
            return
        assert got == []


def _mask(payload: bytes) -> bytes:
    key = b"\x01\x02\x03\x04"
    return bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@FEW
@given(st.integers(256, 64 * 1024), st.booleans(), st.integers(0, 2**32))
def test_a_megabyte_of_frames_streams_through_within_the_limit(
    max_message_size: int, oversized: bool, seed: int
) -> None:
    """About 1e6 bytes of frames with garbage payloads, fed in random-sized chunks: every data
    message within the limit is reported whole; one over it is refused (1009) on its header,
    and the reader takes nothing after that."""
    rnd = random.Random(seed)  # a megabyte is too much to draw through hypothesis
    sizes = []
    total = 0
    while total < 1_000_000:
        sizes.append(rnd.randrange(0, max_message_size + 1))
        total += sizes[-1] + 10
    too_big = rnd.randrange(len(sizes)) if oversized else len(sizes)
    if oversized:
        sizes[too_big] = max_message_size + 1 + rnd.randrange(max_message_size)
    stream = b"".join(encode_frame(BINARY, rnd.randbytes(size), mask=False) for size in sizes)
    cuts = [rnd.randrange(len(stream) + 1) for _ in range(200)]
    messages, error = run(split(stream, cuts), from_client=False, max_message_size=max_message_size)
    # Messages completed by the failing feed are lost with the error.
    assert [len(m.data) for m in messages] == sizes[: len(messages)]
    assert len(messages) <= too_big
    if oversized:
        assert error is not None and error.close_code == 1009
    else:
        assert error is None and len(messages) == len(sizes)
