"""Differential tests: the native codec against the pure-Python reference.

Hypothesis builds frame streams (valid ones and corrupted variants), splits them at random
offsets and feeds both readers the same chunks; after every call both must have returned the
same messages or raised a ProtocolError with the same close code, and must agree on
`at_frame_boundary`, `at_message_boundary` and `closed`.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import testkit.reference_codec as ref
from proxy.wire import codec
from proxy.wire.codec import BINARY, CLOSE, PING, PONG, TEXT, FrameReader, ProtocolError
from testkit.frame_streams import as_tuple, corrupt, split, valid_streams
from testkit.ocpp_texts import any_texts, encode_text, grammar_texts, near_ocpp_texts, ocpp_texts
from testkit.reference_codec import ReferenceFrameReader, peek_envelope

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
@example('[5,"","","",""]')  # OCPP 2.1's CALLRESULTERROR
@example('[6,"1","NotifyPeriodicEventStream",{}]')  # and SEND
def test_peek_never_raises_and_agrees_with_native(text: str) -> None:
    payload = text.encode("utf-8")
    envelope = peek_envelope(payload)
    assert envelope[0] in (
        codec.NOT_OCPP,
        codec.CALL,
        codec.CALLRESULT,
        codec.CALLERROR,
        codec.CALLRESULTERROR,
        codec.SEND,
    )
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
