"""Hostile chargers: each case runs beside a healthy charger that must keep working."""

from __future__ import annotations

import struct
from functools import partial

import h11
import pytest
import trio
import trio.testing
from wsproto.utilities import generate_accept_token

from proxy.wire.codec import CLOSE
from testkit.in_process_proxy import metric, proxy_config, start_proxy
from testkit.raw_charger import RawCharger, frame


async def refused_status(charger: RawCharger, data: bytes) -> bytes:
    """The status line the proxy answers `data` with (it may hang up before we finish sending)."""
    try:
        await charger.send(data)
    except trio.BrokenResourceError:
        pass
    return (await charger.read_all()).split(b"\r\n")[0]


async def test_garbage_before_the_handshake_is_400(proxy, raw, healthy):
    assert (
        await refused_status(
            await raw(), b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n"
        )
        == b"HTTP/1.1 400 Bad Request"
    )


async def test_oversized_headers_are_431(proxy, raw, healthy):
    request = (
        b"GET /ocpp/CP-big HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 64 * 1024 + b"\r\n\r\n"
    )
    assert (
        await refused_status(await raw(), request)
        == b"HTTP/1.1 431 Request Header Fields Too Large"
    )
    assert metric(proxy, "ere_proxy_handshakes_total", outcome="headers_too_large") == 1


async def test_endless_header_stream_is_cut_at_the_limit(proxy, raw, healthy):
    charger = await raw()
    await charger.send(b"GET /ocpp/CP-endless HTTP/1.1\r\n")
    with trio.fail_after(10):
        try:
            for _ in range(1000):  # far more than the 16 KiB limit
                await charger.send(b"X-More: " + b"b" * 1000 + b"\r\n")
        except trio.BrokenResourceError:
            pass  # the proxy answered and hung up while we were still sending
        answer = await charger.read_all()
    assert answer.startswith(b"HTTP/1.1 431")


async def test_slowloris_handshake_is_cut_off_with_408(nursery, upstream, raw):
    handle = await start_proxy(nursery, proxy_config(upstream.port, handshake_timeout=0.3))
    charger = await raw(handle.port)
    await charger.send(b"GET /ocpp/CP-slow HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    with trio.fail_after(10):
        answer = await charger.read_all()
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout")
    assert metric(handle, "ere_proxy_handshakes_total", outcome="timeout") == 1


BAD_FRAMES = {
    "unmasked client frame": (frame(1, b'[2,"1","Heartbeat",{}]', mask=False), 1002),
    "reserved bit": (bytes([0x81 | 0x40]) + frame(1, b"{}")[1:], 1002),
    "bad opcode": (bytes([0x83]) + frame(1, b"{}")[1:], 1002),
    "2^62 byte length": (bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 62) + b"mask", 1009),
    "invalid UTF-8": (frame(1, b'[2,"1","\xff\xfe",{}]'), 1007),
    "fragmented ping": (bytes([0x09, 0x80]) + b"mask", 1002),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
async def test_protocol_errors_close_the_charger_with_the_code_and_the_upstream_with_1011(
    proxy, upstream, raw, healthy, name
):
    data, code = BAD_FRAMES[name]
    identity = "CP-bad-" + name.replace(" ", "-").replace("^", "")
    charger = await raw()
    assert (await charger.upgrade(identity)).startswith(b"HTTP/1.1 101")
    await upstream.wait_until(lambda: f"/ocpp/{identity}" in upstream.connections)
    await charger.send(frame(1, b'[2,"ok","Heartbeat",{}]') + data)
    with trio.fail_after(10):
        messages = await charger.messages_until_close(reply_to_close=True)
    assert [(m.opcode, m.close_code) for m in messages] == [(CLOSE, code)]
    peer = next(p for p in upstream.peers if p.path == f"/ocpp/{identity}")
    await upstream.wait_until(lambda: peer.close_code is not None)
    assert peer.close_code == 1011
    assert peer.received == []  # the chunk with the bad frame was not forwarded
    assert (
        metric(
            proxy,
            "ere_proxy_codec_errors_total",
            direction="charger_to_upstream",
            close_code=str(code),
        )
        == 1
    )


@pytest.mark.parametrize(
    "payload, opcode", [(b"\x00\xffbinary\x01", 2), (b"not json at all {", 1), (b"[1,2,3]", 1)]
)
async def test_binary_and_non_ocpp_text_are_forwarded_unchanged(
    proxy, upstream, raw, healthy, payload, opcode
):
    charger = await raw()
    assert (await charger.upgrade("CP-odd")).startswith(b"HTTP/1.1 101")
    await charger.send(frame(opcode, payload))
    await upstream.wait_until(
        lambda: any(p.path == "/ocpp/CP-odd" and p.received for p in upstream.peers)
    )
    received = next(p for p in upstream.peers if p.path == "/ocpp/CP-odd").received
    assert received == [payload if opcode == 2 else payload.decode()]


async def test_charger_vanishing_mid_frame_closes_the_upstream(proxy, upstream, raw, healthy):
    charger = await raw()
    assert (await charger.upgrade("CP-gone")).startswith(b"HTTP/1.1 101")
    await upstream.wait_until(lambda: "/ocpp/CP-gone" in upstream.connections)
    await charger.send(frame(1, b'[2,"1","Heartbeat",{}]')[:10])
    await charger.aclose()
    peer = next(p for p in upstream.peers if p.path == "/ocpp/CP-gone")
    await upstream.wait_until(lambda: peer.close_code is not None)
    # Half a frame went upstream, so no close frame could follow it: the connection just drops.
    assert peer.close_code == 1006


async def serve_bad_upstream(nursery, bad_frame: bytes) -> int:
    """An upstream that accepts any upgrade, sends `bad_frame`, then reads until closed."""

    async def serve(stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        event = conn.next_event()
        while event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(4096))
            event = conn.next_event()
        key = dict(event.headers)[b"sec-websocket-key"]
        headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", generate_accept_token(key)),
            (b"sec-websocket-protocol", b"ocpp1.6"),
        ]
        await stream.send_all(
            conn.send(h11.InformationalResponse(status_code=101, headers=headers)) + bad_frame
        )
        with trio.move_on_after(10):
            while await stream.receive_some(4096):
                pass

    listeners = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def test_upstream_protocol_error_closes_it_with_the_code_and_the_charger_with_1011(
    nursery, raw
):
    masked = frame(1, b'[2,"1","Reset",{}]', mask=True)  # a server must never mask
    handle = await start_proxy(nursery, proxy_config(await serve_bad_upstream(nursery, masked)))
    charger = await raw(handle.port)
    assert (await charger.upgrade("CP-victim")).startswith(b"HTTP/1.1 101")
    with trio.fail_after(10):
        messages = await charger.messages_until_close(reply_to_close=True)
    assert [(m.opcode, m.close_code) for m in messages] == [(CLOSE, 1011)]
    await trio.testing.wait_all_tasks_blocked()  # the proxy has finished with the link
    assert (
        metric(
            handle,
            "ere_proxy_codec_errors_total",
            direction="upstream_to_charger",
            close_code="1002",
        )
        == 1
    )
    assert metric(handle, "ere_proxy_link_ends_total", reason="upstream_protocol_error") == 1


async def test_a_large_message_dribbled_in_with_pings_between_arrives_whole(
    proxy, upstream, raw, healthy
):
    """40 kB in fragments of a few hundred bytes, each its own write, pings between them: the
    back-office gets the message whole, the charger its pongs and the answer, and the link goes
    on (the native engine gives such a link back to the Trio pumps instead of copying the
    message so far for every chunk)."""
    charger = await raw()
    assert (await charger.upgrade("CP-dribble")).startswith(b"HTTP/1.1 101")
    text = b'[2,"big","DataTransfer",{"vendorId":"V","data":"' + b"z" * 40_000 + b'"}]'
    pieces = [text[i : i + 300] for i in range(0, len(text), 300)]
    for n, piece in enumerate(pieces):
        opcode = 1 if n == 0 else 0
        await charger.send(frame(opcode, piece, fin=n == len(pieces) - 1))
        if n % 20 == 0:
            await charger.send(frame(9, b"still here"))
        await trio.lowlevel.checkpoint()
    await charger.send(frame(1, b'[2,"after","Heartbeat",{}]'))
    await upstream.wait_until(
        lambda: any(p.path == "/ocpp/CP-dribble" and len(p.received) >= 2 for p in upstream.peers)
    )
    received = next(p for p in upstream.peers if p.path == "/ocpp/CP-dribble").received
    assert received == [text.decode(), '[2,"after","Heartbeat",{}]']
    await healthy.check()
