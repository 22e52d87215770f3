"""A flood of wrong passwords does not lock out the managed chargers that know theirs.

Real sockets: the flood comes from other loopback addresses (127.0.0.0/8) than the chargers.
"""

from __future__ import annotations

import base64
import hashlib
import os

import trio

from proxy.routing.auth import basic_header, hash_generated_password, hash_password
from proxy.routing.registry.records import generate_password
from proxy.runtime.config import Config, ProxySettings, Route
from testkit.in_process_proxy import metric, start_proxy

HASH = hash_password("right")
FLOOD = 450


def slow_hash(password: str) -> str:
    """A hash 4× as costly as the default (scrypt N = 2^16): a flood then keeps both hashing
    threads busy for long stretches, as a loaded machine would."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=1 << 16, r=8, p=1, dklen=32, maxmem=256 << 20
    )
    return f"scrypt$16$8$1${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


async def attempt(port: int, identity: str, password: str, source: str) -> bytes:
    """The status line the proxy answers an upgrade with `password` for `identity` from `source`."""
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=source)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        authorization = basic_header(identity, password).decode()
        await stream.send_all(
            f"GET /ocpp/{identity} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n"
            f"Authorization: {authorization}\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n" not in head:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            head += chunk
        return head.split(b"\r\n")[0]
    finally:
        await trio.aclose_forcefully(stream)


def config(upstream_port: int, password_hash: str = HASH) -> Config:
    # A short handshake timeout: a charger still queued behind the flood after it is refused (503).
    proxy = ProxySettings(host="127.0.0.1", port=0, handshake_timeout=5.0)
    route = Route(
        upstream=f"ws://127.0.0.1:{upstream_port}/ocpp", auth="managed", password_hash=password_hash
    )
    return Config(proxy=proxy, default_route=route)


async def known_charger(handle) -> None:
    """CP-known connects once; then its cached success is dropped (as after the cache's bound), so
    its next attempt must be hashed again: behind the flood, or in the lane of recent successes."""
    assert (
        await attempt(handle.port, "CP-known", "right", "127.0.0.1")
        == b"HTTP/1.1 101 Switching Protocols"
    )
    handle.server.admission.passwords.cache = type(handle.server.admission.passwords.cache)()


async def flood_while(handle, sources: list[str], legitimate) -> tuple[list[bytes], bytes]:
    """`FLOOD` attackers guessing passwords over and over from `sources`; once the first is
    answered (all have sent their guess: the flood is at its height), `legitimate()`."""
    answers: list[bytes] = []
    first = trio.Event()

    async def guess(index: int) -> None:
        source = sources[index % len(sources)]
        while True:
            answers.append(
                await attempt(handle.port, f"CP-guess-{index}", f"wrong-{len(answers)}", source)
            )
            first.set()

    async with trio.open_nursery() as nursery:
        for index in range(FLOOD):
            nursery.start_soon(guess, index)
        await first.wait()
        legitimate_answer = await legitimate()
        nursery.cancel_scope.cancel()
    return answers, legitimate_answer


async def test_a_flood_from_one_address_is_cut_by_its_budget(nursery, upstream):
    handle = await start_proxy(nursery, config(upstream.port))
    await known_charger(handle)
    answers, legitimate = await flood_while(
        handle, ["127.0.0.2"], lambda: attempt(handle.port, "CP-known", "right", "127.0.0.1")
    )
    assert legitimate == b"HTTP/1.1 101 Switching Protocols"
    assert not [
        a for a in answers if not a.startswith((b"HTTP/1.1 401", b"HTTP/1.1 429", b"HTTP/1.1 503"))
    ]
    # The address's budget (20 failures, then 10 a minute) and its line (4 at once): no more hashes
    # than that for the whole flood; the rest refused without hashing.
    assert (
        metric(handle, "ere_proxy_password_checks_total", verdict="wrong", hashed="yes")
        <= 20 + 4 + 1
    )
    refused = sum(
        metric(handle, "ere_proxy_handshakes_total", outcome=o) for o in ("rate_limited", "busy")
    )
    assert refused >= len(answers) - 25


async def test_a_flood_from_many_addresses_is_refused_early_and_a_known_charger_goes_first(
    nursery, upstream
):
    handle = await start_proxy(nursery, config(upstream.port, slow_hash("right")))
    await known_charger(handle)
    sources = [
        f"127.0.{k}.{j}" for k in range(1, 16) for j in range(2, 12)
    ]  # 150 addresses, 3 attackers each
    answers, legitimate = await flood_while(
        handle, sources, lambda: attempt(handle.port, "CP-known", "right", "127.0.0.1")
    )
    assert legitimate == b"HTTP/1.1 101 Switching Protocols"
    assert not [
        a for a in answers if not a.startswith((b"HTTP/1.1 401", b"HTTP/1.1 429", b"HTTP/1.1 503"))
    ]


async def test_a_charger_with_a_generated_password_gets_in_at_once_during_a_flood(
    nursery, upstream
):
    """The flood keeps the hashing threads busy with scrypt (the default route); a charger the
    registry gave a generated password (a fast hash) is checked at once, on its first attempt
    (no recent success, no priority), instead of waiting behind the flood."""
    password = generate_password()
    settings = config(upstream.port, slow_hash("right"))
    own = Route(
        upstream=f"ws://127.0.0.1:{upstream.port}/ocpp",
        auth="managed",
        password_hash=hash_generated_password(password),
    )
    settings = Config(
        proxy=settings.proxy, default_route=settings.default_route, chargers={"CP-new": own}
    )
    handle = await start_proxy(nursery, settings)
    sources = [f"127.0.{k}.{j}" for k in range(1, 16) for j in range(2, 12)]
    waits_before = []

    async def new_charger() -> bytes:
        waits_before.append(handle.server.admission.passwords.queue.waiting)
        return await attempt(handle.port, "CP-new", password, "127.0.0.1")

    _, legitimate = await flood_while(handle, sources, new_charger)
    assert legitimate == b"HTTP/1.1 101 Switching Protocols"
    assert waits_before[0] > 0  # it came while the flood had hashes waiting
    assert metric(handle, "ere_proxy_password_checks_total", verdict="admitted", hashed="no") == 1
