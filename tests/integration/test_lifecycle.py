"""Link lifecycle: replacement, idle timeout, graceful shutdown with drain, admin endpoint."""

from __future__ import annotations

import json

import msgspec
import trio
import trio.testing
from trio_websocket import open_websocket_url

from proxy.runtime.config import load_config
from proxy.runtime.http_admin import AdminServer
from proxy.runtime.role import reload_config
from proxy.wire.codec import CLOSE
from testkit.in_process_proxy import metric, proxy_config, roundtrip, start_proxy
from testkit.raw_charger import frame
from testkit.waiting import eventually


async def test_second_connection_of_an_identity_replaces_the_first(proxy, upstream, raw):
    first = await raw()
    assert (await first.upgrade("CP-twice")).startswith(b"HTTP/1.1 101")
    await upstream.wait_until(lambda: len(upstream.peers) == 1)
    async with open_websocket_url(proxy.url("CP-twice"), subprotocols=["ocpp1.6"]) as second:
        with trio.fail_after(10):
            messages = await first.messages_until_close(reply_to_close=True)
        assert [(m.opcode, m.close_code, m.close_reason) for m in messages] == [
            (CLOSE, 1001, "replaced by a new connection")
        ]
        await upstream.wait_until(lambda: upstream.peers[0].close_code is not None)
        assert upstream.peers[0].close_code == 1001
        assert json.loads(await roundtrip(second, "1"))[1] == "1"
    assert [p.path for p in upstream.peers] == ["/ocpp/CP-twice"] * 2
    assert metric(proxy, "ere_proxy_link_ends_total", reason="replaced") == 1


async def test_idle_link_is_closed_with_1001(nursery, upstream, raw):
    handle = await start_proxy(nursery, proxy_config(upstream.port, idle_timeout=0.2))
    charger = await raw(handle.port)
    assert (await charger.upgrade("CP-idle")).startswith(b"HTTP/1.1 101")
    with trio.fail_after(10):
        messages = await charger.messages_until_close(reply_to_close=True)
        await eventually(lambda: "CP-idle" not in handle.server.links)  # the link has ended
    assert [(m.opcode, m.close_code, m.close_reason) for m in messages] == [
        (CLOSE, 1001, "idle timeout")
    ]
    await upstream.wait_until(lambda: upstream.peers[0].close_code is not None)
    assert upstream.peers[0].close_code == 1001
    assert metric(handle, "ere_proxy_link_ends_total", reason="idle") == 1


async def test_shutdown_lets_the_call_in_flight_finish_then_closes_with_1001(
    nursery, upstream, raw
):
    handle = await start_proxy(nursery, proxy_config(upstream.port, drain_timeout=30))
    upstream.answer_calls = False
    charger = await raw(handle.port)
    assert (await charger.upgrade("CP-drain")).startswith(b"HTTP/1.1 101")
    await charger.send(frame(1, b'[2,"s1","StopTransaction",{"transactionId":1}]'))
    await upstream.wait_until(lambda: upstream.peers and upstream.peers[0].received)
    handle.server.shutdown()
    await trio.testing.wait_all_tasks_blocked()
    assert "CP-drain" in handle.server.links  # still waiting for the answer
    await upstream.connections["/ocpp/CP-drain"].send_message('[3,"s1",{}]')
    with trio.fail_after(10):
        messages = await charger.messages_until_close(reply_to_close=True)
    assert [(m.opcode, m.data if m.opcode != CLOSE else m.close_code) for m in messages] == [
        (1, b'[3,"s1",{}]'),
        (CLOSE, 1001),
    ]
    with trio.fail_after(10):
        await handle.server.stopped.wait()
    assert metric(handle, "ere_proxy_link_ends_total", reason="shutdown") == 1


async def test_drain_forgets_the_oldest_unanswered_call_past_the_bound(nursery, upstream, raw):
    """Unanswered CALLs are remembered up to a bound, the oldest forgotten first on either path:
    33 CALLs in flight, all but the first answered, and a drain has nothing left to wait for."""
    handle = await start_proxy(nursery, proxy_config(upstream.port, drain_timeout=30))
    upstream.answer_calls = False
    charger = await raw(handle.port)
    assert (await charger.upgrade("CP-many")).startswith(b"HTTP/1.1 101")
    ids = [f"c{n}" for n in range(33)]
    await charger.send(b"".join(frame(1, f'[2,"{i}","Heartbeat",{{}}]'.encode()) for i in ids))
    await upstream.wait_until(lambda: upstream.peers and len(upstream.peers[0].received) == 33)
    handle.server.shutdown()
    for i in ids[1:]:
        await upstream.connections["/ocpp/CP-many"].send_message(f'[3,"{i}",{{}}]')
    with trio.fail_after(10):  # not drain_timeout: "c0" was forgotten
        messages = await charger.messages_until_close(reply_to_close=True)
    assert [m.opcode for m in messages] == [1] * 32 + [CLOSE]
    assert messages[-1].close_code == 1001
    with trio.fail_after(10):
        await handle.server.stopped.wait()
    assert metric(handle, "ere_proxy_link_ends_total", reason="shutdown") == 1


async def test_shutdown_stops_accepting(nursery, upstream, raw):
    handle = await start_proxy(nursery, proxy_config(upstream.port))
    handle.server.shutdown()
    with trio.fail_after(10):
        await handle.server.stopped.wait()
    try:
        charger = await raw(handle.port)
    except OSError:
        return  # refused: nobody listens any more
    assert await charger.read_all() == b""


async def admin_get(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
    return answer


async def test_admin_endpoint_serves_metrics_health_and_readiness(nursery, proxy, upstream):
    async with open_websocket_url(proxy.url("CP-admin"), subprotocols=["ocpp1.6"]) as ws:
        await roundtrip(ws, "1")
    admin = AdminServer(proxy.metrics.registry, lambda: proxy.server.accepting)
    listeners = await nursery.start(admin.serve, "127.0.0.1", 0)
    port = listeners[0].socket.getsockname()[1]
    metrics = await admin_get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert metrics.startswith(b"HTTP/1.1 200 OK")
    assert (
        b'ere_proxy_calls_total{action="Heartbeat",direction="charger_to_upstream"} 1.0' in metrics
    )
    assert (await admin_get(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
        b"HTTP/1.1 200"
    )
    assert (await admin_get(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
        b"HTTP/1.1 200"
    )
    assert (await admin_get(port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
        b"HTTP/1.1 404"
    )
    assert (
        await admin_get(port, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    ).startswith(b"HTTP/1.1 405")
    assert (await admin_get(port, b"\x00\x01 nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400")
    await (await trio.open_tcp_stream("127.0.0.1", port)).aclose()  # a bare TCP health check
    await trio.testing.wait_all_tasks_blocked()
    assert (await admin_get(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
        b"HTTP/1.1 200"
    )
    proxy.server.shutdown()
    await proxy.server.stopped.wait()
    assert (await admin_get(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")).startswith(
        b"HTTP/1.1 503"
    )


async def test_reload_keeps_running_links_and_applies_new_routes(nursery, upstream, tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text(f'[chargers."CP-old"]\nupstream = "ws://127.0.0.1:{upstream.port}/ocpp"\n')
    config = load_config(path)
    handle = await start_proxy(
        nursery, msgspec.structs.replace(config, proxy=proxy_config(upstream.port).proxy)
    )
    async with open_websocket_url(handle.url("CP-old"), subprotocols=["ocpp1.6"]) as ws:
        await roundtrip(ws, "before")
        path.write_text(f'[chargers."CP-new"]\nupstream = "ws://127.0.0.1:{upstream.port}/ocpp"\n')
        reload_config(path, handle.router, handle.server, None)
        assert json.loads(await roundtrip(ws, "after"))[1] == "after"  # the old link is untouched
        async with open_websocket_url(handle.url("CP-new"), subprotocols=["ocpp1.6"]) as new:
            await roundtrip(new, "1")
    assert handle.router.lookup("CP-old") is None


async def test_a_refused_second_connection_does_not_disconnect_the_charger(proxy, upstream, raw):
    async with open_websocket_url(proxy.url("CP-victim"), subprotocols=["ocpp1.6"]) as charger:
        await roundtrip(charger, "1")
        upstream.refuse_with = 401  # e.g. someone without the charger's credentials
        intruder = await raw()
        assert (await intruder.upgrade("CP-victim")).startswith(b"HTTP/1.1 401")
        assert json.loads(await roundtrip(charger, "2"))[1] == "2"


async def test_shutdown_forwards_what_the_charger_sends_before_answering_the_close(
    nursery, upstream, raw
):
    handle = await start_proxy(nursery, proxy_config(upstream.port))
    charger = await raw(handle.port)
    assert (await charger.upgrade("CP-late")).startswith(b"HTTP/1.1 101")
    await upstream.wait_until(lambda: "/ocpp/CP-late" in upstream.connections)
    handle.server.shutdown()
    head = await charger.stream.receive_some(2)  # our close frame has started to arrive
    assert head[:1] == b"\x88"
    stop = b'[2,"q1","StopTransaction",{"transactionId":7,"meterStop":900,"timestamp":"2026-11-21T10:00:00Z"}]'
    await charger.send(
        frame(1, stop) + frame(8, b"\x03\xe9")
    )  # a queued CALL, then the close reply
    peer = upstream.peers[0]
    await upstream.wait_until(lambda: peer.close_code is not None)
    assert peer.received == [stop.decode()]
    assert peer.close_code == 1001


async def test_shutdown_waits_for_a_half_received_frame(nursery, upstream, raw):
    handle = await start_proxy(nursery, proxy_config(upstream.port, drain_timeout=30))
    charger = await raw(handle.port)
    assert (await charger.upgrade("CP-half")).startswith(b"HTTP/1.1 101")
    await upstream.wait_until(lambda: "/ocpp/CP-half" in upstream.connections)
    big = b'[2,"m1","MeterValues",{"connectorId":1,"meterValue":[],"pad":"' + b"x" * 3000 + b'"}]'
    data = frame(1, big)
    await charger.send(data[:1000])
    await trio.testing.wait_all_tasks_blocked()
    handle.server.shutdown()
    await trio.testing.wait_all_tasks_blocked()
    assert "CP-half" in handle.server.links  # not cut in the middle of the frame
    await charger.send(data[1000:])
    await upstream.wait_until(lambda: upstream.peers[0].received)
    assert upstream.peers[0].received == [big.decode()]
