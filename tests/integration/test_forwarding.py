"""Forwarding through the proxy between trio-websocket peers on real sockets."""

from __future__ import annotations

import json

import trio
from trio_websocket import open_websocket_url

from proxy.wire.codec import CLOSE
from testkit.in_process_proxy import metric, proxy_config, roundtrip, start_proxy
from testkit.raw_charger import frame
from testkit.waiting import eventually


async def test_calls_both_ways_arrive_unchanged_with_the_negotiated_subprotocol(proxy, upstream):
    async with open_websocket_url(
        proxy.url("CP%201"), subprotocols=["ocpp2.0.1", "ocpp1.6"]
    ) as charger:
        assert charger.subprotocol == "ocpp2.0.1"
        text = '[2, "a1" ,"Authorize",{"idToken":{"idToken":"ü-1","type":"ISO14443"}}]'
        await charger.send_message(text)
        assert json.loads(await charger.get_message()) == [3, "a1", {"echo": "Authorize"}]
        await upstream.connected.wait()
        csms = upstream.connections["/ocpp/CP%201"]
        await csms.send_message('[2,"r1","Reset",{"type":"Immediate"}]')
        assert await charger.get_message() == '[2,"r1","Reset",{"type":"Immediate"}]'
        await charger.send_message(b"\x00\x01binary")
    peer = upstream.peers[0]
    assert peer.path == "/ocpp/CP%201" and peer.subprotocol == "ocpp2.0.1"
    assert peer.received[:2] == [text, b"\x00\x01binary"]
    assert (
        metric(proxy, "ere_proxy_calls_total", direction="charger_to_upstream", action="Authorize")
        == 1
    )
    assert (
        metric(proxy, "ere_proxy_calls_total", direction="upstream_to_charger", action="Reset") == 1
    )
    assert (
        metric(proxy, "ere_proxy_frames_total", direction="charger_to_upstream", type="binary") == 1
    )


async def test_charger_without_subprotocol_is_offered_upstream_as_default(proxy, upstream):
    async with open_websocket_url(proxy.url("CP-none")) as charger:
        assert json.loads(await roundtrip(charger, "1"))[1] == "1"
    assert upstream.peers[0].subprotocol == "ocpp1.6"


async def test_upstream_connections_are_made_from_the_configured_source_addresses_in_turn(
    nursery, upstream
):
    config = proxy_config(upstream.port, upstream_source_addresses=("127.0.0.2", "127.0.0.3"))
    handle = await start_proxy(nursery, config)
    for n in range(4):
        async with open_websocket_url(handle.url(f"CP-src-{n}")) as charger:
            assert json.loads(await roundtrip(charger, "1"))[1] == "1"
    assert sorted(peer.remote for peer in upstream.peers) == [
        "127.0.0.2",
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.3",
    ]


async def test_close_code_and_reason_pass_end_to_end(proxy, upstream):
    async with open_websocket_url(proxy.url("CP-close"), subprotocols=["ocpp1.6"]) as charger:
        await roundtrip(charger, "1")
        await charger.aclose(code=4001, reason="charger says bye")
    await eventually(lambda: "CP-close" not in proxy.server.links)  # the link has ended
    assert upstream.peers[0].close_code == 4001
    assert metric(proxy, "ere_proxy_link_ends_total", reason="closed") == 1


async def test_upstream_close_code_reaches_the_charger(proxy, upstream, raw):
    charger = await raw()
    assert (await charger.upgrade("CP-up-close")).startswith(b"HTTP/1.1 101")
    await upstream.wait_until(lambda: "/ocpp/CP-up-close" in upstream.connections)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(upstream.connections["/ocpp/CP-up-close"].aclose, 4000, "bye")
        messages = await charger.messages_until_close(reply_to_close=True)
    assert [(m.opcode, m.close_code, m.close_reason) for m in messages] == [(CLOSE, 4000, "bye")]


async def test_fragments_and_pings_pass_as_sent(proxy, upstream, raw):
    charger = await raw()
    assert (await charger.upgrade("CP-frag")).startswith(b"HTTP/1.1 101")
    # A text message in three fragments with a ping between them, sent in one write.
    stream = (
        frame(1, b'[2,"f1","Heart', fin=False)
        + frame(9, b"hi")
        + frame(0, b'beat",', fin=False)
        + frame(0, b"{}]")
    )
    await charger.send(stream)
    await upstream.wait_until(lambda: upstream.peers and upstream.peers[0].received)
    assert upstream.peers[0].received[0] == '[2,"f1","Heartbeat",{}]'


async def test_ten_thousand_frames_in_one_write_arrive_in_order(proxy, upstream, raw, healthy):
    charger = await raw()
    assert (await charger.upgrade("CP-burst")).startswith(b"HTTP/1.1 101")
    await charger.send(b"".join(frame(1, b'"m%d"' % i) for i in range(10_000)))
    await upstream.wait_until(lambda: len(upstream.peers[-1].received) >= 10_000, timeout=30)
    assert upstream.peers[-1].received == [f'"m{i}"' for i in range(10_000)]
    await healthy.check()


async def test_metrics_count_what_passes_while_the_link_is_open(proxy, upstream):
    """Counted without waiting for the link to end (the native engine reports its counts in
    batches, at least every second even when nothing else wakes the worker)."""
    async with open_websocket_url(proxy.url("CP-COUNTED"), subprotocols=["ocpp1.6"]) as ws:
        for n in range(3):
            await roundtrip(ws, f"c{n}")
        with trio.fail_after(10):
            while (
                metric(
                    proxy,
                    "ere_proxy_calls_total",
                    direction="charger_to_upstream",
                    action="Heartbeat",
                )
                < 3
            ):
                await trio.sleep(0.05)
        assert (
            metric(
                proxy, "ere_proxy_frames_total", direction="upstream_to_charger", type="callresult"
            )
            == 3
        )
