"""Sans-IO tests of both handshakes: every answer is checked as bytes, no sockets."""

from __future__ import annotations

import base64

import h11
import pytest
from wsproto.utilities import generate_accept_token

from proxy.wire.handshake import (
    ChargerHandshake,
    HandshakeRefused,
    UpstreamAccepted,
    UpstreamHandshake,
    UpstreamProtocolError,
    UpstreamRefused,
    parse_identity,
    upstream_offer,
)

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def upgrade(
    target: str = "/ocpp/CP-1", extra: str = "", key: bytes = KEY, method: str = "GET"
) -> bytes:
    return (
        f"{method} {target} HTTP/1.1\r\nHost: proxy\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    ).encode()


def handshake() -> ChargerHandshake:
    return ChargerHandshake("/ocpp", 16 * 1024)


def test_request_split_byte_by_byte_is_parsed_once_complete():
    hs = handshake()
    data = upgrade(
        extra="Sec-WebSocket-Protocol: ocpp2.0.1, ocpp1.6\r\nAuthorization: Basic eDp5\r\n"
    )
    for i in range(len(data) - 1):
        assert hs.receive_data(data[i : i + 1]) is None
    request = hs.receive_data(data[-1:])
    assert request is not None
    assert request.identity == "CP-1"
    assert request.offered == ("ocpp2.0.1", "ocpp1.6")
    assert request.authorization == b"Basic eDp5"


def test_accept_answers_101_with_the_chosen_subprotocol_and_keeps_trailing_frames():
    hs = handshake()
    frame = b"\x81\x82abcd\x00\x00"
    assert hs.receive_data(upgrade(extra="Sec-WebSocket-Protocol: ocpp1.6\r\n") + frame) is not None
    answer = hs.accept("ocpp1.6")
    client = h11.Connection(h11.CLIENT)
    client.send(
        h11.Request(
            method="GET",
            target="/",
            headers=[("host", "x"), ("upgrade", "websocket"), ("connection", "upgrade")],
        )
    )
    client.receive_data(answer)
    event = client.next_event()
    assert isinstance(event, h11.InformationalResponse) and event.status_code == 101
    headers = dict(event.headers)
    assert headers[b"sec-websocket-accept"] == generate_accept_token(KEY)
    assert headers[b"sec-websocket-protocol"] == b"ocpp1.6"
    assert b"sec-websocket-extensions" not in headers
    assert hs.trailing_data == frame
    assert (
        hs.refuse(HandshakeRefused(503, "too late")) == b""
    )  # the connection speaks WebSocket now


def test_accept_without_subprotocol_sends_no_protocol_header():
    hs = handshake()
    assert hs.receive_data(upgrade()) is not None
    assert b"sec-websocket-protocol" not in hs.accept(None).lower()


def test_permessage_deflate_offer_is_not_negotiated():
    hs = handshake()
    assert hs.receive_data(
        upgrade(extra="Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n")
    )
    assert b"extensions" not in hs.accept("ocpp1.6").lower()


@pytest.mark.parametrize(
    "data, status",
    [
        (b"\x16\x03\x01\x02\x00garbage\r\n\r\n", 400),
        (b"GET /ocpp/CP HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (upgrade(method="POST"), 405),
        (upgrade().replace(b"Upgrade: websocket\r\n", b""), 426),
        (upgrade().replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"), 426),
        (upgrade(key=b"c2hvcnQ="), 400),
        (upgrade(target="/other/CP-1"), 404),
        (upgrade(target="/ocpp/a/b"), 404),
        (upgrade(target="/ocpp/"), 400),
        (upgrade(target="/ocpp/" + "x" * 49), 400),
        (upgrade(target="/ocpp/CP%3A1"), 400),
        (upgrade(target="/ocpp/CP:1"), 400),
        (upgrade(target="/ocpp/CP%00"), 400),
        (upgrade(target="/ocpp/CP%2F1"), 400),  # a '/' once decoded
        (upgrade(target="/ocpp/CP%C2%851"), 400),  # NEL, a C1 control
        (upgrade(target="/ocpp/CP%E2%80%AE1"), 400),  # right-to-left override
        (upgrade(target="/ocpp/CP%E2%80%8B1"), 400),  # zero-width space
        (upgrade(target="/ocpp/CP%E2%80%A81"), 400),  # line separator
        (upgrade(target="/ocpp/%FF%FE"), 400),
        (upgrade(target="/ocpp/.."), 400),
        (upgrade(target="/ocpp/%2E"), 400),
        (upgrade(extra="Content-Length: 5\r\n") + b"hello", 400),
        (upgrade().replace(b"HTTP/1.1", b"HTTP/1.0"), 426),
    ],
)
def test_bad_requests_are_refused_with_a_clear_status(data, status):
    hs = handshake()
    with pytest.raises(HandshakeRefused) as caught:
        hs.receive_data(data)
    assert caught.value.status == status
    answer = hs.refuse(caught.value)
    assert answer.startswith(b"HTTP/1.1 %d " % status)
    assert answer.endswith(caught.value.reason.encode() + b"\n")


def test_head_request_is_answered_405_with_headers_only():
    # An answer to HEAD carries no body; writing one made h11 refuse and nothing was sent.
    hs = handshake()
    with pytest.raises(HandshakeRefused) as caught:
        hs.receive_data(upgrade(method="HEAD"))
    assert caught.value.status == 405
    answer = hs.refuse(caught.value)
    assert answer.startswith(b"HTTP/1.1 405 ")
    assert b"\r\nallow: GET\r\n" in answer and b"\r\nconnection: close\r\n" in answer
    assert answer.endswith(b"\r\n\r\n")


def test_eof_before_a_complete_request_is_refused():
    hs = handshake()
    assert hs.receive_data(b"GET /ocpp/CP-1 HTTP/1.1\r\n") is None
    with pytest.raises(HandshakeRefused):
        hs.receive_data(b"")


def test_identity_of_48_characters_with_percent_encoded_space():
    identity = "A B" + "c" * 45
    assert parse_identity(("/ocpp/" + identity.replace(" ", "%20")).encode(), "/ocpp") == identity
    assert len(identity) == 48


def test_query_string_is_not_part_of_the_identity():
    assert parse_identity(b"/ocpp/CP-9?token=x", "/ocpp/") == "CP-9"


@pytest.mark.parametrize(
    "offered, expected",
    [
        ((), ["ocpp1.6"]),
        (("ocpp2.0.1", "ocpp1.6"), ["ocpp2.0.1", "ocpp1.6"]),
        (("ocpp1.5", "ocpp2.1"), ["ocpp2.1"]),
        (("ocpp1.2",), []),
    ],
)
def test_upstream_offer(offered, expected):
    assert upstream_offer(offered, "ocpp1.6") == expected


def _server_answer(
    request: bytes, status: int = 101, protocol: bytes | None = b"ocpp1.6", extra=()
) -> bytes:
    server = h11.Connection(h11.SERVER)
    server.receive_data(request)
    event = server.next_event()
    assert isinstance(event, h11.Request)
    key = dict(event.headers)[b"sec-websocket-key"]
    if status != 101:
        return server.send(
            h11.Response(status_code=status, headers=[("content-length", "0"), *extra])
        )
    headers = [
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", generate_accept_token(key)),
    ]
    if protocol is not None:
        headers.append((b"sec-websocket-protocol", protocol))
    headers.extend(extra)
    return server.send(h11.InformationalResponse(status_code=101, headers=headers))


def upstream(auth: bytes | None = None) -> UpstreamHandshake:
    return UpstreamHandshake("csms.example", 443, "/ocpp/CP%201", ["ocpp2.0.1", "ocpp1.6"], auth)


def test_upstream_request_offers_subprotocols_and_forwards_authorization():
    request = upstream(b"Basic Q1A6cHc=").request()
    assert request.startswith(b"GET /ocpp/CP%201 HTTP/1.1\r\n")
    assert b"host: csms.example\r\n" in request
    assert b"sec-websocket-protocol: ocpp2.0.1, ocpp1.6\r\n" in request
    assert b"authorization: Basic Q1A6cHc=\r\n" in request
    assert (
        len(
            base64.b64decode(
                dict(line.split(b": ", 1) for line in request.split(b"\r\n")[1:-2])[
                    b"sec-websocket-key"
                ]
            )
        )
        == 16
    )


def test_upstream_accept_gives_subprotocol_and_trailing_bytes():
    hs = upstream()
    answer = _server_answer(hs.request(), protocol=b"ocpp1.6") + b"\x81\x02{}"
    assert hs.receive_data(answer[:10]) is None
    assert hs.receive_data(answer[10:]) == UpstreamAccepted("ocpp1.6")
    assert hs.trailing_data == b"\x81\x02{}"


def test_upstream_refusal_reports_status_and_challenge():
    hs = upstream()
    answer = _server_answer(
        hs.request(), status=401, extra=[(b"www-authenticate", b'Basic realm="x"')]
    )
    assert hs.receive_data(answer) == UpstreamRefused(401, b'Basic realm="x"')


@pytest.mark.parametrize(
    "mangle",
    [
        lambda a: a.replace(b"sec-websocket-accept: ", b"sec-websocket-accept: x"),
        lambda a: a.replace(b"ocpp1.6", b"ocpp9.9"),
        lambda a: a.replace(
            b"\r\n\r\n", b"\r\nsec-websocket-extensions: permessage-deflate\r\n\r\n"
        ),
        lambda a: b"SSH-2.0-OpenSSH\r\n\r\n",
    ],
)
def test_invalid_upstream_answers_are_protocol_errors(mangle):
    hs = upstream()
    with pytest.raises(UpstreamProtocolError):
        hs.receive_data(mangle(_server_answer(hs.request())))


def test_upstream_eof_before_answer_is_a_protocol_error():
    hs = upstream()
    hs.request()
    with pytest.raises(UpstreamProtocolError):
        hs.receive_data(b"")


def test_subprotocol_names_keep_their_case():
    hs = handshake()
    request = hs.receive_data(upgrade(extra="Sec-WebSocket-Protocol: OCPP1.6, ocpp1.6\r\n"))
    assert request.offered == ("OCPP1.6", "ocpp1.6")
    assert upstream_offer(request.offered, "ocpp1.6") == ["ocpp1.6"]
    assert hs.accept("ocpp1.6").startswith(b"HTTP/1.1 101 Switching Protocols\r\n")


def test_ipv6_upstream_host_is_bracketed():
    request = UpstreamHandshake("::1", 9000, "/ocpp/x", ["ocpp1.6"], None).request()
    assert b"host: [::1]:9000\r\n" in request
