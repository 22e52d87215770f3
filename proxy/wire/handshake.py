"""WebSocket opening handshakes of both legs of a connection, sans-IO, on h11.

`ChargerHandshake` reads a charger's upgrade request and writes our answer (101 or a refusal);
`UpstreamHandshake` writes our upgrade request to the upstream and reads its answer. Both take
bytes in and give bytes or events out; the Trio shell in `server.py` moves the bytes.

No extension is ever negotiated (permessage-deflate offers are dropped), so frames pass
through the proxy exactly as sent. Bytes that arrive after a handshake (frames the peer sent
right behind it) are in `trailing_data` and must be forwarded first.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import unquote

import h11
from wsproto.utilities import generate_accept_token

from proxy.wire.ocpp import SUPPORTED_SUBPROTOCOLS, identity_problem


class HandshakeRefused(Exception):
    """Refuse the charger with an HTTP `status` (and `reason` as the plain-text body)."""

    def __init__(self, status: int, reason: str, headers: tuple[tuple[bytes, bytes], ...] = ()):
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
        self.headers = headers


@dataclass(frozen=True)
class ChargerRequest:
    """A well-formed upgrade request from a charger."""

    identity: str
    offered: tuple[str, ...]  # subprotocols the charger offered, in its order of preference
    authorization: bytes | None
    user_agent: str


def _header_tokens(value: bytes, lower: bool = True) -> list[str]:
    tokens = [t.strip() for t in value.decode("latin-1").split(",") if t.strip()]
    return [t.lower() for t in tokens] if lower else tokens


def parse_identity(target: bytes, path_prefix: str) -> str:
    """The charger identity from the request target `<path_prefix>/<percent-encoded identity>`.

    Raises HandshakeRefused(404) for another path and (400) for an identity OCPP does not allow.
    """
    path = target.split(b"?", 1)[0].decode("ascii", errors="replace")
    prefix = path_prefix.rstrip("/") + "/"
    if not path.startswith(prefix) or "/" in path[len(prefix) :]:
        raise HandshakeRefused(404, "no such endpoint")
    try:
        identity = unquote(path[len(prefix) :], errors="strict")
    except UnicodeDecodeError:
        raise HandshakeRefused(400, "identity is not valid UTF-8") from None
    if (problem := identity_problem(identity)) is not None:
        raise HandshakeRefused(400, problem)
    return identity


def upstream_offer(offered: tuple[str, ...], default: str) -> list[str]:
    """The subprotocols to offer upstream: the charger's supported ones, or `default` if it offered none.

    Empty when the charger offered only subprotocols we do not speak.
    """
    if not offered:
        return [default]
    return [p for p in offered if p in SUPPORTED_SUBPROTOCOLS]


class ChargerHandshake:
    """Server side of the charger's opening handshake.

    Feed bytes with `receive_data` until it returns a `ChargerRequest`; then call `accept` or
    `refuse` for the bytes to send. Malformed or oversized requests raise HandshakeRefused with
    the status to answer (400, 404, 405, 426, 431). After `accept` the HTTP parser is let go
    (the connection lives on for hours; only `trailing_data` is kept).
    """

    def __init__(self, path_prefix: str, max_header_size: int) -> None:
        self._h11: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=max_header_size
        )
        self._trailing = b""  # the bytes after the request, once the parser is gone
        self._path_prefix = path_prefix
        self._max_header_size = max_header_size
        self._received = 0
        self._key = b""
        self._head = False  # the request was HEAD: its answer has no body

    def receive_data(self, data: bytes) -> ChargerRequest | None:
        """Feed bytes (b"" for EOF); None means more bytes are needed."""
        assert self._h11 is not None, "the handshake is over"
        self._received += len(data)
        self._h11.receive_data(data)
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            if exc.error_status_hint == 431:
                raise HandshakeRefused(431, "request headers too large") from None
            raise HandshakeRefused(400, "malformed request") from None
        self._head = isinstance(event, h11.Request) and event.method == b"HEAD"
        if self._received - len(self.trailing_data) > self._max_header_size:
            raise HandshakeRefused(431, "request headers too large")
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, h11.ConnectionClosed):
            raise HandshakeRefused(400, "connection closed during handshake")
        if not isinstance(event, h11.Request):
            raise HandshakeRefused(400, "malformed request")
        return self._validate(event)

    def _validate(self, request: h11.Request) -> ChargerRequest:
        if request.method != b"GET":
            raise HandshakeRefused(405, "only GET upgrades are served", ((b"allow", b"GET"),))
        if request.http_version != b"1.1":
            raise HandshakeRefused(426, "HTTP/1.1 is required", ((b"upgrade", b"websocket"),))
        headers: dict[bytes, list[bytes]] = {}
        for name, value in request.headers:
            headers.setdefault(name, []).append(value)
        upgrade = [t for v in headers.get(b"upgrade", []) for t in _header_tokens(v)]
        connection = [t for v in headers.get(b"connection", []) for t in _header_tokens(v)]
        if "websocket" not in upgrade or "upgrade" not in connection:
            raise HandshakeRefused(
                426, "a WebSocket upgrade is required", ((b"upgrade", b"websocket"),)
            )
        if headers.get(b"sec-websocket-version") != [b"13"]:
            raise HandshakeRefused(
                426, "WebSocket version 13 is required", ((b"sec-websocket-version", b"13"),)
            )
        if b"content-length" in headers or b"transfer-encoding" in headers:
            raise HandshakeRefused(400, "an upgrade request has no body")
        keys = headers.get(b"sec-websocket-key", [])
        if len(keys) != 1 or len(_b64decode(keys[0])) != 16:
            raise HandshakeRefused(400, "invalid Sec-WebSocket-Key")
        self._key = keys[0]
        identity = parse_identity(request.target, self._path_prefix)
        # Subprotocol names are case-sensitive: answer with exactly what the charger offered.
        offered = tuple(
            t
            for v in headers.get(b"sec-websocket-protocol", [])
            for t in _header_tokens(v, lower=False)
        )
        auth = headers.get(b"authorization", [None])[0]
        agent = headers.get(b"user-agent", [b""])[0].decode("latin-1")[:200]
        return ChargerRequest(identity, offered, auth, agent)

    def accept(self, subprotocol: str | None) -> bytes:
        """The 101 answer, with `subprotocol` selected (None: no Sec-WebSocket-Protocol header)."""
        headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", generate_accept_token(self._key)),
        ]
        if subprotocol is not None:
            headers.append((b"sec-websocket-protocol", subprotocol.encode()))
        answer = h11.InformationalResponse(
            status_code=101, headers=headers, reason=b"Switching Protocols"
        )
        assert self._h11 is not None, "the handshake is over"
        data = self._h11.send(answer) or b""
        self._trailing, self._h11 = self._h11.trailing_data[0], None
        return data

    def refuse(self, refusal: HandshakeRefused) -> bytes:
        """An HTTP error answer with a short plain-text body; the connection closes after it."""
        body = refusal.reason.encode() + b"\n"
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *refusal.headers,
        ]
        if self._h11 is None or self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return b""
        try:
            phrase = HTTPStatus(refusal.status).phrase.encode()
            out = self._h11.send(
                h11.Response(status_code=refusal.status, headers=headers, reason=phrase)
            )
            if not self._head:
                out = (out or b"") + (self._h11.send(h11.Data(data=body)) or b"")
            return (out or b"") + (self._h11.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            return b""

    @property
    def trailing_data(self) -> bytes:
        return self._trailing if self._h11 is None else self._h11.trailing_data[0]


@dataclass(frozen=True)
class UpstreamAccepted:
    subprotocol: str | None


@dataclass(frozen=True)
class UpstreamRefused:
    """The upstream answered the upgrade with `status` (not 101), with the headers worth passing on."""

    status: int
    www_authenticate: bytes | None
    retry_after: bytes | None = None


class UpstreamProtocolError(Exception):
    """The upstream's answer was not a valid WebSocket handshake (the charger gets 502)."""


class UpstreamHandshake:
    """Client side of the upstream handshake: `request()` bytes out, answers in."""

    def __init__(
        self,
        host: str,
        port: int,
        target: str,
        subprotocols: list[str],
        authorization: bytes | None,
        max_header_size: int = 16 * 1024,
        extra_headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """`extra_headers`: further request headers (names the request has already are not
        allowed: the caller checks)."""
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_header_size)
        self._key = base64.b64encode(os.urandom(16))
        self._offered = subprotocols
        headers = [
            (b"host", _host_header(host, port)),
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-key", self._key),
            (b"sec-websocket-version", b"13"),
        ]
        if subprotocols:
            headers.append((b"sec-websocket-protocol", ", ".join(subprotocols).encode()))
        if authorization is not None:
            headers.append((b"authorization", authorization))
        headers.extend(extra_headers)
        self._request = h11.Request(method=b"GET", target=target.encode(), headers=headers)

    def request(self) -> bytes:
        return self._h11.send(self._request) or b""

    def receive_data(self, data: bytes) -> UpstreamAccepted | UpstreamRefused | None:
        """Feed bytes (b"" for EOF); None means more bytes are needed."""
        self._h11.receive_data(data)
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            raise UpstreamProtocolError(f"malformed answer: {exc}") from None
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            return self._check_accept(event)
        if isinstance(event, h11.Response):
            headers = dict(event.headers)
            return UpstreamRefused(
                event.status_code, headers.get(b"www-authenticate"), headers.get(b"retry-after")
            )
        raise UpstreamProtocolError(f"unexpected answer {type(event).__name__}")

    def _check_accept(self, event: h11.InformationalResponse) -> UpstreamAccepted:
        headers = dict(event.headers)
        if headers.get(b"sec-websocket-accept") != generate_accept_token(self._key):
            raise UpstreamProtocolError("wrong Sec-WebSocket-Accept")
        if b"sec-websocket-extensions" in headers:
            raise UpstreamProtocolError("upstream negotiated an extension we did not offer")
        chosen = headers.get(b"sec-websocket-protocol")
        if chosen is None:
            return UpstreamAccepted(None)
        subprotocol = chosen.decode("latin-1").strip()
        if subprotocol not in self._offered:
            raise UpstreamProtocolError(f"upstream chose unoffered subprotocol {subprotocol!r}")
        return UpstreamAccepted(subprotocol)

    @property
    def trailing_data(self) -> bytes:
        return self._h11.trailing_data[0]


def _host_header(host: str, port: int) -> bytes:
    """The Host header value: IPv6 literals in brackets, the port only when not the default."""
    name = f"[{host}]".encode() if ":" in host else host.encode("idna")
    return name if port in (80, 443) else name + b":%d" % port


def _b64decode(value: bytes) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return b""
