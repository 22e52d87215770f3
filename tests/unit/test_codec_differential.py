"""Differential tests: the native codec against the pure-Python reference.

Hypothesis builds frame streams (valid ones and corrupted variants), splits them at random
offsets and feeds both readers the same chunks; after every call both must have returned the
same messages or raised a ProtocolError with the same close code, and must agree on
`at_frame_boundary`, `at_message_boundary` and `closed`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import testkit.reference_codec as ref
from proxy.wire import codec
from proxy.wire.codec import BINARY, CLOSE, PING, PONG, TEXT, FrameReader, ProtocolError
from testkit.reference_codec import ReferenceFrameReader, peek_envelope
from tests.unit.test_codec_reference import as_tuple

CONTINUATION = 0
# Modest budgets keep this file well under 30 s; longer runs only need a larger max_examples.
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
THOROUGH = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------------------------
# running both readers
# --------------------------------------------------------------------------------------------


def outcome(reader: Any, chunk: bytes) -> tuple[str, Any]:
    """What one feed call gave: the messages, or the close code of the error it raised."""
    try:
        return ("messages", [as_tuple(m) for m in reader.feed(chunk)])
    except ProtocolError as exc:
        return ("error", exc.close_code)


def run_both(chunks: list[bytes], *, from_client: bool, max_message_size: int) -> list[Any]:
    """Feed both readers the same chunks and require identical behaviour call by call."""
    native = FrameReader(from_client=from_client, max_message_size=max_message_size)
    reference = ReferenceFrameReader(from_client=from_client, max_message_size=max_message_size)
    results = []
    for index, chunk in enumerate(chunks):
        got = outcome(native, chunk)
        expected = outcome(reference, chunk)
        assert got == expected, f"feed #{index} of {chunks!r}"
        assert native.at_frame_boundary == reference.at_frame_boundary, f"after feed #{index}"
        assert native.at_message_boundary == reference.at_message_boundary, f"after feed #{index}"
        assert native.closed == reference.closed, f"after feed #{index}"
        results.append(expected)
    # A failed reader keeps failing with the same code; a healthy one accepts an empty feed.
    assert outcome(native, b"") == outcome(reference, b"")
    return results


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c for c in cuts if 0 <= c <= len(data))})
    return [data[a:b] for a, b in zip(points, points[1:])] or [b""]


# --------------------------------------------------------------------------------------------
# generating texts
# --------------------------------------------------------------------------------------------

# Strings with the characters JSON handles specially, astral characters and lone surrogates
# (which json.dumps writes as \uXXXX escapes).
special_chars = st.sampled_from(list('"\\/\b\f\n\r\t\x00\x1f\x7f'))
json_chars = st.one_of(
    st.characters(codec="utf-8"),
    special_chars,
    st.characters(min_codepoint=0x10000, max_codepoint=0x10FFFF),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
)
json_strings = st.one_of(st.text(max_size=8), st.text(json_chars, max_size=8))

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        json_strings,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(json_strings, children, max_size=4),
    ),
    max_leaves=10,
)


def to_json(draw: Any, value: Any) -> str:
    """Serialise with randomly chosen escaping and whitespace."""
    ensure_ascii = draw(st.booleans())
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\t", " :\n")]))
    indent = draw(st.sampled_from([None, None, 1, "\t"]))
    text = json.dumps(value, ensure_ascii=ensure_ascii, separators=separators, indent=indent)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate written raw: escape it instead
        text = json.dumps(value, ensure_ascii=True, separators=separators, indent=indent)
    return text


whitespace = st.text(st.sampled_from(" \t\r\n"), max_size=3)


@st.composite
def ocpp_texts(draw: Any) -> str:
    """A well-formed OCPP-J frame (its strings may still hold lone surrogates)."""
    message_type = draw(st.sampled_from([2, 3, 4]))
    elements: list[Any] = [message_type, draw(json_strings)]
    if message_type == 2:
        elements.append(draw(st.sampled_from(["BootNotification", "Heartbeat"]) | json_strings))
    elif message_type == 4:
        elements += [draw(json_strings), draw(json_strings)]
    elements.append(draw(json_values))
    parts = [to_json(draw, e) for e in elements]
    inner = ",".join(draw(whitespace) + p + draw(whitespace) for p in parts)
    text: str = draw(whitespace) + "[" + inner + "]" + draw(whitespace)
    return text


@st.composite
def near_ocpp_texts(draw: Any) -> str:
    """Texts that look like OCPP-J frames but may break it in one of many small ways."""
    first = draw(
        st.sampled_from(["2", "3", "4", "2.0", "02", '"2"', "-2", "5", "2e0", "1", "null"])
    )
    element = st.one_of(json_strings.map(json.dumps), json_values.map(json.dumps))
    rest = draw(st.lists(element, max_size=6))
    depth = draw(st.sampled_from([0, 0, 62, 63, 64, 65]))
    if depth:
        rest.append("[" * depth + "]" * depth)
    text = "[" + ",".join([first, *rest]) + "]"
    for _ in range(draw(st.integers(0, 2))):
        position = draw(st.integers(0, len(text)))
        mutation = draw(st.sampled_from(["insert", "delete", "truncate"]))
        if mutation == "insert":
            inserted = draw(st.sampled_from(list('[]{}",:\\ u0eE.-+\x0bNaN')))
            text = text[:position] + inserted + text[position:]
        elif mutation == "delete":
            text = text[:position] + text[position + 1 :]
        else:
            text = text[:position]
    return text


# Short texts over the JSON alphabet hit grammar corner cases far more often than random text.
grammar_texts = st.text(
    st.sampled_from(list('[]{}",:\\/ \t\nu0123456789abcdefEtrulsn.+-')), max_size=40
)

any_texts = st.one_of(ocpp_texts(), near_ocpp_texts(), grammar_texts, st.text(max_size=30))


def encode_text(text: str) -> bytes:
    # A raw lone surrogate can only reach the wire as invalid UTF-8 (CESU-style bytes).
    return text.encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------------------------
# generating frame streams
# --------------------------------------------------------------------------------------------


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


@st.composite
def scenarios(draw: Any) -> tuple[list[bytes], bool, int]:
    """(chunks, from_client, max_message_size) for one comparison run."""
    from_client = draw(st.booleans())
    max_message_size = draw(st.sampled_from([1 << 20, 1 << 20, 64, 200]))
    source = draw(st.sampled_from(["valid", "corrupted", "corrupted", "random"]))
    if source == "random":
        data = draw(st.binary(max_size=64))
    else:
        builder = draw(valid_streams(from_client=from_client))
        data = bytes(builder.data)
        if source == "corrupted":
            for _ in range(draw(st.integers(1, 2))):
                builder.data = bytearray(data)
                data = corrupt(draw, builder)
    if len(data) <= 40 and draw(st.booleans()):
        chunks = [data[i : i + 1] for i in range(len(data))] or [b""]
    else:
        chunks = split(data, draw(st.lists(st.integers(0, len(data)), max_size=8)))
    return chunks, from_client, max_message_size


# --------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------


@THOROUGH
@given(scenarios())
def test_readers_agree_on_frame_streams(scenario: tuple[list[bytes], bool, int]) -> None:
    chunks, from_client, max_message_size = scenario
    run_both(chunks, from_client=from_client, max_message_size=max_message_size)


@FAST
@given(st.data(), st.booleans())
def test_valid_streams_decode_the_same_however_split(
    data: st.DataObject, from_client: bool
) -> None:
    builder = data.draw(valid_streams(from_client=from_client))
    stream = bytes(builder.data)
    whole = run_both([stream], from_client=from_client, max_message_size=1 << 20)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    pieces = run_both(split(stream, cuts), from_client=from_client, max_message_size=1 << 20)
    # Splitting changes which call reports what, never what is reported (or the error code).
    if whole[0][0] == "messages":
        assert [m for kind, ms in pieces if kind == "messages" for m in ms] == whole[0][1]
    else:
        assert pieces[-1] == whole[0]


@FAST
@given(any_texts)
def test_text_messages_peek_the_same(text: str) -> None:
    payload = encode_text(text)
    chunks = [bytes([0x81, 127]) + len(payload).to_bytes(8, "big") + payload]
    [(kind, result)] = run_both(chunks, from_client=False, max_message_size=1 << 20)
    if kind == "messages":
        [message] = result
        assert message[2:8] == peek_envelope(payload)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), grammar_texts, near_ocpp_texts(), ocpp_texts()))
def test_peek_never_raises_and_agrees_with_native(text: str) -> None:
    payload = text.encode("utf-8")
    envelope = peek_envelope(payload)
    assert envelope[0] in (codec.NOT_OCPP, codec.CALL, codec.CALLRESULT, codec.CALLERROR)
    reader = FrameReader(from_client=False)
    [message] = reader.feed(ref.reference_encode_frame(TEXT, payload, mask=False))
    assert as_tuple(message)[2:8] == envelope


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_reference_peek_is_total_over_bytes(payload: bytes) -> None:
    message_type, unique_id, action, error_code, start, end = peek_envelope(payload)
    if message_type == codec.NOT_OCPP:
        assert (unique_id, action, error_code, start, end) == (None, None, None, 0, 0)
    else:
        assert 0 < start < end < len(payload)


@st.composite
def encodable_frames(draw: Any) -> tuple[int, bytes, bool]:
    opcode = draw(st.sampled_from([TEXT, BINARY, CONTINUATION, PING, PONG, CLOSE]))
    if opcode >= 8:
        return opcode, draw(st.binary(max_size=125)), True
    size = draw(st.sampled_from([10, 200, 70000]))
    return opcode, draw(st.binary(max_size=size)), draw(st.booleans())


@FAST
@given(encodable_frames(), st.booleans())
def test_encoders_agree(frame_args: tuple[int, bytes, bool], mask: bool) -> None:
    opcode, payload, fin = frame_args
    native = codec.encode_frame(opcode, payload, mask=mask, fin=fin)
    reference = ref.reference_encode_frame(opcode, payload, mask=mask, fin=fin)
    header_size = len(reference) - len(payload)
    assert len(native) == len(reference)
    # Same header apart from the (random) masking key; same payload once unmasked.
    key_size = 4 if mask else 0
    assert native[: header_size - key_size] == reference[: header_size - key_size]

    def unmasked(frame_bytes: bytes) -> bytes:
        if not mask:
            return frame_bytes[header_size:]
        key = frame_bytes[header_size - 4 : header_size]
        return bytes(b ^ key[i % 4] for i, b in enumerate(frame_bytes[header_size:]))

    assert unmasked(native) == unmasked(reference) == payload


@FAST
@given(
    st.lists(
        st.tuples(st.sampled_from([TEXT, BINARY, PING, PONG]), any_texts.map(encode_text)),
        max_size=4,
    ),
    st.one_of(st.none(), st.sampled_from([1000, 1001, 1011, 3000, 4999])),
    st.text(max_size=30),
    st.booleans(),
)
def test_each_encoder_decodes_identically_with_the_other_reader(
    messages: list[tuple[int, bytes]], code: int | None, reason: str, mask: bool
) -> None:
    reason = reason if code is not None else ""
    assume(len(reason.encode("utf-8", "surrogatepass")) <= 123)
    # Control payloads are limited to 125 bytes; longer texts go out as data messages instead.
    messages = [(BINARY if op >= 8 and len(p) > 125 else op, p) for op, p in messages]
    streams = {}
    close_accepted = {}
    for name, encode_frame, encode_close in [
        ("native", codec.encode_frame, codec.encode_close),
        ("reference", ref.reference_encode_frame, ref.reference_encode_close),
    ]:
        try:
            close = encode_close(code, reason, mask=mask)
        except ValueError:
            close = b""
        close_accepted[name] = bool(close)
        streams[name] = b"".join(encode_frame(op, p, mask=mask) for op, p in messages) + close
    assert close_accepted["native"] == close_accepted["reference"]
    decoded = [
        outcome(reader_class(from_client=mask), stream)
        for stream in streams.values()
        for reader_class in (FrameReader, ReferenceFrameReader)
    ]
    assert decoded == [decoded[0]] * 4


@FAST
@given(st.one_of(st.none(), st.integers(0, 0xFFFF)), st.text(max_size=70))
def test_close_encoders_accept_and_reject_the_same(code: int | None, reason: str) -> None:
    results: list[tuple[str, bytes | None]] = []
    for encode_close in (codec.encode_close, ref.reference_encode_close):
        try:
            results.append(("ok", encode_close(code, reason, mask=False)))
        except ValueError:
            results.append(("ValueError", None))
    assert results[0] == results[1]


@FAST
@given(st.binary(max_size=120) | st.text(max_size=60).map(lambda t: t.encode()))
def test_a_text_message_made_from_bytes_reads_as_the_reader_reads_the_same_text(
    payload: bytes,
) -> None:
    made = codec.text_message(payload)
    assert (made.opcode, made.data) == (TEXT, payload)
    assert as_tuple(made)[2:8] == peek_envelope(payload)  # the reference's peek
    try:
        [read] = FrameReader(from_client=False).feed(codec.encode_frame(TEXT, payload, mask=False))
    except ProtocolError:  # not UTF-8: no reader takes it as text, and it is no OCPP-J frame
        assert made.message_type == codec.NOT_OCPP
        return
    assert as_tuple(made)[2:8] == as_tuple(read)[2:8]
