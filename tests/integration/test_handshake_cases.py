"""Handshake outcomes over real sockets: our refusals, the upstream's, and its failures."""

from __future__ import annotations

import socket

import pytest
import trio
from trio_websocket import open_websocket_url

from proxy.routing.auth import basic_header, hash_password
from proxy.runtime.config import Route
from proxy.wire.codec import CLOSE
from testkit.in_process_proxy import metric, proxy_config, roundtrip, start_proxy
from testkit.raw_charger import RawCharger

MANAGED_HASH = hash_password("charger-pw")


def managed_route(port: int) -> Route:
    return Route(
        upstream=f"ws://127.0.0.1:{port}/ocpp",
        auth="managed",
        password_hash=MANAGED_HASH,
        upstream_password="csms-pw",
    )


async def status_of(port: int, identity: str, extra: str = "") -> bytes:
    charger = await RawCharger.connect(port)
    try:
        return (await charger.upgrade(identity, extra)).split(b"\r\n")[0]
    finally:
        await charger.aclose()


async def test_unknown_identity_is_404_without_dialling(nursery, upstream):
    handle = await start_proxy(nursery, proxy_config(upstream.port, default=False))
    assert await status_of(handle.port, "CP-unknown") == b"HTTP/1.1 404 Not Found"
    assert upstream.peers == []
    assert metric(handle, "ere_proxy_handshakes_total", outcome="not_found") == 1


async def test_managed_route_checks_the_password_and_sends_the_upstream_credential(
    nursery, upstream
):
    handle = await start_proxy(
        nursery, proxy_config(upstream.port, chargers={"CP-m": managed_route(upstream.port)})
    )
    wrong = "Authorization: " + basic_header("CP-m", "nope").decode() + "\r\n"
    assert await status_of(handle.port, "CP-m", wrong) == b"HTTP/1.1 401 Unauthorized"
    assert await status_of(handle.port, "CP-m") == b"HTTP/1.1 401 Unauthorized"
    other = "Authorization: " + basic_header("CP-x", "charger-pw").decode() + "\r\n"
    assert await status_of(handle.port, "CP-m", other) == b"HTTP/1.1 401 Unauthorized"
    assert upstream.peers == []
    for _ in range(2):  # the second time comes from the verified-password cache
        headers = [("Authorization", basic_header("CP-m", "charger-pw").decode())]
        async with open_websocket_url(
            handle.url("CP-m"), subprotocols=["ocpp1.6"], extra_headers=headers
        ) as ws:
            await roundtrip(ws, "1")
    assert [p.authorization for p in upstream.peers] == [
        basic_header("CP-m", "csms-pw").decode()
    ] * 2
    assert metric(handle, "ere_proxy_handshakes_total", outcome="unauthorized") == 3


async def test_passthrough_forwards_the_chargers_authorization(proxy, upstream):
    headers = [("Authorization", "Basic Q1AtcDpwdw==")]
    async with open_websocket_url(
        proxy.url("CP-p"), subprotocols=["ocpp1.6"], extra_headers=headers
    ) as ws:
        await roundtrip(ws, "1")
    assert upstream.peers[0].authorization == "Basic Q1AtcDpwdw=="


@pytest.mark.parametrize(
    "status, line",
    [
        (401, b"401 Unauthorized"),
        (403, b"403 Forbidden"),
        (404, b"404 Not Found"),
        (429, b"429 Too Many Requests"),
        (500, b"500 Internal Server Error"),
        (503, b"503 Service Unavailable"),
        (200, b"502 Bad Gateway"),
    ],
)
async def test_upstream_refusal_is_mirrored(proxy, upstream, status, line):
    upstream.refuse_with = status
    assert await status_of(proxy.port, "CP-r") == b"HTTP/1.1 " + line


async def test_upstream_down_is_502(nursery):
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handle = await start_proxy(nursery, proxy_config(port))
    assert await status_of(handle.port, "CP-d") == b"HTTP/1.1 502 Bad Gateway"
    assert metric(handle, "ere_proxy_handshakes_total", outcome="upstream_unreachable") == 1


async def test_silent_upstream_is_504(nursery):
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    accepted = []

    async def accept_and_stay_silent() -> None:
        async with listener:
            while True:
                accepted.append(await listener.accept())

    nursery.start_soon(accept_and_stay_silent)
    port = listener.socket.getsockname()[1]
    handle = await start_proxy(nursery, proxy_config(port, dial_timeout=0.3))
    assert await status_of(handle.port, "CP-s") == b"HTTP/1.1 504 Gateway Timeout"
    assert metric(handle, "ere_proxy_handshakes_total", outcome="upstream_timeout") == 1
    for stream in accepted:
        await stream.aclose()


async def test_unsupported_subprotocol_is_accepted_without_one_and_closed_with_1002(
    proxy, upstream, raw
):
    charger = await raw()
    head = await charger.upgrade("CP-v", protocols="ocpp1.2, ocpp9")
    assert head.startswith(b"HTTP/1.1 101") and b"sec-websocket-protocol" not in head.lower()
    messages = await charger.messages_until_close()
    assert [(m.opcode, m.close_code) for m in messages] == [(CLOSE, 1002)]
    assert upstream.peers == []


async def test_identity_with_space_and_48_characters(proxy, upstream):
    identity = "CP%20" + "x" * 45
    async with open_websocket_url(proxy.url(identity), subprotocols=["ocpp1.6"]) as ws:
        await roundtrip(ws, "1")
    assert upstream.peers[0].path == "/ocpp/" + identity
    assert await status_of(proxy.port, identity + "y") == b"HTTP/1.1 400 Bad Request"
