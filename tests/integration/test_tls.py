"""wss on both legs: the proxy serves TLS to chargers and dials a TLS upstream with a private CA."""

from __future__ import annotations

import json
import ssl

import msgspec
import pytest
import trio
import trustme
from trio_websocket import open_websocket_url, serve_websocket

from proxy.forward.listener import (
    listening_port,
    open_listener,
    reload_certificates,
    server_tls_context,
)
from proxy.forward.server import ProxyServer
from proxy.routing.router import StaticRouter
from proxy.runtime.config import Config, ProxySettings, Route
from proxy.runtime.metrics import ProxyMetrics
from testkit.in_process_proxy import metric, roundtrip, start_proxy
from testkit.upstream import Upstream


async def test_wss_charger_to_wss_upstream_with_a_private_ca(nursery, tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    upstream_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(upstream_context)
    up = Upstream()
    server = await nursery.start(serve_websocket, up.handler, "127.0.0.1", 0, upstream_context)

    ca_file, key_file, cert_file = tmp_path / "ca.pem", tmp_path / "key.pem", tmp_path / "cert.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    settings = msgspec.convert(
        {"host": "127.0.0.1", "port": 0, "tls_cert": str(cert_file), "tls_key": str(key_file)},
        ProxySettings,
    )
    route = Route(upstream=f"wss://localhost:{server.port}/ocpp", ca_bundle=str(ca_file))
    handle = await start_proxy(nursery, Config(proxy=settings, default_route=route))

    charger_context = ssl.create_default_context()
    ca.configure_trust(charger_context)
    url = f"wss://localhost:{handle.port}/ocpp/CP-tls"
    async with open_websocket_url(url, ssl_context=charger_context, subprotocols=["ocpp1.6"]) as ws:
        assert json.loads(await roundtrip(ws, "t1")) == [3, "t1", {"echo": "Heartbeat"}]
    assert up.peers[0].path == "/ocpp/CP-tls"
    assert up.peers[0].received == ['[2, "t1", "Heartbeat", {}]']
    assert metric(handle, "ere_proxy_handshakes_total", outcome="accepted") == 1


async def test_upstream_with_an_untrusted_certificate_is_502(nursery, tmp_path):
    ca = trustme.CA()
    upstream_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(upstream_context)
    up = Upstream()
    server = await nursery.start(serve_websocket, up.handler, "127.0.0.1", 0, upstream_context)
    settings = msgspec.convert({"host": "127.0.0.1", "port": 0}, ProxySettings)
    route = Route(upstream=f"wss://localhost:{server.port}/ocpp")  # system CAs only
    handle = await start_proxy(nursery, Config(proxy=settings, default_route=route))
    stream = await trio.open_tcp_stream("127.0.0.1", handle.port)
    async with stream:
        await stream.send_all(
            b"GET /ocpp/CP-x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        answer = await stream.receive_some(4096)
    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway")
    assert up.peers == []


async def test_a_reload_serves_the_new_certificate_to_new_handshakes_and_keeps_the_old_on_a_bad_file(
    nursery, tmp_path, upstream
):
    old_ca, new_ca = trustme.CA(), trustme.CA()
    key_file, cert_file = tmp_path / "key.pem", tmp_path / "cert.pem"

    def install(ca: trustme.CA) -> None:
        cert = ca.issue_cert("localhost")
        cert.private_key_pem.write_to_path(str(key_file))
        cert.cert_chain_pems[0].write_to_path(str(cert_file))

    install(old_ca)
    settings = msgspec.convert(
        {"host": "127.0.0.1", "port": 0, "tls_cert": str(cert_file), "tls_key": str(key_file)},
        ProxySettings,
    )
    tls = server_tls_context(settings)
    metrics = ProxyMetrics()
    config = Config(
        proxy=settings, default_route=Route(upstream=f"ws://127.0.0.1:{upstream.port}/ocpp")
    )
    server = ProxyServer(config, StaticRouter(config), metrics)
    listener = open_listener(settings, reuse_port=False, tls=tls)
    await nursery.start(server.run, [listener])
    port = listening_port(listener)

    async def handshake_trusting(ca: trustme.CA) -> bool:
        context = ssl.create_default_context()
        ca.configure_trust(context)
        stream = trio.SSLStream(
            await trio.open_tcp_stream("127.0.0.1", port), context, server_hostname="localhost"
        )
        try:
            await stream.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError):
            return False
        finally:
            await trio.aclose_forcefully(stream)
        return True

    assert await handshake_trusting(old_ca) and not await handshake_trusting(new_ca)
    install(new_ca)  # the certificate is renewed in place, then SIGHUP
    assert reload_certificates(tls, settings)
    assert await handshake_trusting(new_ca) and not await handshake_trusting(old_ca)
    cert_file.write_text("not a certificate")
    assert not reload_certificates(tls, settings)  # logged; the running certificate stays
    assert await handshake_trusting(new_ca)


async def test_failed_tls_handshakes_count_as_tls_error_and_other_chargers_are_served(
    nursery, tmp_path, upstream
):
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    key_file, cert_file = tmp_path / "key.pem", tmp_path / "cert.pem"
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    settings = msgspec.convert(
        {"host": "127.0.0.1", "port": 0, "tls_cert": str(cert_file), "tls_key": str(key_file)},
        ProxySettings,
    )
    route = Route(upstream=f"ws://127.0.0.1:{upstream.port}/ocpp")
    handle = await start_proxy(nursery, Config(proxy=settings, default_route=route))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)

    async def counted(outcome: str, expected: int) -> None:
        with trio.fail_after(5):
            while metric(handle, "ere_proxy_handshakes_total", outcome=outcome) != expected:
                await trio.sleep(0.01)

    async def hung_up(stream: trio.SocketStream) -> None:
        """Read until the proxy closes the connection (a reset counts)."""
        with trio.fail_after(5):
            try:
                while await stream.receive_some(4096):
                    pass
            except trio.BrokenResourceError:
                pass
        await stream.aclose()

    url = f"wss://localhost:{handle.port}/ocpp/CP-good"
    async with open_websocket_url(url, ssl_context=trusting, subprotocols=["ocpp1.6"]) as ws:
        # Plain HTTP on the TLS port.
        plain = await trio.open_tcp_stream("127.0.0.1", handle.port)
        await plain.send_all(
            b"GET /ocpp/CP-plain HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        await hung_up(plain)
        await counted("tls_error", 1)

        # A ClientHello, then the client aborts the handshake.
        hello = ssl.MemoryBIO()
        client = trusting.wrap_bio(ssl.MemoryBIO(), hello, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            client.do_handshake()
        aborting = await trio.open_tcp_stream("127.0.0.1", handle.port)
        await aborting.send_all(hello.read())
        await aborting.aclose()
        await counted("tls_error", 2)

        # A charger that does not trust our certificate.
        untrusting = trio.SSLStream(
            await trio.open_tcp_stream("127.0.0.1", handle.port),
            ssl.create_default_context(),
            server_hostname="localhost",
        )
        with pytest.raises(trio.BrokenResourceError):
            await untrusting.do_handshake()
        await trio.aclose_forcefully(untrusting)
        await counted("tls_error", 3)

        # A port check: connected, and gone without a byte. No TLS failure.
        await (await trio.open_tcp_stream("127.0.0.1", handle.port)).aclose()
        await counted("charger_gone", 1)
        assert metric(handle, "ere_proxy_handshakes_total", outcome="tls_error") == 3

        # The charger connected all along is served, and so is a new one.
        assert json.loads(await roundtrip(ws, "t1")) == [3, "t1", {"echo": "Heartbeat"}]
    url = f"wss://localhost:{handle.port}/ocpp/CP-next"
    async with open_websocket_url(url, ssl_context=trusting, subprotocols=["ocpp1.6"]) as ws:
        assert json.loads(await roundtrip(ws, "t2")) == [3, "t2", {"echo": "Heartbeat"}]
    assert metric(handle, "ere_proxy_handshakes_total", outcome="accepted") == 2
