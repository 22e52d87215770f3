"""The hostile suite: every attack class against one proxy process, with healthy chargers alongside.

One proxy process (capture and the outbox on, its PostgreSQL, its store process) serves, for the
whole module, two healthy chargers (the mobilityhouse `ocpp` ChargePoint over `websockets`, 1.6
and 2.0.1) that keep calling their back-office (the same `ocpp` package, as CSMS) all along. Each
attack class runs against that process; after each one the attack's own expectation holds (the
status line, the close code, what reached the back-office, what was stored), the healthy
chargers saw no error and were answered meanwhile, and the process is the same one. At the end,
no session event was lost (each was stored or kept as a dead letter) and the log holds no
traceback.

Routes: the default one (passthrough) leads to the healthy back-office; `MANAGED-*` chargers are
managed (a password); `DOWN-*` lead to a port nobody listens on; `VICTIM-1` to a back-office the
attack stops (a fake one speaking WebSocket); `VERDICT-*` to one answering every upgrade with 500.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socketserver
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201

from proxy.routing.auth import basic_header, hash_password
from proxy.wire.codec import CLOSE, PONG, TEXT
from testkit.engines import with_engine
from testkit.fake_csms import FakeCsms
from testkit.ocpp_peers import Charger16, Charger201, CsmsThread, open_charger, timestamp
from testkit.ports import free_port
from testkit.postgres import create_database, make_data_dir, start_database
from testkit.proxy_process import CONFIG, ProxyProcess, log_problems, metric, spawn_proxy
from testkit.raw_charger import RawCharger, frame

pytestmark = pytest.mark.slow

PASSWORD = "managed-password"
WAIT = 15.0  # bound on any one step of an attack
# What the proxy logs at error level because an attack made it (a refused event, say).
# A StartTransaction the back-office crashes on is queued when the crash drops the connection, and
# parked in doubt when the replay crashes it again: "outbox entry dead-lettered".
EXPECTED_ERRORS = ("outbox entry dead-lettered", "dead letter", "refused by the database")


# -- the arena: one proxy process and its peers for the module --------------------------------------


class _Verdict500(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(65536)
        self.request.sendall(
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )


@dataclass
class Arena:
    proxy: ProxyProcess
    dsn: str
    victim_port: int
    healthy: Healthy

    def auth(self, identity: str, password: str = PASSWORD) -> str:
        return f"Authorization: {basic_header(identity, password).decode()}\r\n"

    async def sql(self, query: str, *args: Any) -> list[Any]:
        async def run() -> list[Any]:
            conn = await asyncpg.connect(self.dsn)
            try:
                return await conn.fetch(query, *args)
            finally:
                await conn.close()

        return await trio.to_thread.run_sync(asyncio.run, run())


def proxy_config(
    port: int,
    admin_port: int,
    upstream_port: int,
    data_dir: Path,
    dsn: str,
    down: int,
    victim: int,
    verdict: int,
) -> str:
    text = with_engine(
        CONFIG.replace("[capture]\nenabled = false\n", "[capture]\nenabled = true\n")
    )
    text = text.replace(
        "[outbox]\nenabled = false\n",
        "[outbox]\nenabled = true\nredial_min = 0.2\nredial_max = 1.0\n",
    )
    text = text.replace(
        'path_prefix = "/ocpp"\n', 'path_prefix = "/ocpp"\nhandshake_timeout = 1.0\n'
    )
    text = text.format(port=port, admin_port=admin_port, upstream_port=upstream_port)
    password_hash = hash_password(PASSWORD)
    for index in range(1, 4):
        text += (
            f'\n[chargers."MANAGED-{index}"]\nupstream = "ws://127.0.0.1:{upstream_port}/ocpp"\n'
            f'auth = "managed"\npassword_hash = "{password_hash}"\n'
        )
        text += f'\n[chargers."DOWN-{index}"]\nupstream = "ws://127.0.0.1:{down}/ocpp"\n'
    text += f'\n[chargers."VICTIM-1"]\nupstream = "ws://127.0.0.1:{victim}/ocpp"\n'
    text += f'\n[chargers."VERDICT-1"]\nupstream = "ws://127.0.0.1:{verdict}/ocpp"\n'
    return text + f'\n[database]\ndsn = "{dsn}"\ndata_dir = "{data_dir / "proxy"}"\n'


@pytest.fixture(scope="module")
def arena(tmp_path_factory: pytest.TempPathFactory, each_engine_per_module: str) -> Iterator[Arena]:
    directory = tmp_path_factory.mktemp("hostile")
    data_dir = make_data_dir("ere-hostile-")
    database = start_database(data_dir)
    verdict = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Verdict500)
    threading.Thread(target=verdict.serve_forever, daemon=True).start()
    try:
        dsn = create_database(database)
        with CsmsThread(free_port()) as csms:
            port, admin_port, victim_port = free_port(), free_port(), free_port()
            config = directory / "proxy.toml"
            config.write_text(
                proxy_config(
                    port,
                    admin_port,
                    csms.port,
                    data_dir,
                    dsn,
                    free_port(),
                    victim_port,
                    verdict.server_address[1],
                )
            )
            proxy = spawn_proxy(config, directory / "proxy.stderr", (port, admin_port, csms.port))
            try:
                with Healthy(proxy) as healthy:
                    yield Arena(proxy, dsn, victim_port, healthy)
            finally:
                status = proxy.terminate()
            assert status == 0, proxy.stderr()
            problems = [
                line
                for line in log_problems(proxy.stderr())
                if not any(e in line for e in EXPECTED_ERRORS)
            ]
            assert problems == []
    finally:
        verdict.shutdown()
        verdict.server_close()
        database.close()
        shutil.rmtree(data_dir, ignore_errors=True)


# -- the healthy chargers ---------------------------------------------------------------------------


@dataclass
class Healthy:
    """Two `ocpp` chargers (1.6 and 2.0.1) calling all along in a thread; `check` asserts they are well."""

    proxy: ProxyProcess
    calls: int = 0
    errors: list[str] = field(default_factory=list)
    _seen: int = 0

    def __enter__(self) -> Healthy:
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            self.stop = asyncio.Event()
            self.loop.call_soon(ready.set)
            try:
                self.loop.run_until_complete(self._both())
            except Exception as exc:  # reported by `check`
                self.errors.append(f"healthy chargers ended: {exc!r}")

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(WAIT)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self._thread.join(WAIT)

    async def _both(self) -> None:
        await asyncio.gather(self._charger16(), self._charger201())

    def _answered(self, what: str, answer: Any) -> None:
        if answer is None:
            self.errors.append(f"{what}: no answer (a CALLERROR or a timeout)")
        self.calls += 1

    async def _charger16(self) -> None:
        async with open_charger(
            self.proxy.url("HEALTHY-16"), ["ocpp1.6"], Charger16, "HEALTHY-16"
        ) as peer:
            cp = peer.cp
            self._answered(
                "boot",
                await cp.call(
                    call16.BootNotification(charge_point_vendor="V", charge_point_model="M")
                ),
            )
            reading = 1000
            while not self.stop.is_set():
                reading += 10
                self._answered("heartbeat", await cp.call(call16.Heartbeat()))
                value = [{"timestamp": timestamp(), "sampledValue": [{"value": str(reading)}]}]
                self._answered(
                    "meter values",
                    await cp.call(call16.MeterValues(connector_id=1, meter_value=value)),
                )
                await asyncio.sleep(0.05)

    async def _charger201(self) -> None:
        async with open_charger(
            self.proxy.url("HEALTHY-201"), ["ocpp2.0.1"], Charger201, "HEALTHY-201"
        ) as peer:
            cp = peer.cp
            station = {"model": "M", "vendor_name": "V"}
            self._answered(
                "boot",
                await cp.call(call201.BootNotification(charging_station=station, reason="PowerUp")),
            )
            while not self.stop.is_set():
                self._answered("heartbeat", await cp.call(call201.Heartbeat()))
                await asyncio.sleep(0.05)

    async def check(self) -> None:
        """No error so far, and both chargers were answered again since the last check."""
        with trio.fail_after(WAIT):
            while self.calls < self._seen + 4 and not self.errors:
                await trio.sleep(0.02)
        assert self.errors == []
        self._seen = self.calls


# -- raw chargers ---------------------------------------------------------------------------------


async def raw(
    arena: Arena,
    identity: str,
    extra: str = "",
    protocols: str = "ocpp1.6",
    source: str | None = None,
) -> tuple[bytes, RawCharger]:
    """A raw charger's upgrade: (status line and headers, the charger)."""
    stream = await trio.open_tcp_stream("127.0.0.1", arena.proxy.port, local_address=source)
    charger = RawCharger(stream)
    with trio.fail_after(WAIT):
        return await charger.upgrade(identity, extra, protocols), charger


async def status_of(arena: Arena, request: bytes) -> bytes:
    """The status line the proxy answers raw `request` bytes with."""
    stream = await trio.open_tcp_stream("127.0.0.1", arena.proxy.port)
    async with stream:
        try:
            await stream.send_all(request)
        except trio.BrokenResourceError:
            pass
        with trio.fail_after(WAIT):
            answer = b""
            while b"\r\n" not in answer and (chunk := await stream.receive_some(65536)):
                answer += chunk
    return answer.split(b"\r\n")[0]


async def next_text(charger: RawCharger) -> list[Any]:
    """The next OCPP message the proxy sends the raw charger (control frames are skipped)."""
    with trio.fail_after(WAIT):
        while True:
            for message in charger.reader.feed(charger.buffer):
                if message.opcode == TEXT:
                    charger.buffer = b""
                    return json.loads(message.data)
                if message.opcode == CLOSE:
                    raise AssertionError(f"closed with {message.close_code}")
            charger.buffer = await charger.stream.receive_some(65536)
            if not charger.buffer:
                raise AssertionError("the proxy hung up")


async def close_code(charger: RawCharger) -> int | None:
    """The close code the proxy ends the raw charger's connection with."""
    with trio.fail_after(WAIT):
        messages = await charger.messages_until_close(reply_to_close=True)
    closes = [m for m in messages if m.opcode == CLOSE]
    return closes[-1].close_code if closes else None


async def answered(
    arena: Arena, payload: bytes, action: str, version: str = "ocpp1.6", identity: str = "HOSTILE-1"
) -> list[Any]:
    """Send one CALL with a hostile `payload` (raw JSON text) over a fresh connection; its answer.

    The proxy forwards it unchanged, so the back-office answers it (often a CALLERROR: the payload
    breaks its schema); what matters is that the proxy and the other chargers go on.
    """
    head, charger = await raw(arena, identity, protocols=version)
    try:
        assert head.startswith(b"HTTP/1.1 101"), head
        await charger.send(frame(1, b'[2,"hostile","' + action.encode() + b'",' + payload + b"]"))
        answer = await next_text(charger)
        assert answer[:2] in ([3, "hostile"], [4, "hostile"]), answer
        return answer
    finally:
        await charger.aclose()


# -- the attack classes ----------------------------------------------------------------------------

ATTACKS: dict[str, Callable[[Arena], Awaitable[None]]] = {}


def attack(function: Callable[[Arena], Awaitable[None]]) -> Callable[[Arena], Awaitable[None]]:
    ATTACKS[function.__name__.replace("_", " ")] = function
    return function


UPGRADE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: ocpp1.6\r\n"
)


# The handshake.


@attack
async def tls_hello_on_the_plain_port(arena: Arena) -> None:
    assert (
        await status_of(arena, b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n")
        == b"HTTP/1.1 400 Bad Request"
    )


@attack
async def oversized_headers(arena: Arena) -> None:
    request = b"GET /ocpp/CP-big HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 64 * 1024 + b"\r\n\r\n"
    assert await status_of(arena, request) == b"HTTP/1.1 431 Request Header Fields Too Large"


@attack
async def slowloris(arena: Arena) -> None:
    assert (
        await status_of(arena, b"GET /ocpp/CP-slow HTTP/1.1\r\nHost: x\r\n")
        == b"HTTP/1.1 408 Request Timeout"
    )


@attack
async def a_bad_websocket_key(arena: Arena) -> None:
    request = (
        b"GET /ocpp/CP-key HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n"
    )
    assert await status_of(arena, request) == b"HTTP/1.1 400 Bad Request"


@attack
async def another_websocket_version(arena: Arena) -> None:
    request = UPGRADE.replace(b"Version: 13", b"Version: 8")
    assert (
        await status_of(arena, b"GET /ocpp/CP-v8 HTTP/1.1\r\nHost: x\r\n" + request + b"\r\n")
    ).startswith(b"HTTP/1.1 426")


@attack
async def a_method_other_than_get(arena: Arena) -> None:
    for method in (b"POST", b"HEAD", b"DELETE"):
        request = (
            method + b" /ocpp/CP-m HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"content-length: 0\r\n\r\n"
        )
        assert (await status_of(arena, request)).startswith(b"HTTP/1.1 405"), method


@attack
async def identities_that_break_the_ocpp_rule(arena: Arena) -> None:
    for identity in ("X" * 49, "CP%3A1", "CP%001", "", "%C3%28", ".."):
        request = (
            b"GET /ocpp/" + identity.encode() + b" HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"\r\n"
        )
        assert (await status_of(arena, request)).startswith((b"HTTP/1.1 400", b"HTTP/1.1 404")), (
            identity
        )


@attack
async def only_unsupported_subprotocols(arena: Arena) -> None:
    head, charger = await raw(arena, "CP-proto", protocols="ocpp1.2, soap")
    try:
        assert head.startswith(b"HTTP/1.1 101") and b"sec-websocket-protocol" not in head.lower()
        assert await close_code(charger) == 1002
    finally:
        await charger.aclose()


# Frames.


async def _bad_frame(arena: Arena, identity: str, data: bytes, code: int) -> None:
    head, charger = await raw(arena, identity)
    try:
        assert head.startswith(b"HTTP/1.1 101")
        await charger.send(frame(1, b'[2,"ok","Heartbeat",{}]'))
        assert (await next_text(charger))[:2] == [3, "ok"]
        await charger.send(data)
        assert await close_code(charger) == code
    finally:
        await charger.aclose()


@attack
async def an_unmasked_frame(arena: Arena) -> None:
    await _bad_frame(arena, "CP-unmasked", frame(1, b'[2,"1","Heartbeat",{}]', mask=False), 1002)


@attack
async def reserved_bits(arena: Arena) -> None:
    await _bad_frame(arena, "CP-rsv", bytes([0x81 | 0x40]) + frame(1, b"{}")[1:], 1002)


@attack
async def an_unknown_opcode(arena: Arena) -> None:
    await _bad_frame(arena, "CP-opcode", bytes([0x83]) + frame(1, b"{}")[1:], 1002)


@attack
async def a_frame_of_two_to_the_62_bytes(arena: Arena) -> None:
    await _bad_frame(
        arena, "CP-huge", bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 62) + b"mask", 1009
    )


@attack
async def a_message_over_the_size_limit(arena: Arena) -> None:
    await _bad_frame(
        arena,
        "CP-big-message",
        frame(1, b'[2,"1","DataTransfer",{"data":"' + b"x" * (1 << 21) + b'"}]'),
        1009,
    )


@attack
async def invalid_utf8(arena: Arena) -> None:
    await _bad_frame(arena, "CP-utf8", frame(1, b'[2,"1","\xff\xfe",{}]'), 1007)


@attack
async def a_fragmented_ping(arena: Arena) -> None:
    await _bad_frame(arena, "CP-fragping", bytes([0x09, 0x80]) + b"mask", 1002)


@attack
async def a_ping_flood(arena: Arena) -> None:
    head, charger = await raw(arena, "CP-pings")
    try:
        assert head.startswith(b"HTTP/1.1 101")
        await charger.send(b"".join(frame(9, b"%d" % i) for i in range(500)))
        pongs = 0
        with trio.fail_after(WAIT):
            while pongs < 500:
                data = await charger.stream.receive_some(65536)
                assert data
                pongs += sum(m.opcode == PONG for m in charger.reader.feed(data))
        await charger.send(frame(1, b'[2,"after","Heartbeat",{}]'))
        assert (await next_text(charger))[:2] == [3, "after"]
    finally:
        await charger.aclose()


@attack
async def vanishing_mid_frame(arena: Arena) -> None:
    head, charger = await raw(arena, "CP-vanish")
    assert head.startswith(b"HTTP/1.1 101")
    await charger.send(frame(1, b'[2,"1","Heartbeat",{}]')[:7])
    await charger.aclose()


@attack
async def ids_and_answers_that_match_nothing(arena: Arena) -> None:
    head, charger = await raw(arena, "CP-ids")
    try:
        assert head.startswith(b"HTTP/1.1 101")
        await charger.send(frame(1, b'[3,"never-asked",{}]') + frame(1, b'[4,"nope","X","y",{}]'))
        long_id = b"i" * 300
        await charger.send(frame(1, b'[2,"' + long_id + b'","Heartbeat",{}]'))
        assert (await next_text(charger))[1] == long_id.decode()
        for _ in range(3):  # the same id again and again
            await charger.send(frame(1, b'[2,"dup","NoSuchAction",{}]'))
            assert (await next_text(charger))[:2] in ([3, "dup"], [4, "dup"])
    finally:
        await charger.aclose()


# Identity spoofing, in every way a charger is admitted.


@attack
async def no_credentials_while_the_back_office_is_down(arena: Arena) -> None:
    head, charger = await raw(arena, "DOWN-1")
    await charger.aclose()
    assert head.startswith(b"HTTP/1.1 503") and b"retry-after" in head.lower()


@attack
async def made_up_credentials_while_the_back_office_is_down(arena: Arena) -> None:
    for authorization in (
        arena.auth("DOWN-2", "guess"),
        "Authorization: Bearer token\r\n",
        "Authorization: Basic !!!\r\n",
    ):
        head, charger = await raw(arena, "DOWN-2", authorization)
        await charger.aclose()
        assert head.startswith(b"HTTP/1.1 503"), authorization


@attack
async def taking_over_a_live_charger_during_its_outage(arena: Arena) -> None:
    back_office = FakeCsms(port=arena.victim_port)
    async with trio.open_nursery() as nursery:
        await nursery.start(back_office.serve)
        head, victim = await raw(arena, "VICTIM-1", arena.auth("VICTIM-1", "the-real-one"))
        try:
            assert head.startswith(b"HTTP/1.1 101")
            await victim.send(frame(1, b'[2,"h1","Heartbeat",{}]'))
            assert (await next_text(victim))[:2] == [3, "h1"]
            await back_office.stop()  # the outage: the victim stays, answered by the proxy
            await victim.send(frame(1, b'[2,"h2","Heartbeat",{}]'))
            assert (await next_text(victim))[:2] == [3, "h2"]
            for authorization in (
                "",
                arena.auth("VICTIM-1", "a-guess"),
                arena.auth("VICTIM-2", "the-real-one"),
            ):
                head, thief = await raw(arena, "VICTIM-1", authorization)
                await thief.aclose()
                assert head.startswith(b"HTTP/1.1 503"), authorization
            status = b'{"connectorId":1,"status":"Available","errorCode":"NoError"}'
            await victim.send(frame(1, b'[2,"s","StatusNotification",' + status + b"]"))
            assert (await next_text(victim))[:2] == [3, "s"]  # still the victim's connection
        finally:
            await victim.aclose()
        nursery.cancel_scope.cancel()
    rows = await arena.sql("SELECT proof FROM outbox_entries WHERE identity = 'VICTIM-1'")
    assert rows and {row["proof"] for row in rows} == {"upstream"}


@attack
async def a_wrong_managed_password(arena: Arena) -> None:
    head, charger = await raw(arena, "MANAGED-1", arena.auth("MANAGED-1", "wrong"))
    await charger.aclose()
    assert head.startswith(b"HTTP/1.1 401")


@attack
async def another_identity_in_the_basic_header(arena: Arena) -> None:
    head, charger = await raw(
        arena, "MANAGED-2", arena.auth("MANAGED-3")
    )  # MANAGED-3's own password
    await charger.aclose()
    assert head.startswith(b"HTTP/1.1 401")


@attack
async def a_password_flood(arena: Arena) -> None:
    head, charger = await raw(arena, "MANAGED-3", arena.auth("MANAGED-3"))
    await charger.aclose()
    assert head.startswith(b"HTTP/1.1 101")  # a charger that knows its password, once
    answers: list[bytes] = []
    started = trio.Event()

    async def guess(index: int) -> None:
        head, charger = await raw(
            arena, "MANAGED-2", arena.auth("MANAGED-2", f"guess-{index}"), source="127.0.0.3"
        )
        await charger.aclose()
        answers.append(head.split(b"\r\n")[0])
        started.set()

    async with trio.open_nursery() as nursery:
        for index in range(300):
            nursery.start_soon(guess, index)
        await started.wait()
        head, charger = await raw(arena, "MANAGED-3", arena.auth("MANAGED-3"))  # again, mid-flood
        await charger.aclose()
        assert head.startswith(b"HTTP/1.1 101")
    assert {a[:12] for a in answers} <= {b"HTTP/1.1 401", b"HTTP/1.1 429", b"HTTP/1.1 503"}


@attack
async def a_back_office_verdict(arena: Arena) -> None:
    head, charger = await raw(arena, "VERDICT-1")
    await charger.aclose()
    assert head.startswith(b"HTTP/1.1 500")  # its answer, passed back: no offline admission


# Payloads the session tracker reads: 1.6 and 2.0.1, every tracked action.

HUGE = b"1" + b"0" * 400  # a JSON integer far beyond 64 bits
HUGE_FLOAT = b"1e400"


@attack
async def a_huge_multiplier_in_201_meter_values(arena: Arena) -> None:
    value = b'{"value":1,"unitOfMeasure":{"unit":"Wh","multiplier":100000000000000000000}}'
    payload = (
        b'{"evseId":1,"meterValue":[{"timestamp":"2026-12-01T10:00:00Z","sampledValue":['
        + value
        + b"]}]}"
    )
    await answered(arena, payload, "MeterValues", "ocpp2.0.1")


@attack
async def huge_numbers_in_every_16_action(arena: Arena) -> None:
    for action, payload in (
        (
            "StartTransaction",
            b'{"connectorId":'
            + HUGE
            + b',"idTag":"T","meterStart":'
            + HUGE_FLOAT
            + b',"timestamp":"2026-12-01T10:00:00Z","reservationId":'
            + HUGE
            + b"}",
        ),
        (
            "StopTransaction",
            b'{"transactionId":' + HUGE + b',"meterStop":' + HUGE + b',"timestamp":"x"}',
        ),
        (
            "MeterValues",
            b'{"connectorId":1,"transactionId":' + HUGE + b',"meterValue":[{"timestamp":"x",'
            b'"sampledValue":[{"value":"' + HUGE + b'"}]}]}',
        ),
        (
            "StatusNotification",
            b'{"connectorId":' + HUGE + b',"status":"Available","errorCode":"NoError"}',
        ),
        (
            "BootNotification",
            b'{"chargePointVendor":"V","chargePointModel":"M","meterSerialNumber":' + HUGE + b"}",
        ),
    ):
        await answered(arena, payload, action)


@attack
async def huge_numbers_in_every_201_action(arena: Arena) -> None:
    event = (
        b'{"eventType":"Started","timestamp":"2026-12-01T10:00:00Z","triggerReason":"Authorized","seqNo":'
        + HUGE
        + b',"transactionInfo":{"transactionId":"T1","remoteStartId":'
        + HUGE
        + b'},"evse":{"id":'
        + HUGE
        + b',"connectorId":'
        + HUGE
        + b'},"meterValue":[{"timestamp":"2026-12-01T10:00:00Z",'
        b'"sampledValue":[{"value":' + HUGE_FLOAT + b"}]}]}"
    )
    await answered(arena, event, "TransactionEvent", "ocpp2.0.1")
    await answered(
        arena,
        b'{"timestamp":"x","connectorStatus":"Available","evseId":' + HUGE + b',"connectorId":1}',
        "StatusNotification",
        "ocpp2.0.1",
    )


@attack
async def nul_in_every_string(arena: Arena) -> None:
    nul = b'"a\\u0000b"'
    for action, payload in (
        (
            "BootNotification",
            b'{"chargePointVendor":'
            + nul
            + b',"chargePointModel":'
            + nul
            + b',"meterType":'
            + nul
            + b',"meterSerialNumber":'
            + nul
            + b"}",
        ),
        (
            "StartTransaction",
            b'{"connectorId":1,"idTag":' + nul + b',"meterStart":0,"timestamp":' + nul + b"}",
        ),
        ("StatusNotification", b'{"connectorId":1,"status":' + nul + b',"errorCode":' + nul + b"}"),
        (
            "MeterValues",
            b'{"connectorId":1,"meterValue":[{"timestamp":'
            + nul
            + b',"sampledValue":[{"value":"1",'
            b'"measurand":' + nul + b',"unit":' + nul + b"}]}]}",
        ),
        (
            "StopTransaction",
            b'{"transactionId":1,"meterStop":5,"timestamp":' + nul + b',"idTag":' + nul + b"}",
        ),
    ):
        await answered(arena, payload, action)
    await answered(
        arena,
        b'{"eventType":"Started","timestamp":' + nul + b',"triggerReason":' + nul + b',"seqNo":0,'
        b'"transactionInfo":{"transactionId":'
        + nul
        + b'},"idToken":{"idToken":'
        + nul
        + b',"type":"x"}}',
        "TransactionEvent",
        "ocpp2.0.1",
    )


@attack
async def json_nested_very_deep(arena: Arena) -> None:
    # The back-office (Python's json module) gives up on these and drops the connection (1011):
    # to the proxy an outage, so it serves the charger itself from then on. Too deep to be read as
    # OCPP-J, the message itself gets no answer; the connection goes on.
    deep = b"[" * 50_000 + b"]" * 50_000
    for payload, action, version in (
        (b'{"connectorId":1,"meterValue":' + deep + b"}", "MeterValues", "ocpp1.6"),
        (
            b'{"chargingStation":' + b'{"a":' * 20_000 + b"1" + b"}" * 20_000 + b"}",
            "BootNotification",
            "ocpp2.0.1",
        ),
    ):
        head, charger = await raw(arena, "HOSTILE-deep", protocols=version)
        try:
            assert head.startswith(b"HTTP/1.1 101")
            await charger.send(frame(1, b'[2,"deep","' + action.encode() + b'",' + payload + b"]"))
            await charger.send(frame(1, b'[2,"after","Heartbeat",{}]'))
            answer = await next_text(charger)
            if answer[1] == "deep":  # answered after all (a back-office that could read it)
                answer = await next_text(charger)
            assert answer[:2] == [3, "after"]
        finally:
            await charger.aclose()


@attack
async def strings_of_almost_a_megabyte(arena: Arena) -> None:
    big = b'"' + b"x" * 900_000 + b'"'
    await answered(
        arena,
        b'{"connectorId":1,"idTag":' + big + b',"meterStart":0,"timestamp":"2026-12-01T10:00:00Z"}',
        "StartTransaction",
    )


@attack
async def wrong_types_in_every_tracked_action(arena: Arena) -> None:
    for action in (
        "BootNotification",
        "StartTransaction",
        "StopTransaction",
        "MeterValues",
        "StatusNotification",
    ):
        for payload in (
            b"[]",
            b'"text"',
            b"null",
            b'{"connectorId":"one","meterValue":{},"transactionId":[1]}',
        ):
            await answered(arena, payload, action)
    for action in ("BootNotification", "TransactionEvent", "MeterValues", "StatusNotification"):
        await answered(
            arena, b'{"evseId":[],"meterValue":"x","seqNo":"0","eventType":7}', action, "ocpp2.0.1"
        )


@attack
async def ocmf_garbage(arena: Arena) -> None:
    key = base64.b64encode(os.urandom(300_000)).decode()
    for blob in (
        "OCMF|{|}",
        "OCMF|" + "{" * 5000 + "|" + "}" * 5000,
        'OCMF|{"RD":[{"RV":1e999999999}]}|{"SD":"zz"}',
        "not ocmf at all",
        'OCMF|{}|{"SA":"ECDSA-secp256r1-SHA256","SD":"' + "00" * 50_000 + '"}',
    ):
        sampled = {"value": blob, "format": "SignedData", "context": "Transaction.End"}
        payload = {
            "connectorId": 1,
            "transactionId": 1,
            "meterValue": [{"timestamp": "2026-12-01T10:00:00Z", "sampledValue": [sampled]}],
        }
        await answered(arena, json.dumps(payload).encode(), "MeterValues")
    signed = {
        "signedMeterData": "OCMF|garbage",
        "signingMethod": "x" * 10_000,
        "encodingMethod": "OCMF",
        "publicKey": key,
    }
    value = {"value": 1, "signedMeterValue": signed}
    payload201 = {
        "evseId": 1,
        "meterValue": [{"timestamp": "2026-12-01T10:00:00Z", "sampledValue": [value]}],
    }
    await answered(arena, json.dumps(payload201).encode(), "MeterValues", "ocpp2.0.1")


# -- running them --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_attack(arena: Arena, name: str) -> None:
    pid = arena.proxy.process.pid
    await ATTACKS[name](arena)
    await arena.healthy.check()
    assert arena.proxy.process.poll() is None and arena.proxy.process.pid == pid


def test_the_suite_covers_at_least_30_attack_classes() -> None:
    assert len(ATTACKS) >= 30


async def test_after_every_attack_no_session_event_was_lost(arena: Arena) -> None:
    await arena.healthy.check()
    with trio.fail_after(WAIT):  # the journal has stored (or kept aside) what the attacks sent
        while metric(arena.proxy, "ere_proxy_journal_queued") or metric(
            arena.proxy, "ere_proxy_journal_spilling"
        ):
            await trio.sleep(0.1)
    assert metric(arena.proxy, "ere_proxy_journal_lost_total") == 0
