"""Property-based fuzzing of both opening handshakes (sans-IO, no sockets).

Hypothesis writes upgrade requests and upstream answers (valid ones, then mutated: odd
identities, duplicate and oversized headers, bad keys, huge Content-Length, random bytes),
splits them at random offsets and feeds them in. Whatever arrives, a handshake gives a result
or raises its documented exception (`HandshakeRefused` with one of the statuses it documents,
`UpstreamProtocolError`); it never holds more than `max_header_size` bytes while waiting for
the rest of a header; every request it accepts carries an identity OCPP allows; every refusal
can still be answered with a well-formed HTTP response.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import h11
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto.utilities import generate_accept_token

from proxy.wire.handshake import (
    ChargerHandshake,
    ChargerRequest,
    HandshakeRefused,
    UpstreamAccepted,
    UpstreamHandshake,
    UpstreamProtocolError,
    UpstreamRefused,
    parse_identity,
)
from proxy.wire.ocpp import MAX_IDENTITY_LENGTH

# Modest budgets keep this file at a few seconds; raise max_examples locally to explore.
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PREFIX = "/ocpp"
CHARGER_STATUSES = {400, 404, 405, 426, 431}  # as ChargerHandshake documents
HEADER_SIZES = [256, 1024, 16 * 1024, 16 * 1024]


# No '/' or ':' in an identity, nor a control, invisible format or line/paragraph separator character.
def unfit(identity: str) -> bool:
    return any(c in "/:" or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in identity)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c for c in cuts if 0 <= c <= len(data))})
    return [data[a:b] for a, b in zip(points, points[1:])] or [b""]


@st.composite
def chunked(draw: Any, data: bytes) -> list[bytes]:
    """`data` split at random offsets (byte by byte now and then), maybe followed by EOF."""
    if len(data) <= 300 and draw(st.integers(0, 9)) == 0:
        chunks = [data[i : i + 1] for i in range(len(data))]
    else:
        chunks = split(data, draw(st.lists(st.integers(0, len(data)), max_size=8)))
    if draw(st.booleans()):
        chunks.append(b"")  # EOF
    return chunks


def usually(good: list[Any], bad: list[Any]) -> st.SearchStrategy[Any]:
    """One of `good` nine times in ten, else one of `bad`: most inputs have at most one defect."""
    return st.sampled_from(good * 9 * max(1, len(bad)) + bad * len(good))


@st.composite
def mutated(draw: Any, data: bytes) -> bytes:
    """`data` with a few bytes inserted, deleted or flipped, or replaced by random bytes."""
    kind = draw(st.sampled_from(["none"] * 6 + ["bytes", "bytes", "bytes", "random"]))
    if kind == "none":
        return data
    if kind == "random":
        return draw(st.binary(max_size=200))
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(buffer)))
        action = draw(st.sampled_from(["insert", "delete", "flip"]))
        if action == "insert":
            token = draw(
                st.sampled_from([b"\r\n", b"\n", b"\r", b"\x00", b":", b" ", b"\t", b"\xff", b"%"])
                | st.binary(min_size=1, max_size=4)
            )
            buffer[position:position] = token
        elif action == "delete":
            del buffer[position : position + draw(st.integers(1, 4))]
        elif buffer:
            buffer[min(position, len(buffer) - 1)] ^= 1 << draw(st.integers(0, 7))
    return bytes(buffer)


# -------------------------------------------------------------------------- charger requests

ODD_IDENTITIES = [
    "CP-1",
    "x" * MAX_IDENTITY_LENGTH,
    "x" * (MAX_IDENTITY_LENGTH + 1),
    "é" * MAX_IDENTITY_LENGTH,
    "é" * (MAX_IDENTITY_LENGTH + 1),
    "%41" * MAX_IDENTITY_LENGTH,
    "%41" * (MAX_IDENTITY_LENGTH + 1),
    ".",
    "..",
    "%2e",
    "%2E%2E",
    "...",
    "a:b",
    "a%3Ab",
    "a%3ab",
    "%00",
    "a%00b",
    "%7F",
    "%0d%0a",
    "%",
    "a%",
    "%zz",
    "%4",
    "%FF",
    "%C0%AF",
    "%ED%A0%80",
    "%F4%90%80%80",
    "a%2Fb",
    "a/b",
    "a b",
    "a%20b",
    "%25",
    "%2525",
    "a?b=c",
    "a#b",
    "",
    "%E2%80%AE",
    "%C2%85",
    "a%E2%80%8Bb",
    "a%E2%80%A8b",
    "%EF%BB%BFa",
    "\x00",
    "a\tb",
]


@st.composite
def identities(draw: Any) -> str:
    """The identity part of the target, as written on the wire (maybe badly encoded)."""
    kind = draw(st.sampled_from(["plain"] * 4 + ["odd", "odd", "text", "ascii"]))
    if kind == "plain":
        return draw(st.from_regex(r"[A-Za-z0-9_.*-]{1,48}", fullmatch=True))
    if kind == "odd":
        return draw(st.sampled_from(ODD_IDENTITIES))
    if kind == "text":
        text = draw(st.text(max_size=60))
        return quote(
            text.encode("utf-8", "surrogatepass"),
            safe=draw(st.sampled_from(["", ":", "-._~", ":@!$&'()*+,;="])),
        )
    return draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60))


def b64_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@st.composite
def websocket_keys(draw: Any) -> list[str]:
    """Values of Sec-WebSocket-Key headers: usually one good key, sometimes bad or several."""
    good = b64_key(draw(st.binary(min_size=16, max_size=16)))
    bad = st.sampled_from(
        [
            b64_key(b"x" * 15),
            b64_key(b"x" * 17),
            good.rstrip("="),
            good + "=",
            good[:-4] + "!!!!",
            " " + good,
            "",
            "====",
            "dGhlIHNhbXBsZSBub25jZQ",
            good.replace("=", "%3D"),
            good + "\x00",
        ]
    )
    kind = draw(st.sampled_from(["good"] * 9 + ["bad", "none", "two"]))
    if kind == "good":
        return [good]
    if kind == "bad":
        return [draw(bad)]
    if kind == "none":
        return []
    return [good, draw(st.sampled_from([good]) | bad)]


@dataclass
class Request:
    identity: str  # as written in the target
    data: bytes
    well_formed: bool  # every part valid, nothing mutated: the handshake must accept it
    offered: tuple[str, ...] = ()
    authorization: bytes | None = None


@st.composite
def requests(draw: Any) -> Request:
    identity = draw(identities())
    method = draw(usually(["GET"], ["POST", "HEAD", "get", "CONNECT", "OPTIONS"]))
    version = draw(usually(["HTTP/1.1"], ["HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "HTTP/9.9"]))
    path = draw(usually([PREFIX], ["/other", "", "/ocpp/x", "/OCPP", "//ocpp"]))
    query = draw(st.sampled_from(["", "", "", "?a=b", "?", "?x=%3A"]))
    target = f"{path}/{identity}{query}"
    keys = draw(websocket_keys())
    offered = draw(
        st.lists(st.sampled_from(["ocpp1.6", "ocpp2.0.1", "OCPP2.1", "x", "ocpp2.0"]), max_size=3)
    )
    user = draw(st.sampled_from(["CP-1", "", "a:b"]))
    authorization = draw(st.sampled_from([None, f"Basic {b64_key(user.encode() + b':secret')}"]))
    headers: list[tuple[str, str]] = [
        ("Host", draw(st.sampled_from(["proxy", "proxy:8080", "[::1]", ""]))),
        (
            "Upgrade",
            draw(usually(["websocket", "WebSocket", "h2c, websocket"], ["", "h2c", "websocket2"])),
        ),
        (
            "Connection",
            draw(usually(["Upgrade", "keep-alive, Upgrade", "upgrade,,"], ["close", "keep-alive"])),
        ),
        *(("Sec-WebSocket-Key", key) for key in keys),
        ("Sec-WebSocket-Version", draw(usually(["13", " 13"], ["8", "13, 8", "013"]))),
    ]
    if offered:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(offered)))
    if authorization:
        headers.append(("Authorization", authorization))
    extras = (
        draw(
            st.lists(
                st.sampled_from(
                    [
                        ("Content-Length", "0"),
                        ("Content-Length", "9" * 40),
                        ("Content-Length", "-1"),
                        ("Content-Length", "1, 1"),
                        ("Transfer-Encoding", "chunked"),
                        ("Sec-WebSocket-Version", "13"),
                        ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits"),
                        ("User-Agent", "x" * 300),
                        ("X-Big", "y" * 600),
                        ("X-Huge", "z" * 20_000),
                        ("X-Nul", "a\x00b"),
                        ("Upgrade", "websocket"),
                        ("X-Empty", ""),
                        ("Authorization", "Basic Og=="),
                    ]
                ),
                max_size=3,
            )
        )
        if draw(st.integers(0, 3)) == 0
        else []
    )
    headers += extras
    headers = draw(st.permutations(headers))
    newline = draw(st.sampled_from(["\r\n"] * 4 + ["\n"]))
    head = (
        f"{method} {target} {version}{newline}"
        + "".join(f"{n}: {v}{newline}" for n, v in headers)
        + newline
    )
    data = head.encode("utf-8", "surrogatepass") + draw(
        st.sampled_from([b"", b"", b"\x81\x85abcd12345"])
    )
    mutated_data = draw(mutated(data))
    well_formed = mutated_data == data and acceptable(method, version, path, identity, headers)
    first_authorization = next((v for n, v in headers if n == "Authorization"), None)
    return Request(
        identity,
        mutated_data,
        well_formed,
        tuple(offered),
        first_authorization.encode() if first_authorization else None,
    )


def acceptable(
    method: str, version: str, path: str, identity: str, headers: list[tuple[str, str]]
) -> bool:
    """Whether a request with these parts must be accepted (judged independently of the code)."""
    if (method, version, path) != ("GET", "HTTP/1.1", PREFIX):
        return False
    if not re.fullmatch(r"[\x21-\x7e]*", identity) or "/" in identity or "?" in identity:
        return False
    try:
        decoded = unquote(identity, errors="strict")
    except UnicodeDecodeError:
        return False
    if not 0 < len(decoded) <= MAX_IDENTITY_LENGTH or unfit(decoded):
        return False
    if decoded in (".", ".."):
        return False
    values: dict[str, list[str]] = {}
    for name, value in headers:
        values.setdefault(name, []).append(value)
    tokens = lambda name: [t.strip().lower() for v in values.get(name, []) for t in v.split(",")]
    keys = values.get("Sec-WebSocket-Key", [])
    return (
        "websocket" in tokens("Upgrade")
        and "upgrade" in tokens("Connection")
        and [v.strip() for v in values.get("Sec-WebSocket-Version", [])] == ["13"]
        and "Content-Length" not in values
        and "Transfer-Encoding" not in values
        and len(keys) == 1
        and re.fullmatch(r"[A-Za-z0-9+/]{22}==", keys[0]) is not None
        and len(values.get("Host", [])) == 1
        and not any("\x00" in v for _, v in headers)
    )


def answer_event(answer: bytes) -> h11.Response | h11.InformationalResponse:
    """Parse a handshake answer as a client that sent an upgrade request would."""
    client = h11.Connection(h11.CLIENT)
    headers = [("host", "proxy"), ("upgrade", "websocket"), ("connection", "Upgrade")]
    client.send(h11.Request(method="GET", target="/", headers=headers))
    client.send(h11.EndOfMessage())
    client.receive_data(answer)
    event = client.next_event()
    assert isinstance(event, (h11.Response, h11.InformationalResponse)), event
    return event


def check_identity_rule(identity: str) -> None:
    assert 1 <= len(identity) <= MAX_IDENTITY_LENGTH
    assert not unfit(identity) and identity not in (".", "..")


def run_charger(
    chunks: list[bytes], max_header_size: int
) -> ChargerRequest | HandshakeRefused | None:
    """Feed `chunks` and check every step; the request, the refusal, or None if incomplete."""
    handshake = ChargerHandshake(PREFIX, max_header_size)
    fed = b""
    for chunk in chunks:
        fed += chunk
        try:
            request = handshake.receive_data(chunk)
        except HandshakeRefused as refusal:
            assert refusal.status in CHARGER_STATUSES and refusal.reason
            answer = handshake.refuse(refusal)
            if chunk or answer:  # after EOF the charger is gone: there may be nobody to answer
                event = answer_event(answer)
                assert isinstance(event, h11.Response) and event.status_code == refusal.status
                body = refusal.reason.encode() + b"\n"
                # The answer to a HEAD request has no body.
                assert answer.endswith(b"\r\n\r\n" + body) or (
                    fed.startswith(b"HEAD ") and answer.endswith(b"\r\n\r\n")
                )
            return refusal
        if request is None:
            # Nothing is held beyond the header limit while more bytes are awaited.
            assert len(handshake.trailing_data) <= max_header_size
            continue
        check_identity_rule(request.identity)
        # What follows the request came with the read that completed it.
        assert fed.endswith(handshake.trailing_data) and len(handshake.trailing_data) <= len(chunk)
        assert len(fed) - len(handshake.trailing_data) <= max_header_size
        assert all(
            token and token == token.strip() and "," not in token for token in request.offered
        )
        assert len(request.user_agent) <= 200
        trailing = handshake.trailing_data
        answer = handshake.accept(request.offered[0] if request.offered else None)
        event = answer_event(answer)
        assert isinstance(event, h11.InformationalResponse) and event.status_code == 101
        assert handshake.trailing_data == trailing
        assert handshake.refuse(HandshakeRefused(400, "too late")) == b""
        return request
    return None


@FUZZ
@given(st.data(), st.sampled_from(HEADER_SIZES))
def test_charger_requests_give_a_request_or_a_documented_refusal(
    data: st.DataObject, size: int
) -> None:
    request = data.draw(requests())
    chunks = data.draw(chunked(request.data))
    result = run_charger(chunks, size)
    head = request.data.split(b"\r\n\r\n" if b"\r\n\r\n" in request.data else b"\n\n", 1)[0]
    if request.well_formed and len(head) + 4 <= size:
        assert isinstance(result, ChargerRequest), result
        assert result.identity == unquote(request.identity)
        assert result.offered == request.offered
        assert result.authorization == request.authorization


@FUZZ
@given(st.data(), st.sampled_from(HEADER_SIZES))
def test_random_bytes_to_the_charger_side_are_refused_or_awaited(
    data: st.DataObject, size: int
) -> None:
    garbage = data.draw(
        st.binary(max_size=400) | st.binary(min_size=1, max_size=8).map(lambda b: b * 5000)
    )
    result = run_charger(data.draw(chunked(garbage)), size)
    assert result is None or isinstance(result, HandshakeRefused)


@FUZZ
@given(
    st.sampled_from(HEADER_SIZES),
    st.integers(1, 40_000),
    st.sampled_from([b"X-A: ", b"", b"GET /ocpp/"]),
    st.integers(1, 4096),
)
def test_an_endless_header_is_cut_off_at_the_limit(
    size: int, length: int, opening: bytes, read: int
) -> None:
    """A header that never ends is refused with 431 once it passes the limit, and until then
    the handshake holds at most the limit."""
    data = b"GET /ocpp/CP-1 HTTP/1.1\r\n" + opening + b"a" * length
    result = run_charger([data[i : i + read] for i in range(0, len(data), read)], size)
    if len(data) > size:
        assert isinstance(result, HandshakeRefused) and result.status in (400, 431)
    else:
        assert result is None


@FUZZ
@given(
    st.binary(max_size=120).map(lambda b: bytes(c for c in b if 0x21 <= c <= 0x7E)),
    st.sampled_from(["/ocpp", "/", "/ocpp/"]),
)
def test_parse_identity_gives_an_allowed_identity_or_refuses(target: bytes, prefix: str) -> None:
    try:
        identity = parse_identity(target, prefix)
    except HandshakeRefused as refusal:
        assert refusal.status in (400, 404)
        return
    check_identity_rule(identity)


# ------------------------------------------------------------------------- upstream answers

SUBPROTOCOLS = ["ocpp2.0.1", "ocpp1.6"]


@st.composite
def upstream_answers(draw: Any, key: bytes) -> tuple[bytes, str]:
    """An upstream's answer and what a correct handshake makes of it before any mutation:
    "accepted", "refused" or "error"."""
    accept = generate_accept_token(key).decode()
    status = draw(st.sampled_from([101] * 8 + [200, 401, 403, 404, 500, 502, 100, 301]))
    version = draw(usually(["HTTP/1.1"], ["HTTP/1.0"]))
    headers: list[tuple[str, str]] = []
    expected = "refused" if status >= 200 else "error"
    if status == 101:
        headers += [("Upgrade", "websocket"), ("Connection", "Upgrade")]
        accept_value = draw(usually([accept], ["", accept[:-1], accept.lower(), "x"]))
        if draw(st.integers(0, 9)):
            headers.append(("Sec-WebSocket-Accept", accept_value))
        chosen = draw(usually([None, *SUBPROTOCOLS, " ocpp1.6 "], ["ocpp2.1", "", "OCPP1.6"]))
        if chosen is not None:
            headers.append(("Sec-WebSocket-Protocol", chosen))
        extension = draw(st.integers(0, 9)) == 0
        if extension:
            headers.append(("Sec-WebSocket-Extensions", "permessage-deflate"))
        good = (
            accept_value == accept
            and ("Sec-WebSocket-Accept", accept_value) in headers
            and not extension
            and (chosen is None or chosen.strip() in SUBPROTOCOLS)
        )  # an HTTP/1.0 101 with the right token is taken as well: the token is the proof
        expected = "accepted" if good else "error"
    else:
        length = draw(st.sampled_from(["0", "5", "9" * 30]))
        headers.append(("Content-Length", length))
        if len(length) > 20:
            expected = "error"  # h11 refuses Content-Length of more than 20 digits
        if status == 401:
            headers.append(("WWW-Authenticate", 'Basic realm="ocpp"'))
    headers += (
        draw(
            st.lists(
                st.sampled_from(
                    [
                        ("X-Big", "y" * 600),
                        ("X-Huge", "z" * 20_000),
                        ("Sec-WebSocket-Accept", "duplicate"),
                        ("Content-Length", "-1"),
                        ("Server", "csms"),
                    ]
                ),
                max_size=2,
            )
        )
        if draw(st.integers(0, 3)) == 0
        else []
    )
    if any(v in ("duplicate", "-1") for _, v in headers) or any(
        n.startswith("X-") for n, _ in headers
    ):
        expected = "any"
    head = f"{version} {status} Reason\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    data = head.encode() + draw(st.sampled_from([b"", b"\x81\x02[]", b"hello"]))
    changed = draw(mutated(data))
    return changed, expected if changed == data else "any"


def upstream(size: int) -> tuple[UpstreamHandshake, bytes]:
    handshake = UpstreamHandshake(
        "csms.example", 443, "/ocpp/CP-1", SUBPROTOCOLS, b"Basic eDp5", size
    )
    request = handshake.request()
    key = re.search(rb"sec-websocket-key: ([^\r]+)\r\n", request, re.IGNORECASE)
    assert key is not None
    return handshake, key.group(1)


def run_upstream(
    handshake: UpstreamHandshake, chunks: list[bytes], size: int
) -> UpstreamAccepted | UpstreamRefused | UpstreamProtocolError | None:
    fed = b""
    for chunk in chunks:
        fed += chunk
        try:
            answer = handshake.receive_data(chunk)
        except UpstreamProtocolError as error:
            return error
        if answer is None:
            assert len(handshake.trailing_data) <= size
            continue
        assert fed.endswith(handshake.trailing_data) and len(handshake.trailing_data) <= len(chunk)
        if isinstance(answer, UpstreamAccepted):
            assert answer.subprotocol is None or answer.subprotocol in SUBPROTOCOLS
        else:
            assert isinstance(answer, UpstreamRefused) and 200 <= answer.status <= 999
            assert answer.www_authenticate is None or isinstance(answer.www_authenticate, bytes)
        return answer
    return None


@FUZZ
@given(st.data(), st.sampled_from(HEADER_SIZES))
def test_upstream_answers_give_a_verdict_or_a_protocol_error(
    data: st.DataObject, size: int
) -> None:
    handshake, key = upstream(size)
    answer, expected = data.draw(upstream_answers(key))
    chunks = data.draw(chunked(answer))
    result = run_upstream(handshake, chunks, size)
    head = answer.split(b"\r\n\r\n", 1)[0]
    if len(head) + 4 > size or expected == "any":
        return
    if b"" in chunks[:-1] or chunks == [b""]:
        return  # EOF before the whole answer
    kinds = {
        "accepted": UpstreamAccepted,
        "refused": UpstreamRefused,
        "error": UpstreamProtocolError,
    }
    assert isinstance(result, kinds[expected]), (expected, result)


@FUZZ
@given(st.data(), st.sampled_from(HEADER_SIZES))
def test_random_bytes_from_upstream_are_errors_or_awaited(data: st.DataObject, size: int) -> None:
    handshake, _ = upstream(size)
    garbage = data.draw(
        st.binary(max_size=400) | st.binary(min_size=1, max_size=8).map(lambda b: b * 5000)
    )
    result = run_upstream(handshake, data.draw(chunked(garbage)), size)
    assert not isinstance(result, UpstreamAccepted)
