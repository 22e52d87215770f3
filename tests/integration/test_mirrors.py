"""Mirrors through a real proxy on 127.0.0.1: an `ocpp` charger and CSMS, and a mirror back-office.

The mirror gets a copy of every charger CALL while the primary's frames stay byte-identical; a
blocked mirror CALL never reaches the charger, an allowed one does and its answer returns to the
mirror (under the mirror's id, even one the primary uses at the same time). A mirror that is
down, never reads, or sends garbage costs only its own copies (counted): the primary link goes on.

Tests that need no mirror CALL to reach the charger run twice (`allow`): with an allow-list (the
tap in front of the charger, the Trio pumps) and without (copies only: on the native engine the
link is forwarded by it, and the copies come in its batches).
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import msgspec
import pytest
import trio
from ocpp.exceptions import GenericError, SecurityError
from ocpp.v16 import call as call16
from trio_websocket import open_websocket_url

from proxy.runtime.config import Config, Mirror, OutboxSettings, Route
from proxy.wire.codec import CLOSE, PONG, TEXT, encode_frame
from testkit.in_process_proxy import ProxyHandle, metric, proxy_config, roundtrip, start_proxy
from testkit.mirror_peers import MirrorServer, RawMirror, TriggerCharger16
from testkit.ocpp_peers import (
    TIMEOUT,
    CsmsThread,
    assert_transparent,
    open_charger,
    timestamp,
    wait_future,
)
from testkit.ports import free_port
from testkit.raw_charger import RawCharger, frame
from testkit.reference_codec import ReferenceFrameReader
from testkit.waiting import eventually

ALLOW = ("TriggerMessage", "GetConfiguration")


@pytest.fixture(params=[ALLOW, ()], ids=["calls", "copies"])
def allow(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """What the mirror may send the charger: the allow-list, or nothing (copies only)."""
    return request.param


def forwarded_by_engine(handle: ProxyHandle) -> int:
    """Links the native engine has taken so far (0 without one)."""
    engine = handle.server.engine
    return engine.adopted if engine is not None else 0


def mirrored_config(primary_port: int, mirror_port: int, **mirror: Any) -> Config:
    """Every charger to the primary on `primary_port`, mirrored to `mirror_port`; quick redials."""
    options: dict[str, Any] = {"url": f"ws://127.0.0.1:{mirror_port}/mirror", "allow": ALLOW}
    options.update(mirror)
    route = Route(
        upstream=f"ws://127.0.0.1:{primary_port}/ocpp",
        mirrors=(msgspec.convert(options, Mirror),),
    )
    config = proxy_config(primary_port)
    return msgspec.structs.replace(
        config,
        default_route=route,
        outbox=OutboxSettings(redial_min=0.05, redial_max=0.2),
    )


def mirror_metric(handle: ProxyHandle, name: str, port: int, **labels: str) -> float:
    return metric(handle, name, mirror=f"127.0.0.1:{port}", **labels)


Scenario = Callable[[ProxyHandle, CsmsThread, int], Awaitable[Any]]


async def with_ocpp_peers(
    nursery: trio.Nursery, scenario: Scenario, **mirror: Any
) -> tuple[ProxyHandle, int, Any]:
    """Run `scenario` on the asyncio loop of a primary CSMS thread, the proxy here (`mirror`:
    options of the mirror); returns the proxy, the mirror's port and what the scenario returned."""
    primary_port, mirror_port = free_port(), free_port()
    handle = await start_proxy(nursery, mirrored_config(primary_port, mirror_port, **mirror))
    with CsmsThread(primary_port) as thread:
        result = await wait_future(thread.submit(scenario(handle, thread, mirror_port)))
    return handle, mirror_port, result


# -- with `ocpp` peers ------------------------------------------------------------------------


async def _a_charging_session(handle: ProxyHandle, thread: CsmsThread, mirror_port: int) -> Any:
    async with asyncio.timeout(TIMEOUT):
        async with MirrorServer(mirror_port) as mirrors:
            url = handle.url("CP-M1")
            async with open_charger(url, ["ocpp1.6"], TriggerCharger16, "CP-M1") as charger:
                assert thread.server is not None
                csms = await thread.server.next_peer()
                cp = charger.cp
                await cp.call(
                    call16.BootNotification(charge_point_model="M", charge_point_vendor="E")
                )
                await cp.call(call16.Heartbeat())
                start = await cp.call(
                    call16.StartTransaction(
                        connector_id=1, id_tag="RFID-1", meter_start=0, timestamp=timestamp()
                    )
                )
                sample = [{"timestamp": timestamp(), "sampled_value": [{"value": "100"}]}]
                await cp.call(
                    call16.MeterValues(
                        connector_id=1, meter_value=sample, transaction_id=start.transaction_id
                    )
                )
                await cp.call(
                    call16.StopTransaction(
                        meter_stop=100, timestamp=timestamp(), transaction_id=start.transaction_id
                    )
                )
                mirror = await mirrors.next_peer()
                calls = [m for m in charger.log.sent if m.startswith("[2,")]
                await mirror.log.wait_for(lambda received: len(received) >= len(calls))
                # Every answer of the mirror read (and dropped) before the charger goes: one still
                # on its way when the link ends is never read.
                dropped = "ere_proxy_mirror_answers_dropped_total"
                while mirror_metric(handle, dropped, mirror_port) < len(calls):
                    await asyncio.sleep(0.01)
            await asyncio.wait([csms.closed])
    return charger, csms, mirror, calls, start.transaction_id


async def test_the_mirror_gets_every_charger_call_and_the_primary_stays_byte_identical(
    nursery, allow, each_engine
):
    handle, port, result = await with_ocpp_peers(nursery, _a_charging_session, allow=allow)
    charger, csms, mirror, calls, transaction_id = result
    # Copies only: the native engine forwards the link; with an allow-list, the Trio pumps do.
    assert forwarded_by_engine(handle) == (each_engine == "native" and not allow)
    assert_transparent(charger, csms)
    assert mirror.identity == "CP-M1"
    assert mirror.log.received == calls  # each copy as the charger sent it
    # The mirror's own transactionId went nowhere: later CALLs carry the primary's.
    assert mirror.cp.transaction_id != transaction_id
    assert json.loads(calls[3])[3]["transactionId"] == transaction_id
    assert mirror_metric(handle, "ere_proxy_mirror_answers_dropped_total", port) == 5
    assert mirror_metric(handle, "ere_proxy_mirror_sent_total", port) == 5


async def _mirror_calls(handle: ProxyHandle, thread: CsmsThread, mirror_port: int) -> Any:
    async with asyncio.timeout(TIMEOUT):
        async with MirrorServer(mirror_port) as mirrors:
            url = handle.url("CP-M2")
            async with open_charger(url, ["ocpp1.6"], TriggerCharger16, "CP-M2") as charger:
                assert thread.server is not None
                csms = await thread.server.next_peer()
                await charger.cp.call(call16.Heartbeat())
                mirror = await mirrors.next_peer()
                with pytest.raises(SecurityError):
                    await mirror.cp.call(call16.RemoteStartTransaction(id_tag="X"), suppress=False)
                # An allowed CALL, held by the charger while the primary calls with the same id.
                charger.cp.hold = asyncio.Event()
                trigger = asyncio.ensure_future(
                    mirror.cp.call(
                        call16.TriggerMessage(requested_message="StatusNotification"),
                        unique_id="same",
                    )
                )
                await charger.cp.trigger_arrived.wait()
                change = asyncio.ensure_future(
                    csms.cp.call(call16.ChangeConfiguration(key="K", value="V"), unique_id="same")
                )
                charger.cp.hold.set()
                results = (await trigger, await change)
                configuration = await mirror.cp.call(call16.GetConfiguration(key=["K"]))
                await charger.cp.call(call16.Heartbeat())
            await asyncio.wait([csms.closed])
    return charger, csms, results, configuration


async def test_mirror_calls_are_blocked_or_allowed_and_answered_to_the_mirror_that_asked(nursery):
    handle, port, result = await with_ocpp_peers(nursery, _mirror_calls)
    charger, csms, (trigger, change), configuration = result
    assert trigger.status == "Accepted" and change.status == "Accepted"
    assert configuration.configuration_key == [{"key": "K", "readonly": False, "value": "V"}]
    received = [json.loads(m) for m in charger.log.received]
    actions = [m[2] for m in received if m[0] == 2]
    assert actions == ["TriggerMessage", "ChangeConfiguration", "GetConfiguration"]
    # The blocked CALL never reached the charger; the allowed ones came under ids of the proxy.
    mirror_ids = {m[1] for m in received if m[0] == 2 and m[2] != "ChangeConfiguration"}
    assert all(i.startswith("mirror-") for i in mirror_ids)
    # The primary got neither the mirror's CALLs nor the charger's answers to them.
    assert csms.log.received == [m for m in charger.log.sent if json.loads(m)[1] not in mirror_ids]
    assert csms.log.sent == [m for m in charger.log.received if json.loads(m)[1] not in mirror_ids]
    calls = "ere_proxy_mirror_calls_total"
    assert mirror_metric(handle, calls, port, outcome="blocked") == 1
    assert mirror_metric(handle, calls, port, outcome="allowed") == 2


async def _unanswered(handle: ProxyHandle, thread: CsmsThread, mirror_port: int) -> Any:
    async with asyncio.timeout(TIMEOUT):
        async with MirrorServer(mirror_port) as mirrors:
            url = handle.url("CP-M3")
            async with open_charger(url, ["ocpp1.6"], TriggerCharger16, "CP-M3") as charger:
                assert thread.server is not None
                csms = await thread.server.next_peer()
                await charger.cp.call(call16.Heartbeat())
                mirror = await mirrors.next_peer()
                charger.cp.hold = asyncio.Event()  # the charger does not answer in time
                trigger = mirror.cp.call(
                    call16.TriggerMessage(requested_message="Heartbeat"), suppress=False
                )
                with pytest.raises(GenericError):
                    await trigger
                change = asyncio.ensure_future(
                    csms.cp.call(call16.ChangeConfiguration(key="K", value="V"))
                )
                charger.cp.hold.set()  # its late answer goes nowhere; then the primary's
                result = await change
            await asyncio.wait([csms.closed])
    return charger, csms, result


async def test_a_mirror_call_the_charger_does_not_answer_in_time_is_answered_by_the_proxy(
    nursery,
):
    handle, port, (charger, csms, result) = await with_ocpp_peers(
        nursery, _unanswered, call_timeout=0.5
    )
    assert result.status == "Accepted"
    late = [m for m in charger.log.sent if '"mirror-' in m]
    assert len(late) == 1  # the charger answered, late
    assert not any('"mirror-' in m for m in csms.log.received)
    assert csms.log.sent == [m for m in charger.log.received if '"mirror-' not in m]
    calls = "ere_proxy_mirror_calls_total"
    assert mirror_metric(handle, calls, port, outcome="timed_out") == 1


# -- a mirror down, slow or hostile: the primary goes on -----------------------------------


async def _charger_roundtrips(handle: ProxyHandle, identity: str, n: int) -> None:
    async with open_websocket_url(handle.url(identity), subprotocols=["ocpp1.6"]) as ws:
        for i in range(n):
            answer = json.loads(await roundtrip(ws, f"{identity}-{i}"))
            assert answer == [3, f"{identity}-{i}", {"echo": "Heartbeat"}]


async def test_the_primary_works_while_the_mirror_is_down(nursery, upstream, allow):
    mirror_port = free_port()  # nothing listens: every dial is refused
    config = mirrored_config(upstream.port, mirror_port, queue=3, allow=allow)
    handle = await start_proxy(nursery, config)
    await _charger_roundtrips(handle, "CP-down", 10)
    label = f"127.0.0.1:{mirror_port}"
    assert (
        mirror_metric(handle, "ere_proxy_mirror_dials_total", mirror_port, outcome="refused") >= 1
    )
    # Counted as the mirror's, not as an upstream's: UpstreamDown is about primaries only, and the
    # mirror's host is never taken for a primary's known-down one.
    assert metric(handle, "ere_proxy_upstream_dials_total", upstream=label, outcome="refused") == 0
    assert label not in handle.server.dialer.down_until
    assert mirror_metric(handle, "ere_proxy_mirror_dropped_total", mirror_port) == 7
    assert mirror_metric(handle, "ere_proxy_mirror_connected", mirror_port) == 0
    await eventually(lambda: mirror_metric(handle, "ere_proxy_mirror_queued", mirror_port) == 0)


async def test_chargers_wait_for_one_probe_of_a_down_mirror_instead_of_each_dialling_it(
    nursery, upstream, allow
):
    mirror_port = free_port()  # nothing listens: every dial is refused
    config = msgspec.structs.replace(
        mirrored_config(upstream.port, mirror_port, allow=allow),
        outbox=OutboxSettings(redial_min=30.0, redial_max=60.0),  # no probe during the test
    )
    handle = await start_proxy(nursery, config)
    label = f"127.0.0.1:{mirror_port}"

    def refused() -> float:
        return mirror_metric(handle, "ere_proxy_mirror_dials_total", mirror_port, outcome="refused")

    def waiting() -> int:
        return handle.server.mirror_redials.waiting.get(label, 0)

    async with AsyncExitStack() as chargers:
        first = await chargers.enter_async_context(
            open_websocket_url(handle.url("CP-w0"), subprotocols=["ocpp1.6"])
        )
        await eventually(lambda: refused() == 1 and waiting() == 1)  # its dial found it down
        others = [
            await chargers.enter_async_context(
                open_websocket_url(handle.url(f"CP-w{i}"), subprotocols=["ocpp1.6"])
            )
            for i in range(1, 11)
        ]
        await eventually(lambda: waiting() == 11)
        assert refused() == 1  # the later chargers never dialled the mirror
        for i, ws in enumerate([first, *others]):
            answer = json.loads(await roundtrip(ws, f"w{i}"))
            assert answer == [3, f"w{i}", {"echo": "Heartbeat"}]


@pytest.mark.parametrize("overflow", ["drop_oldest", "pause"])
async def test_the_primary_works_while_the_mirror_never_reads(nursery, upstream, overflow, allow):
    silent = RawMirror()
    port = await silent.start(nursery)
    handle = await start_proxy(
        nursery, mirrored_config(upstream.port, port, queue=4, overflow=overflow, allow=allow)
    )
    big = json.dumps([2, "big", "DataTransfer", {"vendorId": "E", "data": "x" * 60000}])
    async with open_websocket_url(handle.url("CP-slow"), subprotocols=["ocpp1.6"]) as ws:
        with trio.fail_after(TIMEOUT):
            while mirror_metric(handle, "ere_proxy_mirror_dropped_total", port) < 5:
                await ws.send_message(big)
                assert json.loads(await ws.get_message())[1] == "big"
        answer = json.loads(await roundtrip(ws, "after"))
        assert answer == [3, "after", {"echo": "Heartbeat"}]
    assert silent.handshakes == 1  # slow, not lost: never redialled


HOSTILE = {
    "masked_frame": encode_frame(TEXT, b'[2,"1","Reset",{}]', mask=True),
    "oversized_frame": b"\x81\x7f" + (1 << 40).to_bytes(8, "big"),
    "blocked_flood_with_one_id": b"".join(
        encode_frame(TEXT, text, mask=False)
        for text in [b"not json", b'{"a":1}', b'[3,"h0",{}]', b"[2]"]
        + [b'[2,"dup","Reset",{"type":"Hard"}]'] * 200
        + [b'[6,"dup","NotifyX",{}]']
    )
    + b"\x88\x02\x03\xe8",
}


@pytest.mark.parametrize("garbage", list(HOSTILE), ids=list(HOSTILE))
async def test_a_hostile_mirror_costs_only_its_own_connection(nursery, upstream, garbage, allow):
    hostile = RawMirror(HOSTILE[garbage])
    port = await hostile.start(nursery)
    handle = await start_proxy(nursery, mirrored_config(upstream.port, port, allow=allow))
    async with open_websocket_url(handle.url("CP-h"), subprotocols=["ocpp1.6"]) as ws:
        for i in range(3):
            with trio.fail_after(TIMEOUT):
                await hostile.wait_for_handshakes(i + 1)  # redialled each time it is dropped
            answer = json.loads(await roundtrip(ws, f"h{i}"))
            assert answer == [3, f"h{i}", {"echo": "Heartbeat"}]
    upstream_peer = next(p for p in upstream.peers if p.path == "/ocpp/CP-h")
    assert len(upstream_peer.received) == 3  # nothing of the mirror's reached the primary
    errors = mirror_metric(handle, "ere_proxy_mirror_protocol_errors_total", port)
    if garbage == "blocked_flood_with_one_id":
        assert errors == 0
        calls = "ere_proxy_mirror_calls_total"
        blocked = mirror_metric(handle, calls, port, outcome="blocked")
        dropped = mirror_metric(handle, calls, port, outcome="reply_dropped")
        assert blocked + dropped >= 201 and blocked >= 16
        assert mirror_metric(handle, calls, port, outcome="invalid") >= 3
    else:
        assert errors >= 1


# -- what the charger sends, through the tap --------------------------------------------------


async def test_fragments_and_pings_of_a_mirrored_charger_pass_as_sent(nursery, upstream, allow):
    mirror = RawMirror(b"")
    port = await mirror.start(nursery)
    handle = await start_proxy(nursery, mirrored_config(upstream.port, port, allow=allow))
    charger = await RawCharger.connect(handle.port)
    try:
        assert (await charger.upgrade("CP-frag")).startswith(b"HTTP/1.1 101")
        text = b'[2,"f1","Heartbeat",{}]'
        await charger.send(
            frame(1, text[:9], fin=False) + frame(9, b"amid") + frame(0, text[9:], fin=True)
        )
        got: list[Any] = charger.reader.feed(charger.buffer)
        with trio.fail_after(TIMEOUT):
            while len(got) < 2:
                got += charger.reader.feed(await charger.stream.receive_some(65536))
            # one masked frame: 2 bytes of header, 4 of mask, the text
            size = 6 + len(text)
            await mirror.wait_until(lambda: mirror.received and len(mirror.received[0]) >= size)
    finally:
        await charger.aclose()
    assert sorted((m.opcode, m.data) for m in got) == [
        (TEXT, b'[3, "f1", {"echo": "Heartbeat"}]'),
        (PONG, b"amid"),
    ]
    peer = next(p for p in upstream.peers if p.path == "/ocpp/CP-frag")
    assert peer.received == [text.decode()]
    copies = ReferenceFrameReader(from_client=True).feed(bytes(mirror.received[0]))
    assert [(m.opcode, m.data) for m in copies] == [(TEXT, text)]


BAD_FRAMES = {
    "unmasked": (frame(1, b'[2,"1","Heartbeat",{}]', mask=False), 1002),
    "2^62 byte length": (bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 1 << 62) + b"mask", 1009),
    "invalid UTF-8": (frame(1, b'[2,"1","\xff\xfe",{}]'), 1007),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
async def test_a_mirrored_charger_breaking_the_protocol_is_closed_as_without_mirrors(
    nursery, upstream, name, allow
):
    data, code = BAD_FRAMES[name]
    mirror = RawMirror(b"")
    port = await mirror.start(nursery)
    handle = await start_proxy(nursery, mirrored_config(upstream.port, port, allow=allow))
    charger = await RawCharger.connect(handle.port)
    try:
        assert (await charger.upgrade("CP-bad")).startswith(b"HTTP/1.1 101")
        await upstream.wait_until(lambda: "/ocpp/CP-bad" in upstream.connections)
        await charger.send(frame(1, b'[2,"ok","Heartbeat",{}]') + data)
        with trio.fail_after(TIMEOUT):
            messages = await charger.messages_until_close(reply_to_close=True)
    finally:
        await charger.aclose()
    assert [(m.opcode, m.close_code) for m in messages] == [(CLOSE, code)]
    peer = next(p for p in upstream.peers if p.path == "/ocpp/CP-bad")
    assert peer.received == []  # the chunk with the bad frame reached neither back-office
    assert mirror_metric(handle, "ere_proxy_mirror_sent_total", port) == 0
    assert mirror_metric(handle, "ere_proxy_mirror_queued", port) == 0


async def test_copies_go_on_when_a_message_too_large_for_the_engine_comes(nursery, upstream):
    """Copies only, on either engine: a message larger than the engine copies in passing sends
    the link back to the Trio pumps mid-message (native engine); the copies go on from them."""
    mirror = RawMirror(b"")
    port = await mirror.start(nursery)
    handle = await start_proxy(nursery, mirrored_config(upstream.port, port, allow=()))
    texts = [
        json.dumps([2, "small-1", "Heartbeat", {}]),
        json.dumps([2, "large", "DataTransfer", {"vendorId": "E", "data": "x" * 60000}]),
        json.dumps([6, "send", "NotifyPeriodicEventStream", {"id": 1}]),
        json.dumps([2, "small-2", "Heartbeat", {}]),
    ]
    async with open_websocket_url(handle.url("CP-large"), subprotocols=["ocpp1.6"]) as ws:
        for text in texts:
            await ws.send_message(text)
            if text.startswith("[2,"):
                assert json.loads(await ws.get_message())[1] == json.loads(text)[1]
        with trio.fail_after(TIMEOUT):
            await mirror.wait_until(
                lambda: (
                    mirror.received
                    and len(ReferenceFrameReader(from_client=True).feed(bytes(mirror.received[0])))
                    >= len(texts)
                )
            )
    copies = ReferenceFrameReader(from_client=True).feed(bytes(mirror.received[0]))
    assert [m.data.decode() for m in copies] == texts
    peer = next(p for p in upstream.peers if p.path == "/ocpp/CP-large")
    assert peer.received == texts  # the primary got them all too, and nothing else
