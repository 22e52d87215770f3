"""Every dial of a back-office is counted by outcome and its time observed, whatever happens, on
real sockets on 127.0.0.1: a refused port, a peer that never answers (autojump clock), a TLS
peer whose certificate is not trusted, a peer that closes mid-handshake, an HTTP 503 answer and a
real 101. Each failure is a `Refusal`, never an exception that could end the process; a
certificate that is no certificate reads as None.
"""

from __future__ import annotations

import socket
import ssl
from functools import partial

import pytest
import trio
import trustme
from prometheus_client import CollectorRegistry

from proxy.forward.dial import Dialer
from proxy.forward.refusal import Refusal
from proxy.runtime.certificates import der_not_after, pem_file_not_after
from proxy.runtime.config import OutboxSettings, ProxySettings, Route
from proxy.runtime.metrics import ProxyMetrics

ACCEPT = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
)


def dialer(timeout: float = 5.0) -> tuple[Dialer, ProxyMetrics]:
    metrics = ProxyMetrics(CollectorRegistry())
    return Dialer(ProxySettings(dial_timeout=timeout), OutboxSettings(), metrics), metrics


def counted(metrics: ProxyMetrics, upstream: str, outcome: str) -> float | None:
    return metrics.registry.get_sample_value(
        "ere_proxy_upstream_dials_total", {"upstream": upstream, "outcome": outcome}
    )


def observed(metrics: ProxyMetrics, upstream: str, result: str) -> float | None:
    return metrics.registry.get_sample_value(
        "ere_proxy_upstream_dial_seconds_count", {"upstream": upstream, "result": result}
    )


async def serve(handler, nursery: trio.Nursery) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def dial(d: Dialer, upstream: str, **route) -> Refusal:
    with pytest.raises(Refusal) as refused:
        await d.dial(Route(upstream=upstream, **route), "CP-1", ["ocpp1.6"], None)
    return refused.value


async def test_a_refused_port_counts_refused_and_observes_its_time():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    d, metrics = dialer()
    refusal = await dial(d, f"ws://127.0.0.1:{port}/ocpp")
    assert refusal.outcome == "upstream_unreachable"
    assert counted(metrics, f"127.0.0.1:{port}", "refused") == 1
    assert observed(metrics, f"127.0.0.1:{port}", "failed") == 1


async def test_a_silent_peer_counts_a_timeout_observed_at_the_dial_timeout(autojump_clock):
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port = await serve(silent, nursery)
        d, metrics = dialer(timeout=7.0)
        refusal = await dial(d, f"ws://127.0.0.1:{port}/ocpp")
        nursery.cancel_scope.cancel()
    assert refusal.outcome == "upstream_timeout"
    assert counted(metrics, f"127.0.0.1:{port}", "timeout") == 1
    buckets = metrics.registry.get_sample_value(
        "ere_proxy_upstream_dial_seconds_bucket",
        {"upstream": f"127.0.0.1:{port}", "result": "failed", "le": "5.0"},
    )
    assert buckets == 0  # observed, but after 5 s: at the (real) 7 s timeout


async def test_an_untrusted_certificate_counts_tls_error():
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    async def tls(stream: trio.SocketStream) -> None:
        wrapped = trio.SSLStream(stream, context, server_side=True)
        try:
            await wrapped.do_handshake()
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        port = await serve(tls, nursery)
        d, metrics = dialer()
        refusal = await dial(d, f"wss://127.0.0.1:{port}/ocpp")  # the CA is not trusted
        nursery.cancel_scope.cancel()
    assert refusal.outcome == "upstream_unreachable"
    assert counted(metrics, f"127.0.0.1:{port}", "tls_error") == 1
    assert observed(metrics, f"127.0.0.1:{port}", "failed") == 1


async def test_a_trusted_peer_certificate_exports_its_expiry(tmp_path):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))

    async def tls_then_close(stream: trio.SocketStream) -> None:
        wrapped = trio.SSLStream(stream, context, server_side=True)
        try:
            await wrapped.do_handshake()
            await wrapped.receive_some(4096)  # the upgrade request; then close mid-handshake
        except trio.BrokenResourceError:
            pass
        await trio.aclose_forcefully(wrapped)

    async with trio.open_nursery() as nursery:
        port = await serve(tls_then_close, nursery)
        d, metrics = dialer()
        refusal = await dial(d, f"wss://127.0.0.1:{port}/ocpp", ca_bundle=str(bundle))
        nursery.cancel_scope.cancel()
    upstream = f"127.0.0.1:{port}"
    assert refusal.outcome == "upstream_unreachable"
    assert counted(metrics, upstream, "tls_error") is None  # TLS worked; the HTTP answer never came
    assert (counted(metrics, upstream, "protocol_error") or 0) + (
        counted(metrics, upstream, "unreachable") or 0
    ) == 1
    cert_pem = tmp_path / "leaf.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_pem))
    expiry = metrics.registry.get_sample_value(
        "ere_proxy_upstream_certificate_expiry_timestamp_seconds", {"upstream": upstream}
    )
    assert expiry is not None and expiry == pem_file_not_after(cert_pem)


async def test_a_peer_that_closes_mid_handshake_counts_protocol_error():
    async def close_after_request(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        port = await serve(close_after_request, nursery)
        d, metrics = dialer()
        refusal = await dial(d, f"ws://127.0.0.1:{port}/ocpp")
        nursery.cancel_scope.cancel()
    assert refusal.outcome == "upstream_unreachable"
    assert counted(metrics, f"127.0.0.1:{port}", "protocol_error") == 1


async def test_an_http_answer_counts_its_status_and_a_101_counts_ok():
    async def answer(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        if b"/ocpp/DOWN" in request:
            await stream.send_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        else:
            import base64
            import hashlib

            key = next(
                line.split(b":", 1)[1].strip()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key")
            )
            accept = base64.b64encode(
                hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
            )
            await stream.send_all(ACCEPT % accept)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        port = await serve(answer, nursery)
        d, metrics = dialer()
        route = Route(upstream=f"ws://127.0.0.1:{port}/ocpp")
        with pytest.raises(Refusal) as refused:
            await d.dial(route, "DOWN", ["ocpp1.6"], None)
        stream, accepted, _ = await d.dial(route, "UP", ["ocpp1.6"], None)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    upstream = f"127.0.0.1:{port}"
    assert refused.value.refusal.status == 503
    assert counted(metrics, upstream, "http_503") == 1
    assert counted(metrics, upstream, "ok") == 1 and accepted.subprotocol == "ocpp1.6"
    assert observed(metrics, upstream, "ok") == 1 and observed(metrics, upstream, "failed") == 1


def test_bytes_that_are_no_certificate_read_as_none(tmp_path):
    assert der_not_after(b"\x30\x82garbage") is None
    assert der_not_after(None) is None
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    assert pem_file_not_after(bad) is None
    assert pem_file_not_after(tmp_path / "missing.pem") is None
